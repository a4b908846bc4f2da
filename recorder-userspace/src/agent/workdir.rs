//! The scratch space of `recorder run`: a directory of its own holding the unpacked layers
//! and the sandbox's upper dir, removed on every way out, by a [`Watchdog`] if the recorder
//! is killed.
//!
//! The directory is 0700 under an unpredictable name (`tempfile`): the image's files, its
//! setuid binaries and device nodes included, are reachable by root only, and nobody can plant
//! the directory (or a symlink in its place) before the run.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::sandbox::Watchdog;

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
