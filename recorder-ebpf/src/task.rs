//! The current task: its mount namespace (the filter's key) and its descriptor table.

use recorder_common::walk;

use crate::{
    kernel::{load, walk_offset},
    mntns::TARGETS,
};

/// A task's mount-namespace inode; `None` for an exiting task, which has dropped its namespaces.
#[inline(always)]
pub(crate) fn mntns_of(task: *const u8) -> Option<u32> {
    // SAFETY: task is a BTF task pointer; the offsets are its fields' (see load).
    unsafe {
        let nsproxy: *const u8 = load(task, walk_offset(walk::TASK_NSPROXY) as usize);
        if nsproxy.is_null() {
            return None;
        }
        let mnt_ns: *const u8 = load(nsproxy, walk_offset(walk::NSPROXY_MNT_NS) as usize);
        if mnt_ns.is_null() {
            return None;
        }
        Some(load::<u32>(mnt_ns, walk_offset(walk::MNT_NS_INUM) as usize))
    }
}

/// The task's mount-namespace inode, if it is a target.
#[inline(always)]
pub(crate) fn target_mntns(task: *const u8) -> Option<u32> {
    let mntns = mntns_of(task)?;
    // SAFETY: the value is only checked for presence.
    unsafe { TARGETS.get(&mntns) }.map(|_| mntns)
}

/// The `struct file` open at `fd` in `task`'s descriptor table (`task` a BTF task pointer:
/// the current task's, or a tracepoint's).
///
/// `task→files→fdt` and the table's size and array are typed loads through BTF pointers, as in
/// `target_mntns`: plain loads the verifier makes fault-tolerant, where helper calls cost more.
/// The slot is read through the array as untyped kernel memory, the same kind of load.
#[inline(always)]
pub(crate) fn fd_file(task: u64, fd: i64) -> Option<u64> {
    // SAFETY: task is a BTF task pointer; files and fdt are the BTF pointers its fields hold; the
    // offsets are those fields' (see load).
    let (max_fds, fds) = unsafe {
        let files: *const u8 = load(task as *const u8, walk_offset(walk::TASK_FILES) as usize);
        if files.is_null() {
            return None;
        }
        let fdt: *const u8 = load(files, walk_offset(walk::FILES_FDT) as usize);
        if fdt.is_null() {
            return None;
        }
        (
            load::<u32>(fdt, walk_offset(walk::FDT_MAX_FDS) as usize),
            load::<*const u8>(fdt, walk_offset(walk::FDT_FD) as usize),
        )
    };
    if fd < 0 || fd >= i64::from(max_fds) {
        return None;
    }
    // SAFETY: `fds` is the table's array, which the verifier types as untrusted read-only
    // memory (a pointer to a non-struct, 6.17+), read by fault-tolerant loads; the index was
    // checked against the table size.
    let file: u64 = unsafe { load(fds, fd as usize * 8) };
    (file != 0).then_some(file)
}
