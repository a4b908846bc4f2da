//! The recorder's kernel side.
//!
//! - `syscalls` exit tracepoints for open, openat and openat2, and the `io_uring_complete`
//!   tracepoint for io_uring opens: each successful open is named by the `struct file` the
//!   kernel installed at the returned fd (its filesystem, inode, mount and its path from the
//!   root of its filesystem, walked over the dentries), never by the path argument;
//! - `sched_process_exec` (a BTF tracepoint, 5.5+) for every successful exec: the file the kernel
//!   runs (`bprm->file`) and its own copy of the name (`bprm->filename`); the `syscalls` exits of
//!   execve and execveat count the failed ones;
//! - `unshare` and `sched_process_fork` (BTF, 5.5+) to follow a traced task into a mount
//!   namespace it makes, without a round trip to userspace; and, while userspace waits for a
//!   container to be created (`CATCH_RUNC`), to trace each mount namespace runc makes from its
//!   creation, before runc can run anything in it.
//!
//! Only tasks whose mount namespace is in `TARGETS` are kept; each kept call becomes one
//! variable-length record in the `EVENTS` ring buffer. Minimum kernel: 5.8 (ring buffer),
//! with BTF; developed and measured on 6.18.
//!
//! Open-family calls are handled entirely at syscall exit: the fd is installed and, for
//! `recorder trace`, the arguments are still in the task's saved user registers, with the path
//! already copied by the kernel (so a not-yet-faulted user page cannot lose it).
#![no_std]
#![no_main]

