//! Unpacks an uncompressed OCI layer tar into a directory usable as an overlayfs lowerdir.
//!
//! Every entry is created relative to directory fds opened with `O_NOFOLLOW`, so a symlink in
//! the layer (or an earlier hostile entry) can never redirect a write outside the target.

use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use tar::EntryType;

/// OCI whiteout prefix: `.wh.NAME` deletes NAME from the layers below.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// OCI opaque marker: the directory hides everything below it.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of other AUFS metadata entries (`.wh..wh.plnk`, ...), which carry nothing for us.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The target directory could not be opened.
    #[error("opening layer directory {path}: {source}")]
    Target {
        /// The target directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tar stream itself is unreadable or corrupt.
    #[error("reading layer tar: {0}")]
    Read(#[source] io::Error),
    /// The entry's name (or link target) would escape the target or is otherwise unsafe.
    #[error("layer entry {entry:?}: rejected: {reason}")]
    Hostile {
        /// The entry's name as it appears in the tar.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The entry has a type a layer cannot contain.
    #[error("layer entry {entry:?}: unsupported entry type {kind:?}")]
    Unsupported {
        /// The entry's name.
        entry: String,
        /// The tar entry type byte.
        kind: char,
    },
    /// Creating the entry on disk failed.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        /// The entry's name.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// What [`unpack_layer`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries created (files, dirs, links, nodes).
    pub entries: u64,
    /// Whiteouts turned into overlay whiteout devices.
    pub whiteouts: u64,
    /// Directories marked opaque.
    pub opaque_dirs: u64,
}

/// Unpacks one uncompressed layer tar stream into `target` (which must exist), converting OCI
/// whiteouts to overlayfs ones. Needs root (or CAP_MKNOD, CAP_CHOWN, CAP_SYS_ADMIN for xattrs).
pub fn unpack_layer(layer: impl Read, target: &Path) -> Result<UnpackStats, UnpackError> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        target,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Target {
        path: target.to_owned(),
        source: e.into(),
    })?;
    let mut stats = UnpackStats::default();
    // Directory mtimes change as children are added, so they are set last.
    let mut dir_times: Vec<(Vec<OsString>, i64)> = Vec::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw_name = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_name).into_owned();
        let components = split_path(&raw_name).map_err(|reason| UnpackError::Hostile {
            entry: name.clone(),
            reason,
        })?;
        let Some((file_name, parents)) = components.split_last() else {
            // The layer root itself ("./"): the lowerdir's own metadata is not ours to change.
            continue;
        };
        let ctx = Ctx { entry: &name };
        let parent = ctx.walk(&root, parents, true)?;
        let file_name = file_name.as_bytes();

        if file_name == OPAQUE_MARKER {
            set_xattr(&parent, OPAQUE_XATTR, b"y").map_err(ctx.io("set opaque xattr"))?;
            stats.opaque_dirs += 1;
            continue;
        }
        if file_name.starts_with(AUFS_META_PREFIX) {
            tracing::debug!(entry = %name, "skipping AUFS metadata entry");
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(ctx.hostile("whiteout of an invalid name"));
            }
            let hidden = OsStr::from_bytes(hidden);
            ctx.clear(&parent, hidden, false)?;
            mknodat(
                &parent,
                hidden,
                SFlag::S_IFCHR,
                Mode::empty(),
                makedev(0, 0),
            )
            .map_err(ctx.io("create whiteout"))?;
            stats.whiteouts += 1;
            continue;
        }

        let file_name = OsStr::from_bytes(file_name);
        let header = entry.header();
        let mode = Mode::from_bits_truncate(header.mode().map_err(ctx.io("read mode"))? & 0o7777);
        let uid = Uid::from_raw(header.uid().map_err(ctx.io("read uid"))? as u32);
        let gid = Gid::from_raw(header.gid().map_err(ctx.io("read gid"))? as u32);
        let mtime = header.mtime().map_err(ctx.io("read mtime"))? as i64;
        let times = [TimeSpec::new(mtime, 0), TimeSpec::new(mtime, 0)];
        let kind = header.entry_type();

        match kind {
            EntryType::Directory => {
                ctx.clear(&parent, file_name, true)?;
                match mkdirat(&parent, file_name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(ctx.io("mkdir")(e)),
                }
                let dir = openat(&parent, file_name, dir_flags(), Mode::empty())
                    .map_err(ctx.io("open created directory"))?;
                fchown(&dir, Some(uid), Some(gid)).map_err(ctx.io("chown"))?;
                fchmod(&dir, mode).map_err(ctx.io("chmod"))?;
                dir_times.push((components.clone(), mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                ctx.clear(&parent, file_name, false)?;
                let fd = openat(
                    &parent,
                    file_name,
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(ctx.io("create file"))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(|source| UnpackError::Io {
                    entry: name.clone(),
                    op: "write file",
                    source,
                })?;
                // chown clears set-id bits, so it goes before chmod.
                fchown(&file, Some(uid), Some(gid)).map_err(ctx.io("chown"))?;
                fchmod(&file, mode).map_err(ctx.io("chmod"))?;
                futimens(&file, &times[0], &times[1]).map_err(ctx.io("set mtime"))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ctx.hostile("symlink without a target"))?;
                if target.contains(&0) {
                    return Err(ctx.hostile("symlink target contains NUL"));
                }
                // The target is stored, never followed here; overlayfs resolves it in the container.
                ctx.clear(&parent, file_name, false)?;
                symlinkat(OsStr::from_bytes(&target), &parent, file_name)
                    .map_err(ctx.io("create symlink"))?;
                fchownat(
                    &parent,
                    file_name,
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(ctx.io("chown"))?;
                utimensat(
                    &parent,
                    file_name,
                    &times[0],
                    &times[1],
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(ctx.io("set mtime"))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ctx.hostile("hardlink without a target"))?;
                let target = split_path(&target).map_err(|reason| ctx.hostile(reason))?;
                let Some((target_name, target_parents)) = target.split_last() else {
                    return Err(ctx.hostile("hardlink to the layer root"));
                };
                let target_dir = ctx.walk(&root, target_parents, false)?;
                ctx.clear(&parent, file_name, false)?;
                // Without AT_SYMLINK_FOLLOW, linkat links a symlink itself, never what it names.
                linkat(
                    &target_dir,
                    target_name.as_os_str(),
                    &parent,
                    file_name,
                    AtFlags::empty(),
                )
                .map_err(ctx.io("create hardlink"))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().map_err(ctx.io("read device major"))?;
                let minor = header.device_minor().map_err(ctx.io("read device minor"))?;
                let dev = makedev(u64::from(major.unwrap_or(0)), u64::from(minor.unwrap_or(0)));
                ctx.clear(&parent, file_name, false)?;
                mknodat(&parent, file_name, sflag, Mode::empty(), dev).map_err(ctx.io("mknod"))?;
                fchownat(
                    &parent,
                    file_name,
                    Some(uid),
                    Some(gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(ctx.io("chown"))?;
                // We just created it, so it is not a symlink; the umask is why mode needs setting.
                fchmodat(&parent, file_name, mode, FchmodatFlags::FollowSymlink)
                    .map_err(ctx.io("chmod"))?;
                utimensat(
                    &parent,
                    file_name,
                    &times[0],
                    &times[1],
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(ctx.io("set mtime"))?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            other => {
                return Err(UnpackError::Unsupported {
                    entry: name,
                    kind: char::from(other.as_byte()),
                });
            }
        }
        stats.entries += 1;
    }

    for (components, mtime) in dir_times {
        let entry =
            String::from_utf8_lossy(components.join(OsStr::new("/")).as_bytes()).into_owned();
        let ctx = Ctx { entry: &entry };
        let Some((name, parents)) = components.split_last() else {
            continue;
        };
        let parent = ctx.walk(&root, parents, false)?;
        let t = TimeSpec::new(mtime, 0);
        match utimensat(
            &parent,
            name.as_os_str(),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        ) {
            // A later entry may have replaced or whited out the directory.
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(ctx.io("set directory mtime")(e)),
        }
    }
    Ok(stats)
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Splits a tar name into normal components, rejecting anything that could escape.
fn split_path(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if raw.contains(&0) {
        return Err("name contains NUL");
    }
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            // Even a `..` that stays inside is refused: no legitimate layer writer emits one.
            b".." => return Err("path contains a '..' component"),
            part => out.push(OsStr::from_bytes(part).to_owned()),
        }
    }
    Ok(out)
}

/// Error context for one entry.
struct Ctx<'a> {
    entry: &'a str,
}

impl Ctx<'_> {
    fn io<E: Into<io::Error>>(&self, op: &'static str) -> impl FnOnce(E) -> UnpackError + use<E> {
        let entry = self.entry.to_owned();
        move |e: E| UnpackError::Io {
            entry,
            op,
            source: e.into(),
        }
    }

    fn hostile(&self, reason: &'static str) -> UnpackError {
        UnpackError::Hostile {
            entry: self.entry.to_owned(),
            reason,
        }
    }

    /// Opens the directory `root/parents...` without following any symlink, creating missing
    /// directories (mode 0755, as tar does) when `create` is set.
    fn walk(
        &self,
        root: &OwnedFd,
        parents: &[OsString],
        create: bool,
    ) -> Result<OwnedFd, UnpackError> {
        let mut dir = root.try_clone().map_err(|source| UnpackError::Io {
            entry: self.entry.to_owned(),
            op: "dup directory fd",
            source,
        })?;
        for part in parents {
            let next = match openat(&dir, part.as_os_str(), dir_flags(), Mode::empty()) {
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&dir, part.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.io("create parent directory")(e)),
                    }
                    openat(&dir, part.as_os_str(), dir_flags(), Mode::empty())
                }
                other => other,
            };
            dir = match next {
                Ok(fd) => fd,
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(self.hostile("a parent is a symlink or not a directory"));
                }
                Err(e) => return Err(self.io("open parent directory")(e)),
            };
        }
        Ok(dir)
    }

    /// Removes whatever is at `name` so a later entry replaces an earlier one, as tar does.
    /// A directory is kept when the new entry is a directory too.
    fn clear(&self, parent: &OwnedFd, name: &OsStr, new_is_dir: bool) -> Result<(), UnpackError> {
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
}

fn set_xattr(fd: &impl AsFd, name: &CStr, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: fd is open for the call's duration; name is NUL-terminated; value/len describe a
    // live slice. fsetxattr only reads them.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_fd().as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_accepts_normal_and_rejects_escapes() {
        assert_eq!(split_path(b"./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(split_path(b"a//./b").unwrap(), ["a", "b"]);
        assert!(split_path(b"./").unwrap().is_empty());
        assert!(split_path(b"/etc/passwd").is_err());
        assert!(split_path(b"../x").is_err());
        assert!(split_path(b"a/../../x").is_err());
        assert!(split_path(b"a\0b").is_err());
    }
}
