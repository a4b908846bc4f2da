//! A record in the input format of each lazy-pulling converter.
//!
//! Where each format is defined (read, not copied):
//! - `stargz`: the record itself, stargz-snapshotter `analyzer/recorder/recorder.go` (one
//!   `{"path","manifestDigest","layerIndex"}` object per line), read by `ctr-remote image
//!   convert --estargz-record-in` (`cmd/ctr-remote/commands/convert.go`).
//! - `paths`: one absolute path per line. nydus `nydus-image` gathers prefetch patterns "from
//!   STDIN line by line" (`src/bin/nydus-image/core/prefetch.rs`, `get_patterns`, input
//!   `printf "/path/1\n/path/2"`; `generate_patterns` trims each line and skips relative
//!   ones), which `nydusify convert --prefetch-patterns` feeds it; stargz-snapshotter's
//!   `--prefetch-list` and nydus-snapshotter's optimizer result files have the same shape. A
//!   newline inside a path cannot be written in it, nor white space around one.
//! - `nydus-optimize`: `{"version":"v1","files":[{"path":"/abs"}...]}`, the `PrefetchJson` /
//!   `PrefetchFileJson` (`path`, optional `ranges`) that nydus-builder's `optimize_prefetch.rs`
//!   deserialises for `nydusify optimize --prefetch-files`.
//! - `soci`: a JSON array of path strings, as soci-snapshotter's
//!   `cmd/soci/commands/internal/prefetch.go` (`loadPrefetchFilesFromJSON`) reads for `soci
//!   create --prefetch-files-json`; it trims each string and drops blank ones, so a path with
//!   leading or trailing white space would silently become another path.
//!
//! The text formats carry UTF-8 only (nydus reads lines into Rust `String`s, Go decodes JSON
//! strings to UTF-8), so a path that is not UTF-8 is refused by name rather than mangled.

use std::fmt;
use std::str::FromStr;

use super::RecordEntry;
use crate::image::path;

/// A converter's input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// stargz-snapshotter's record (`ctr-remote image convert --estargz-record-in`).
    Stargz,
    /// One absolute path per line (`nydusify --prefetch-patterns`, stargz `--prefetch-list`).
    Paths,
    /// `nydusify optimize --prefetch-files`.
    NydusOptimize,
    /// `soci create --prefetch-files-json`.
    Soci,
}

impl Format {
    /// Every format, in the order help lists them.
    pub const ALL: [Format; 4] = [
        Format::Stargz,
        Format::Paths,
        Format::NydusOptimize,
        Format::Soci,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Stargz => "stargz",
            Format::Paths => "paths",
            Format::NydusOptimize => "nydus-optimize",
            Format::Soci => "soci",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown format {s:?}; one of {}", names.join(", "))
            })
    }
}

/// Why a record cannot be written in a format.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The path holds a newline, which ends a line of the `paths` format.
    #[error(
        "exporting as {format}: path \"{path}\" holds a newline, which this format cannot carry"
    )]
    Newline {
        /// The format.
        format: Format,
        /// The path (lossy).
        path: String,
    },
    /// The path is not UTF-8.
    #[error("exporting as {format}: path \"{path}\" is not UTF-8, which this format cannot carry")]
    NotUtf8 {
        /// The format.
        format: Format,
        /// The path (lossy).
        path: String,
    },
    /// The consumer trims white space around each path.
    #[error(
        "exporting as {format}: path \"{path}\" begins or ends with white space, which the \
         format's readers trim"
    )]
    Whitespace {
        /// The format.
        format: Format,
        /// The path.
        path: String,
    },
}

#[derive(serde::Serialize)]
struct NydusPrefetch<'a> {
    version: &'static str,
    files: Vec<NydusFile<'a>>,
}

#[derive(serde::Serialize)]
struct NydusFile<'a> {
    path: &'a str,
}

