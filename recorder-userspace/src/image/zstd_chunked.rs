//! zstd:chunked layers indexed from their table of contents (TOC) instead of by decompressing
//! them.
//!
//! The format is containers/storage's (`pkg/chunked`: `compressor/compressor.go`,
//! `internal/minimal/compression.go`): a tar+zstd layer whose files each start a zstd frame,
//! then zstd *skippable* frames (magic `50 2a 4d 18`, a 4-byte little-endian length, the data)
//! that decoders pass over, so the blob still decompresses to the plain tar stream. The first
//! holds the TOC, one zstd frame of JSON `{"version":1,"entries":[...]}` listing every tar
//! header in tar order, shaped as eStargz's entries (`type` reg, dir, symlink, hardlink, char,
//! block, fifo, or `chunk` for a large file's further pieces; `name`, `linkName` as in the tar;
//! `size`, `devMajor`, `devMinor`); whiteouts are the plain `.wh.` files they are in the tar.
//! Unlike eStargz's, the TOC adds no tar entry. The tar-split and footer frames after it are
//! not read (containers/storage never reads the footer either).
//!
//! The descriptor's annotations place it: `…manifest-position` is
//! `OFFSET:LENGTH:UNCOMPRESSED_LENGTH:1`, `…manifest-checksum` the sha256 of the LENGTH
//! compressed bytes at OFFSET (checked on skopeo's output: not of the JSON). The prefix is
//! `io.github.containers.zstd-chunked.` since containers/storage 1.44 and
//! `io.containers.zstd-chunked.` before (skopeo 1.9.3 writes those); both are read.
//!
//! Trust: only with both annotations (containers/storage's condition for a partial pull): the
//! manifest, verified against its digest, vouches for them, and the compressed TOC is hashed
//! before anything decompresses or parses it; a TOC that does not hash to the annotation, or
//! does not fill a skippable frame exactly (where the slow path's decoder skips it), is refused
//! and the caller decompresses the layer. The layer blob is not read, so its digest is not
//! checked here (`recorder run` checks it while unpacking; `--full-decompression` too).
//! `version` is not checked, as containers/storage does not. What the TOC cannot say exactly
//! it does not guess: a name Go's JSON encoder could not carry (not UTF-8: it writes U+FFFD)
//! makes the caller decompress the layer.
//!
//! Written by hand, as eStargz's reader is (no maintained Rust crate reads the format); the
//! entries go through eStargz's TOC reader ([`TocSeed`]), the shapes being the same.

use super::digest::BlobDigest;
use super::error::ImageError;
use super::estargz::{Build, toc_entries};
use super::index::LayerIndex;
use super::media::Compression;
use super::open::Image;

/// The annotation keys, (checksum, position): containers/storage's since 1.44, then before.
pub const ANNOTATIONS: [(&str, &str); 2] = [
    (
        "io.github.containers.zstd-chunked.manifest-checksum",
        "io.github.containers.zstd-chunked.manifest-position",
    ),
    (
        "io.containers.zstd-chunked.manifest-checksum",
        "io.containers.zstd-chunked.manifest-position",
    ),
];
/// The skippable frame's magic (0x184D2A50, little-endian) and header size.
const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const SKIPPABLE_HEADER: u64 = 8;
/// Largest compressed TOC and TOC JSON read into memory, as eStargz's (about 400 bytes of JSON
/// an entry: some 2.5 million entries).
const MAX_TOC_COMPRESSED: u64 = 512 << 20;
const MAX_TOC_JSON: u64 = 1 << 30;

