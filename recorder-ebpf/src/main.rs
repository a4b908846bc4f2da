//! The recorder's kernel side: `syscalls` tracepoints for open, openat, openat2, execve and
//! execveat.
//!
//! Only tasks whose mount namespace is in `TARGETS` are kept; each kept call becomes one
//! variable-length record (header + path) in the `EVENTS` ring buffer.
//!
//! Open-family calls are handled entirely at syscall exit: the arguments are still in the task's
//! saved user registers, and by then the kernel has copied the path itself, so its user page is
//! faulted in and the read cannot fail on a not-yet-touched page. Doing it at exit alone saves
//! an entry program and an in-flight table per call (measured: the entry program plus the table
//! cost about 500 ns of the 1 µs an emitted openat used to add). An exec replaces the address
//! space on success, so its path is read at entry and parked until exit.
#![no_std]
#![no_main]

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        bpf_task_pt_regs, generated,
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use recorder_common::{
    AT_FDCWD, COUNTER_COUNT, Counter, DIR_NONE, DIR_OK, DIR_UNRESOLVED, EventBuf, EventHeader,
    EventKind, HEADER_LEN, MAX_IN_FLIGHT, MAX_TARGETS, PATH_MAX, PATH_OK, PATH_READ_FAILED, walk,
};

// Kernel struct offsets, patched by userspace from /sys/kernel/btf/vmlinux before load. They
// live in read-only data, so the verifier sees them as constants and can type-check the loads
// through BTF pointers that use them.
#[unsafe(no_mangle)]
static TASK_NSPROXY_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static NSPROXY_MNT_NS_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static MNT_NS_INUM_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static PT_REGS_DI_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static PT_REGS_SI_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static PT_REGS_DX_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static TASK_COMM_OFFSET: u64 = 0;
/// Offsets for the directory walk, indexed by `recorder_common::walk`.
#[unsafe(no_mangle)]
static WALK_OFFSETS: [u64; walk::COUNT] = [0; walk::COUNT];
/// Unread bytes in the ring above which a record wakes the consumer; below it the consumer
/// finds records on its own poll, saving a wakeup per event.
#[unsafe(no_mangle)]
static WAKEUP_THRESHOLD: u64 = 0;

/// Mount namespaces being traced (inode → unused).
#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Exec calls between entry and exit, by thread id, with the path already read.
#[map]
static EXEC_IN_FLIGHT: HashMap<u32, EventBuf> = HashMap::with_max_entries(MAX_IN_FLIGHT, 0);

/// Records for userspace. Userspace sets the size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// One record under construction per CPU: too large for the 512-byte stack.
#[map]
static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU buffer the directory walk writes into, backwards from its middle.
#[map]
static WALK: PerCpuArray<[u8; 2 * PATH_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// Loss accounting, indexed by [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

const MAX_RECORD: usize = core::mem::size_of::<EventBuf>();

// Offsets of the syscall arguments in a `syscalls/sys_enter_*` record: 8 bytes of common
// header, the syscall number, then one 8-byte slot per argument.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG4: usize = 48;
// `ret` in a `syscalls/sys_exit_*` record.
const RET: usize = 16;

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // A plain increment is enough: the slot is this CPU's, and the kernel never runs two
        // tracing programs on one CPU at once (a nested one is skipped and counted by the
        // kernel as a recursion miss, which userspace reports).
        // SAFETY: the pointer is a valid, aligned u64 in a map value.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn global(value: &'static u64) -> usize {
    // Volatile so the compiler does not fold the pre-patch value 0 into the code.
    // SAFETY: a valid static.
    unsafe { read_volatile(value) as usize }
}

/// Loads a word through a BTF-typed kernel pointer.
///
/// The verifier checks the offset against the kernel's BTF and turns the load into a
/// fault-tolerant one, so a stale pointer reads as 0 instead of crashing; this costs a plain load
/// where `bpf_probe_read_kernel` costs a helper call.
#[inline(always)]
unsafe fn load<T>(base: *const u8, offset: usize) -> T {
    // SAFETY: upheld by the caller: `base` is a BTF pointer and `offset` a field of it.
    unsafe { read_volatile(base.add(offset).cast::<T>()) }
}

