//! Writing an output file the user named (`--record-out`, `--companion-out`): the way a shell
//! redirection would, but never leaving half a file behind.
//!
//! - `-` is stdout.
//! - A regular file, or nothing yet, is replaced atomically: a temporary file in the same
//!   directory, created `O_CREAT|O_EXCL|O_NOFOLLOW` with a random name (so nothing planted there
//!   is followed or overwritten), synced, then renamed over the destination.
//! - A symlink is written through, as the user named it (e.g. `/dev/stdout`, or a link into
//!   another directory): its target gets the same treatment, a device or FIFO is written in
//!   place. In a sticky world-writable directory (`/tmp`) a symlink owned by neither the caller
//!   nor the directory's owner is refused, as the kernel's `fs.protected_symlinks` refuses to
//!   follow it: someone else may have planted it.
//! - A device or FIFO is opened for writing and written, never replaced.
//!
//! [`check`] finds what would fail before any work is done.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How many times a random temporary name is tried before giving up.
const TEMP_ATTEMPTS: usize = 16;

/// Why an output path cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The path is a directory.
    #[error("{0} is a directory; give a file name")]
    IsDirectory(PathBuf),
    /// Its directory does not exist.
    #[error("{path}: the directory {dir} does not exist")]
    NoDirectory {
        /// The output path.
        path: PathBuf,
        /// Its parent.
        dir: PathBuf,
    },
    /// A symlink in a sticky world-writable directory, owned by someone else.
    #[error(
        "{path} is a symlink owned by uid {owner} in the sticky world-writable directory {dir}; \
         refusing to follow it (as fs.protected_symlinks does): give its target instead"
    )]
    ForeignSymlink {
        /// The symlink.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// The symlink's owner.
        owner: u32,
    },
    /// A filesystem call failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<OutputError> for io::Error {
    fn from(e: OutputError) -> Self {
        let kind = match &e {
            OutputError::Io { source, .. } => source.kind(),
            OutputError::ForeignSymlink { .. } => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// Whether `path` means stdout.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OutputError + use<> {
    let path = path.to_owned();
    move |source| OutputError::Io { op, path, source }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Follows `path` through symlinks to what is to be written, refusing a symlink planted by
/// someone else in a sticky world-writable directory. Returns the path to write (the real path
/// of a regular file, which is replaced there; the named path of anything else, which is opened
/// through the link, so magic links such as `/proc/self/fd/1` work) and its metadata, if it
/// exists.
fn resolve(path: &Path) -> Result<(PathBuf, Option<std::fs::Metadata>), OutputError> {
    let mut current = path.to_owned();
    // The kernel's own limit on nested symlinks (MAXSYMLINKS, 40), for dangling chains.
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((current, None)),
            Err(e) => return Err(io_err("reading", &current)(e)),
        };
        if !meta.file_type().is_symlink() {
            return Ok((current, Some(meta)));
        }
        let dir = parent_of(&current).to_owned();
        let dir_meta = std::fs::metadata(&dir).map_err(io_err("reading", &dir))?;
        let sticky_shared = dir_meta.mode() & 0o1002 == 0o1002;
        let me = nix::unistd::geteuid().as_raw();
        if sticky_shared && meta.uid() != me && meta.uid() != dir_meta.uid() {
            return Err(OutputError::ForeignSymlink {
                path: current,
                dir,
                owner: meta.uid(),
            });
        }
        match std::fs::metadata(&current) {
            Ok(followed) if followed.is_file() => {
                let real = std::fs::canonicalize(&current)
                    .map_err(io_err("resolving the link", &current))?;
                return Ok((real, Some(followed)));
            }
            Ok(followed) => return Ok((current, Some(followed))),
            // Dangling: the file is created where the link points.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let target =
                    std::fs::read_link(&current).map_err(io_err("reading the link", &current))?;
                current = if target.is_absolute() {
                    target
                } else {
                    dir.join(target)
                };
            }
            Err(e) => return Err(io_err("following the link", &current)(e)),
        }
    }
    Err(OutputError::Io {
        op: "following",
        path: path.to_owned(),
        source: io::Error::from_raw_os_error(libc::ELOOP),
    })
}