use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes, bpf_task_pt_regs, generated,
    },
    macros::{btf_tracepoint, map, tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, TracePointContext},
};
use recorder_common::{
    AT_FDCWD, COUNTER_COUNT, Counter, DIR_NONE, DIR_OK, DIR_UNRESOLVED, EXEC_SCRIPT,
    EXEC_SCRIPT_FILE, EXEC_SCRIPT_NAMED, EventBuf, EventHeader, EventKind, FILE_FIXED_SLOT,
    FILE_NONE, FILE_OK, FILE_UNRESOLVED, HEADER_LEN, MAX_IN_FLIGHT, MAX_TARGETS, MNTNS_CAUGHT,
    PATH_MAX, PATH_OK, PATH_READ_FAILED, uring, walk,
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
static PT_REGS_R8_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
static TASK_COMM_OFFSET: u64 = 0;
/// Offsets for the directory walk, indexed by `recorder_common::walk`.
#[unsafe(no_mangle)]
static WALK_OFFSETS: [u64; walk::COUNT] = [0; walk::COUNT];
/// Unread bytes in the ring above which a record wakes the consumer; below it the consumer
/// finds records on its own poll, saving a wakeup per event.
#[unsafe(no_mangle)]
static WAKEUP_THRESHOLD: u64 = 0;
/// Non-zero: read the path argument (and a relative path's directory) too, for `recorder trace`.
#[unsafe(no_mangle)]
static ARG_PATHS: u64 = 0;
/// Element 0 non-zero: userspace waits for a container to be created, and each mount namespace
/// a runc task makes joins the filter as it is made (see `catch`). A map, not a constant like
/// the globals above: userspace turns it on and off while the programs run.
#[map]
static CATCH_RUNC: Array<u32> = Array::with_max_entries(1, 0);

/// Mount namespaces being traced (inode → 1 armed by userspace, 2 joined from the kernel).
#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// A traced task's `unshare(CLONE_NEWNS)` between entry and exit: thread id → the namespace it
/// came from.
#[map]
static UNSHARING: HashMap<u32, u32> = HashMap::with_max_entries(MAX_IN_FLIGHT, 0);

/// Marks a namespace joined from the kernel in `TARGETS`.
const JOINED: u8 = 2;
/// Marks a namespace caught from runc in `TARGETS` (see `catch`).
const CAUGHT: u8 = 3;
/// `runc:[`, the start of the comm runc's nsexec gives each of its init stages
/// (`runc:[0:PARENT]`, `runc:[1:CHILD]`, `runc:[2:INIT]`), as the low 6 bytes of a word.
const RUNC_COMM: u64 = u64::from_le_bytes(*b"runc:[\0\0");
/// `CLONE_NEWNS`.
const CLONE_NEWNS: u64 = 0x0002_0000;
/// An offset BTF did not have (an io_uring struct of a kernel without io_uring).
const NO_OFFSET: u64 = u64::MAX;

/// Records for userspace. Userspace sets the size at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// One record under construction per CPU: too large for the 512-byte stack.
#[map]
static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU buffer the dentry walks write into, backwards from its middle.
#[map]
static WALK: PerCpuArray<[u8; 2 * PATH_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU record of a file's dentry walk, one [`Step`] per component from the file up.
#[map]
static STEPS: PerCpuArray<[Step; walk::MAX_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// One step of a file's walk as read: `d_parent`, `d_name` (`hash | len << 32`, `name`),
/// `d_inode` and the five words of the inline name store that follows it; then the dentry, and
/// where its name starts in the path.
type Step = [u64; STEP_READ + 2];
/// Words of a step read from the dentry in one call.
const STEP_READ: usize = 9;
/// Index of the dentry's own address in a [`Step`].
const STEP_DENTRY: usize = STEP_READ;
/// Index of the name's offset in the path, once written.
const STEP_AT: usize = STEP_READ + 1;

/// Loss accounting, indexed by [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

const MAX_RECORD: usize = core::mem::size_of::<EventBuf>();

// Offsets of the syscall arguments in a `syscalls/sys_enter_*` record: 8 bytes of common
// header, the syscall number, then one 8-byte slot per argument.
const ARG0: usize = 16;
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

/// A task's mount-namespace inode; `None` for an exiting task, which has dropped its namespaces.
#[inline(always)]
fn mntns_of(task: *const u8) -> Option<u32> {
    // SAFETY: task is a BTF task pointer; the offsets are its fields' (see load).
    unsafe {
        let nsproxy: *const u8 = load(task, global(&TASK_NSPROXY_OFFSET));
        if nsproxy.is_null() {
            return None;
        }
        let mnt_ns: *const u8 = load(nsproxy, global(&NSPROXY_MNT_NS_OFFSET));
        if mnt_ns.is_null() {
            return None;
        }
        Some(load::<u32>(mnt_ns, global(&MNT_NS_INUM_OFFSET)))
    }
}

/// The task's mount-namespace inode, if it is a target.
#[inline(always)]
fn target_mntns(task: *const u8) -> Option<u32> {
    let mntns = mntns_of(task)?;
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
    header.file_status = FILE_NONE;
    header.file_len = 0;
    header.mode = 0;
    header.exec_flags = 0;
    header.ino = 0;
    header.magic = 0;
    header.dev = 0;
    header.mnt_id = 0;
    header._pad = [0; 3];
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

/// The `struct file` open at `fd` in `task`'s descriptor table (`task` a BTF task pointer:
/// the current task's, or a tracepoint's).
///
/// `task→files→fdt` and the table's size and array are typed loads through BTF pointers, as in
/// `target_mntns`: plain loads the verifier makes fault-tolerant, where helper calls cost more.
/// The slot itself is a `struct file **` element the verifier cannot type, read by the helper.
#[inline(always)]
fn fd_file(task: u64, fd: i64) -> Option<u64> {
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
            load::<u64>(fdt, walk_offset(walk::FDT_FD) as usize),
        )
    };
    if fd < 0 || fd >= i64::from(max_fds) {
        return None;
    }
    // SAFETY: see kread; the slot index was checked against the table size.
    let file: u64 = unsafe { bpf_probe_read_kernel((fds + fd as u64 * 8) as *const u64) }.ok()?;
    (file != 0).then_some(file)
}

/// One step up a dentry chain: the parent, and this dentry's name (length, pointer).
///
/// `d_parent` and `d_name` (`hash`, `len`, `name`) are adjacent in `struct dentry` (userspace
/// checks this against BTF before loading), so one 24-byte read serves a whole step where
/// three reads did.
#[inline(always)]
fn dentry_step(dentry: u64) -> Option<(u64, usize, u64)> {
    // [d_parent, d_name.hash | d_name.len << 32, d_name.name]
    let [parent, hash_len, name] = kread::<[u64; 3]>(dentry, walk::DENTRY_PARENT)?;
    // A name is at most NAME_MAX (255) bytes; the mask also shows the verifier the bound.
    Some((parent, ((hash_len >> 32) & 0xff) as usize, name))
}

/// Writes `/NAME` (the kernel string at `name`, `len` bytes) in front of what the walk wrote so
/// far, which ends at PATH_MAX in `out`; moves `pos` to its start. False when it does not fit.
#[inline(always)]
fn prepend(out: &mut [u8; 2 * PATH_MAX], pos: &mut usize, len: usize, name: u64) -> bool {
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
fn start_of_walk(task: u64, dirfd: i32) -> Option<(u64, u64)> {
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

/// Names the file at `file` (a `struct file *`) after the strings already in `buf`: its
/// identity goes into the header and its path from the root of its filesystem after the
/// strings. For a record with more to say after the file (an exec's script record).
///
/// The path is that of the dentry the file was opened through, so a hard link is named by the
/// link used, and every route to it (symlinks, `..`, magic links, bind mounts, a copy of the
/// mount in another namespace) gives the same name. Mounts are not crossed: which filesystem the
/// file lives on is the device's and mount's business, decided in userspace.
#[inline(always)]
fn append_file(buf: &mut EventBuf, file: u64) {
    let Some(out) = WALK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let out = unsafe { &mut *out };
    if !read_file(&mut buf.header, out, file).is_some_and(|len| copy_file(buf, out, len)) {
        unresolved(&mut buf.header);
    }
}

/// Names the file at `file` as [`append_file`] does and emits the record.
///
/// A record with no strings before the file (every open, unless `recorder trace` asked for the
/// path argument) is assembled where the walk wrote the path, its header copied in front, so
/// the path is not copied again (a helper call and the copy saved per open).
#[inline(always)]
fn emit_file(buf: &mut EventBuf, file: u64) {
    let Some(out) = WALK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let out = unsafe { &mut *out };
    let Some(len) = read_file(&mut buf.header, out, file) else {
        unresolved(&mut buf.header);
        emit(buf);
        return;
    };
    if buf.header.path_len != 0 || buf.header.dir_len != 0 {
        if !copy_file(buf, out, len) {
            unresolved(&mut buf.header);
        }
        emit(buf);
        return;
    }
    buf.header.file_len = len as u16;
    buf.header.file_status = FILE_OK;
    let words = addr_of!(buf.header).cast::<u64>();
    for i in 0..HEADER_LEN / 8 {
        // SAFETY: the header is HEADER_LEN bytes of plain data, 8-byte aligned, and so is the
        // start of `out`, which has room for it before the path.
        unsafe {
            out.as_mut_ptr()
                .add(i * 8)
                .cast::<u64>()
                .write(words.add(i).read())
        };
    }
    let len = HEADER_LEN + (len & (PATH_MAX - 1));
    // SAFETY: the record is the first `len` bytes of `out`.
    output(unsafe { core::slice::from_raw_parts(out.as_ptr(), len) });
}

#[inline(always)]
fn unresolved(header: &mut EventHeader) {
    header.file_len = 0;
    header.file_status = FILE_UNRESOLVED;
    count(Counter::FileUnresolved);
}

/// Reads one step of a file's walk (see [`Step`]) at `dentry` into `step`.
#[inline(always)]
fn read_step(step: &mut Step, dentry: u64) -> bool {
    // SAFETY: the helper validates the kernel address and writes STEP_READ words into `step`.
    let failed = unsafe {
        generated::bpf_probe_read_kernel(
            step.as_mut_ptr().cast(),
            (STEP_READ * 8) as u32,
            (dentry + walk_offset(walk::DENTRY_PARENT)) as *const _,
        )
    };
    step[STEP_DENTRY] = dentry;
    failed == 0
}

/// Words of one kernel struct at `base`, the fields' offsets being `WALK_OFFSETS[fields[i]]`,
/// each shifted down to its field (a narrower field is in the low bits: x86-64 is little
/// endian). Fields within [`SPAN_WORDS`] words of the first come from one helper read instead
/// of one each; any other layout falls back to one read per field.
#[inline(always)]
fn kread_fields<const N: usize>(base: u64, fields: [usize; N]) -> Option<[u64; N]> {
    let offsets = fields.map(walk_offset);
    let mut lo = u64::MAX;
    let mut hi = 0;
    for offset in offsets {
        lo = lo.min(offset & !7);
        hi = hi.max(offset);
    }
    let mut out = [0u64; N];
    if hi - lo < (SPAN_WORDS as u64 - 1) * 8 {
        // SAFETY: the helper validates the address; a bad one is an error, not a fault.
        let block: [u64; SPAN_WORDS] =
            unsafe { bpf_probe_read_kernel((base + lo) as *const [u64; SPAN_WORDS]) }.ok()?;
        for i in 0..N {
            let at = offsets[i] - lo;
            // The index is below SPAN_WORDS by the check above; the mask shows the verifier.
            let word = block[(at / 8) as usize & (SPAN_WORDS - 1)];
            out[i] = word >> ((at % 8) * 8);
        }
    } else {
        for i in 0..N {
            // SAFETY: as above.
            out[i] = unsafe { bpf_probe_read_kernel((base + offsets[i]) as *const u64) }.ok()?;
        }
    }
    Some(out)
}

/// Words one span read of [`kread_fields`] covers.
const SPAN_WORDS: usize = 16;

/// Reads the identity of the file at `file` into `header` and writes its path from the root of
/// its filesystem into `out` after [`HEADER_LEN`] bytes left for a header; returns its length.
///
/// The walk goes up first, one call per component reading the dentry's parent, name and inline
/// name store (see [`Step`]), and stops at the superblock's root without reading it; then it
/// writes the names from the top down, so a short name (most are: below 40 bytes, stored in the
/// dentry) is copied from the step it came with instead of with a call of its own. Per
/// component that is one helper call where two were (about 50 ns each here).
#[inline(always)]
fn read_file(header: &mut EventHeader, out: &mut [u8; 2 * PATH_MAX], file: u64) -> Option<usize> {
    // f_path is a struct path {mnt, dentry}: two adjacent words (userspace checks).
    let [mnt, mut dentry] = kread::<[u64; 2]>(file + walk_offset(walk::FILE_PATH), walk::PATH_MNT)?;
    let steps = STEPS.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch, see exit_open.
    let steps = unsafe { &mut *steps };
    if !read_step(&mut steps[0], dentry) {
        return None;
    }
    // The first step gives the inode too (`d_inode` is `f_inode` for any file an open returns:
    // an overlayfs file is the overlay's inode since 4.19).
    let inode = steps[0][3];
    let [mode, ino, sb] = kread_fields(inode, [walk::INODE_MODE, walk::INODE_INO, walk::INODE_SB])?;
    let [dev, magic, root] = kread_fields(sb, [walk::SB_DEV, walk::SB_MAGIC, walk::SB_ROOT])?;
    let mnt_id = kread::<i32>(mnt - walk_offset(walk::MOUNT_MNT), walk::MOUNT_ID)?;
    header.mode = mode as u16;
    header.ino = ino;
    header.dev = dev as u32;
    header.magic = magic;
    header.mnt_id = mnt_id as u32;

    // Up: `depth` components are named by steps[..depth].
    let mut depth = 0;
    let mut done = false;
    for _ in 0..walk::MAX_DEPTH {
        let parent = steps[depth & (walk::MAX_DEPTH - 1)][0];
        if parent == dentry || parent == 0 {
            // The root of the filesystem (or of a disconnected tree).
            done = true;
            break;
        }
        depth += 1;
        if parent == root {
            // The superblock's root: the path is whole without reading the root's own step.
            done = true;
            break;
        }
        if depth >= walk::MAX_DEPTH {
            break;
        }
        dentry = parent;
        if !read_step(&mut steps[depth & (walk::MAX_DEPTH - 1)], dentry) {
            break;
        }
    }
    if !done {
        return None;
    }

    // Down: the names from the top, after room for the header. Each name is copied as the five
    // words of its step, whole: the bytes past it are overwritten by the next component or left
    // past the end. A name that is not inline (40 bytes or more) is then read over them. The
    // two passes keep one path through each loop: a branch per component in one loop doubles
    // the paths the verifier walks per component and exceeds its limit.
    if depth == 0 {
        out[HEADER_LEN] = b'/';
        return Some(1);
    }
    // Each loop is left at any of its steps, knowing the step: without `opaque`, the verifier
    // walks what follows once per exit, each loop once per length of the one before. With it
    // the programs load in about 0.2 s more than with the one-pass walk (measured under load).
    let depth = opaque(out, 0, depth);
    let mut len = 0;
    for i in 0..walk::MAX_DEPTH {
        if i >= depth {
            break;
        }
        let step = &mut steps[(depth - 1 - i) & (walk::MAX_DEPTH - 1)];
        // A name is at most NAME_MAX (255) bytes; the mask also shows the verifier the bound.
        let name_len = ((step[1] >> 32) & 0xff) as usize;
        if len + 1 + name_len >= PATH_MAX {
            return None;
        }
        let at = HEADER_LEN + (len & (PATH_MAX - 1));
        step[STEP_AT] = len as u64;
        out[at] = b'/';
        for w in 0..5 {
            // SAFETY: at + 1 + 40 < HEADER_LEN + PATH_MAX + 41, inside `out`.
            unsafe {
                out.as_mut_ptr()
                    .add(at + 1 + w * 8)
                    .cast::<u64>()
                    .write_unaligned(step[4 + w])
            };
        }
        len += 1 + name_len;
    }
    let len = opaque(out, 1, len);
    let depth = opaque(out, 0, depth);
    let inline = walk_offset(walk::DENTRY_SHORTNAME);
    for i in 0..walk::MAX_DEPTH {
        if i >= depth {
            break;
        }
        let step = &steps[i & (walk::MAX_DEPTH - 1)];
        if inline != NO_OFFSET && step[2] == step[STEP_DENTRY] + inline {
            continue;
        }
        let at = HEADER_LEN + 1 + (step[STEP_AT] as usize & (PATH_MAX - 1));
        // SAFETY: at + 255 lies inside `out`; the helper validates the kernel address.
        let failed = unsafe {
            generated::bpf_probe_read_kernel(
                out.as_mut_ptr().add(at).cast(),
                ((step[1] >> 32) & 0xff) as u32,
                step[2] as *const _,
            )
        };
        if failed != 0 {
            return None;
        }
    }
    (len < PATH_MAX).then_some(len)
}

/// `value`, through word `slot` of `out`'s header room: the same number, of which the verifier
/// knows nothing but its type, so the paths that reach this point with different values merge.
#[inline(always)]
fn opaque(out: &mut [u8; 2 * PATH_MAX], slot: usize, value: usize) -> usize {
    // SAFETY: slots 0 and 1 lie in the first HEADER_LEN bytes of `out`, 8-byte aligned; nothing
    // else reads them before the header is written there.
    unsafe {
        let word = out.as_mut_ptr().add(slot * 8).cast::<u64>();
        core::ptr::write_volatile(word, value as u64);
        core::ptr::read_volatile(word) as usize
    }
}

/// Copies the path `read_file` left in `out` (`len` bytes after [`HEADER_LEN`]) after the
/// strings in `buf`.
#[inline(always)]
fn copy_file(buf: &mut EventBuf, out: &[u8; 2 * PATH_MAX], len: usize) -> bool {
    let at = buf.header.path_len as usize + buf.header.dir_len as usize;
    if len >= PATH_MAX || at >= 2 * PATH_MAX {
        return false;
    }
    // SAFETY: the destination ends below 2 * PATH_MAX + PATH_MAX, the buffer's size (both masked
    // for the verifier); the source is this program's own map.
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            buf.strings.as_mut_ptr().add(at & (2 * PATH_MAX - 1)).cast(),
            (len & (PATH_MAX - 1)) as u32,
            out.as_ptr().add(HEADER_LEN).cast(),
        )
    };
    if copied != 0 {
        return false;
    }
    buf.header.file_len = len as u16;
    buf.header.file_status = FILE_OK;
    true
}

/// Whether the path just read is relative (an empty path with AT_EMPTY_PATH names the dirfd).
#[inline(always)]
fn path_is_relative(buf: &EventBuf) -> bool {
    buf.header.path_status == PATH_OK && buf.strings[0] != b'/'
}

/// Writes header + strings to the ring.
#[inline(always)]
fn emit(buf: &EventBuf) {
    let len = HEADER_LEN
        + buf.header.path_len as usize
        + buf.header.dir_len as usize
        + buf.header.file_len as usize;
    if len > MAX_RECORD {
        return;
    }
    // SAFETY: `len` is within the record, which is plain bytes.
    output(unsafe { core::slice::from_raw_parts(addr_of!(*buf).cast::<u8>(), len) });
}

/// Writes one record to the ring, waking the consumer only when the ring is filling up.
#[inline(always)]
fn output(bytes: &[u8]) {
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
    if global(&ARG_PATHS) != 0 {
        read_path(buf, filename);
        // Only a call that succeeded resolved anything, so only then is its directory worth
        // the walk.
        if ret >= 0 && path_is_relative(buf) {
            append_dir(buf, task, dirfd);
        }
    }
    if ret >= 0 {
        match fd_file(task as u64, ret) {
            Some(file) => return emit_file(buf, file),
            // Closed by another thread between the install and this program.
            None => unresolved(&mut buf.header),
        }
    }
    emit(buf);
}

/// A failed exec, at its exit: counted, with its path for `recorder trace`. Successful execs
/// are named by `sched_process_exec`.
#[inline(always)]
fn exit_exec(ctx: &TracePointContext, kind: EventKind) {
    let ret = arg::<i64>(ctx, RET);
    if ret >= 0 {
        return;
    }
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return;
    };
    // SAFETY: as in exit_open; a failed exec leaves the caller's registers and memory in place.
    let (a0, a1, a4) = unsafe {
        let regs = bpf_task_pt_regs(task as *mut _) as *const u8;
        (
            load::<u64>(regs, global(&PT_REGS_DI_OFFSET)),
            load::<u64>(regs, global(&PT_REGS_SI_OFFSET)),
            load::<u64>(regs, global(&PT_REGS_R8_OFFSET)),
        )
    };
    let (dirfd, filename, flags) = match kind {
        EventKind::Execveat => (a0 as i32, a1, a4),
        _ => (AT_FDCWD, a0, 0),
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let buf = unsafe { &mut *buf };
    fill_header(&mut buf.header, task, kind as u8, mntns, dirfd, flags);
    buf.header.ret = ret;
    if global(&ARG_PATHS) != 0 {
        read_path(buf, filename);
    }
    emit(buf);
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
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    exit_exec(&ctx, EventKind::Execve);
    0
}

#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    exit_exec(&ctx, EventKind::Execveat);
    0
}

/// Every successful exec, after the point of no return: `bprm->file` is what the kernel runs
/// (for a `#!` script, already the interpreter), `bprm->filename` the kernel's copy of the name
/// it was asked for (`/dev/fd/N[/PATH]` for an fd-relative execveat or fexecve).
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return 0;
    };
    // The prototype is (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm).
    let bprm: u64 = ctx.arg(2);
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let buf = unsafe { &mut *buf };
    fill_header(
        &mut buf.header,
        task,
        EventKind::Exec as u8,
        mntns,
        AT_FDCWD,
        0,
    );
    let (Some(filename), Some(interp), Some(file)) = (
        kread::<u64>(bprm, walk::BPRM_FILENAME),
        kread::<u64>(bprm, walk::BPRM_INTERP),
        kread::<u64>(bprm, walk::BPRM_FILE),
    ) else {
        buf.header.file_status = FILE_UNRESOLVED;
        count(Counter::FileUnresolved);
        emit(buf);
        return 0;
    };
    // binfmt_script (and binfmt_misc) replace `interp` with the interpreter's name; it starts
    // out as `filename` itself.
    if interp != filename {
        buf.header.exec_flags = EXEC_SCRIPT;
    }
    // SAFETY: the helper validates the kernel pointer and bounds the copy by the slice.
    match unsafe {
        bpf_probe_read_kernel_str_bytes(filename as *const u8, &mut buf.strings[..PATH_MAX])
    } {
        Ok(path) => buf.header.path_len = path.len() as u16,
        Err(_) => {
            buf.header.path_status = PATH_READ_FAILED;
            count(Counter::PathReadFailed);
        }
    }
    // A relative name (execve("./x")) resolves against the working directory, which the exec
    // has not changed; the script of a `#!` exec is only known by that name...
    if path_is_relative(buf) {
        append_dir(buf, task, AT_FDCWD);
    }
    // ...unless the name is an fd's (fexecve, execveat with AT_EMPTY_PATH, /proc/self/fd/N):
    // then the fd is still open (the kernel refuses a script behind a close-on-exec fd) and
    // holds the script's file, named first, as the kernel opened it first.
    if buf.header.exec_flags == EXEC_SCRIPT
        && let Some(fd) = fd_of_name(buf)
        && let Some(script) = fd_file(task as u64, fd)
    {
        buf.header.exec_flags = EXEC_SCRIPT | EXEC_SCRIPT_FILE;
        append_file(buf, script);
        emit(buf);
        buf.header.exec_flags = EXEC_SCRIPT | EXEC_SCRIPT_NAMED;
        buf.header.file_len = 0;
        buf.header.file_status = FILE_NONE;
    }
    append_file(buf, file);
    emit(buf);
    0
}