/// The current task's mount-namespace inode, if it is a target.
#[inline(always)]
fn target_mntns(task: *const u8) -> Option<u32> {
    // SAFETY: task is the current task's BTF pointer; the offsets are its fields' (see load).
    let mntns = unsafe {
        let nsproxy: *const u8 = load(task, global(&TASK_NSPROXY_OFFSET));
        if nsproxy.is_null() {
            // An exiting task has dropped its namespaces.
            return None;
        }
        let mnt_ns: *const u8 = load(nsproxy, global(&NSPROXY_MNT_NS_OFFSET));
        if mnt_ns.is_null() {
            return None;
        }
        load::<u32>(mnt_ns, global(&MNT_NS_INUM_OFFSET))
    };
    // SAFETY: the value is only checked for presence.
    unsafe { TARGETS.get(&mntns) }.map(|_| mntns)
}

#[inline(always)]
fn current_task() -> *const u8 {
    // SAFETY: plain helper call.
    unsafe { bpf_get_current_task_btf() as *const u8 }
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
fn fill_header(
    header: &mut EventHeader,
    task: *const u8,
    kind: u8,
    mntns: u32,
    dirfd: i32,
    flags: u64,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: plain helper call.
    header.ts_ns = unsafe { bpf_ktime_get_ns() };
    header.ret = 0;
    header.flags = flags;
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.mntns = mntns;
    header.dirfd = dirfd;
    // SAFETY: task is the current task's BTF pointer and comm its 16-byte array (see load);
    // two plain loads instead of a helper call.
    let comm: [u64; 2] = unsafe { load(task, global(&TASK_COMM_OFFSET)) };
    // SAFETY: same size, plain bytes.
    header.comm = unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(comm) };
    header.kind = kind;
    header.path_status = PATH_OK;
    header.path_len = 0;
    header.dir_len = 0;
    header.dir_status = DIR_NONE;
    header._pad = 0;
}

