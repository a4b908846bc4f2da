//! Regular files: created with their permission bits, so that most need no chmod, and their
//! data copied with runs of zeros left as holes.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use super::UnpackError;
use super::budget::{CHUNK, UnpackBudget};
use super::entry::Ctx;
use super::xattr::set_xattrs;

/// Copies an entry's data into `file`, leaving runs of zeros as holes: the tar crate hands
/// over a GNU sparse entry's data with its holes filled in, and does not expose the map, so the
/// holes are found again here, per chunk (which also makes zero-filled regular files sparse:
/// the same content, less disk).
pub(super) fn copy_sparse(
    from: &mut impl Read,
    file: &File,
    buf: &mut [u8],
    budget: &mut UnpackBudget,
    entry: &str,
) -> Result<u64, UnpackError> {
    let io = |op: &'static str| {
        move |source: io::Error| UnpackError::Io {
            entry: entry.to_owned(),
            op,
            source,
        }
    };
    let mut pos = 0u64;
    let (mut written, mut end) = (0u64, 0u64);
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match from.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("read file data")(e)),
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = &buf[..filled];
        if chunk.iter().all(|b| *b == 0) {
            budget.check_cancel()?;
        } else {
            budget.charge(filled as u64, entry)?;
            file.write_all_at(chunk, pos).map_err(io("write file"))?;
            written += filled as u64;
            end = pos + filled as u64;
        }
        pos += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    // Extends the file over a trailing hole (only then: one syscall less per file).
    if end < pos {
        file.set_len(pos).map_err(io("set file length"))?;
    }
    Ok(written)
}

/// Reads the data of an entry that fits in one chunk (on the thread that reads the tar, so
/// that a worker can write it), charging `budget` as [`copy_sparse`] would: all zeros are a
/// hole, not charged, and leave the returned data empty. Returns the data, the file's length,
/// and the bytes charged.
pub(super) fn read_small(
    from: &mut impl Read,
    size: u64,
    budget: &mut UnpackBudget,
    entry: &str,
) -> Result<(Vec<u8>, u64, u64), UnpackError> {
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(CHUNK));
    from.take(CHUNK as u64)
        .read_to_end(&mut data)
        .map_err(|source| UnpackError::Io {
            entry: entry.to_owned(),
            op: "read file data",
            source,
        })?;
    let len = data.len() as u64;
    if data.iter().all(|b| *b == 0) {
        budget.check_cancel()?;
        data = Vec::new();
        return Ok((data, len, 0));
    }
    budget.charge(len, entry)?;
    Ok((data, len, len))
}

/// Writes what [`read_small`] read into the file just created: the data, or a hole of `len`.
pub(super) fn write_small(
    file: &File,
    data: &[u8],
    len: u64,
    ctx: &Ctx<'_>,
) -> Result<(), UnpackError> {
    if !data.is_empty() {
        file.write_all_at(data, 0).map_err(ctx.io("write file"))
    } else if len > 0 {
        file.set_len(len).map_err(ctx.io("set file length"))
    } else {
        Ok(())
    }
}

/// What a regular file is given once its data is in, besides its data.
pub(super) struct FileAttrs {
    pub(super) mode: Mode,
    pub(super) owner: (Uid, Gid),
    /// Whether its parent is set-group-id (a new file takes the parent's group then).
    pub(super) parent_setgid: bool,
    pub(super) xattrs: Vec<(CString, Vec<u8>)>,
    pub(super) mtime: i64,
}

/// Creates the regular file `parent/name` with its permission bits; an entry in the way (a
/// later entry replacing an earlier one) is cleared only when the name is taken. Both save a
/// syscall per file: see [`FileCreation`].
pub(super) fn create_replacing(
    parent: &OwnedFd,
    name: &OsStr,
    mode: Mode,
    ctx: &Ctx<'_>,
) -> Result<File, UnpackError> {
    let fd = match create_file(parent, name, mode) {
        Err(Errno::EEXIST) => {
            ctx.clear(parent, name, false)?;
            create_file(parent, name, mode)
        }
        other => other,
    }
    .map_err(ctx.io("create file"))?;
    Ok(File::from(fd))
}

/// Gives a file whose data is in its owner, then its permission bits (a chown clears set-id
/// bits), then its xattrs (a chown clears security.capability), then its mtime. Returns the
/// number of xattrs set.
pub(super) fn set_file_attrs(
    file: &File,
    attrs: &FileAttrs,
    ctx: &Ctx<'_>,
) -> Result<u64, UnpackError> {
    let creation = FileCreation::get();
    let (uid, gid) = attrs.owner;
    // A new file is the creator's, or takes the group of a set-group-id parent.
    if attrs.owner != creation.owner || attrs.parent_setgid {
        nix::unistd::fchown(file, Some(uid), Some(gid)).map_err(ctx.io("chown"))?;
    }
    if creation.needs_chmod(attrs.mode) {
        nix::sys::stat::fchmod(file, attrs.mode).map_err(ctx.io("chmod"))?;
    }
    let xattrs = set_xattrs(file, &attrs.xattrs).map_err(ctx.io("set xattr"))?;
    let time = TimeSpec::new(attrs.mtime, 0);
    nix::sys::stat::futimens(file, &time, &time).map_err(ctx.io("set mtime"))?;
    Ok(xattrs)
}

/// Creates a regular file for writing, with `mode`'s permission bits (less the umask).
pub(super) fn create_file(parent: &OwnedFd, name: &OsStr, mode: Mode) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        mode & Mode::from_bits_truncate(0o777),
    )
}

/// What a file created by this process gets without being asked: its owner, and the
/// permission bits the umask takes away. Knowing them saves the `fchown` and `fchmod` of most
/// files (root-owned, 0644 or 0755, under umask 022): two of the eight syscalls a file cost.
#[derive(Clone, Copy, Debug)]
pub(super) struct FileCreation {
    pub(super) owner: (Uid, Gid),
    umask: u32,
}

impl FileCreation {
    pub(super) fn get() -> Self {
        static CREATION: std::sync::OnceLock<FileCreation> = std::sync::OnceLock::new();
        *CREATION.get_or_init(|| FileCreation {
            owner: (nix::unistd::geteuid(), nix::unistd::getegid()),
            // Read, not set and restored with umask(2): that would race with other threads.
            // Unknown (a kernel before 4.7): every bit, so every file gets its chmod.
            umask: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Umask:"))
                        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                })
                .unwrap_or(0o777),
        })
    }

    /// Whether a file created with `mode` needs a chmod to get it: set-id and sticky bits are
    /// never given at creation (and a chown clears set-id bits), and the umask's bits are not.
    pub(super) fn needs_chmod(self, mode: Mode) -> bool {
        mode.bits() & (0o7000 | self.umask) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chmod_is_needed_only_for_bits_creation_cannot_give() {
        let creation = FileCreation {
            owner: (Uid::from_raw(0), Gid::from_raw(0)),
            umask: 0o022,
        };
        // (mode, needs a chmod)
        for (mode, want) in [
            (0o644, false),
            (0o755, false),
            (0o600, false),
            (0o666, true),
            (0o775, true),
            (0o4755, true),
            (0o2755, true),
            (0o1777, true),
        ] {
            let mode = Mode::from_bits_truncate(mode);
            assert_eq!(creation.needs_chmod(mode), want, "{mode:?}");
        }
    }
}