/// The fd a name of the form `/dev/fd/N` or `/proc/self/fd/N` designates (the name the kernel
/// gives an fd-relative exec, or one a process wrote itself).
#[inline(always)]
fn fd_of_name(buf: &EventBuf) -> Option<i64> {
    const DEV_FD: &[u8; 8] = b"/dev/fd/";
    const PROC_FD: &[u8; 14] = b"/proc/self/fd/";
    let len = buf.header.path_len as usize;
    let start = if buf.strings[..8] == DEV_FD[..] {
        8
    } else if buf.strings[..14] == PROC_FD[..] {
        14
    } else {
        return None;
    };
    // An fd has at most 7 digits here (the kernel's limit on open files is 2^20).
    let mut fd: i64 = 0;
    let mut end = start;
    for i in 0..7 {
        let at = start + i;
        if at >= len {
            break;
        }
        let c = buf.strings[at];
        if !c.is_ascii_digit() {
            return None;
        }
        fd = fd * 10 + i64::from(c - b'0');
        end = at + 1;
    }
    (end > start && end == len).then_some(fd)
}

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
fn runc_mntns(task: *const u8) -> Option<u32> {
    if !catching() {
        return None;
    }
    // SAFETY: task is a BTF task pointer and comm its 16-byte array (see fill_header).
    let comm: u64 = unsafe { load(task, global(&TASK_COMM_OFFSET)) };
    if comm & 0xffff_ffff_ffff != RUNC_COMM {
        return None;
    }
    mntns_of(task)
}

