//! What the cache holds, and removing it: listings for `recorder gc --cache`, clearing, and
//! eviction of the least recently used entries no running recorder uses (`--cache-max`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::FlockArg;

use super::lock::{held_elsewhere, lock};
use super::{CacheError, LayerCache, MARKER, io_err, read_marker, remove_tree};

/// How long before the least recently used layer's last use a stored index is kept by
/// [`LayerCache::evict_to`] (see there).
const INDEX_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

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
            let in_use = held_elsewhere(&self.lock_path(key_of(&name), "make"));
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
        let in_use = held_elsewhere(&self.lock_path(key, "use"));
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
        let listed = self.entries()?;
        let total: u64 = listed.iter().map(|e| e.bytes).sum();
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
        // (while the layers of a large image unpack), and those indexes must stay. The layers
        // left are the ones listed above less the ones removed: no second listing.
        let oldest_kept = listed
            .iter()
            .filter(|e| e.complete && !removal.removed.iter().any(|r| r.path == e.path))
            .filter_map(|e| e.last_use)
            .min()
            .map_or_else(SystemTime::now, |secs| {
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
            });
        self.remove_indexes(Some(oldest_kept - INDEX_GRACE))?;
        Ok(removal)
    }

    /// Removes the half-made entries of makers that died (killed while unpacking), leaving
    /// every complete entry and every entry being made.
    pub fn sweep_dead_makers(&self) -> Result<Removal, CacheError> {
        self.remove_while(|e| !e.complete)
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
            let key = key_of(&name).to_owned();
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

/// The key an entry's name starts with (`HEX` of `HEX` and of `tmp/HEX.RANDOM`).
fn key_of(name: &str) -> &str {
    name.split('.').next().unwrap_or_default()
}

fn mtime_secs(path: &Path) -> Option<u64> {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}
