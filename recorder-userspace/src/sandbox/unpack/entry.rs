//! One entry being unpacked: its errors, named after it, and what it does to a name already
//! taken (a later entry replaces an earlier one, as tar does).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, fstatat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};

use super::UnpackError;
use super::dirs::open_dir;

/// Error context for one entry.
pub(super) struct Ctx<'a> {
    pub(super) entry: &'a str,
}

impl Ctx<'_> {
    pub(super) fn io<E: Into<io::Error>>(
        &self,
        op: &'static str,
    ) -> impl FnOnce(E) -> UnpackError + use<E> {
        let entry = self.entry.to_owned();
        move |e: E| UnpackError::Io {
            entry,
            op,
            source: e.into(),
        }
    }

    pub(super) fn hostile(&self, reason: &'static str) -> UnpackError {
        UnpackError::Hostile {
            entry: self.entry.to_owned(),
            reason,
        }
    }

    pub(super) fn walk_error(&self, e: Errno) -> UnpackError {
        match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                self.hostile("a parent is a symlink or not a directory")
            }
            e => self.io("open parent directory")(e),
        }
    }

    /// Opens the directory `root/parents...` without following any symlink (for hardlink
    /// targets, which are rare enough to walk from the root).
    pub(super) fn walk(
        &self,
        root: &OwnedFd,
        parents: &[OsString],
    ) -> Result<OwnedFd, UnpackError> {
        let mut dir = root.try_clone().map_err(|source| UnpackError::Io {
            entry: self.entry.to_owned(),
            op: "dup directory fd",
            source,
        })?;
        for part in parents {
            dir = open_dir(&dir, part, false).map_err(|e| self.walk_error(e))?;
        }
        Ok(dir)
    }

    /// Removes whatever is at `name` so a later entry replaces an earlier one, as tar does.
    /// A directory is kept when the new entry is a directory too.
    pub(super) fn clear(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        new_is_dir: bool,
    ) -> Result<(), UnpackError> {
        let stat = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(self.io("stat existing entry")(e)),
        };
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir && new_is_dir {
            return Ok(());
        }
        let flag = if is_dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        unlinkat(parent, name, flag).map_err(self.io("replace existing entry"))
    }

    /// Gives the node just made at `parent/name` its owner, then its permission bits (`None`
    /// for a symlink, which has none), then its times; a symlink is never followed. The order
    /// matters: a chown clears set-id bits.
    pub(super) fn set_owner_mode_mtime(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        (uid, gid): (Uid, Gid),
        mode: Option<Mode>,
        times: &[TimeSpec; 2],
    ) -> Result<(), UnpackError> {
        fchownat(
            parent,
            name,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(self.io("chown"))?;
        if let Some(mode) = mode {
            // Only asked for a node just made here, so not a symlink: following is safe.
            fchmodat(parent, name, mode, FchmodatFlags::FollowSymlink).map_err(self.io("chmod"))?;
        }
        utimensat(
            parent,
            name,
            &times[0],
            &times[1],
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(self.io("set mtime"))
    }
}