/// Why a layer could not be indexed from its zstd:chunked TOC (the caller decompresses it).
#[derive(Debug, thiserror::Error)]
pub enum ChunkedTocError {
    /// An annotation is malformed, or missing, or on a layer that is not tar+zstd.
    #[error("layer {layer}: the {key} annotation {message}")]
    Annotation {
        /// The layer blob.
        layer: String,
        /// The annotation's key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The TOC could not be read from the blob source.
    #[error("layer {layer}: reading its zstd:chunked TOC")]
    Read {
        /// The layer blob.
        layer: String,
        /// The source's failure.
        #[source]
        source: ImageError,
    },
    /// The TOC is not where, or not as large as, the annotation says.
    #[error("layer {layer}: the zstd:chunked TOC {message}")]
    BadToc {
        /// The layer blob.
        layer: String,
        /// What is wrong with it.
        message: String,
    },
    /// The compressed TOC does not hash to the annotation.
    #[error(
        "layer {layer}: the zstd:chunked TOC hashes to {actual}, the manifest's annotation says {expected}"
    )]
    Mismatch {
        /// The layer blob.
        layer: String,
        /// The annotation.
        expected: String,
        /// What the compressed TOC hashes to.
        actual: String,
    },
    /// The TOC's zstd frame is corrupt.
    #[error("layer {layer}: the zstd:chunked TOC at offset {offset} does not decompress")]
    Decompress {
        /// The layer blob.
        layer: String,
        /// Where the annotation says the TOC starts.
        offset: u64,
        /// The decoder's failure.
        #[source]
        source: std::io::Error,
    },
    /// The TOC JSON does not parse, or an entry is one the index refuses.
    #[error("layer {layer}: the zstd:chunked TOC JSON is invalid")]
    Json {
        /// The layer blob.
        layer: String,
        /// The parser's (or the index's) message.
        #[source]
        source: serde_json::Error,
    },
    /// A name or link target the TOC cannot carry exactly.
    #[error("layer {layer}: the zstd:chunked TOC cannot name entry {entry:?} exactly (not UTF-8)")]
    Lossy {
        /// The layer blob.
        layer: String,
        /// The entry as the TOC writes it.
        entry: String,
    },
}

/// Where the annotation puts the TOC.
struct Position {
    offset: u64,
    length: u64,
    uncompressed: u64,
}

/// Indexes layer `i` of `image` from its zstd:chunked TOC: `Ok(None)` when the layer has no
/// zstd:chunked checksum annotation, or the source can only stream it (then reading the TOC
/// would read the whole blob anyway).
pub fn index_from_toc(image: &Image, i: usize) -> Result<Option<LayerIndex>, ChunkedTocError> {
    let (Some(layer), Some(descriptor)) = (image.layers().get(i), image.manifest().layers().get(i))
    else {
        return Ok(None);
    };
    let Some(annotations) = descriptor.annotations() else {
        return Ok(None);
    };
    let Some((key, position_key, checksum)) = ANNOTATIONS
        .iter()
        .find_map(|&(c, p)| annotations.get(c).map(|v| (c, p, v)))
    else {
        return Ok(None);
    };
    let name = layer.digest.to_string();
    let annotation = |key, message| ChunkedTocError::Annotation {
        layer: name.clone(),
        key,
        message,
    };
    let c = layer.compression;
    if c != Compression::Zstd {
        return Err(annotation(key, format!("is on a {c} layer")));
    }
    let expected: BlobDigest = checksum
        .parse()
        .map_err(|_| annotation(key, format!("{checksum:?} is not a sha256 digest")))?;
    let pos = annotations
        .get(position_key)
        .ok_or_else(|| "is missing".to_owned())
        .and_then(|v| position(v, layer.size))
        .map_err(|message| annotation(position_key, message))?;
    // Both within the blob and the limits, as `position` checked: no overflow, and the length
    // (at most MAX_TOC_COMPRESSED + 8) fits any usize this runs on.
    let (start, len) = (pos.offset - SKIPPABLE_HEADER, pos.length + SKIPPABLE_HEADER);
    let read = image.source().read_at(&layer.digest, start, len as usize);
    let read = read.map_err(|source| ChunkedTocError::Read {
        layer: name.clone(),
        source,
    })?;
    let Some(frame) = read else {
        return Ok(None);
    };
    let json = verified_json(&name, &frame, &pos, &expected)?;
    build(&name, &json).map(Some)
}

/// `OFFSET:LENGTH:UNCOMPRESSED_LENGTH:TYPE` of type 1, in a skippable frame of a blob of
/// `blob_size` bytes, within the limits.
fn position(value: &str, blob_size: u64) -> Result<Position, String> {
    let fields: Result<Vec<u64>, _> = value.split(':').map(str::parse).collect();
    let Ok(&[offset, length, uncompressed, kind]) = fields.as_deref() else {
        return Err(format!(
            "{value:?} is not OFFSET:LENGTH:UNCOMPRESSED_LENGTH:TYPE"
        ));
    };
    let end = offset.checked_add(length);
    let why = if kind != 1 {
        "names a manifest type other than 1"
    } else if length > MAX_TOC_COMPRESSED || uncompressed > MAX_TOC_JSON {
        "names a TOC over the limits (512 MiB compressed, 1 GiB of JSON)"
    } else if offset < SKIPPABLE_HEADER || end.is_none_or(|e| e > blob_size) {
        "does not leave room for a skippable frame in the blob"
    } else {
        return Ok(Position {
            offset,
            length,
            uncompressed,
        });
    };
    Err(format!("{value:?} {why} ({blob_size} bytes)"))
}