/// Whether userspace waits for a container (see `CATCH_RUNC`).
#[inline(always)]
fn catching() -> bool {
    CATCH_RUNC.get(0).is_some_and(|on| *on != 0)
}

/// While userspace waits for a container, runc task `task` made mount namespace `mntns` (its
/// own, or `member`'s): it joins the filter now, before runc can execute anything in it, and
/// userspace buffers its events until it knows which container's it is. Unlike [`join`], it
/// reports it as caught, and userspace starts a buffer afresh under its number, which may be a
/// dead namespace's (the kernel reuses the lowest free one).
#[inline(always)]
fn catch(task: *const u8, member: *const u8, mntns: u32, parent: u32) {
    if TARGETS.insert(&mntns, &CAUGHT, BPF_ANY as u64).is_err() {
        count(Counter::TargetsFull);
        return;
    }
    report_mntns(task, member, mntns, parent, MNTNS_CAUGHT);
}

/// Adds namespace `mntns`, made by a traced task from `parent`, to the filter and tells
/// userspace (which pins it) through a [`EventKind::MntNs`] record naming `member`, a task in it.
#[inline(always)]
fn join(task: *const u8, member: *const u8, mntns: u32, parent: u32) {
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
fn report_mntns(task: *const u8, member: *const u8, mntns: u32, parent: u32, flags: u64) {
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

/// The file in slot `index` of the fixed-file table of io_uring context `ring`.
#[inline(always)]
fn ring_file(ring: u64, index: u32) -> Option<u64> {
    let nr = kread::<u32>(ring, walk::RING_FILES_NR)?;
    if index >= nr {
        return None;
    }
    let nodes = kread::<u64>(ring, walk::RING_FILES_NODES)?;
    // SAFETY: see kread; the index was checked against the table size.
    let node: u64 =
        unsafe { bpf_probe_read_kernel((nodes + u64::from(index) * 8) as *const u64) }.ok()?;
    if node == 0 {
        return None;
    }
    let file = kread::<u64>(node, walk::RSRC_NODE_FILE_PTR)? & !uring::FILE_PTR_FLAGS;
    (file != 0).then_some(file)
}

/// An io_uring completion: an `IORING_OP_OPENAT`/`OPENAT2` that succeeded installed an fd in the
/// submitter's table (io-wq workers share it), or filled a slot of the ring's fixed-file table,
/// read from there.
#[tracepoint]
pub fn io_uring_complete(ctx: TracePointContext) -> u32 {
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return 0;
    };
    // Fields of io_uring/io_uring_complete: ctx at 8, req at 16, user_data at 24, res at 32.
    let ring = arg::<u64>(&ctx, 8);
    let req = arg::<u64>(&ctx, 16);
    let res = i64::from(arg::<i32>(&ctx, 32));
    let kind = match kread::<u8>(req, walk::KIOCB_OPCODE) {
        Some(uring::OP_OPENAT) => EventKind::UringOpenat,
        Some(uring::OP_OPENAT2) => EventKind::UringOpenat2,
        _ => return 0,
    };
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, see exit_open.
    let buf = unsafe { &mut *buf };
    fill_header(&mut buf.header, task, kind as u8, mntns, AT_FDCWD, 0);
    buf.header.ret = res;
    if res >= 0 {
        let slot = if walk_offset(walk::KIOCB_OPEN_FILE_SLOT) == NO_OFFSET {
            0
        } else {
            kread::<u32>(req, walk::KIOCB_OPEN_FILE_SLOT).unwrap_or(0)
        };
        let file = if slot == 0 {
            fd_file(task as u64, res)
        } else {
            // file_slot is the slot + 1, or FILE_INDEX_ALLOC for a slot the kernel picked and
            // returned as the result.
            let index = if slot == uring::FILE_INDEX_ALLOC {
                res as u32
            } else {
                slot - 1
            };
            ring_file(ring, index)
        };
        match file {
            Some(file) => {
                buf.header.flags = u64::from(kread::<u32>(file, walk::FILE_FLAGS).unwrap_or(0));
                emit_file(buf, file);
                return 0;
            }
            None => {
                buf.header.file_status = if slot == 0 {
                    FILE_UNRESOLVED
                } else {
                    FILE_FIXED_SLOT
                };
                count(Counter::FileUnresolved);
            }
        }
    }
    emit(buf);
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
