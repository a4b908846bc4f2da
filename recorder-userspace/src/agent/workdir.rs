//! The scratch space of `recorder run`: a directory of its own holding the unpacked layers
//! and the sandbox's upper dir, removed on every way out, by a [`Watchdog`] if the recorder
//! is killed.
//!
//! The directory is 0700 under an unpredictable name (`tempfile`): the image's files, its
//! setuid binaries and device nodes included, are reachable by root only, and nobody can plant
//! the directory (or a symlink in its place) before the run.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use crate::content::BlobDigest;
use crate::image::{Image, ImageError};
use crate::sandbox::{
    CachedLayer, LayerCache, Lookup, UnpackBudget, UnpackError, UnpackStats, Watchdog,
    unpack_layer_within,
};

use super::AgentError;

/// A directory created for one run and removed, with everything in it, when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    watchdog: Watchdog,
    // Held for the run's life: `recorder gc` removes only the work dirs nobody holds.
    _lock: Flock<File>,
}

impl WorkDir {
    /// Creates `recorder-run-XXXXXX` (0700) under `base` (which must exist), and its watchdog.
    pub fn create(base: &Path) -> Result<Self, AgentError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix(WORK_DIR_PREFIX)
            // Explicit: tempfile's default for directories is 0777 less the umask.
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|source| AgentError::Io {
                op: format!("creating a work dir in {}", base.display()),
                source,
            })?;
        let path = dir.keep();
        let lock = match lock_dir(&path) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                let _ = std::fs::remove_dir(&path);
                return Err(AgentError::Io {
                    op: format!("locking the work dir {}", path.display()),
                    source: std::io::Error::from_raw_os_error(libc::EWOULDBLOCK),
                });
            }
            Err(source) => {
                let _ = std::fs::remove_dir(&path);
                return Err(AgentError::Io {
                    op: format!("locking the work dir {}", path.display()),
                    source,
                });
            }
        };
        let watchdog = match Watchdog::spawn(&path) {
            Ok(w) => w,
            Err(source) => {
                let _ = std::fs::remove_dir(&path);
                return Err(AgentError::Io {
                    op: "starting the work dir's watchdog".into(),
                    source,
                });
            }
        };
        Ok(Self {
            path,
            watchdog,
            _lock: lock,
        })
    }

    /// The watchdog that removes this directory if the recorder dies; give it to the sandbox.
    pub fn watchdog(&self) -> Watchdog {
        self.watchdog.clone()
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the sandbox keeps its upper dir and mount point (created by the sandbox).
    pub fn scratch(&self) -> PathBuf {
        self.path.join("sandbox")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // The unpacked layers: as many files as the image has.
        let _progress = crate::progress::Progress::spinner("removing the work dir");
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %crate::errors::Chain(&error), "removing the work dir");
        }
        self.watchdog.dismiss();
    }
}

/// An exclusive lock on directory `path`; `None` when someone else holds it.
fn lock_dir(path: &Path) -> std::io::Result<Option<Flock<File>>> {
    let dir = File::open(path)?;
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e.into()),
    }
}

/// The prefix of work dirs' names.
pub const WORK_DIR_PREFIX: &str = "recorder-run-";

/// A work dir younger than this is never taken for a dead recorder's: it may be between its
/// creation and its lock.
const WORK_DIR_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The work dirs under `base` that no live recorder holds (the recorder, and its watchdog,
/// were killed: a host crash, an OOM kill of both). With `remove`, they are removed.
pub fn stale_work_dirs(base: &Path, remove: bool) -> Result<Vec<PathBuf>, AgentError> {
    let listing = std::fs::read_dir(base).map_err(|source| AgentError::Io {
        op: format!("listing {}", base.display()),
        source,
    })?;
    let now = std::time::SystemTime::now();
    let mut stale = Vec::new();
    for entry in listing.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with(WORK_DIR_PREFIX)
        {
            continue;
        }
        let path = entry.path();
        let young = std::fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() < WORK_DIR_GRACE);
        if young {
            continue;
        }
        let Ok(Some(lock)) = lock_dir(&path) else {
            continue;
        };
        if remove {
            // The overlay of a run exists only in its container's mount namespace: nothing is
            // mounted here on the host.
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(AgentError::Io {
                        op: format!("removing the stale work dir {}", path.display()),
                        source,
                    });
                }
            }
        }
        drop(lock);
        stale.push(path);
    }
    stale.sort();
    Ok(stale)
}

