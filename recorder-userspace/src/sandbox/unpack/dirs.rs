//! The directories entries go in, opened relative to the layer root with `O_NOFOLLOW`, so a
//! symlink in the layer (or an earlier hostile entry) can never redirect a write outside it;
//! the parents of one entry are kept open for the next ([`DirCache`]).

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, UtimensatFlags, mkdirat, utimensat};
use nix::sys::time::TimeSpec;

use super::UnpackError;
use super::budget::UnpackBudget;
use super::entry::Ctx;

/// The open directories of the previous entry's parents, so the next entry opens only what
/// differs. Entries only ever change a name inside their parent, which is never one of the
/// directories held here for the next entry's walk (it truncates to the shared prefix first).
#[derive(Default)]
pub(super) struct DirCache {
    names: Vec<OsString>,
    /// Shared with the workers creating files in them (see `workers`).
    fds: Vec<Arc<OwnedFd>>,
    /// Whether each directory (and, first, the root) is set-group-id: a file created in one
    /// takes its group, so it needs a chown even when the entry's owner is the creator.
    setgid: Vec<bool>,
}

impl DirCache {
    /// The directory `root/parents...`, opened without following symlinks, created (0755, as
    /// tar does) where missing when `create` is set; and whether it is set-group-id.
    pub(super) fn open<'a>(
        &'a mut self,
        root: &'a Arc<OwnedFd>,
        parents: &[OsString],
        create: bool,
    ) -> Result<(&'a Arc<OwnedFd>, bool), Errno> {
        if self.setgid.is_empty() {
            self.setgid.push(is_setgid(root)?);
        }
        let common = self
            .names
            .iter()
            .zip(parents)
            .take_while(|(a, b)| a == b)
            .count();
        self.names.truncate(common);
        self.fds.truncate(common);
        self.setgid.truncate(common + 1);
        for part in &parents[common..] {
            let dir = self.fds.last().unwrap_or(root);
            let next = open_dir(dir, part, create)?;
            self.setgid.push(is_setgid(&next)?);
            self.names.push(part.clone());
            self.fds.push(Arc::new(next));
        }
        let setgid = self.setgid.last().copied().unwrap_or(false);
        Ok((self.fds.last().unwrap_or(root), setgid))
    }
}

fn is_setgid(dir: &OwnedFd) -> Result<bool, Errno> {
    Ok(nix::sys::stat::fstat(dir)?.st_mode & libc::S_ISGID != 0)
}

pub(super) fn open_dir(dir: &OwnedFd, part: &OsStr, create: bool) -> Result<OwnedFd, Errno> {
    match openat(dir, part, dir_flags(), Mode::empty()) {
        Err(Errno::ENOENT) if create => {
            match mkdirat(dir, part, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            openat(dir, part, dir_flags(), Mode::empty())
        }
        other => other,
    }
}

pub(super) fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Sets the directories' mtimes, last: they change as children are added.
pub(super) fn set_dir_times(
    root: &Arc<OwnedFd>,
    mut dir_times: Vec<(Vec<OsString>, i64)>,
    budget: &UnpackBudget,
) -> Result<(), UnpackError> {
    // Sorted, so that consecutive directories share their open parents.
    dir_times.sort();
    let mut parents_open = DirCache::default();
    for (components, mtime) in dir_times {
        budget.check_cancel()?;
        let entry =
            String::from_utf8_lossy(components.join(OsStr::new("/")).as_bytes()).into_owned();
        let ctx = Ctx { entry: &entry };
        let Some((name, parents)) = components.split_last() else {
            continue;
        };
        let parent = match parents_open.open(root, parents, false) {
            Ok((fd, _)) => fd,
            // A later entry replaced or whited out a parent: nothing to set.
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => continue,
            Err(e) => return Err(ctx.walk_error(e)),
        };
        let t = TimeSpec::new(mtime, 0);
        match utimensat(
            parent,
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
    Ok(())
}
