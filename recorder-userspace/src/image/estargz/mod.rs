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
//!
//! - [`footer`]: the 51-byte footer and the TOC offset it names;
//! - [`toc`]: the TOC's gzip member, inflated to its JSON;
//! - [`entries`]: the JSON's entries streamed into a layer index.
//!
//! This file checks the pieces against each other and the annotation.

mod entries;
mod footer;
mod toc;

use super::digest::BlobDigest;
use super::error::ImageError;
use super::index::LayerIndex;
use super::open::Image;
use entries::build;
pub(in crate::image) use entries::{Build, toc_entries};
use footer::{FOOTER_SIZE, toc_offset};
use toc::{TocRead, toc_json};

/// The layer annotation holding the digest of the TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The name of the TOC's own tar entry, the layer's last.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Largest compressed TOC read into memory. The TOC of the index benchmark's 55,000-entry
/// layer is 1.6 MB compressed; this allows some 20 million entries.
const MAX_TOC_COMPRESSED: u64 = 512 << 20;

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