/// The default `--max-unpacked`: this share of the space free where the work dir is.
pub const DEFAULT_UNPACKED_SHARE: f64 = 0.5;

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Result<u64, AgentError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| AgentError::Io {
        op: format!("statvfs {}", dir.display()),
        source: e.into(),
    })?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// The lower dirs of a run, bottom first, with the cache entries they are in held (shared
/// locks) until dropped: drop it after the workload has ended.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// The lower dirs, bottom first.
    pub dirs: Vec<PathBuf>,
    /// How many layers came from the cache as they were.
    pub hits: usize,
    held: Vec<CachedLayer>,
}

/// Unpacks every layer of `image` within `budget`, returning the lower dirs: with a `cache`,
/// into (or from) the cache, keyed by the layer's diff id; without, into `<work>/layers/<i>`.
///
/// Checked before anything is written: the layers as stored (compressed, a floor of what they
/// unpack to) must fit the budget's limit and the free space. Checked during: every byte; and
/// every layer's uncompressed stream against its diff id (a cache entry is keyed by it) and
/// its blob against its digest.
pub fn unpack_layers(
    image: &Image,
    work: &Path,
    limit: Option<u64>,
    budget: &mut UnpackBudget,
    cache: Option<&LayerCache>,
) -> Result<Unpacked, AgentError> {
    let stored: u64 = image.layers().iter().map(|l| l.size).sum();
    let into = cache.map_or(work, LayerCache::dir);
    let free = free_space(into)?;
    if let Some(limit) = limit.filter(|l| stored > *l) {
        return Err(AgentError::Unpack {
            layer: 0,
            source: UnpackError::TooLarge {
                entry: format!("(the layers are {stored} bytes as stored, before unpacking)"),
                limit,
            },
        });
    }
    if stored > free {
        return Err(AgentError::Io {
            op: format!(
                "unpacking the image into {}: its layers are {stored} bytes as stored, and only \
                 {free} are free there",
                into.display()
            ),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
    }
    let diff_ids = image.config().rootfs().diff_ids();
    let diff_ids: Option<Vec<BlobDigest>> = (diff_ids.len() == image.layers().len())
        .then(|| diff_ids.iter().map(|d| d.parse().ok()).collect())
        .flatten();
    let cache = match (cache, &diff_ids) {
        (Some(cache), Some(_)) => Some(cache),
        (Some(_), None) => {
            tracing::warn!(
                "the image config's diff ids do not match its layers (count, or not sha256): \
                 its layers are unpacked without the cache"
            );
            None
        }
        (None, _) => None,
    };
    // Layers are independent until the overlay is mounted: unpacked in parallel, one thread
    // per core at most. The budget's clones share one count.
    let count = image.layers().len();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<Layer, AgentError>>>> =
        (0..count).map(|_| Mutex::new(None)).collect();
    let diff_ids = diff_ids.as_deref();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let mut unpacker = Unpacker {
                image,
                budget: budget.clone(),
                diff_ids,
                cache,
                work,
            };
            let (next, failed, results) = (&next, &failed, &results);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    // After a failure the run is over: no more layers started.
                    if i >= count || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = unpacker.layer(i);
                    failed.fetch_or(result.is_err(), Ordering::Relaxed);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    let mut out = Unpacked::default();
    let mut first_error = None;
    for (i, slot) in results.into_iter().enumerate() {
        let result = slot.into_inner().ok().flatten().unwrap_or_else(|| {
            Err(AgentError::Io {
                op: format!("unpacking layer {i}"),
                source: std::io::Error::other("its worker ended without a result"),
            })
        });
        match result {
            Ok(layer) => {
                out.hits += usize::from(layer.hit);
                out.dirs.push(layer.dir);
                out.held.extend(layer.held);
            }
            // The first layer's error in image order, not a "not unpacked" of a later one.
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// One unpacked layer.
struct Layer {
    dir: PathBuf,
    hit: bool,
    held: Option<CachedLayer>,
}

/// One worker's unpacking of `image`'s layers, within its clone of the run's budget.
struct Unpacker<'a> {
    image: &'a Image,
    budget: UnpackBudget,
    /// The image config's diff ids, when they match its layers: each layer's uncompressed
    /// stream is checked against its own.
    diff_ids: Option<&'a [BlobDigest]>,
    /// The layer cache, keyed by diff id (so only with `diff_ids`); without it, layers go to
    /// `work`.
    cache: Option<&'a LayerCache>,
    work: &'a Path,
}

impl Unpacker<'_> {
    /// Layer `i`, from the cache (made there first if need be) or unpacked into the work dir.
    fn layer(&mut self, i: usize) -> Result<Layer, AgentError> {
        match (self.cache, self.diff_ids) {
            (Some(cache), Some(ids)) => self.cached(i, cache, &ids[i]),
            _ => self.plain(i),
        }
    }

    /// Layer `i` without the cache: into `<work>/layers/<i>`.
    fn plain(&mut self, i: usize) -> Result<Layer, AgentError> {
        let dir = self.work.join("layers").join(i.to_string());
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::Io {
            op: format!("creating {}", dir.display()),
            source,
        })?;
        self.verified(i, &dir)?;
        Ok(Layer {
            dir,
            hit: false,
            held: None,
        })
    }

    /// Layer `i` from the cache, made there first if need be.
    fn cached(
        &mut self,
        i: usize,
        cache: &LayerCache,
        diff_id: &BlobDigest,
    ) -> Result<Layer, AgentError> {
        let (held, hit) = match cache.acquire(diff_id)? {
            Lookup::Hit(held) => {
                tracing::debug!(layer = i, %diff_id, "layer cached");
                (held, true)
            }
            Lookup::Miss(making) => {
                let stats = self.verified(i, &making.root())?;
                (making.commit(stats.bytes)?, false)
            }
        };
        Ok(Layer {
            dir: held.root().to_owned(),
            hit,
            held: Some(held),
        })
    }

    /// Unpacks layer `i` into `dir`; checks its blob against its digest and, with diff ids,
    /// its uncompressed stream against its diff id.
    fn verified(&mut self, i: usize, dir: &Path) -> Result<UnpackStats, AgentError> {
        let (image, diff_id) = (self.image, self.diff_ids.map(|ids| &ids[i]));
        let layer_err = |source| AgentError::Image {
            image: format!("layer {i}"),
            source,
        };
        let mut reader = image.open_layer(i).map_err(layer_err)?;
        let mut hashing = Hashing {
            inner: &mut reader,
            hasher: Sha256::new(),
        };
        let stats = unpack_layer_within(&mut hashing, dir, &mut self.budget)
            .map_err(|source| AgentError::Unpack { layer: i, source })?;
        // The tar reader stops at the end-of-archive blocks: the rest counts towards both digests.
        let rest = std::io::copy(&mut hashing, &mut std::io::sink());
        let actual = BlobDigest::from_hasher(hashing.hasher);
        // The reader checks the layer's digest at EOF.
        rest.map_err(|e| reader.error(e)).map_err(layer_err)?;
        reader.finish().map_err(layer_err)?;
        if let Some(expected) = diff_id.filter(|d| **d != actual) {
            return Err(layer_err(ImageError::DiffIdMismatch {
                digest: image.layers()[i].digest.to_string(),
                actual: actual.to_string(),
                expected: expected.to_string(),
            }));
        }
        Ok(stats)
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