/// The TOC JSON from `frame` (its skippable frame, header included), once the compressed bytes
/// hash to `expected`; first, on this thread: 3% of the CPU time on the benchmark's 24 MB TOC.
fn verified_json(
    layer: &str,
    frame: &[u8],
    pos: &Position,
    expected: &BlobDigest,
) -> Result<Vec<u8>, ChunkedTocError> {
    let bad = |message: &str| ChunkedTocError::BadToc {
        layer: layer.to_owned(),
        message: message.to_owned(),
    };
    let (header, compressed) = frame
        .split_at_checked(SKIPPABLE_HEADER as usize)
        .ok_or_else(|| bad("was cut short"))?;
    let length = u32::try_from(pos.length).map_err(|_| bad("is over 4 GiB"))?;
    if header[..4] != SKIPPABLE_MAGIC
        || header[4..] != length.to_le_bytes()
        || compressed.len() as u64 != pos.length
    {
        return Err(bad(
            "does not fill a zstd skippable frame where the annotation says",
        ));
    }
    let actual = BlobDigest::of(compressed);
    if actual != *expected {
        return Err(ChunkedTocError::Mismatch {
            layer: layer.to_owned(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    // Sized by the annotation (at most MAX_TOC_JSON, and untouched pages cost nothing); a
    // longer TOC fails to fit, a shorter one fails the check below.
    let json = zstd::bulk::decompress(compressed, pos.uncompressed as usize).map_err(|source| {
        ChunkedTocError::Decompress {
            layer: layer.to_owned(),
            offset: pos.offset,
            source,
        }
    })?;
    if json.len() as u64 != pos.uncompressed {
        return Err(bad("is shorter than the annotation says"));
    }
    Ok(json)
}

/// The index of the entries `json` lists, in its order.
fn build(layer: &str, json: &[u8]) -> Result<LayerIndex, ChunkedTocError> {
    match toc_entries(json) {
        Ok(builder) => Ok(builder.finish()),
        Err(Build::Lossy(entry)) => Err(ChunkedTocError::Lossy {
            layer: layer.to_owned(),
            entry,
        }),
        Err(Build::Json(source)) => Err(ChunkedTocError::Json {
            layer: layer.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let cases: &[(&str, Option<[u64; 3]>)] = &[
            ("1657036:7459:30250:1", Some([1657036, 7459, 30250])),
            ("8:0:0:1", Some([8, 0, 0])),
            ("1000:1699000:2000:1", Some([1000, 1699000, 2000])),
            ("1000:1699001:2000:1", None),
            ("7:1:3:1", None),
            ("1:2:3:2", None),
            ("8:1:2000000000:1", None),
            ("1:2:3", None),
            ("1:2:3:1:5", None),
            ("-1:2:3:1", None),
            ("1:2:x:1", None),
            ("18446744073709551615:2:3:1", None),
            ("", None),
        ];
        for (value, want) in cases {
            let got = position(value, 1_700_000).ok();
            let got = got.map(|p| [p.offset, p.length, p.uncompressed]);
            assert_eq!(got, *want, "{value}");
        }
    }

    /// A skippable frame holding `data` compressed (or as it is), and its position at offset 8.
    fn frame(data: &[u8], compress: bool) -> (Vec<u8>, Position, BlobDigest) {
        let stored = compress.then(|| zstd::encode_all(data, 3).unwrap());
        let stored = stored.unwrap_or_else(|| data.to_vec());
        let mut f = SKIPPABLE_MAGIC.to_vec();
        f.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        f.extend_from_slice(&stored);
        let (length, uncompressed) = (stored.len() as u64, data.len() as u64);
        let pos = Position {
            offset: 8,
            length,
            uncompressed,
        };
        (f, pos, BlobDigest::of(&stored))
    }

    #[test]
    fn the_toc_is_taken_only_from_a_frame_that_hashes_to_the_checksum() {
        let json = br#"{"version":1,"entries":[]}"#;
        let (good, pos, sum) = frame(json, true);
        assert_eq!(verified_json("l", &good, &pos, &sum).unwrap(), json);
        let altered = |at: usize| {
            let mut f = good.clone();
            f[at] ^= 1;
            f
        };
        let n = json.len() as u64;
        let cases: &[(&str, &[u8], u64, &str)] = &[
            ("not a skippable frame", &altered(0), n, "BadToc"),
            (
                "the frame's length is not the TOC's",
                &altered(4),
                n,
                "BadToc",
            ),
            ("cut short", &good[..5], n, "BadToc"),
            ("the TOC altered", &altered(12), n, "Mismatch"),
            ("shorter than the annotation says", &good, n + 1, "BadToc"),
            (
                "longer than the annotation says",
                &good,
                n - 1,
                "Decompress",
            ),
        ];
        for (what, f, uncompressed, want) in cases {
            let uncompressed = *uncompressed;
            let err = verified_json(
                "l",
                f,
                &Position {
                    uncompressed,
                    ..pos
                },
                &sum,
            )
            .unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{what}: {err:?}");
        }
        // Hashed right but not zstd.
        let (junk, pos, sum) = frame(b"junk", false);
        let err = verified_json("l", &junk, &pos, &sum).unwrap_err();
        assert!(matches!(err, ChunkedTocError::Decompress { .. }), "{err:?}");
    }

    #[test]
    fn toc_json_builds_the_index_entry_by_entry() {
        // As skopeo 1.9.3 writes them (times and digests trimmed): names as in the tar.
        let json = br#"{"version":1,"entries":[
            {"type":"dir","name":"a/","mode":493},
            {"type":"reg","name":"a/f","size":300000,"digest":"sha256:00","offset":1,"endOffset":9,"chunkSize":70000},
            {"type":"chunk","name":"a/f","offset":9,"chunkSize":230000,"chunkOffset":70000},
            {"type":"reg","name":"a/.wh.gone"},
            {"type":"reg","name":"b/.wh..wh..opq"},
            {"type":"symlink","name":"a/l","linkName":"../x\u003c"},
            {"type":"hardlink","name":"a/h","linkName":"./a/f"},
            {"type":"char","name":"dev/null","devMajor":1,"devMinor":3},
            {"type":"fifo","name":"run/p"}
        ]}"#;
        let idx = build("l", json).unwrap();
        let got: Vec<String> = idx
            .entries()
            .map(|(p, e)| {
                let target = e.target.map(String::from_utf8_lossy);
                let path = String::from_utf8_lossy(&p).into_owned();
                format!(
                    "{path} {} {} {target:?} {:?}",
                    e.kind.as_str(),
                    e.size,
                    e.device
                )
            })
            .collect();
        let want = [
            "a dir 0 None None",
            "a/f file 300000 None None",
            "a/.wh.gone whiteout 0 None None",
            "b/.wh..wh..opq opaque 0 None None",
            r#"a/l symlink 0 Some("../x<") None"#,
            r#"a/h hardlink 0 Some("a/f") None"#,
            "dev/null char 0 None Some((1, 3))",
            "run/p fifo 0 None None",
        ];
        assert_eq!(got, want);
        assert!(idx.stats().from_toc);
        assert_eq!((idx.stats().whiteouts, idx.stats().opaques), (1, 1));
    }

    #[test]
    fn bad_toc_json_is_refused() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"version":1}"#, "Json"),
            (br#"{"entries":[{"name":"x","type":"socket"}]}"#, "Json"),
            (br#"{"entries":[{"name":"x\ufffd","type":"reg"}]}"#, "Lossy"),
            (
                br#"{"entries":[{"name":"x","type":"reg","size":-1}]}"#,
                "Json",
            ),
            (
                br#"{"entries":[{"name":"x","type":"reg"}]} trailing"#,
                "Json",
            ),
            (br#"[]"#, "Json"),
        ];
        for (json, want) in cases {
            let err = build("l", json).unwrap_err();
            let text = String::from_utf8_lossy(json);
            assert!(format!("{err:?}").starts_with(want), "{text}: {err:?}");
        }
    }
}
