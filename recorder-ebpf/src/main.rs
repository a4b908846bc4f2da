//! The recorder's kernel side: `syscalls` tracepoints for open, openat, openat2, execve and
//! execveat.
//!
//! Entry programs keep only tasks whose mount namespace is in `TARGETS` and park the call's
//! arguments in an in-flight table keyed by thread id; exit programs pair them with the return
//! value and emit one variable-length record (header + path) into the `EVENTS` ring buffer.
//!
//! Open-family paths are read at exit: by then the kernel has copied the path itself, so the user
//! page is faulted in and the read cannot fail on a not-yet-touched page. An exec replaces the
//! address space on success, so its path is read at entry (and read again at exit if that failed
//! and the exec failed too, leaving the old memory in place).
#![no_std]
#![no_main]
// The BPF target has no core::sync::atomic read-modify-write; the intrinsic lowers to BPF's xadd.
#![allow(internal_features)]
#![feature(core_intrinsics)]

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::size_of,
    ptr::{addr_of, read_volatile},
};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use recorder_common::{
    AT_FDCWD, COUNTER_COUNT, Counter, EventBuf, EventHeader, EventKind, HEADER_LEN, MAX_IN_FLIGHT,
    MAX_TARGETS, PATH_OK, PATH_READ_FAILED,
};

// Kernel struct offsets, patched by userspace from /sys/kernel/btf/vmlinux before load.
#[unsafe(no_mangle)]
static TASK_NSPROXY_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static NSPROXY_MNT_NS_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static MNT_NS_INUM_OFFSET: u64 = 0;
/// Unread bytes in the ring above which a record wakes the consumer; below it the consumer
/// finds records on its own poll, saving a wakeup per event.
#[unsafe(no_mangle)]
static WAKEUP_THRESHOLD: u64 = 0;

/// Mount namespaces being traced (inode → unused).
#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Open-family calls between entry and exit, by thread id.
#[map]
static IN_FLIGHT: HashMap<u32, Pending> = HashMap::with_max_entries(MAX_IN_FLIGHT, 0);

/// Exec calls between entry and exit, by thread id, with the path already read.
#[map]
static EXEC_IN_FLIGHT: HashMap<u32, EventBuf> = HashMap::with_max_entries(MAX_EXEC_IN_FLIGHT, 0);

/// Records for userspace. Userspace sets the size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// One record under construction per CPU: too large for the 512-byte stack.
#[map]
static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

/// Loss accounting, indexed by [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

const MAX_EXEC_IN_FLIGHT: u32 = 1024;
const MAX_RECORD: usize = size_of::<EventBuf>();

// Offsets of the syscall arguments in a `syscalls/sys_enter_*` record: 8 bytes of common
// header, the syscall number, then one 8-byte slot per argument.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const ARG4: usize = 48;
// `ret` in a `syscalls/sys_exit_*` record.
const RET: usize = 16;

/// What an entry program keeps for its exit program.
#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    ts_ns: u64,
    filename: u64,
    /// The flags, or for openat2 the user pointer to `struct open_how` (flags come first).
    flags: u64,
    mntns: u32,
    dirfd: i32,
    kind: u8,
    _pad: [u8; 7],
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Atomic because a preemptible kernel can run two programs on one CPU interleaved.
        // SAFETY: the pointer is a valid, aligned u64 in a map value.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
    }
}

#[inline(always)]
fn global(value: &'static u64) -> usize {
    // Volatile so the compiler does not fold the pre-patch value 0 into the code.
    // SAFETY: a valid static.
    unsafe { read_volatile(value) as usize }
}

/// The current task's mount-namespace inode, if it is a target.
#[inline(always)]
fn target_mntns() -> Option<u32> {
    // SAFETY: reads through bpf_probe_read_kernel, which tolerates bad pointers.
    let mntns = unsafe {
        let task = bpf_get_current_task() as *const u8;
        let nsproxy: *const u8 =
            bpf_probe_read_kernel(task.add(global(&TASK_NSPROXY_OFFSET)).cast()).ok()?;
        if nsproxy.is_null() {
            // An exiting task has dropped its namespaces.
            return None;
        }
        let mnt_ns: *const u8 =
            bpf_probe_read_kernel(nsproxy.add(global(&NSPROXY_MNT_NS_OFFSET)).cast()).ok()?;
        bpf_probe_read_kernel::<u32>(mnt_ns.add(global(&MNT_NS_INUM_OFFSET)).cast()).ok()?
    };
    // SAFETY: the value is only checked for presence.
    unsafe { TARGETS.get(&mntns) }.map(|_| mntns)
}

#[inline(always)]
fn arg<T>(ctx: &TracePointContext, offset: usize) -> T
where
    T: Default,
{
    // SAFETY: offsets are those of the syscall record's argument slots.
    unsafe { ctx.read_at::<T>(offset) }.unwrap_or_default()
}