/// Reads a user path into the start of `buf.strings`, recording the outcome in the header.
#[inline(always)]
fn read_path(buf: &mut EventBuf, filename: u64) {
    // SAFETY: the helper validates the user pointer and bounds the copy by the slice length.
    match unsafe {
        bpf_probe_read_user_str_bytes(filename as *const u8, &mut buf.strings[..PATH_MAX])
    } {
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

#[inline(always)]
fn walk_offset(index: usize) -> u64 {
    // Volatile for the same reason as `global`.
    // SAFETY: a valid static; every index used is a `walk` constant below COUNT.
    unsafe { read_volatile(addr_of!(WALK_OFFSETS[index])) }
}

/// Reads a kernel word. The walk chases pointers the verifier cannot type (an fd table slot,
/// a `struct mount` found by container_of), so it reads through the fault-tolerant helper.
#[inline(always)]
fn kread<T>(base: u64, offset: usize) -> Option<T> {
    // SAFETY: the helper validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + walk_offset(offset)) as *const T) }.ok()
}

/// Where a relative path starts: the working directory, or the directory open at `dirfd`.
#[inline(always)]
fn start_of_walk(task: u64, dirfd: i32) -> Option<(u64, u64)> {
    let path = if dirfd == AT_FDCWD {
        let fs: u64 = kread(task, walk::TASK_FS)?;
        fs + walk_offset(walk::FS_PWD)
    } else {
        let files: u64 = kread(task, walk::TASK_FILES)?;
        let fdt: u64 = kread(files, walk::FILES_FDT)?;
        let max_fds: u32 = kread(fdt, walk::FDT_MAX_FDS)?;
        if dirfd < 0 || dirfd as u32 >= max_fds {
            return None;
        }
        let fds: u64 = kread(fdt, walk::FDT_FD)?;
        // SAFETY: see kread; the slot index was checked against the table size.
        let file: u64 =
            unsafe { bpf_probe_read_kernel((fds + dirfd as u64 * 8) as *const u64) }.ok()?;
        if file == 0 {
            return None;
        }
        file + walk_offset(walk::FILE_PATH)
    };
    Some((
        kread(path, walk::PATH_MNT)?,
        kread(path, walk::PATH_DENTRY)?,
    ))
}

/// Writes the absolute path (inside the task's root) of the directory a relative path starts
/// from after the path in `buf`, as the kernel's d_path would, crossing mount points.
#[inline(always)]
fn append_dir(buf: &mut EventBuf, task: *const u8, dirfd: i32) {
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
        let Some(parent) = kread::<u64>(dentry, walk::DENTRY_PARENT) else {
            break;
        };
        if parent == dentry {
            done = true;
            break;
        }
        let (Some(len), Some(name)) = (
            kread::<u32>(dentry, walk::DENTRY_NAME_LEN),
            kread::<u64>(dentry, walk::DENTRY_NAME),
        ) else {
            break;
        };
        // A name is at most NAME_MAX (255) bytes; the mask also shows the verifier the bound.
        let len = (len & 0xff) as usize;
        if len + 1 > pos {
            break;
        }
        pos -= len + 1;
        let at = pos & (PATH_MAX - 1);
        out[at] = b'/';
        // SAFETY: at + 1 + len < 2 * PATH_MAX, inside the buffer; the helper validates `name`.
        unsafe {
            generated::bpf_probe_read_kernel(
                out.as_mut_ptr().add(at + 1).cast(),
                len as u32,
                name as *const _,
            )
        };
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

/// Whether the path just read is relative (an empty path with AT_EMPTY_PATH names the dirfd).
#[inline(always)]
fn path_is_relative(buf: &EventBuf) -> bool {
    buf.header.path_status == PATH_OK && buf.strings[0] != b'/'
}

/// Writes header + path to the ring, waking the consumer only when the ring is filling up.
#[inline(always)]
fn emit(buf: &EventBuf) {
    let len = HEADER_LEN + buf.header.path_len as usize + buf.header.dir_len as usize;
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

/// Emits an open-family call at its exit, reading its arguments from the saved user registers.
#[inline(always)]
fn exit_open(ctx: &TracePointContext, kind: EventKind) {
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return;
    };
    // SAFETY: bpf_task_pt_regs returns the BTF pointer to the current task's user registers;
    // the offsets are its fields' (see load). x86-64 passes arguments in di, si, dx.
    let (a0, a1, a2) = unsafe {
        let regs = bpf_task_pt_regs(task as *mut _) as *const u8;
        (
            load::<u64>(regs, global(&PT_REGS_DI_OFFSET)),
            load::<u64>(regs, global(&PT_REGS_SI_OFFSET)),
            load::<u64>(regs, global(&PT_REGS_DX_OFFSET)),
        )
    };
    let (dirfd, filename, flags) = match kind {
        EventKind::Open => (AT_FDCWD, a0, a1),
        // SAFETY: openat2's third argument is a user pointer to `struct open_how`, flags first.
        EventKind::Openat2 => (a0 as i32, a1, unsafe {
            bpf_probe_read_user(a2 as *const u64).unwrap_or(0)
        }),
        _ => (a0 as i32, a1, a2),
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch; the kernel never nests tracing programs on one CPU and keeps the
    // program on this CPU, so nothing else touches the buffer until the record is emitted.
    let buf = unsafe { &mut *buf };
    fill_header(&mut buf.header, task, kind as u8, mntns, dirfd, flags);
    let ret = arg::<i64>(ctx, RET);
    buf.header.ret = ret;
    read_path(buf, filename);
    // Only a call that succeeded can be recorded, so only then is its directory worth the walk.
    if ret >= 0 && path_is_relative(buf) {
        append_dir(buf, task, dirfd);
    }
    emit(buf);
}

#[inline(always)]
fn enter_exec(kind: EventKind, dirfd: i32, filename: u64, flags: u64) {
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return;
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let buf = unsafe { &mut *buf };
    fill_header(&mut buf.header, task, kind as u8, mntns, dirfd, flags);
    read_path(buf, filename);
    if path_is_relative(buf) {
        // Walked now: a successful exec may leave (or change) the directory it started from.
        append_dir(buf, task, dirfd);
    }
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
    // The comm changes on a successful exec; the record keeps the caller's, read at entry.
    emit(buf);
    let _ = EXEC_IN_FLIGHT.remove(&tid);
}

#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    exit_open(&ctx, EventKind::Open);
    0
}

#[tracepoint]
pub fn sys_exit_openat(ctx: TracePointContext) -> u32 {
    exit_open(&ctx, EventKind::Openat);
    0
}

#[tracepoint]
pub fn sys_exit_openat2(ctx: TracePointContext) -> u32 {
    exit_open(&ctx, EventKind::Openat2);
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
