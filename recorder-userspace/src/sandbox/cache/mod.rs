//! The layer cache of `recorder run`: each layer unpacked once, keyed by its diff id (the
//! digest of its uncompressed tar, checked while it is unpacked), and shared read-only as an
//! overlay lower dir by every later run.
//!
//! Layout of the cache dir (root-owned, 0700: the image's setuid binaries and device nodes
//! are reachable by root only, as in a run's work dir):
//!
//! ```text
//! layers/HEX/complete   the completion marker: {"diffId": "sha256:HEX", "bytes": N}; its
//!                       mtime is the entry's last use
//! layers/HEX/root/      the unpacked layer, an overlay lower dir
//! locks/HEX.use         shared by every run using the entry; exclusive to remove it
//! locks/HEX.make        exclusive while the entry is being made
//! tmp/HEX.RANDOM/       an entry being made (or removed); renamed to layers/HEX when done
//! index/BLOBHEX         the stored index of layer blob sha256:BLOBHEX (image::IndexCache);
//!                       its mtime is its last use
//! ```
//!
//! An entry is made in `tmp/` and renamed into place with its marker already written, so a
//! half-made entry (the recorder killed while unpacking) is never at `layers/HEX`; one whose
//! marker does not name its diff id is removed and made again. Locks are `flock(2)`s, released
//! by the kernel however their holder dies. A lock file removed by [`LayerCache::clear`] while
//! another process opens it is detected (the path no longer names the locked inode) and the
//! lock taken again.
//!
//! Not made durable against power loss (no fsync of the unpacked files: that would write
//! every byte of a 150 MB layer to disk before the run starts); after a crash of the host,
//! `recorder gc --cache` empties the cache.
//!
//! Here opening the cache dir and removing an entry; beside it:
//! - `entry`: taking an entry ([`LayerCache::acquire`]): a hit, or one to make ([`Making`]);
//! - `eviction`: listing entries, clearing and evicting them (`recorder gc --cache`,
//!   `--cache-max`);
//! - `lock`: the `flock(2)`s on `locks/`.

mod entry;
mod eviction;
mod lock;
#[cfg(test)]
mod tests;

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::image::IndexCache;

pub use entry::{CachedLayer, Lookup, Making};
pub use eviction::{EntryInfo, Removal};

/// The default cache dir.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/recorder/cache";

const MARKER: &str = "complete";

/// The directory of the stored layer indexes (see [`IndexCache`]).
const INDEX_DIR: &str = "index";

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache dir is not private to its owner, or not owned by this user.
    #[error(
        "layer cache {path} is {why}: it must be a directory of this user's, mode 0700 \
         (chmod 700 it, or give another --cache-dir)"
    )]
    Unsafe {
        /// The cache dir.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A file system operation failed.
    #[error("layer cache: {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError + use<> {
    let path = path.to_owned();
    move |source| CacheError::Io { op, path, source }
}

/// The completion marker's content.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Marker {
    diff_id: String,
    bytes: u64,
}

/// The layer cache in a directory.
#[derive(Clone, Debug)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// Opens the cache in `dir`, creating it (0700, and its parents) if need be. An existing
    /// dir must be this user's and 0700 (or stricter), or it is refused.
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io_err("creating", parent))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {
                // The umask may have taken bits away, never added any; set exactly 0700.
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err("chmod", dir))?;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("creating", dir)(e)),
        }
        let meta = std::fs::symlink_metadata(dir).map_err(io_err("stat", dir))?;
        let unsafe_why = if !meta.is_dir() {
            Some("not a directory".to_owned())
        } else if meta.uid() != nix::unistd::geteuid().as_raw() {
            Some(format!("owned by uid {}", meta.uid()))
        } else if meta.mode() & 0o077 != 0 {
            Some(format!("mode {:04o}", meta.mode() & 0o7777))
        } else {
            None
        };
        if let Some(why) = unsafe_why {
            return Err(CacheError::Unsafe {
                path: dir.to_owned(),
                why,
            });
        }
        for sub in ["layers", "locks", "tmp"] {
            let path = dir.join(sub);
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating", &path)(e)),
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The cache dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored indexes of the layers' blobs, beside the layers.
    pub fn indexes(&self) -> IndexCache {
        IndexCache::new(self.dir.join(INDEX_DIR))
    }

    /// Opens the cache in `dir` if there is one (as [`LayerCache::open`]); `None` if `dir`
    /// does not exist.
    pub fn open_existing(dir: &Path) -> Result<Option<Self>, CacheError> {
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", dir)(e)),
            Ok(_) => Self::open(dir).map(Some),
        }
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join("layers").join(key)
    }

    fn lock_path(&self, key: &str, kind: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{key}.{kind}"))
    }

    /// Removes an entry directory (held exclusively or found invalid under the make lock):
    /// renamed into tmp/ first, so no one ever sees it half removed.
    fn discard(&self, entry: &Path, key: &str) -> Result<(), CacheError> {
        let trash = self
            .dir
            .join("tmp")
            .join(format!("{key}.removed-{}", std::process::id()));
        remove_tree(&trash);
        std::fs::rename(entry, &trash).map_err(io_err("removing", entry))?;
        remove_tree(&trash);
        Ok(())
    }
}

fn read_marker(entry: &Path) -> Option<Marker> {
    let bytes = std::fs::read(entry.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes a tree, logging (not failing on) what cannot be removed: what is left is found
/// again, by the next maker of the same layer or by `recorder gc --cache`.
fn remove_tree(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "removing from the layer cache")
        }
    }
}