#[inline(always)]
fn enter_open(kind: EventKind, dirfd: i32, filename: u64, flags: u64) {
    let Some(mntns) = target_mntns() else {
        return;
    };
    let pending = Pending {
        // SAFETY: plain helper call.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        filename,
        flags,
        mntns,
        dirfd,
        kind: kind as u8,
        _pad: [0; 7],
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    if IN_FLIGHT.insert(&tid, &pending, BPF_ANY as u64).is_err() {
        count(Counter::InFlightFull);
    }
}

#[inline(always)]
fn fill_header(header: &mut EventHeader, kind: u8, ts_ns: u64, mntns: u32, dirfd: i32, flags: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    header.ts_ns = ts_ns;
    header.ret = 0;
    header.flags = flags;
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.mntns = mntns;
    header.dirfd = dirfd;
    header.comm = bpf_get_current_comm().unwrap_or_default();
    header.kind = kind;
    header.path_status = PATH_OK;
    header.path_len = 0;
    header._pad = [0; 4];
}

/// Reads a user path into `buf.path`, recording the outcome in the header.
#[inline(always)]
fn read_path(buf: &mut EventBuf, filename: u64) {
    // SAFETY: the helper validates the user pointer and bounds the copy by the slice length.
    match unsafe { bpf_probe_read_user_str_bytes(filename as *const u8, &mut buf.path) } {
        Ok(path) => {
            buf.header.path_len = path.len() as u16;
            buf.header.path_status = PATH_OK;
        }
        Err(_) => {
            buf.header.path_len = 0;
            buf.header.path_status = PATH_READ_FAILED;
            count(Counter::PathReadFailed);
        }
    }
}

/// Writes header + path to the ring, waking the consumer only when the ring is filling up.
#[inline(always)]
fn emit(buf: &EventBuf) {
    let len = HEADER_LEN + buf.header.path_len as usize;
    if len > MAX_RECORD {
        return;
    }
    // SAFETY: `len` is within the record, which is plain bytes.
    let bytes = unsafe { core::slice::from_raw_parts(addr_of!(*buf).cast::<u8>(), len) };
    let wakeup = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= global(&WAKEUP_THRESHOLD) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    match EVENTS.output::<[u8]>(bytes, wakeup as u64) {
        Ok(()) => count(Counter::Emitted),
        Err(_) => count(Counter::Dropped),
    }
}

#[inline(always)]
fn exit_open(ctx: &TracePointContext) {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { IN_FLIGHT.get(&tid) }).copied() else {
        return;
    };
    let _ = IN_FLIGHT.remove(&tid);
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, used by one program at a time on this CPU until emitted.
    let buf = unsafe { &mut *buf };
    let mut flags = pending.flags;
    if pending.kind == EventKind::Openat2 as u8 {
        // SAFETY: user pointer read through the helper.
        flags = unsafe { bpf_probe_read_user(pending.flags as *const u64) }.unwrap_or(0);
    }
    fill_header(
        &mut buf.header,
        pending.kind,
        pending.ts_ns,
        pending.mntns,
        pending.dirfd,
        flags,
    );
    buf.header.ret = arg::<i64>(ctx, RET);
    read_path(buf, pending.filename);
    emit(buf);
}

#[inline(always)]
fn enter_exec(kind: EventKind, dirfd: i32, filename: u64, flags: u64) {
    let Some(mntns) = target_mntns() else {
        return;
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let buf = unsafe { &mut *buf };
    // SAFETY: plain helper call.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    fill_header(&mut buf.header, kind as u8, ts_ns, mntns, dirfd, flags);
    read_path(buf, filename);
    // Keep the pointer to retry a failed read at exit; an exec that fails keeps this memory.
    buf.header.ret = filename as i64;
    let tid = bpf_get_current_pid_tgid() as u32;
    if EXEC_IN_FLIGHT.insert(&tid, &*buf, BPF_ANY as u64).is_err() {
        count(Counter::InFlightFull);
    }
}

#[inline(always)]
fn exit_exec(ctx: &TracePointContext) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(buf) = EXEC_IN_FLIGHT.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: a map value owned by this thread's in-flight exec.
    let buf = unsafe { &mut *buf };
    let filename = buf.header.ret as u64;
    let ret = arg::<i64>(ctx, RET);
    buf.header.ret = ret;
    if buf.header.path_status == PATH_READ_FAILED && ret < 0 {
        read_path(buf, filename);
    }
    // The comm changes on a successful exec; report the caller's, read at entry.
    emit(buf);
    let _ = EXEC_IN_FLIGHT.remove(&tid);
}

#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let filename = arg::<u64>(&ctx, ARG0);
    let flags = arg::<u64>(&ctx, ARG1);
    enter_open(EventKind::Open, AT_FDCWD, filename, flags);
    0
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let dirfd = arg::<i64>(&ctx, ARG0) as i32;
    let filename = arg::<u64>(&ctx, ARG1);
    let flags = arg::<u64>(&ctx, ARG2);
    enter_open(EventKind::Openat, dirfd, filename, flags);
    0
}

#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let dirfd = arg::<i64>(&ctx, ARG0) as i32;
    let filename = arg::<u64>(&ctx, ARG1);
    let how = arg::<u64>(&ctx, ARG2);
    enter_open(EventKind::Openat2, dirfd, filename, how);
    0
}

#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    exit_open(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    exit_open(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    exit_open(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    let filename = arg::<u64>(&ctx, ARG0);
    enter_exec(EventKind::Execve, AT_FDCWD, filename, 0);
    0
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    let dirfd = arg::<i64>(&ctx, ARG0) as i32;
    let filename = arg::<u64>(&ctx, ARG1);
    let flags = arg::<u64>(&ctx, ARG4);
    enter_exec(EventKind::Execveat, dirfd, filename, flags);
    0
}

#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    exit_exec(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    exit_exec(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