/// `entries` (a record, first access first) written as `format` reads it.
pub fn export(entries: &[RecordEntry], format: Format) -> Result<Vec<u8>, ExportError> {
    if format == Format::Stargz {
        let mut out = Vec::with_capacity(entries.len() * 128);
        for e in entries {
            e.write_json(&mut out);
        }
        return Ok(out);
    }
    let paths = absolute_paths(entries, format)?;
    let mut out = match format {
        Format::Paths => {
            let mut out = Vec::new();
            for p in &paths {
                out.extend_from_slice(p.as_bytes());
                out.push(b'\n');
            }
            return Ok(out);
        }
        Format::NydusOptimize => serde_json::to_vec(&NydusPrefetch {
            version: "v1",
            files: paths.iter().map(|p| NydusFile { path: p }).collect(),
        }),
        Format::Soci => serde_json::to_vec(&paths),
        Format::Stargz => Ok(Vec::new()),
    }
    // Serialising strings cannot fail.
    .unwrap_or_default();
    out.push(b'\n');
    Ok(out)
}

fn absolute_paths(entries: &[RecordEntry], format: Format) -> Result<Vec<String>, ExportError> {
    entries
        .iter()
        .map(|e| {
            let cleaned = path::clean(&e.path);
            let shown = format!("/{}", path::display(&cleaned));
            if cleaned.contains(&b'\n') {
                return Err(ExportError::Newline {
                    format,
                    path: shown,
                });
            }
            let text = String::from_utf8(cleaned).map_err(|_| ExportError::NotUtf8 {
                format,
                path: shown.clone(),
            })?;
            if matches!(format, Format::Soci | Format::Paths) && text.trim() != text {
                return Err(ExportError::Whitespace {
                    format,
                    path: shown,
                });
            }
            Ok(format!("/{text}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(paths: &[&[u8]]) -> Vec<RecordEntry> {
        paths
            .iter()
            .map(|p| RecordEntry {
                path: p.to_vec(),
                manifest_digest: "sha256:m".into(),
                layer_index: Some(1),
            })
            .collect()
    }

    #[test]
    fn writes_each_format() {
        let e = entries(&[b"usr/bin/x", b"etc/a \"b\""]);
        let cases: &[(Format, &str)] = &[
            (
                Format::Stargz,
                "{\"path\":\"usr/bin/x\",\"manifestDigest\":\"sha256:m\",\"layerIndex\":1}\n\
                 {\"path\":\"etc/a \\\"b\\\"\",\"manifestDigest\":\"sha256:m\",\"layerIndex\":1}\n",
            ),
            (Format::Paths, "/usr/bin/x\n/etc/a \"b\"\n"),
            (
                Format::NydusOptimize,
                "{\"version\":\"v1\",\"files\":[{\"path\":\"/usr/bin/x\"},{\"path\":\"/etc/a \\\"b\\\"\"}]}\n",
            ),
            (Format::Soci, "[\"/usr/bin/x\",\"/etc/a \\\"b\\\"\"]\n"),
        ];
        for (format, want) in cases {
            let got = export(&e, *format).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), *want, "{format}");
        }
    }

    #[test]
    fn refuses_what_a_format_cannot_carry() {
        let cases: &[(&[u8], Format, &str)] = &[
            (b"a\nb", Format::Paths, "newline"),
            (b"a\nb", Format::Soci, "newline"),
            (b"bad\xff", Format::NydusOptimize, "not UTF-8"),
            (b"tail ", Format::Soci, "white space"),
            (b"tail\t", Format::Paths, "white space"),
        ];
        for (p, format, what) in cases {
            let err = export(&entries(&[b"ok", p]), *format)
                .unwrap_err()
                .to_string();
            assert!(err.contains(what), "{err}");
            // Named once, its control characters escaped by path::display.
            assert!(err.contains(&path::display(p)), "{err}");
        }
        // The record itself escapes them.
        assert!(export(&entries(&[b"a\nb", b"bad\xff"]), Format::Stargz).is_ok());
        assert_eq!("soci".parse::<Format>(), Ok(Format::Soci));
        assert!(
            "tar"
                .parse::<Format>()
                .unwrap_err()
                .contains("nydus-optimize")
        );
    }
}
