//! eStargz layers indexed from their table of contents (TOC) instead of by decompressing them.
//!
//! An eStargz blob is a tar+gzip layer whose last gzip members are the TOC, one tar entry
//! `stargz.index.json` listing every entry of the layer in tar order, and a 51-byte footer: an
//! empty gzip member whose header's extra field `SG`, 22, `%016x` offset, `STARGZ` points at
//! the TOC's gzip member. Reading the footer and the TOC costs a few megabytes of I/O and
//! inflation where the layer may hold gigabytes.
//!
//! Trust: the fast path is taken only when the layer's descriptor carries the
//! `containerd.io/snapshot/stargz/toc.digest` annotation (stargz-snapshotter's own condition
//! for verifying a lazily pulled layer): the manifest, already verified against its digest,
//! then vouches for the TOC, and a TOC that does not hash to the annotation is refused. A
//! footer without the annotation could only be believed unverified, so such a layer is
//! decompressed as any other. The layer blob itself is not read, so its digest is not checked
//! here (`recorder run` still checks it while unpacking; `--full-decompression` checks it).
//!
//! What the TOC cannot say exactly, it does not guess: a name that Go's JSON encoder could not
//! carry (not UTF-8: it writes U+FFFD instead) makes the caller decompress the layer.
//!
//! Written by hand (there is no maintained Rust crate for the format); the format is
//! stargz-snapshotter's `estargz` package (`types.go`, `gzip.go`).

use std::borrow::Cow;
use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::digest::BlobDigest;
use super::error::ImageError;
use super::index::{EntryKind, LayerIndex, LayerIndexBuilder};
use super::open::Image;

/// The layer annotation holding the digest of the TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The name of the TOC's own tar entry, the layer's last.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// The eStargz footer's size.
const FOOTER_SIZE: u64 = 51;
/// Largest compressed TOC read into memory. The TOC of the index benchmark's 55,000-entry
/// layer is 1.6 MB compressed; this allows some 20 million entries.
const MAX_TOC_COMPRESSED: u64 = 512 << 20;
/// Largest uncompressed TOC JSON (about 300 bytes an entry: some 3 million entries).
const MAX_TOC_JSON: u64 = 1 << 30;

/// Why a layer could not be indexed from its TOC (the caller decompresses it instead).
#[derive(Debug, thiserror::Error)]
pub enum TocError {
    /// The annotation is not a digest this recorder checks.
    #[error("layer {layer}: the {TOC_DIGEST_ANNOTATION} annotation is not a sha256 digest")]
    Annotation {
        /// The layer blob.
        layer: String,
        /// Why it does not parse.
        #[source]
        source: ImageError,
    },
    /// The footer or the TOC could not be read from the blob source.
    #[error("layer {layer}: reading its eStargz {what}")]
    Read {
        /// The layer blob.
        layer: String,
        /// `footer` or `TOC`.
        what: &'static str,
        /// The source's failure.
        #[source]
        source: ImageError,
    },
    /// The last 51 bytes are not an eStargz footer.
    #[error("layer {layer}: no eStargz footer: {message}")]
    Footer {
        /// The layer blob.
        layer: String,
        /// What is wrong with it.
        message: String,
    },
    /// The TOC's gzip member or tar entry is corrupt.
    #[error("layer {layer}: the eStargz TOC at offset {offset} does not decompress")]
    Decompress {
        /// The layer blob.
        layer: String,
        /// Where the footer says the TOC starts.
        offset: u64,
        /// The decoder's failure.
        #[source]
        source: std::io::Error,
    },
    /// The TOC's tar entry is not the TOC, or too large.
    #[error("layer {layer}: the eStargz TOC {message}")]
    BadToc {
        /// The layer blob.
        layer: String,
        /// What is wrong with it.
        message: String,
    },
    /// The TOC does not hash to the annotation.
    #[error(
        "layer {layer}: the eStargz TOC hashes to {actual}, the manifest's annotation says {expected}"
    )]
    Mismatch {
        /// The layer blob.
        layer: String,
        /// The annotation.
        expected: String,
        /// What the TOC JSON hashes to.
        actual: String,
    },
    /// The TOC JSON does not parse, or an entry is one the index refuses.
    #[error("layer {layer}: the eStargz TOC JSON is invalid")]
    Json {
        /// The layer blob.
        layer: String,
        /// The parser's (or the index's) message.
        #[source]
        source: serde_json::Error,
    },
    /// A name or link target the TOC cannot carry exactly.
    #[error("layer {layer}: the eStargz TOC cannot name entry {entry:?} exactly (not UTF-8)")]
    Lossy {
        /// The layer blob.
        layer: String,
        /// The entry as the TOC writes it.
        entry: String,
    },
}

