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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::content::BlobDigest;
use crate::image::IndexCache;

/// The default cache dir.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/recorder/cache";

const MARKER: &str = "complete";

/// The directory of the stored layer indexes (see [`IndexCache`]).
const INDEX_DIR: &str = "index";

/// How long before the least recently used layer's last use a stored index is kept by
/// [`LayerCache::evict_to`] (see there).
const INDEX_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

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

/// One entry of the cache, for listings and eviction.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryInfo {
    /// The layer's diff id (`sha256:...`), or the entry's name if it is not complete.
    pub diff_id: String,
    /// Bytes written unpacking it (file data outside holes, plus 512 per entry); 0 when
    /// incomplete.
    pub bytes: u64,
    /// When a run last used it (its marker's mtime), seconds since the epoch.
    pub last_use: Option<u64>,
    /// Whether a running recorder uses (or is making) it.
    pub in_use: bool,
    /// Whether it is a complete entry (else a leftover of a crash, or of another version).
    pub complete: bool,
    /// Its directory.
    pub path: PathBuf,
}

/// What [`LayerCache::clear`] or [`LayerCache::evict_to`] did.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removal {
    /// The entries removed.
    pub removed: Vec<EntryInfo>,
    /// The entries kept because a running recorder uses them.
    pub busy: Vec<EntryInfo>,
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

    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join("layers").join(key)
    }

    fn lock_path(&self, key: &str, kind: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{key}.{kind}"))
    }

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

    /// Every entry, complete or not, with whether it is in use; oldest use first.
    pub fn entries(&self) -> Result<Vec<EntryInfo>, CacheError> {
        let layers = self.dir.join("layers");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&layers).map_err(io_err("listing", &layers))? {
            let e = e.map_err(io_err("listing", &layers))?;
            let key = e.file_name().to_string_lossy().into_owned();
            out.push(self.info(&key, &e.path()));
        }
        let tmp = self.dir.join("tmp");
        for e in std::fs::read_dir(&tmp).map_err(io_err("listing", &tmp))? {
            let e = e.map_err(io_err("listing", &tmp))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let key = name.split('.').next().unwrap_or_default().to_owned();
            let in_use = match lock(
                &self.lock_path(&key, "make"),
                FlockArg::LockExclusiveNonblock,
            ) {
                Ok(held) => held.is_none(),
                Err(_) => true,
            };
            out.push(EntryInfo {
                diff_id: name,
                bytes: 0,
                last_use: mtime_secs(&e.path()),
                in_use,
                complete: false,
                path: e.path(),
            });
        }
        // Ordered by the last use to the nanosecond: runs a second apart or less (two runs of
        // a small image) tie in whole seconds, and a tie evicted the more recently used one.
        out.sort_by_cached_key(|i| {
            let used = std::fs::symlink_metadata(i.path.join(MARKER))
                .or_else(|_| std::fs::symlink_metadata(&i.path))
                .and_then(|m| m.modified())
                .ok();
            (i.complete, used)
        });
        Ok(out)
    }

    fn info(&self, key: &str, path: &Path) -> EntryInfo {
        let marker = read_marker(path).filter(|m| m.diff_id == format!("sha256:{key}"));
        let in_use = match lock(&self.lock_path(key, "use"), FlockArg::LockExclusiveNonblock) {
            Ok(held) => held.is_none(),
            Err(_) => true,
        };
        EntryInfo {
            diff_id: marker
                .as_ref()
                .map_or_else(|| key.to_owned(), |m| m.diff_id.clone()),
            bytes: marker.as_ref().map_or(0, |m| m.bytes),
            last_use: mtime_secs(&path.join(MARKER)).or_else(|| mtime_secs(path)),
            complete: marker.is_some(),
            in_use,
            path: path.to_owned(),
        }
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

    /// Removes every entry no running recorder uses (and the leftovers of dead ones).
    pub fn clear(&self) -> Result<Removal, CacheError> {
        let removal = self.remove_while(|_| true)?;
        self.remove_indexes(None)?;
        Ok(removal)
    }

    /// Removes the stored layer indexes last used before `before` (all with `None`).
    fn remove_indexes(&self, before: Option<SystemTime>) -> Result<(), CacheError> {
        let indexes = self.indexes();
        let removed = indexes
            .remove_unused(before)
            .map_err(io_err("removing stored indexes from", indexes.dir()))?;
        tracing::debug!(removed, "stored layer indexes removed");
        Ok(())
    }

    /// What [`LayerCache::clear`] would remove (and keep), removing nothing.
    pub fn clear_dry_run(&self) -> Result<Removal, CacheError> {
        let (busy, removed) = self.entries()?.into_iter().partition(|e| e.in_use);
        Ok(Removal { removed, busy })
    }

    /// Removes the least recently used entries no running recorder uses until the complete
    /// ones take at most `max` bytes; leftovers of dead makers are removed too.
    pub fn evict_to(&self, max: u64) -> Result<Removal, CacheError> {
        let total: u64 = self.entries()?.iter().map(|e| e.bytes).sum();
        let mut excess = total.saturating_sub(max);
        let removal = self.remove_while(move |e| {
            if !e.complete {
                return true;
            }
            if excess == 0 {
                return false;
            }
            excess = excess.saturating_sub(e.bytes);
            true
        })?;
        // The indexes (a few MB for a layer of 150 MB) go with the layers: those unused for an
        // hour before the least recently used layer left was used, all of them but the last
        // hour's when no layer is left. The hour: a run uses its indexes before its layers
        // (while the layers of a large image unpack), and those indexes must stay.
        let oldest_kept = self
            .entries()?
            .iter()
            .filter(|e| e.complete)
            .filter_map(|e| {
                std::fs::metadata(e.path.join(MARKER))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .min()
            .unwrap_or_else(SystemTime::now);
        self.remove_indexes(Some(oldest_kept - INDEX_GRACE))?;
        Ok(removal)
    }

    /// Removes the entries `pick` (called oldest use first, incomplete ones first) chooses,
    /// unless in use.
    fn remove_while(
        &self,
        mut pick: impl FnMut(&EntryInfo) -> bool,
    ) -> Result<Removal, CacheError> {
        let mut removal = Removal::default();
        for info in self.entries()? {
            if info.in_use {
                if info.complete {
                    removal.busy.push(info);
                }
                continue;
            }
            if !pick(&info) {
                continue;
            }
            let name = info
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let key = name.split('.').next().unwrap_or_default().to_owned();
            if info.path.starts_with(self.dir.join("tmp")) {
                // Under the make lock: no maker is writing it.
                let make_path = self.lock_path(&key, "make");
                let Some(make) = lock(&make_path, FlockArg::LockExclusiveNonblock)? else {
                    continue;
                };
                remove_tree(&info.path);
                drop(make);
                removal.removed.push(info);
                continue;
            }
            let use_path = self.lock_path(&key, "use");
            let Some(held) = lock(&use_path, FlockArg::LockExclusiveNonblock)? else {
                // Taken since it was listed.
                removal.busy.push(info);
                continue;
            };
            self.discard(&info.path, &key)?;
            // Removed while held: whoever opened it meanwhile sees it gone and opens anew.
            let _ = std::fs::remove_file(&use_path);
            drop(held);
            removal.removed.push(info);
        }
        Ok(removal)
    }
}

/// Opens (creating) and locks `path` as `arg` says; `None` when a non-blocking lock is held
/// elsewhere. Retries when the file was removed (by [`LayerCache::clear`]) between the open
/// and the lock, so the lock taken is always on the file the path names.
fn lock(path: &Path, arg: FlockArg) -> Result<Option<Flock<File>>, CacheError> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_err("opening the lock", path))?;
        let locked = match Flock::lock(file, arg) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(io_err("locking", path)(e.into())),
        };
        let held = locked.metadata().map_err(io_err("stat", path))?;
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok(Some(locked));
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("stat", path)(e)),
        }
    }
}

