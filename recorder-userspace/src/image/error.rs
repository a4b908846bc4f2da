//! Errors of the image side: every variant names the blob or entry at fault.

use std::path::PathBuf;

/// Why an image, a blob or a layer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the image source could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A digest string is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?}: only sha256:<64 lowercase hex digits> is supported")]
    InvalidDigest(String),
    /// A blob named by a descriptor or on the command line is absent from the source.
    #[error("blob {digest} is missing from {source_name}")]
    MissingBlob {
        /// The missing blob.
        digest: String,
        /// The source searched.
        source_name: String,
    },
    /// A blob's content does not hash to its digest.
    #[error("blob {digest}: digest mismatch (content hashes to {actual})")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// What the content hashes to.
        actual: String,
    },
    /// A blob's length differs from its descriptor's size.
    #[error("blob {digest}: size mismatch (descriptor says {expected} bytes, blob has {actual})")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The size read (at least).
        actual: u64,
    },
    /// A JSON document (index, manifest, config, layout) does not parse.
    #[error("{what} {name}: invalid JSON")]
    BadJson {
        /// Which kind of document.
        what: &'static str,
        /// The blob digest or file name.
        name: String,
        /// The parser's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A blob read as a JSON document is larger than any such document should be.
    #[error("{what} {name}: invalid JSON: larger than the {limit}-byte limit for JSON documents")]
    JsonTooLarge {
        /// Which kind of document.
        what: &'static str,
        /// The blob digest.
        name: String,
        /// The limit.
        limit: u64,
    },
    /// A descriptor's media type is not one this recorder handles.
    #[error("blob {digest}: unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The blob.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// The OCI layout directory is malformed.
    #[error("OCI layout {path}: {message}")]
    BadLayout {
        /// The layout directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No manifest matches the requested reference name.
    #[error("no manifest named {name:?} in {source_name} (names present: {available})")]
    RefNotFound {
        /// The requested `org.opencontainers.image.ref.name`.
        name: String,
        /// The source searched.
        source_name: String,
        /// The names that are present.
        available: String,
    },
    /// Several manifests could be meant and nothing picks one.
    #[error("{source_name}: {message}")]
    Ambiguous {
        /// The source.
        source_name: String,
        /// What to do about it.
        message: String,
    },
    /// No manifest of an index matches the requested platform.
    #[error("index {digest}: no manifest for platform {platform} (present: {available})")]
    NoPlatform {
        /// The index blob.
        digest: String,
        /// The requested platform.
        platform: String,
        /// The platforms present.
        available: String,
    },
    /// Indexes nest deeper than any real image does.
    #[error("index {digest}: indexes nest more than {max} deep")]
    TooDeep {
        /// The innermost index.
        digest: String,
        /// The limit.
        max: usize,
    },
    /// A layer's stream could not be read through: corrupt or truncated, or cut short.
    #[error("layer {digest}")]
    BadLayer {
        /// The layer blob.
        digest: String,
        /// What went wrong.
        #[source]
        source: LayerFault,
    },
    /// A layer's uncompressed stream is not the one the image config names (`recorder run`
    /// checks it while unpacking).
    #[error(
        "layer {digest}: its uncompressed content hashes to {actual}, but the image config's \
         diff id is {expected}"
    )]
    DiffIdMismatch {
        /// The layer blob.
        digest: String,
        /// What the uncompressed stream hashes to.
        actual: String,
        /// The config's diff id.
        expected: String,
    },
    /// A tar entry has a name or link target that this recorder refuses, or its header is
    /// corrupt.
    #[error("layer {digest}, entry {entry}: {message}")]
    BadEntry {
        /// The layer blob.
        digest: String,
        /// The entry's name as stored (lossily decoded) or its ordinal.
        entry: String,
        /// What is wrong with it.
        message: String,
        /// The tar reader's error, for a corrupt header.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A layer index is out of range.
    #[error("the image has {count} layers, there is no layer {index}")]
    NoSuchLayer {
        /// The requested index.
        index: usize,
        /// How many layers there are.
        count: usize,
    },
    /// A platform string does not parse.
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    BadPlatform(String),
    /// `--platform` asked for a platform the image (a single manifest) is not built for.
    #[error(
        "manifest {digest} is for {available}, not --platform {platform}; drop --platform or \
         give {available}"
    )]
    PlatformMismatch {
        /// The manifest.
        digest: String,
        /// The requested platform.
        platform: String,
        /// The image config's platform.
        available: String,
    },
    /// An indexing thread panicked; a bug, reported rather than propagated.
    #[error("indexing thread for layer {0} panicked")]
    WorkerPanicked(usize),
}

/// Why a layer's stream stopped short ([`ImageError::BadLayer`]).
#[derive(Debug, thiserror::Error)]
pub enum LayerFault {
    /// The zstd decoder could not be set up.
    #[error("cannot start zstd decoder")]
    ZstdStart(#[source] std::io::Error),
    /// The stream ends before its end.
    #[error("truncated stream")]
    Truncated(#[source] std::io::Error),
    /// The decoder or the tar reader failed; the cause says how, and is all there is to say.
    #[error(transparent)]
    Read(std::io::Error),
    /// Indexing stopped because another layer failed.
    #[error("cancelled")]
    Cancelled,
}

/// Result of the image side.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn layer_errors_chain_their_cause_once() {
        let bad_layer = |source| ImageError::BadLayer {
            digest: "sha256:d".into(),
            source,
        };
        for (error, want) in [
            (
                bad_layer(LayerFault::Truncated(io::ErrorKind::UnexpectedEof.into())),
                "layer sha256:d: truncated stream: unexpected end of file",
            ),
            (
                bad_layer(LayerFault::Read(io::Error::other("corrupt deflate stream"))),
                "layer sha256:d: corrupt deflate stream",
            ),
            (
                bad_layer(LayerFault::ZstdStart(io::Error::other("no memory"))),
                "layer sha256:d: cannot start zstd decoder: no memory",
            ),
            (
                bad_layer(LayerFault::Cancelled),
                "layer sha256:d: cancelled",
            ),
            (
                ImageError::BadEntry {
                    digest: "sha256:d".into(),
                    entry: "#2".into(),
                    message: "corrupt tar".into(),
                    source: Some(io::Error::other("checksum")),
                },
                "layer sha256:d, entry #2: corrupt tar: checksum",
            ),
        ] {
            assert_eq!(crate::errors::Chain(&error).to_string(), want);
        }
    }
}
