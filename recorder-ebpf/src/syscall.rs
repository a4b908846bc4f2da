//! Syscall exits, from one BTF tracepoint on every syscall's exit (`sys_exit`, 5.5+): the open
//! family, failed execs and `unshare`, told apart by the syscall number in the task's saved
//! registers.
//!
//! Why one raw-tracepoint program rather than a `syscalls/sys_exit_*` tracepoint per call: the
//! per-syscall tracepoints are perf events, and closing each one's last perf event waits for
//! RCU grace periods (`tracepoint_synchronize_unregister`, under `event_mutex`): detaching the
//! seven of them took 0.3 s of every run here, after the record was committed. A BTF tracepoint
//! detaches without that wait. It runs on every syscall exit of every task while attached, so
//! the first thing it does is compare the number (a load through the BTF-typed `regs` and a few
//! compares); the perf path it replaces ran for every syscall too (the syscall tracepoints'
//! dispatcher), and built a trace record for each traced call before running the program.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use recorder_common::EventKind;

use crate::{
    PT_REGS_ORIG_AX_OFFSET,
    exec::exit_exec,
    kernel::{global, load},
    mntns::exit_unshare,
    open::exit_open,
};

// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl); the recorder's offsets and
// argument registers are x86-64's too.
const NR_OPEN: i64 = 2;
const NR_EXECVE: i64 = 59;
const NR_OPENAT: i64 = 257;
const NR_UNSHARE: i64 = 272;
const NR_EXECVEAT: i64 = 322;
const NR_OPENAT2: i64 = 437;

/// `sys_exit(struct pt_regs *regs, long ret)`.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    // SAFETY: `regs` is the BTF pointer to the task's `struct pt_regs`, `orig_ax` one of its
    // fields (see load).
    let nr = unsafe { load::<i64>(regs, global(&PT_REGS_ORIG_AX_OFFSET)) };
    match nr {
        NR_OPEN => exit_open(regs, ret, EventKind::Open),
        NR_OPENAT => exit_open(regs, ret, EventKind::Openat),
        NR_OPENAT2 => exit_open(regs, ret, EventKind::Openat2),
        NR_EXECVE => exit_exec(regs, ret, EventKind::Execve),
        NR_EXECVEAT => exit_exec(regs, ret, EventKind::Execveat),
        NR_UNSHARE => exit_unshare(ret),
        _ => {}
    }
    0
}