/// Indexes layer `i` of `image` from its eStargz TOC: `Ok(None)` when the layer is not
/// eStargz by its annotation, or the source can only stream it (then reading the TOC would
/// read the whole blob anyway).
pub fn index_from_toc(image: &Image, i: usize) -> Result<Option<LayerIndex>, TocError> {
    let Some(layer) = image.layers().get(i) else {
        return Ok(None);
    };
    let Some(annotation) = &layer.toc_digest else {
        return Ok(None);
    };
    let name = layer.digest.to_string();
    let expected: BlobDigest = annotation.parse().map_err(|e| TocError::Annotation {
        layer: name.clone(),
        source: ImageError::from(e),
    })?;
    if layer.size < FOOTER_SIZE {
        return Err(TocError::Footer {
            layer: name,
            message: format!("the blob is {} bytes", layer.size),
        });
    }
    let source = image.source();
    let footer_at = layer.size - FOOTER_SIZE;
    let read = |what, offset, len| {
        source
            .read_at(&layer.digest, offset, len)
            .map_err(|source| TocError::Read {
                layer: name.clone(),
                what,
                source,
            })
    };
    let Some(footer) = read("footer", footer_at, FOOTER_SIZE as usize)? else {
        return Ok(None);
    };
    let offset = toc_offset(&footer).map_err(|message| TocError::Footer {
        layer: name.clone(),
        message,
    })?;
    if offset >= footer_at {
        return Err(TocError::Footer {
            layer: name,
            message: format!("TOC offset {offset} is past the footer at {footer_at}"),
        });
    }
    let compressed_len = footer_at - offset;
    if compressed_len > MAX_TOC_COMPRESSED {
        return Err(TocError::BadToc {
            layer: name,
            message: format!(
                "is {compressed_len} bytes compressed, over the {MAX_TOC_COMPRESSED}-byte limit"
            ),
        });
    }
    let Some(compressed) = read("TOC", offset, compressed_len as usize)? else {
        return Ok(None);
    };
    let json = toc_json(&compressed).map_err(|e| match e {
        TocRead::Io(source) => TocError::Decompress {
            layer: name.clone(),
            offset,
            source,
        },
        TocRead::Bad(message) => TocError::BadToc {
            layer: name.clone(),
            message,
        },
    })?;
    // Hashing and parsing each take a good part of the CPU time of the whole (perf, on the
    // index benchmark's 19.5 MB TOC: 12% in SHA-256, 20% in the JSON parser): the parse does
    // not wait for the hash, and its index is dropped unless the hash matches.
    let (actual, built) = std::thread::scope(|s| {
        let hashing = std::thread::Builder::new()
            .name("toc-digest".into())
            .spawn_scoped(s, || BlobDigest::of(&json));
        let built = build(&json);
        let actual = match hashing {
            Ok(h) => h.join().ok(),
            Err(_) => None,
        };
        // A thread that could not be made (or failed) leaves the hash to this one.
        (actual.unwrap_or_else(|| BlobDigest::of(&json)), built)
    });
    if actual != expected {
        return Err(TocError::Mismatch {
            layer: name,
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    built
        .map_err(|e| match e {
            Build::Json(source) => TocError::Json {
                layer: name.clone(),
                source,
            },
            Build::Lossy(entry) => TocError::Lossy {
                layer: name.clone(),
                entry,
            },
        })
        .map(Some)
}

/// The TOC offset a footer names, or why it is not an eStargz footer.
fn toc_offset(footer: &[u8]) -> Result<u64, String> {
    // flate2 parses the gzip header (and checks the empty member's CRC and length).
    let mut gz = flate2::read::GzDecoder::new(footer);
    let mut rest = Vec::new();
    gz.read_to_end(&mut rest)
        .map_err(|e| format!("not a gzip member: {e}"))?;
    if !rest.is_empty() {
        return Err("the last gzip member is not empty".into());
    }
    let extra = gz
        .header()
        .and_then(|h| h.extra())
        .ok_or("no gzip extra field")?;
    // SI1 'S', SI2 'G', LEN 22 little-endian, then 16 hex digits and "STARGZ".
    let field = extra
        .strip_prefix(b"SG\x16\x00")
        .filter(|f| f.len() == 22 && f.ends_with(b"STARGZ"))
        .ok_or("the gzip extra field is not eStargz's")?;
    let hex = std::str::from_utf8(&field[..16]).map_err(|_| "the TOC offset is not hex")?;
    u64::from_str_radix(hex, 16).map_err(|_| "the TOC offset is not hex".into())
}

enum TocRead {
    Io(std::io::Error),
    Bad(String),
}

/// The TOC JSON from its gzip member: a tar stream whose first entry is `stargz.index.json`.
fn toc_json(compressed: &[u8]) -> Result<Vec<u8>, TocRead> {
    // One gzip member (not MultiGzDecoder): the footer after it is not part of the TOC.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(compressed));
    let mut entries = archive.entries().map_err(TocRead::Io)?;
    let mut entry = entries
        .next()
        .ok_or_else(|| TocRead::Bad("has no tar entry".into()))?
        .map_err(TocRead::Io)?;
    let entry_name = entry.path_bytes();
    if &*entry_name != TOC_TAR_NAME.as_bytes() {
        return Err(TocRead::Bad(format!(
            "tar entry is {:?}, not {TOC_TAR_NAME}",
            super::path::display(&entry_name)
        )));
    }
    let size = entry.size();
    if size > MAX_TOC_JSON {
        return Err(TocRead::Bad(format!(
            "is {size} bytes, over the {MAX_TOC_JSON}-byte limit"
        )));
    }
    let mut json = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut json).map_err(TocRead::Io)?;
    if json.len() as u64 != size {
        return Err(TocRead::Bad("is cut short".into()));
    }
    Ok(json)
}

/// One TOC entry: only what the index holds (names and types never need escapes but may get
/// them: Go escapes `<`, `>` and `&`).
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    size: u64,
    #[serde(rename = "linkName", default, borrow)]
    link_name: Cow<'a, str>,
    #[serde(rename = "devMajor", default)]
    dev_major: u32,
    #[serde(rename = "devMinor", default)]
    dev_minor: u32,
}

enum Build {
    Json(serde_json::Error),
    Lossy(String),
}

/// The index of the entries `json` lists, in its order, then the TOC's own tar entry (the
/// slow path sees it as the layer's last file).
fn build(json: &[u8]) -> Result<LayerIndex, Build> {
    let mut builder = LayerIndexBuilder::new();
    let mut lossy = None;
    let mut de = serde_json::Deserializer::from_slice(json);
    let seen = TocSeed {
        builder: &mut builder,
        lossy: &mut lossy,
    }
    .deserialize(&mut de);
    if let Some(entry) = lossy {
        return Err(Build::Lossy(entry));
    }
    if !seen.map_err(Build::Json)? {
        return Err(Build::Json(de::Error::missing_field("entries")));
    }
    de.end().map_err(Build::Json)?;
    builder
        .add(
            TOC_TAR_NAME.as_bytes(),
            EntryKind::File,
            json.len() as u64,
            None,
            None,
        )
        .map_err(|m| Build::Json(de::Error::custom(m)))?;
    builder.mark_from_toc();
    Ok(builder.finish())
}

/// The TOC's top-level object: its `entries` go to the builder as they are parsed (no list of
/// a million entries in memory); the other fields are skipped. Yields whether there were any.
/// zstd:chunked's TOC has the same shape (`zstd_chunked.rs` reads it with this too).
pub(in crate::image) struct TocSeed<'b> {
    pub(in crate::image) builder: &'b mut LayerIndexBuilder,
    pub(in crate::image) lossy: &'b mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for TocSeed<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TocSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOC object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "entries" && !seen {
                map.next_value_seed(EntriesSeed {
                    builder: &mut *self.builder,
                    lossy: &mut *self.lossy,
                })?;
                seen = true;
            } else if key == "entries" {
                return Err(de::Error::duplicate_field("entries"));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(seen)
    }
}

