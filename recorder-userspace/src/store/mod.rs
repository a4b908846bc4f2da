//! A content store with containerd local-store semantics: blobs under
//! `blobs/sha256/<hex>`, written through an ingest area and committed atomically; the local
//! implementation of [`crate::content::Store`]. Labels, which containerd keeps in its
//! metadata database, are kept beside the blobs, one JSON object per labelled blob under
//! `labels/sha256/<hex>`.

mod writer;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::content::Committed;
pub use writer::Writer;

use crate::content::digest::verification_error;
use crate::content::{self, ContentError, Info, Labels};
use crate::image::digest::{BlobDigest, DigestError, VerifyingReader};
use crate::image::{BlobDir, BlobSource, ImageError};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The committed content is not the expected size.
    #[error("commit of ref {reference:?}: expected {expected} bytes, wrote {actual}")]
    SizeMismatch {
        /// The ingest ref.
        reference: String,
        /// The expected size.
        expected: u64,
        /// What was written.
        actual: u64,
    },
    /// The committed content does not hash to the expected digest.
    #[error("commit of ref {reference:?}: expected digest {expected}, content is {actual}")]
    DigestMismatch {
        /// The ingest ref.
        reference: String,
        /// The expected digest.
        expected: BlobDigest,
        /// What the content hashes to.
        actual: BlobDigest,
    },
    /// Another writer holds this ref.
    #[error("ref {0:?} is locked by another writer")]
    Locked(String),
    /// A ref that cannot name an ingest (empty).
    #[error("invalid ingest ref {0:?}")]
    BadRef(String),
    /// No such blob.
    #[error("blob {0} not found")]
    NotFound(BlobDigest),
    /// A stored blob no longer matches its digest.
    #[error("blob {digest} is corrupt")]
    Corrupt {
        /// The blob.
        digest: BlobDigest,
        /// What the check found.
        #[source]
        source: DigestError,
    },
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A content store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
    /// Refs with a live writer in this process.
    locks: Arc<Mutex<HashSet<String>>>,
}

impl ContentStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("blobs").join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        Ok(ContentStore {
            root,
            locks: Arc::default(),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives once committed.
    pub fn blob_path(&self, digest: &BlobDigest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// Where the labels of the blob with this digest are kept (when it has any).
    pub fn labels_path(&self, digest: &BlobDigest) -> PathBuf {
        self.root.join("labels").join("sha256").join(digest.hex())
    }

    /// Whether the blob is committed.
    pub fn exists(&self, digest: &BlobDigest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Starts (or restarts) the ingest named `reference`; only one writer per ref at a time.
    pub fn writer(&self, reference: &str) -> Result<Writer> {
        if reference.is_empty() {
            return Err(StoreError::BadRef(reference.to_owned()));
        }
        Writer::open(self, reference)
    }

    /// Writes `data` under `reference` and commits it, checking `expected` if given.
    pub fn put(
        &self,
        reference: &str,
        data: &[u8],
        expected: Option<&BlobDigest>,
    ) -> Result<Committed> {
        let mut w = self.writer(reference)?;
        io::Write::write_all(&mut w, data).map_err(io_err("write", w.data_path()))?;
        w.commit(Some(data.len() as u64), expected)
    }

    /// A reader of a committed blob that fails at EOF unless it matches its digest.
    pub fn open_blob(&self, digest: &BlobDigest) -> Result<VerifyingReader<File>> {
        let path = self.blob_path(digest);
        match crate::files::open_regular(&path) {
            Ok(f) => Ok(VerifyingReader::new(f, digest.clone(), None)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    /// A whole committed blob, verified, refused past `limit` bytes (for documents such as
    /// records, which a command reads into memory).
    pub fn read_capped(&self, digest: &BlobDigest, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let size = fs::metadata(&path).map_err(io_err("stat", &path))?.len();
        if size > limit {
            return Err(StoreError::Io {
                op: "read",
                path,
                source: crate::files::FileRefused::TooLarge(limit).into(),
            });
        }
        self.read(digest)
    }

    /// A whole committed blob, verified.
    pub fn read(&self, digest: &BlobDigest) -> Result<Vec<u8>> {
        let mut r = self.open_blob(digest)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .map_err(|e| match verification_error(e) {
                Ok(source) => StoreError::Corrupt {
                    digest: digest.clone(),
                    source,
                },
                Err(source) => StoreError::Io {
                    op: "read",
                    path: self.blob_path(digest),
                    source,
                },
            })?;
        Ok(out)
    }

    /// The labels of a blob (none if it has no labels file).
    pub fn labels(&self, digest: &BlobDigest) -> Result<Labels> {
        let path = self.labels_path(digest);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Io {
                op: "parse",
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Labels::new()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Merges `labels` into a blob's, replacing the file atomically.
    pub fn add_labels(&self, digest: &BlobDigest, labels: &Labels) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut all = self.labels(digest)?;
        all.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        let path = self.labels_path(digest);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io_err("create", dir))?;
        serde_json::to_writer(&mut file, &all)
            .map_err(|e| io_err("write", &path)(io::Error::other(e)))?;
        file.as_file().sync_all().map_err(io_err("fsync", &path))?;
        file.persist(&path)
            .map_err(|e| io_err("rename", &path)(e.error))?;
        Ok(())
    }

    /// What the store knows of a committed blob.
    pub fn info(&self, digest: &BlobDigest) -> Result<Info> {
        let path = self.blob_path(digest);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Err(StoreError::NotFound(digest.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(digest.clone()));
            }
            Err(e) => return Err(io_err("stat", &path)(e)),
        };
        Ok(Info {
            digest: digest.clone(),
            size: meta.len(),
            // The commit's rename keeps the ingest's times: its last write is the commit.
            created: meta.modified().ok(),
            labels: self.labels(digest)?,
        })
    }

    /// Every committed blob (names that are not digests are not blobs, and are skipped).
    pub fn list(&self) -> Result<Vec<Info>> {
        let dir = self.root.join("blobs").join("sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let Some(digest) = entry
                .file_name()
                .to_str()
                .and_then(|hex| format!("sha256:{hex}").parse::<BlobDigest>().ok())
            else {
                continue;
            };
            match self.info(&digest) {
                Ok(info) => out.push(info),
                // Removed meanwhile.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Removes a committed blob and its labels.
    pub fn delete(&self, digest: &BlobDigest) -> Result<()> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(digest.clone()));
            }
            Err(e) => return Err(io_err("remove", &path)(e)),
        }
        let labels = self.labels_path(digest);
        match fs::remove_file(&labels) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &labels)(e)),
            _ => Ok(()),
        }
    }

    fn lock(&self, reference: &str) -> Result<()> {
        let mut locks = self
            .locks
            .lock()
            .map_err(|_| StoreError::Locked(reference.to_owned()))?;
        if !locks.insert(reference.to_owned()) {
            return Err(StoreError::Locked(reference.to_owned()));
        }
        Ok(())
    }

    fn unlock(&self, reference: &str) {
        if let Ok(mut locks) = self.locks.lock() {
            locks.remove(reference);
        }
    }
}

impl From<StoreError> for ContentError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(digest) => ContentError::NotFound {
                digest,
                store: "the content store".to_owned(),
            },
            e => ContentError::Store(Box::new(e)),
        }
    }
}

