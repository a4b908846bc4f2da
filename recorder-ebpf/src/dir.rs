//! The directory a relative path starts from (the working directory or a dirfd), walked up to
//! the task's root as the kernel's `d_path` would, crossing mount points. Only for
//! `recorder trace`, which shows the path argument as passed.

use aya_ebpf::helpers::generated;
use recorder_common::{AT_FDCWD, DIR_OK, DIR_UNRESOLVED, EventBuf, PATH_MAX, walk};

use crate::{
    WALK,
    kernel::{kread, walk_offset},
    task::fd_file,
};

/// One step up a dentry chain: the parent, and this dentry's name (length, pointer).
///
/// `d_parent` and `d_name` (`hash`, `len`, `name`) are adjacent in `struct dentry` (userspace
/// checks this against BTF before loading), so one 24-byte read serves a whole step where
/// three reads did.
#[inline(always)]
pub(crate) fn dentry_step(dentry: u64) -> Option<(u64, usize, u64)> {
    // [d_parent, d_name.hash | d_name.len << 32, d_name.name]
    let [parent, hash_len, name] = kread::<[u64; 3]>(dentry, walk::DENTRY_PARENT)?;
    // A name is at most NAME_MAX (255) bytes; the mask also shows the verifier the bound.
    Some((parent, ((hash_len >> 32) & 0xff) as usize, name))
}

/// Writes `/NAME` (the kernel string at `name`, `len` bytes) in front of what the walk wrote so
/// far, which ends at PATH_MAX in `out`; moves `pos` to its start. False when it does not fit.
#[inline(always)]
pub(crate) fn prepend(
    out: &mut [u8; 2 * PATH_MAX],
    pos: &mut usize,
    len: usize,
    name: u64,
) -> bool {
    if len + 1 > *pos {
        return false;
    }
    *pos -= len + 1;
    let at = *pos & (PATH_MAX - 1);
    out[at] = b'/';
    // SAFETY: at + 1 + len < 2 * PATH_MAX, inside the buffer; the helper validates `name`.
    unsafe {
        generated::bpf_probe_read_kernel(
            out.as_mut_ptr().add(at + 1).cast(),
            len as u32,
            name as *const _,
        )
    };
    true
}

/// Where a relative path starts: the working directory, or the directory open at `dirfd`.
#[inline(always)]
pub(crate) fn start_of_walk(task: u64, dirfd: i32) -> Option<(u64, u64)> {
    let path = if dirfd == AT_FDCWD {
        let fs: u64 = kread(task, walk::TASK_FS)?;
        fs + walk_offset(walk::FS_PWD)
    } else {
        fd_file(task, i64::from(dirfd))? + walk_offset(walk::FILE_PATH)
    };
    Some((
        kread(path, walk::PATH_MNT)?,
        kread(path, walk::PATH_DENTRY)?,
    ))
}

/// Writes the absolute path (inside the task's root) of the directory a relative path starts
/// from after the path in `buf`, as the kernel's d_path would, crossing mount points.
#[inline(always)]
pub(crate) fn append_dir(buf: &mut EventBuf, task: *const u8, dirfd: i32) {
    buf.header.dir_status = DIR_UNRESOLVED;
    let task = task as u64;
    let Some(fs) = kread::<u64>(task, walk::TASK_FS) else {
        return;
    };
    let root = fs + walk_offset(walk::FS_ROOT);
    let (Some(root_mnt), Some(root_dentry)) = (
        kread::<u64>(root, walk::PATH_MNT),
        kread::<u64>(root, walk::PATH_DENTRY),
    ) else {
        return;
    };
    let Some((mut mnt, mut dentry)) = start_of_walk(task, dirfd) else {
        return;
    };
    let Some(out) = WALK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let out = unsafe { &mut *out };
    // Components are written backwards, ending at PATH_MAX.
    let mut pos = PATH_MAX;
    let mut done = false;
    // One component per step. A mount crossing happens inside the step, before its component,
    // so both paths rejoin within the step: a `continue` instead would double the paths the
    // verifier explores at every step and exceed its limit long before MAX_DEPTH.
    for _ in 0..walk::MAX_DEPTH {
        if dentry == root_dentry && mnt == root_mnt {
            done = true;
            break;
        }
        let Some(mnt_root) = kread::<u64>(mnt, walk::VFSMOUNT_ROOT) else {
            break;
        };
        if dentry == mnt_root {
            // At the root of a mount: go on from where it is mounted.
            let mount = mnt - walk_offset(walk::MOUNT_MNT);
            let (Some(parent), Some(mountpoint)) = (
                kread::<u64>(mount, walk::MOUNT_PARENT),
                kread::<u64>(mount, walk::MOUNT_MOUNTPOINT),
            ) else {
                break;
            };
            if parent == mount {
                // The namespace's root mount: the task's root is not above this directory.
                done = true;
                break;
            }
            dentry = mountpoint;
            mnt = parent + walk_offset(walk::MOUNT_MNT);
            if dentry == root_dentry && mnt == root_mnt {
                done = true;
                break;
            }
        }
        let Some((parent, len, name)) = dentry_step(dentry) else {
            break;
        };
        if parent == dentry {
            done = true;
            break;
        }
        if !prepend(out, &mut pos, len, name) {
            break;
        }
        dentry = parent;
    }
    if !done {
        return;
    }
    if pos == PATH_MAX {
        // The directory is the root itself.
        pos -= 1;
        out[pos & (PATH_MAX - 1)] = b'/';
    }
    let dir_len = PATH_MAX - pos;
    let path_len = buf.header.path_len as usize;
    if dir_len >= PATH_MAX || path_len >= PATH_MAX {
        return;
    }
    // SAFETY: both ranges lie inside their buffers (lengths below PATH_MAX, masked for the
    // verifier); the source is kernel memory of this program's own map.
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            buf.strings
                .as_mut_ptr()
                .add(path_len & (PATH_MAX - 1))
                .cast(),
            (dir_len & (PATH_MAX - 1)) as u32,
            out.as_ptr().add(pos & (PATH_MAX - 1)).cast(),
        )
    };
    if copied == 0 {
        buf.header.dir_len = dir_len as u16;
        buf.header.dir_status = DIR_OK;
    }
}