struct EntriesSeed<'b> {
    builder: &'b mut LayerIndexBuilder,
    lossy: &'b mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of TOC entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(e) = seq.next_element::<Entry<'de>>()? {
            let kind = match &*e.kind {
                "reg" => EntryKind::File,
                "dir" => EntryKind::Dir,
                "symlink" => EntryKind::Symlink,
                "hardlink" => EntryKind::Hardlink,
                "char" => EntryKind::CharDevice,
                "block" => EntryKind::BlockDevice,
                "fifo" => EntryKind::Fifo,
                // The second and later pieces of a large file, which its "reg" entry sized.
                "chunk" => continue,
                other => {
                    return Err(de::Error::custom(format!(
                        "entry {:?} has unknown type {other:?}",
                        e.name
                    )));
                }
            };
            // Go's encoder writes U+FFFD for bytes that are not UTF-8: the tar name differs.
            if e.name.contains('\u{fffd}') || e.link_name.contains('\u{fffd}') {
                *self.lossy = Some(e.name.into_owned());
                return Err(de::Error::custom("lossy name"));
            }
            let target = matches!(kind, EntryKind::Symlink | EntryKind::Hardlink)
                .then(|| e.link_name.as_bytes());
            let device = matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice)
                .then_some((e.dev_major, e.dev_minor));
            let size = if kind == EntryKind::File { e.size } else { 0 };
            self.builder
                .add(e.name.as_bytes(), kind, size, target, device)
                .map_err(|m| de::Error::custom(format!("entry {:?}: {m}", e.name)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(offset: &str) -> Vec<u8> {
        let mut extra = b"SG\x16\x00".to_vec();
        extra.extend_from_slice(offset.as_bytes());
        extra.extend_from_slice(b"STARGZ");
        let mut gz = flate2::GzBuilder::new()
            .extra(extra)
            .write(Vec::new(), flate2::Compression::none());
        std::io::Write::flush(&mut gz).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn footer_offsets() {
        let cases: &[(&[u8], Result<u64, ()>)] = &[
            (&footer("00000000000004d2"), Ok(1234)),
            (&footer("000000000000zzzz"), Err(())),
            (&footer("00000000000004d2")[..50], Err(())),
            (
                b"not gzip at all, not gzip at all, not gzip at all..",
                Err(()),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(toc_offset(bytes).map_err(|_| ()), *want, "{bytes:?}");
        }
    }

    type Row = (String, EntryKind, u64, Option<Vec<u8>>, Option<(u32, u32)>);

    #[test]
    fn toc_json_builds_the_index_entry_by_entry() {
        let json = br#"{"version":1,"entries":[
            {"name":"a/","type":"dir","mode":493},
            {"name":"a/f","type":"reg","size":5000000,"digest":"sha256:00"},
            {"name":"a/f","type":"chunk","chunkOffset":4194304},
            {"name":"a/.wh.gone","type":"reg"},
            {"name":"b/.wh..wh..opq","type":"reg"},
            {"name":"a/l","type":"symlink","linkName":"../x\u003c"},
            {"name":"a/h","type":"hardlink","linkName":"./a/f"},
            {"name":"dev/null","type":"char","devMajor":1,"devMinor":3},
            {"name":".prefetch.landmark","type":"reg","size":1}
        ]}"#;
        let Ok(idx) = build(json) else {
            panic!("build failed")
        };
        let got: Vec<Row> = idx
            .entries()
            .map(|(p, e)| {
                (
                    String::from_utf8(p).unwrap(),
                    e.kind,
                    e.size,
                    e.target.map(<[u8]>::to_vec),
                    e.device,
                )
            })
            .collect();
        let want = vec![
            ("a".to_owned(), EntryKind::Dir, 0, None, None),
            ("a/f".into(), EntryKind::File, 5000000, None, None),
            ("a/.wh.gone".into(), EntryKind::Whiteout, 0, None, None),
            ("b/.wh..wh..opq".into(), EntryKind::Opaque, 0, None, None),
            (
                "a/l".into(),
                EntryKind::Symlink,
                0,
                Some(b"../x<".to_vec()),
                None,
            ),
            (
                "a/h".into(),
                EntryKind::Hardlink,
                0,
                Some(b"a/f".to_vec()),
                None,
            ),
            (
                "dev/null".into(),
                EntryKind::CharDevice,
                0,
                None,
                Some((1, 3)),
            ),
            (".prefetch.landmark".into(), EntryKind::File, 1, None, None),
            (
                TOC_TAR_NAME.into(),
                EntryKind::File,
                json.len() as u64,
                None,
                None,
            ),
        ];
        assert_eq!(got, want);
        assert!(idx.stats().from_toc);
        assert_eq!((idx.stats().whiteouts, idx.stats().opaques), (1, 1));
    }

    #[test]
    fn bad_toc_json_is_refused() {
        let cases: &[&[u8]] = &[
            br#"{"version":1}"#,
            br#"{"entries":[{"name":"x","type":"socket"}]}"#,
            br#"{"entries":[{"name":"x\ufffd","type":"reg"}]}"#,
            br#"{"entries":[{"name":"x","type":"reg"}]} trailing"#,
            br#"{"entries":[{"name":"x","type":"reg"}"#,
            br#"[]"#,
        ];
        for json in cases {
            assert!(build(json).is_err(), "{}", String::from_utf8_lossy(json));
        }
    }
}
