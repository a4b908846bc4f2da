//! Content-addressed storage, below the image and record sides: digests, the verified
//! reader, and one [`Store`] interface with two implementations, the local store
//! ([`crate::store::ContentStore`], blobs under a directory) and containerd's content service
//! ([`crate::containerd::ContainerdContent`], over gRPC). containerd's own `content.Store`
//! with its `local` and `proxy` implementations is the model.
//!
//! The interface is synchronous, as the commit and the commands that use it are; the
//! containerd implementation drives its calls on the connection's runtime.

pub mod digest;

use std::collections::HashMap;
use std::time::SystemTime;

pub use digest::{BlobDigest, DigestError, VerifyingReader};

/// A blob's labels (containerd's `labels`; the local store keeps them beside the blob).
pub type Labels = HashMap<String, String>;

/// What a write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The blob's digest.
    pub digest: BlobDigest,
    /// The blob's size in bytes.
    pub size: u64,
    /// True if the blob was already in the store (containerd's AlreadyExists, a success; its
    /// labels were then merged in).
    pub already_existed: bool,
}

/// What a store knows of a blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The blob's digest.
    pub digest: BlobDigest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed, when the store knows.
    pub created: Option<SystemTime>,
    /// Its labels.
    pub labels: Labels,
}

/// Why a content store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The store has no such blob.
    #[error("blob {digest} not found in {store}")]
    NotFound {
        /// The blob.
        digest: BlobDigest,
        /// The store searched.
        store: String,
    },
    /// The blob is larger than the caller reads into memory.
    #[error("blob {digest} in {store} is larger than the {limit}-byte limit")]
    TooLarge {
        /// The blob.
        digest: BlobDigest,
        /// The store.
        store: String,
        /// The limit.
        limit: u64,
    },
    /// The implementation failed; its error says how.
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// Result of content store operations.
pub type Result<T, E = ContentError> = std::result::Result<T, E>;

/// A content store: an ingester (`commit`), a provider (`read_blob`) and a manager (`info`,
/// `walk`, `delete`), as containerd's `content.Store`.
pub trait Store: Send + Sync {
    /// A name for messages (a directory, a socket and namespace).
    fn name(&self) -> String;

    /// Writes `bytes` through the ingest `reference` and commits them with `labels`, the
    /// store checking size and digest. A blob already there counts as written and gets
    /// `labels` merged into its own.
    fn commit(&self, reference: &str, bytes: &[u8], labels: &Labels) -> Result<Committed>;

    /// A whole blob, verified against its digest, refused past `limit` bytes.
    fn read_blob(&self, digest: &BlobDigest, limit: u64) -> Result<Vec<u8>>;

    /// What the store knows of a blob; [`ContentError::NotFound`] if it has none.
    fn info(&self, digest: &BlobDigest) -> Result<Info>;

    /// Every blob carrying the label `key` (all blobs when `None`), in no particular order.
    fn walk(&self, key: Option<&str>) -> Result<Vec<Info>>;

    /// Removes a blob; [`ContentError::NotFound`] if it has none.
    fn delete(&self, digest: &BlobDigest) -> Result<()>;
}
