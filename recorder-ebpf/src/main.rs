//! The recorder's kernel side.
//!
//! - `syscalls` exit tracepoints for open, creat, openat, openat2 and open_by_handle_at, and
//!   `io_uring_complete` (a BTF tracepoint) for io_uring opens: each successful open is named by
//!   the `struct file` the kernel installed at the returned fd (its filesystem, inode, mount and
//!   its path from the root of its filesystem, walked over the dentries), never by the path
//!   argument;
//! - `sched_process_exec` (a BTF tracepoint, 5.5+) for every successful exec: the file the kernel
//!   runs (`bprm->file`) and its own copy of the name (`bprm->filename`); the `syscalls` exits of
//!   execve and execveat count the failed ones;
//! - `unshare` and `sched_process_fork` (BTF, 5.5+) to follow a traced task into a mount
//!   namespace it makes, without a round trip to userspace; and, while userspace waits for a
//!   container to be created (`CATCH_RUNC`), to trace each mount namespace runc makes from its
//!   creation, before runc can run anything in it.
//!
//! Only tasks whose mount namespace is in `TARGETS` are kept; each kept call becomes one
//! variable-length record in the `EVENTS` ring buffer. Minimum kernel: 6.17 with BTF (ring
//! buffer 5.8; the kfunc `bpf_rdonly_cast` 6.2; loads through a kernel pointer to untyped memory,
//! the fd table's array, 6.17); developed and measured on 6.18.
//!
//! Open-family calls are handled entirely at syscall exit: the fd is installed and, for
//! `recorder trace`, the arguments are still in the task's saved user registers, with the path
//! already copied by the kernel (so a not-yet-faulted user page cannot lose it).
#![no_std]
// Inline assembly for stores the BPF backend would split (see file::store_unaligned).
#![feature(asm_experimental_arch)]
#![no_main]

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use recorder_common::{COUNTER_COUNT, EventBuf, PATH_MAX, btf_type, walk};

mod dir;
mod exec;
mod file;
mod io_uring;
mod kernel;
mod mntns;
mod open;
mod record;
mod task;

// Kernel struct offsets, patched by userspace from /sys/kernel/btf/vmlinux before load. They
// live in read-only data, so the verifier sees them as constants and can type-check the loads
// through BTF pointers that use them.
/// Kernel struct offsets, indexed by `recorder_common::walk`.
#[unsafe(no_mangle)]
pub(crate) static WALK_OFFSETS: [u64; walk::COUNT] = [0; walk::COUNT];

/// Kernel BTF type ids, indexed by `recorder_common::btf_type`: what `kernel::cast` views
/// memory as.
#[unsafe(no_mangle)]
pub(crate) static BTF_TYPE_IDS: [u64; btf_type::COUNT] = [0; btf_type::COUNT];

/// Unread bytes in the ring above which a record wakes the consumer; below it the consumer
/// finds records on its own poll, saving a wakeup per event.
#[unsafe(no_mangle)]
pub(crate) static WAKEUP_THRESHOLD: u64 = 0;

/// Non-zero: read the path argument (and a relative path's directory) too, for `recorder trace`.
#[unsafe(no_mangle)]
pub(crate) static ARG_PATHS: u64 = 0;

/// An offset BTF did not have (an io_uring struct of a kernel without io_uring).
pub(crate) const NO_OFFSET: u64 = u64::MAX;

/// Records for userspace. Userspace sets the size at load time.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 23, 0);

/// One record under construction per CPU: too large for the 512-byte stack.
#[map]
pub(crate) static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU buffer the dentry walks write into, backwards from its middle.
#[map]
pub(crate) static WALK: PerCpuArray<[u8; 2 * PATH_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// Loss accounting, indexed by [`Counter`].
#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

pub(crate) const MAX_RECORD: usize = core::mem::size_of::<EventBuf>();

// Offsets of the syscall arguments in a `syscalls/sys_enter_*` record: 8 bytes of common
// header, the syscall number, then one 8-byte slot per argument.
pub(crate) const ARG0: usize = 16;

// `ret` in a `syscalls/sys_exit_*` record.
pub(crate) const RET: usize = 16;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
