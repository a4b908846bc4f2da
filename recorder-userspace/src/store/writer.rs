//! Ingest writers: content lands in `ingest/<hash of ref>/data` and only becomes a blob
//! through an atomic rename at commit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{ContentStore, Result, StoreError, io_err};
use crate::content::Committed;
use crate::image::digest::BlobDigest;

/// An open ingest. Dropping it without committing removes the ingest.
#[derive(Debug)]
pub struct Writer {
    store: ContentStore,
    reference: String,
    dir: PathBuf,
    data: PathBuf,
    file: File,
    hasher: Sha256,
    size: u64,
    done: bool,
}

impl Writer {
    pub(super) fn open(store: &ContentStore, reference: &str) -> Result<Writer> {
        store.lock(reference)?;
        // The ingest directory is named by the ref's hash so that any ref is a safe file name.
        let dir = store
            .root
            .join("ingest")
            .join(BlobDigest::of(reference.as_bytes()).hex());
        let opened = (|| {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let ref_file = dir.join("ref");
            fs::write(&ref_file, reference).map_err(io_err("write", &ref_file))?;
            let data = dir.join("data");
            // A leftover ingest of a crashed writer is restarted from scratch.
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&data)
                .map_err(io_err("create", &data))?;
            Ok((data, file))
        })();
        let (data, file) = match opened {
            Ok(x) => x,
            Err(e) => {
                store.unlock(reference);
                return Err(e);
            }
        };
        Ok(Writer {
            store: store.clone(),
            reference: reference.to_owned(),
            dir,
            data,
            file,
            hasher: Sha256::new(),
            size: 0,
            done: false,
        })
    }

    /// The ingest's data file (not a blob until committed).
    pub fn data_path(&self) -> &Path {
        &self.data
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The ref this ingest is keyed by.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Checks size and digest, fsyncs, and renames the data into `blobs/sha256/<hex>`.
    /// On any failure the store is left as it was before the writer opened.
    pub fn commit(
        mut self,
        expected_size: Option<u64>,
        expected: Option<&BlobDigest>,
    ) -> Result<Committed> {
        let digest = BlobDigest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some(want) = expected_size
            && want != self.size
        {
            return Err(StoreError::SizeMismatch {
                reference: self.reference.clone(),
                expected: want,
                actual: self.size,
            });
        }
        if let Some(want) = expected
            && *want != digest
        {
            return Err(StoreError::DigestMismatch {
                reference: self.reference.clone(),
                expected: want.clone(),
                actual: digest,
            });
        }
        let committed = Committed {
            digest: digest.clone(),
            size: self.size,
            already_existed: false,
        };
        let target = self.store.blob_path(&digest);
        if target.exists() {
            return Ok(Committed {
                already_existed: true,
                ..committed
            });
        }
        self.file.sync_all().map_err(io_err("fsync", &self.data))?;
        fs::set_permissions(&self.data, fs::Permissions::from_mode(0o444))
            .map_err(io_err("chmod", &self.data))?;
        match rename_noreplace(&self.data, &target) {
            Ok(()) => {}
            // Someone committed the same content meanwhile: same bytes, so a success.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Ok(Committed {
                    already_existed: true,
                    ..committed
                });
            }
            Err(e) => return Err(io_err("rename", &target)(e)),
        }
        if let Some(parent) = target.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", parent))?;
        }
        tracing::debug!(%digest, size = self.size, "committed blob");
        Ok(committed)
    }
}

/// Renames without ever replacing an existing blob; falls back to a plain rename where the
/// filesystem lacks `RENAME_NOREPLACE` (the content would be identical anyway).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Err(io::ErrorKind::AlreadyExists.into()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => fs::rename(from, to),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            // Committed or abandoned, the ingest has served its purpose.
            if let Err(e) = fs::remove_dir_all(&self.dir)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %self.dir.display(), error = %crate::errors::Chain(&e), "cannot remove ingest");
            }
            self.done = true;
        }
        self.store.unlock(&self.reference);
    }
}
