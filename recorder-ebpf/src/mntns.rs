//! The mount-namespace filter's growth from the kernel: a traced task's `unshare(CLONE_NEWNS)`
//! and clone of a new namespace (`sched_process_fork`, BTF, 5.5+) join it without a round trip to
//! userspace, and while userspace waits for a container (`CATCH_RUNC`) each namespace runc
//! makes joins it as it is made.

use aya_ebpf::{
    bindings::BPF_ANY,
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use recorder_common::{
    AT_FDCWD, Counter, EventKind, MAX_IN_FLIGHT, MAX_TARGETS, MNTNS_CAUGHT, walk,
};

use crate::{
    ARG0, RET, SCRATCH,
    kernel::{arg, current_task, load, walk_offset},
    record::{count, emit, fill_header},
    task::{mntns_of, target_mntns},
};

/// Element 0 non-zero: userspace waits for a container to be created, and each mount namespace
/// a runc task makes joins the filter as it is made (see `catch`). A map, not a constant like
/// the globals above: userspace turns it on and off while the programs run.
#[map]
pub(crate) static CATCH_RUNC: Array<u32> = Array::with_max_entries(1, 0);

/// Mount namespaces being traced (inode → 1 armed by userspace, 2 joined from the kernel).
#[map]
pub(crate) static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// A traced task's `unshare(CLONE_NEWNS)` between entry and exit: thread id → the namespace it
/// came from.
#[map]
pub(crate) static UNSHARING: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IN_FLIGHT, 0);

/// Marks a namespace joined from the kernel in `TARGETS`.
pub(crate) const JOINED: u8 = 2;

/// Marks a namespace caught from runc in `TARGETS` (see `catch`).
pub(crate) const CAUGHT: u8 = 3;

/// `runc:[`, the start of the comm runc's nsexec gives each of its init stages
/// (`runc:[0:PARENT]`, `runc:[1:CHILD]`, `runc:[2:INIT]`), as the low 6 bytes of a word.
pub(crate) const RUNC_COMM: u64 = u64::from_le_bytes(*b"runc:[\0\0");

/// `CLONE_NEWNS`.
pub(crate) const CLONE_NEWNS: u64 = 0x0002_0000;

#[tracepoint]
pub fn sys_enter_unshare(ctx: TracePointContext) -> u32 {
    let flags = arg::<u64>(&ctx, ARG0);
    if flags & CLONE_NEWNS == 0 {
        return 0;
    }
    let task = current_task();
    let Some(mntns) = target_mntns(task).or_else(|| runc_mntns(task)) else {
        return 0;
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    if UNSHARING.insert(&tid, &mntns, BPF_ANY as u64).is_err() {
        count(Counter::InFlightFull);
    }
    0
}

#[tracepoint]
pub fn sys_exit_unshare(ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: a plain value copied out at once.
    let Some(parent) = (unsafe { UNSHARING.get(&tid) }).copied() else {
        return 0;
    };
    let _ = UNSHARING.remove(&tid);
    if arg::<i64>(&ctx, RET) != 0 {
        return 0;
    }
    let task = current_task();
    if let Some(mntns) = mntns_of(task) {
        // SAFETY: the value is only checked for presence.
        if unsafe { TARGETS.get(&parent) }.is_some() {
            join(task, task, mntns, parent);
        } else if catching() {
            // A runc task (see sys_enter_unshare); not a target disarmed meanwhile.
            catch(task, task, mntns, parent);
        }
    }
    0
}

/// A new task whose parent is traced and which has a mount namespace of its own
/// (`clone(CLONE_NEWNS)`, with or without a user namespace) takes the filter with it.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let parent_task = current_task();
    let (parent, traced) = match target_mntns(parent_task) {
        Some(parent) => (parent, true),
        None => match runc_mntns(parent_task) {
            Some(parent) => (parent, false),
            None => return 0,
        },
    };
    // The prototype is (struct task_struct *parent, struct task_struct *child).
    let child: *const u8 = ctx.arg(1);
    if let Some(mntns) = mntns_of(child)
        && mntns != parent
    {
        if traced {
            join(parent_task, child, mntns, parent);
        } else {
            catch(parent_task, child, mntns, parent);
        }
    }
    0
}

/// The mount namespace of `task`, a runc init stage, while userspace waits for a container.
#[inline(always)]
pub(crate) fn runc_mntns(task: *const u8) -> Option<u32> {
    if !catching() {
        return None;
    }
    // SAFETY: task is a BTF task pointer and comm its 16-byte array (see fill_header).
    let comm: u64 = unsafe { load(task, walk_offset(walk::TASK_COMM) as usize) };
    if comm & 0xffff_ffff_ffff != RUNC_COMM {
        return None;
    }
    mntns_of(task)
}

/// Whether userspace waits for a container (see `CATCH_RUNC`).
#[inline(always)]
pub(crate) fn catching() -> bool {
    CATCH_RUNC.get(0).is_some_and(|on| *on != 0)
}

/// While userspace waits for a container, runc task `task` made mount namespace `mntns` (its
/// own, or `member`'s): it joins the filter now, before runc can execute anything in it, and
/// userspace buffers its events until it knows which container's it is. Unlike [`join`], it
/// reports it as caught, and userspace starts a buffer afresh under its number, which may be a
/// dead namespace's (the kernel reuses the lowest free one).
#[inline(always)]
pub(crate) fn catch(task: *const u8, member: *const u8, mntns: u32, parent: u32) {
    if TARGETS.insert(&mntns, &CAUGHT, BPF_ANY as u64).is_err() {
        count(Counter::TargetsFull);
        return;
    }
    report_mntns(task, member, mntns, parent, MNTNS_CAUGHT);
}

/// Adds namespace `mntns`, made by a traced task from `parent`, to the filter and tells
/// userspace (which pins it) through a [`EventKind::MntNs`] record naming `member`, a task in it.
#[inline(always)]
pub(crate) fn join(task: *const u8, member: *const u8, mntns: u32, parent: u32) {
    // The namespace was just made: an entry under its number was left by a dead one (the
    // kernel reuses the lowest free number, e.g. a caught namespace's), and is replaced.
    if TARGETS.insert(&mntns, &JOINED, BPF_ANY as u64).is_err() {
        count(Counter::TargetsFull);
        return;
    }
    count(Counter::NestedNamespaces);
    report_mntns(task, member, mntns, parent, 0);
}

/// Tells userspace that `mntns`, made from `parent`, joined the filter, in a [`EventKind::MntNs`]
/// record naming `member`, a task in it; `flags` is [`MNTNS_CAUGHT`] for a caught one.
#[inline(always)]
pub(crate) fn report_mntns(
    task: *const u8,
    member: *const u8,
    mntns: u32,
    parent: u32,
    flags: u64,
) {
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let buf = unsafe { &mut *buf };
    fill_header(
        &mut buf.header,
        task,
        EventKind::MntNs as u8,
        mntns,
        AT_FDCWD,
        flags,
    );
    buf.header.ret = i64::from(parent);
    // SAFETY: member is a BTF task pointer (the current task or the tracepoint's child); the
    // offsets are its fields'.
    unsafe {
        buf.header.tgid = load::<u32>(member, walk_offset(walk::TASK_TGID) as usize);
        buf.header.tid = load::<u32>(member, walk_offset(walk::TASK_PID) as usize);
    }
    emit(buf);
}
