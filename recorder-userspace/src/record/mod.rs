//! The record: which paths were read, first access first, and the layer providing each,
//! serialised exactly as stargz-snapshotter's recorder does.

pub mod companion;
pub mod export;
pub mod gojson;
pub mod merge;
pub mod needs;
pub mod report;
pub mod stored;

use std::collections::HashSet;

pub use companion::{CompanionLine, Extras};

use crate::image::path;

/// Media type under which the main record is stored (the record is plain JSON lines).
pub const RECORD_MEDIA_TYPE: &str = "application/vnd.stargz-snapshotter.record.v1+jsonl";

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A line is not a record entry.
    #[error("record line {line}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A companion line is not a companion entry.
    #[error("companion line {line}")]
    BadCompanionLine {
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A companion line is not one of this record's entries.
    #[error("companion line {line}: {message}")]
    ForeignCompanionLine {
        /// 1-based line number.
        line: usize,
        /// How it differs from the record.
        message: String,
    },
}

/// One record entry: `{"path":…,"manifestDigest":…,"layerIndex":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordEntry {
    /// Cleaned path relative to the image root (raw bytes; non-UTF-8 is escaped on output).
    pub path: Vec<u8>,
    /// Digest of the manifest; omitted from the JSON when empty.
    pub manifest_digest: String,
    /// Layer providing the path; omitted from the JSON when `None`.
    pub layer_index: Option<usize>,
}

impl RecordEntry {
    /// Appends the entry as Go's `json.Encoder.Encode(&Entry{…})` would, newline included.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"path\":");
        gojson::write_string(out, &self.path);
        if !self.manifest_digest.is_empty() {
            out.extend_from_slice(b",\"manifestDigest\":");
            gojson::write_string(out, self.manifest_digest.as_bytes());
        }
        if let Some(i) = self.layer_index {
            out.extend_from_slice(b",\"layerIndex\":");
            out.extend_from_slice(i.to_string().as_bytes());
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Collects accesses: deduplicated by cleaned path, kept in first-access order.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    manifest_digest: String,
    seen: HashSet<Vec<u8>>,
    entries: Vec<RecordEntry>,
    extras: Vec<Extras>,
}

impl RecordBuilder {
    /// A record for the image whose manifest has this digest (`sha256:…`).
    pub fn new(manifest_digest: impl Into<String>) -> Self {
        RecordBuilder {
            manifest_digest: manifest_digest.into(),
            ..Default::default()
        }
    }

    /// Records an access to `path` provided by `layer_index`; false if already recorded or
    /// if `path` is empty (as the seed ignores it).
    pub fn push(&mut self, path: &[u8], layer_index: Option<usize>) -> bool {
        self.push_with(path, layer_index, Extras::default())
    }

    /// As [`RecordBuilder::push`], keeping `extras` of the first access for the companion blob.
    pub fn push_with(&mut self, path: &[u8], layer_index: Option<usize>, extras: Extras) -> bool {
        if path.is_empty() {
            return false;
        }
        let cleaned = path::clean(path);
        if self.seen.contains(&cleaned) {
            return false;
        }
        self.seen.insert(cleaned.clone());
        self.entries.push(RecordEntry {
            path: cleaned,
            manifest_digest: self.manifest_digest.clone(),
            layer_index,
        });
        self.extras.push(extras);
        true
    }

    /// The digest of the manifest the record's entries refer to.
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    /// Whether `path` (cleaned) is already recorded.
    pub fn contains(&self, path: &[u8]) -> bool {
        self.seen.contains(&path::clean(path))
    }

    /// The entries, first access first.
    pub fn entries(&self) -> &[RecordEntry] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The main record, byte-compatible with stargz-snapshotter's.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 128);
        for e in &self.entries {
            e.write_json(&mut out);
        }
        out
    }

    /// The companion blob: one JSON line per entry that has extras.
    pub fn companion_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, (e, x)) in self.entries.iter().zip(&self.extras).enumerate() {
            if x.is_empty() {
                continue;
            }
            let line = CompanionLine {
                index,
                path: path::display(&e.path),
                extras: x.clone(),
                runs: None,
                offsets_ns: None,
            };
            // Serialising plain strings and integers cannot fail.
            if let Ok(mut v) = serde_json::to_vec(&line) {
                out.append(&mut v);
                out.push(b'\n');
            }
        }
        out
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEntry {
    path: String,
    #[serde(default)]
    manifest_digest: String,
    #[serde(default)]
    layer_index: Option<usize>,
}

/// Parses a record (JSON lines); blank lines are skipped.
pub fn parse(bytes: &[u8]) -> Result<Vec<RecordEntry>, RecordError> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .map(|(i, l)| {
            let w: WireEntry =
                serde_json::from_slice(l).map_err(|source| RecordError::BadLine {
                    line: i + 1,
                    source,
                })?;
            Ok(RecordEntry {
                path: w.path.into_bytes(),
                manifest_digest: w.manifest_digest,
                layer_index: w.layer_index,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_like_the_go_recorder() {
        let mut r = RecordBuilder::new("sha256:abc");
        assert!(r.push(b"/usr/bin/sh", Some(0)));
        assert!(r.push(b"etc/<x>", Some(2)));
        assert!(!r.push(b"./usr/bin/sh", Some(1)));
        assert!(r.push(b"gone", None));
        assert!(!r.push(b"", Some(0)));
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            concat!(
                "{\"path\":\"usr/bin/sh\",\"manifestDigest\":\"sha256:abc\",\"layerIndex\":0}\n",
                "{\"path\":\"etc/\\u003cx\\u003e\",\"manifestDigest\":\"sha256:abc\",\"layerIndex\":2}\n",
                "{\"path\":\"gone\",\"manifestDigest\":\"sha256:abc\"}\n",
            )
        );
        let mut bare = RecordBuilder::new("");
        bare.push(b"x", None);
        assert_eq!(bare.to_bytes(), b"{\"path\":\"x\"}\n");
    }

    #[test]
    fn bad_lines_chain_the_parsers_error() {
        let record = b"{\"path\":\"a\"}\n{\"path\":\"b\"}\n";
        let entries = parse(record).unwrap();
        for (what, error, want) in [
            (
                "record",
                parse(b"{\"path\":\"a\"}\nnot json\n").unwrap_err(),
                "record line 2: expected ident at line 1 column 2",
            ),
            (
                "companion",
                companion::parse(b"[]\n", &entries).unwrap_err(),
                "companion line 1: invalid type: sequence, expected",
            ),
            (
                "companion of another record",
                companion::parse(b"{\"index\":0,\"path\":\"z\"}\n", &entries).unwrap_err(),
                "companion line 1: index 0 is \"z\" in the companion but \"a\" in the record",
            ),
        ] {
            let chain = crate::errors::Chain(&error).to_string();
            assert!(chain.starts_with(want), "{what}: {chain}");
        }
    }
}