fn read_marker(entry: &Path) -> Option<Marker> {
    let bytes = std::fs::read(entry.join(MARKER)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn mtime_secs(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> BlobDigest {
        BlobDigest::of(&[n])
    }

    fn make(cache: &LayerCache, d: &BlobDigest, bytes: u64) -> CachedLayer {
        match cache.acquire(d).unwrap() {
            Lookup::Miss(m) => {
                std::fs::write(m.root().join("f"), b"x").unwrap();
                m.commit(bytes).unwrap()
            }
            Lookup::Hit(_) => panic!("{d} already cached"),
        }
    }

    #[test]
    fn an_entry_is_made_once_then_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&dir.path().join("c")).unwrap();
        let d = digest(1);
        let made = make(&cache, &d, 10);
        assert!(!made.hit());
        assert_eq!(std::fs::read(made.root().join("f")).unwrap(), b"x");
        match cache.acquire(&d).unwrap() {
            Lookup::Hit(h) => assert_eq!(h.root(), made.root()),
            Lookup::Miss(_) => panic!("not cached"),
        }
    }

    #[test]
    fn half_made_and_mismarked_entries_are_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&dir.path().join("c")).unwrap();
        let d = digest(2);
        // (what the entry holds, as a crash or another layer's marker would leave it)
        let cases: [(&str, Option<String>); 3] = [
            ("no marker", None),
            (
                "another diff id",
                Some(format!(r#"{{"diffId":"{}","bytes":1}}"#, digest(3))),
            ),
            ("garbage marker", Some("{".into())),
        ];
        for (what, marker) in cases {
            let entry = cache.entry(d.hex());
            std::fs::create_dir_all(entry.join("root")).unwrap();
            if let Some(m) = marker {
                std::fs::write(entry.join(MARKER), m).unwrap();
            }
            // A dead maker's temp dir too.
            std::fs::create_dir_all(cache.dir.join("tmp").join(format!("{}.x", d.hex()))).unwrap();
            match cache.acquire(&d).unwrap() {
                Lookup::Miss(m) => drop(m.commit(1).unwrap()),
                Lookup::Hit(_) => panic!("{what}: an invalid entry was used"),
            }
            assert_eq!(std::fs::read_dir(cache.dir.join("tmp")).unwrap().count(), 0);
            assert!(
                matches!(cache.acquire(&d).unwrap(), Lookup::Hit(_)),
                "{what}"
            );
            cache.clear().unwrap();
        }
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_never_one_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&dir.path().join("c")).unwrap();
        let (a, b, c) = (digest(4), digest(5), digest(6));
        drop(make(&cache, &a, 100));
        drop(make(&cache, &b, 100));
        let held_c = make(&cache, &c, 100);
        // a is used after b: b is the least recently used.
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        for (d, t) in [(&b, old), (&c, old)] {
            let f = File::options()
                .write(true)
                .open(cache.entry(d.hex()).join(MARKER))
                .unwrap();
            f.set_modified(t).unwrap();
        }
        let removal = cache.evict_to(150).unwrap();
        let removed: Vec<_> = removal.removed.iter().map(|e| e.diff_id.clone()).collect();
        // c is older than a too but in use; b goes, then a (still over 150 with c held).
        assert_eq!(removed, [b.to_string(), a.to_string()]);
        assert_eq!(removal.busy.len(), 1);
        assert!(held_c.root().is_dir());
        drop(held_c);
        let removal = cache.clear().unwrap();
        assert_eq!(removal.removed.len(), 1);
        assert!(cache.entries().unwrap().is_empty());
    }

    #[test]
    fn a_dir_open_to_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            LayerCache::open(&open),
            Err(CacheError::Unsafe { .. })
        ));
        let made = dir.path().join("a/b/cache");
        LayerCache::open(&made).unwrap();
        let mode = std::fs::metadata(&made).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }
}
