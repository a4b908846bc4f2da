//! The cache's locks: `flock(2)`s on files in `locks/`, released by the kernel however their
//! holder dies, and taken again when the file was removed under them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{CacheError, io_err};

/// Opens (creating) and locks `path` as `arg` says; `None` when a non-blocking lock is held
/// elsewhere. Retries when the file was removed (by [`super::LayerCache::clear`]) between the
/// open and the lock, so the lock taken is always on the file the path names.
pub(super) fn lock(path: &Path, arg: FlockArg) -> Result<Option<Flock<File>>, CacheError> {
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

/// Whether a running recorder holds the lock at `path`; one that cannot be tested counts as
/// held, so that nothing in use is ever removed.
pub(super) fn held_elsewhere(path: &Path) -> bool {
    match lock(path, FlockArg::LockExclusiveNonblock) {
        Ok(held) => held.is_none(),
        Err(_) => true,
    }
}
