//! Where blobs come from: the [`BlobSource`] trait and the directory-backed sources.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::digest::{BlobDigest, VerifyingReader, read_all_verified};
use super::error::{ImageError, Result};

/// Largest JSON document (index, manifest, config) read into memory.
pub const MAX_JSON_BLOB: u64 = 16 << 20;

/// A reader of a blob that fails at EOF unless the content matches its digest.
pub type BlobReader = VerifyingReader<Box<dyn Read + Send>>;

/// A content-addressed store of blobs; implement `open_unverified`, callers use `open`.
pub trait BlobSource: Send + Sync {
    /// A name for messages (a directory, a store address).
    fn name(&self) -> String;

    /// The raw bytes of a blob, unchecked; [`ImageError::MissingBlob`] if absent.
    fn open_unverified(&self, digest: &BlobDigest) -> Result<Box<dyn Read + Send>>;

    /// The blob, verified against `digest` (and `size` if known) when read to EOF.
    fn open(&self, digest: &BlobDigest, size: Option<u64>) -> Result<BlobReader> {
        Ok(VerifyingReader::new(
            self.open_unverified(digest)?,
            digest.clone(),
            size,
        ))
    }

    /// `len` bytes of a blob from `offset`, unverified (the caller verifies what it reads by
    /// other means, as the eStargz TOC digest); `None` when this source can only stream blobs
    /// from their start, so that reading a range would cost as much as reading it all.
    fn read_at(&self, digest: &BlobDigest, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
        let _ = (digest, offset, len);
        Ok(None)
    }

    /// A small blob (a JSON document), read whole and verified.
    fn read_small(&self, digest: &BlobDigest, size: Option<u64>) -> Result<Vec<u8>> {
        read_all_verified(self.open(digest, size)?, MAX_JSON_BLOB)
    }
}

/// Blobs under `<root>/blobs/sha256/<hex>`: the layout of both OCI image layouts and
/// containerd's local content store.
#[derive(Debug, Clone)]
pub struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    /// Blobs of the directory `root` (which holds `blobs/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        BlobDir { root: root.into() }
    }

    /// The directory holding `blobs/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn blob_path(&self, digest: &BlobDigest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }
}

impl BlobSource for BlobDir {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn open_unverified(&self, digest: &BlobDigest) -> Result<Box<dyn Read + Send>> {
        let path = self.blob_path(digest);
        match crate::files::open_regular(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ImageError::MissingBlob {
                digest: digest.to_string(),
                source_name: self.name(),
            }),
            Err(source) => Err(ImageError::Io { path, source }),
        }
    }

    fn read_at(&self, digest: &BlobDigest, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(digest);
        read_file_at(&path, offset, len)
            .map(Some)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => ImageError::MissingBlob {
                    digest: digest.to_string(),
                    source_name: self.name(),
                },
                _ => ImageError::Io { path, source },
            })
    }
}

/// `len` bytes of the regular file `path` from `offset`; a short file is `UnexpectedEof`.
pub(crate) fn read_file_at(path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = crate::files::open_regular(path)?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}