/// Checks, before any work, that `path` can be written: its directory exists, it is not a
/// directory, and no foreign symlink is in the way. `-` always can.
pub fn check(path: &Path) -> Result<(), OutputError> {
    if is_stdout(path) {
        return Ok(());
    }
    let (target, meta) = resolve(path)?;
    match meta {
        Some(meta) if meta.is_dir() => Err(OutputError::IsDirectory(path.to_owned())),
        Some(_) => Ok(()),
        None => {
            let dir = parent_of(&target);
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(OutputError::NoDirectory {
                    path: path.to_owned(),
                    dir: dir.to_owned(),
                }),
            }
        }
    }
}

/// Writes `bytes` to the output `path` (see the module's rules).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    if is_stdout(path) {
        let mut out = io::stdout().lock();
        return out
            .write_all(bytes)
            .and_then(|()| out.flush())
            .map_err(io_err("writing", path));
    }
    let (target, meta) = resolve(path)?;
    match meta {
        Some(meta) if meta.is_dir() => Err(OutputError::IsDirectory(path.to_owned())),
        Some(meta) if !meta.is_file() => {
            // A device, FIFO or socket the user named: written, never replaced.
            let mut file = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&target)
                .map_err(io_err("opening", &target))?;
            file.write_all(bytes).map_err(io_err("writing", &target))
        }
        _ => replace(&target, bytes),
    }
}

/// Replaces the regular file (or nothing) at `path` atomically.
fn replace(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let name = path.file_name().ok_or_else(|| OutputError::Io {
        op: "naming",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let dir = parent_of(path);
    let (temp, mut file) = create_temp(dir, name)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(io_err("writing", path)(e));
    }
    Ok(())
}

/// A new file `.NAME.RANDOM.tmp` in `dir`, created `O_EXCL|O_NOFOLLOW`, mode 0644 (less the
/// umask). Hand-written rather than `tempfile`'s: it needs `O_NOFOLLOW` too.
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> Result<(PathBuf, File), OutputError> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut temp = OsString::from(".");
        temp.push(name);
        temp.push(format!(".{:016x}.tmp", random_u64()));
        let temp = dir.join(temp);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
        {
            Ok(file) => {
                // create_new keeps the umask's bits; a record is for others to read too.
                let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
                return Ok((temp, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_err("creating a temporary file in", dir)(e)),
        }
    }
    Err(io_err("creating a temporary file in", dir)(
        last.unwrap_or_else(|| io::Error::other("no free name")),
    ))
}

/// 64 random bits from the kernel (getrandom); the time and pid if that fails.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into the valid, exclusively borrowed
    // `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    match n {
        8 => u64::from_ne_bytes(buf),
        _ => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, symlink};

    #[test]
    fn a_regular_file_is_replaced_and_a_symlink_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        std::fs::write(&file, b"old").unwrap();
        write(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");

        let real = dir.path().join("real");
        let link = dir.path().join("link");
        symlink(&real, &link).unwrap();
        write(&link, b"through").unwrap();
        assert!(link.is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"through");
        // No temporary file left.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn a_device_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("null");
        symlink("/dev/null", &link).unwrap();
        write(&link, b"x").unwrap();
        assert!(link.is_symlink());
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn checks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(Path::new("-")).is_ok());
        assert!(check(&dir.path().join("new")).is_ok());
        assert!(matches!(
            check(dir.path()),
            Err(OutputError::IsDirectory(_))
        ));
        assert!(matches!(
            check(&dir.path().join("missing/out")),
            Err(OutputError::NoDirectory { .. })
        ));
    }
}
