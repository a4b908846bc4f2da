//! Taking an entry: a hit, held by a shared lock so no eviction removes it meanwhile, or a
//! miss, made by this process alone in `tmp/` under the make lock and renamed into place whole.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::lock::lock;
use super::{CacheError, LayerCache, MARKER, Marker, io_err, read_marker, remove_tree};
use crate::content::BlobDigest;

/// A cached layer, held (a shared lock) until dropped: no eviction removes it meanwhile.
#[derive(Debug)]
pub struct CachedLayer {
    root: PathBuf,
    hit: bool,
    _use: Flock<File>,
}

impl CachedLayer {
    /// The unpacked layer, to use read-only as an overlay lower dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the entry was there already (not made by this run).
    pub fn hit(&self) -> bool {
        self.hit
    }
}

/// What [`LayerCache::acquire`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The layer is cached.
    Hit(CachedLayer),
    /// The layer must be made: unpack it into [`Making::root`], then [`Making::commit`].
    Miss(Making),
}

/// An entry being made, by this process alone. Dropped without [`Making::commit`], its
/// temporary dir is removed.
#[derive(Debug)]
pub struct Making {
    tmp: PathBuf,
    entry: PathBuf,
    diff_id: BlobDigest,
    use_lock: Option<Flock<File>>,
    _make: Flock<File>,
}

impl Making {
    /// Where to unpack the layer (an empty directory).
    pub fn root(&self) -> PathBuf {
        self.tmp.join("root")
    }

    /// Marks the entry complete (`bytes` is its size, for eviction) and puts it in place.
    pub fn commit(mut self, bytes: u64) -> Result<CachedLayer, CacheError> {
        let marker = Marker {
            diff_id: self.diff_id.to_string(),
            bytes,
        };
        let path = self.tmp.join(MARKER);
        let json = serde_json::to_vec(&marker)
            .map_err(|e| io_err("writing the marker", &path)(io::Error::other(e)))?;
        std::fs::write(&path, json).map_err(io_err("writing the marker", &path))?;
        std::fs::rename(&self.tmp, &self.entry)
            .map_err(io_err("putting in place the entry", &self.entry))?;
        let Some(use_lock) = self.use_lock.take() else {
            return Err(io_err("committing the entry", &self.entry)(
                io::Error::other("committed twice"),
            ));
        };
        Ok(CachedLayer {
            root: self.entry.join("root"),
            hit: false,
            _use: use_lock,
        })
    }
}

impl Drop for Making {
    fn drop(&mut self) {
        if self.use_lock.is_some() {
            remove_tree(&self.tmp);
        }
    }
}

impl LayerCache {
    /// The layer of diff id `diff_id`: held if cached (its last use updated), else to be made
    /// by the caller. Blocks while another process makes the same entry (then uses theirs),
    /// or removes it.
    pub fn acquire(&self, diff_id: &BlobDigest) -> Result<Lookup, CacheError> {
        let key = diff_id.hex();
        let entry = self.entry(key);
        let use_path = self.lock_path(key, "use");
        let use_lock = lock(&use_path, FlockArg::LockShared)?
            .ok_or_else(|| io_err("locking", &use_path)(io::Error::from(Errno::EWOULDBLOCK)))?;
        let hit = |use_lock| {
            Lookup::Hit(CachedLayer {
                root: entry.join("root"),
                hit: true,
                _use: use_lock,
            })
        };
        if self.valid(&entry, diff_id) {
            return Ok(hit(use_lock));
        }
        let make_path = self.lock_path(key, "make");
        let make = lock(&make_path, FlockArg::LockExclusive)?
            .ok_or_else(|| io_err("locking", &make_path)(io::Error::from(Errno::EWOULDBLOCK)))?;
        // Another run may have made it while this one waited.
        if self.valid(&entry, diff_id) {
            return Ok(hit(use_lock));
        }
        // Whatever is there is invalid, and what is in tmp/ for this key is a dead maker's:
        // every maker holds the make lock.
        if entry.exists() {
            tracing::warn!(entry = %entry.display(), "removing an incomplete cache entry");
            self.discard(&entry, key)?;
        }
        self.sweep_key(key);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{key}."))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(self.dir.join("tmp"))
            .map_err(io_err("creating a temp dir in", &self.dir.join("tmp")))?
            .keep();
        let root = tmp.join("root");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&root)
            .map_err(io_err("creating", &root))?;
        Ok(Lookup::Miss(Making {
            tmp,
            entry,
            diff_id: diff_id.clone(),
            use_lock: Some(use_lock),
            _make: make,
        }))
    }

    /// Whether the entry at `entry` is complete and names `diff_id`; if so its last use is
    /// set to now.
    fn valid(&self, entry: &Path, diff_id: &BlobDigest) -> bool {
        let Some(marker) = read_marker(entry) else {
            return false;
        };
        if marker.diff_id != diff_id.to_string() || !entry.join("root").is_dir() {
            return false;
        }
        let path = entry.join(MARKER);
        let touch = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(error) = touch {
            tracing::warn!(path = %path.display(), %error, "recording the cache entry's use");
        }
        true
    }

    /// Removes `tmp/KEY.*`: the caller holds KEY's make lock, so they are a dead maker's.
    fn sweep_key(&self, key: &str) {
        let prefix = format!("{key}.");
        let Ok(dir) = std::fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                tracing::info!(path = %e.path().display(), "removing a half-made cache entry");
                remove_tree(&e.path());
            }
        }
    }
}