impl content::Store for ContentStore {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn commit(&self, reference: &str, bytes: &[u8], labels: &Labels) -> content::Result<Committed> {
        let committed = self.put(reference, bytes, None)?;
        self.add_labels(&committed.digest, labels)?;
        Ok(committed)
    }

    fn read_blob(&self, digest: &BlobDigest, limit: u64) -> content::Result<Vec<u8>> {
        self.read_capped(digest, limit).map_err(|e| self.named(e))
    }

    fn info(&self, digest: &BlobDigest) -> content::Result<Info> {
        ContentStore::info(self, digest).map_err(|e| self.named(e))
    }

    fn walk(&self, key: Option<&str>) -> content::Result<Vec<Info>> {
        let mut all = self.list()?;
        if let Some(key) = key {
            all.retain(|info| info.labels.contains_key(key));
        }
        Ok(all)
    }

    fn delete(&self, digest: &BlobDigest) -> content::Result<()> {
        ContentStore::delete(self, digest).map_err(|e| self.named(e))
    }
}

impl ContentStore {
    /// A store error as a content error naming this store.
    fn named(&self, e: StoreError) -> ContentError {
        match e {
            StoreError::NotFound(digest) => ContentError::NotFound {
                digest,
                store: self.root.display().to_string(),
            },
            e => e.into(),
        }
    }
}

impl BlobSource for ContentStore {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn open_unverified(&self, digest: &BlobDigest) -> Result<Box<dyn Read + Send>, ImageError> {
        match self.open_blob(digest) {
            Ok(r) => Ok(Box::new(r)),
            Err(StoreError::NotFound(_)) => Err(ImageError::MissingBlob {
                digest: digest.to_string(),
                source_name: self.name(),
            }),
            Err(e) => Err(ImageError::Io {
                path: self.blob_path(digest),
                // The store's error, cause and all, stays the cause.
                source: io::Error::other(e),
            }),
        }
    }
    fn read_at(
        &self,
        digest: &BlobDigest,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>, ImageError> {
        BlobDir::new(&self.root).read_at(digest, offset, len)
    }
}
