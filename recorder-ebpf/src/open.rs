//! The open family (`open`, `creat`, `openat`, `openat2`, `open_by_handle_at`, 2.6.x+
//! tracepoints): each successful call named at its exit by the `struct file` at the fd it
//! returned.

use aya_ebpf::{helpers::bpf_probe_read_user, programs::TracePointContext};
use recorder_common::{AT_FDCWD, EventKind, walk};

use crate::{
    ARG_PATHS, RET, SCRATCH,
    dir::append_dir,
    file::{emit_file, unresolved},
    kernel::{arg, current_task, exit_programs, global, syscall_args},
    record::{emit, fill_header, path_is_relative, read_path},
    task::{fd_file, target_mntns},
};

/// Emits an open-family call at its exit, reading its arguments from the saved user registers.
#[inline(always)]
pub(crate) fn exit_open(ctx: &TracePointContext, kind: EventKind) {
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return;
    };
    let [a0, a1, a2] = syscall_args(task, [walk::PT_REGS_DI, walk::PT_REGS_SI, walk::PT_REGS_DX]);
    let (dirfd, filename, flags) = match kind {
        EventKind::Open => (AT_FDCWD, a0, a1),
        EventKind::Creat => (AT_FDCWD, a0, CREAT_FLAGS),
        // The second argument is a `struct file_handle`, not a path: there is none to read.
        EventKind::OpenByHandleAt => (a0 as i32, 0, a2),
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
    if global(&ARG_PATHS) != 0 && kind != EventKind::OpenByHandleAt {
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

/// What `creat(2)` opens with: `O_CREAT | O_WRONLY | O_TRUNC`.
const CREAT_FLAGS: u64 = 0o100 | 0o1 | 0o1000;

exit_programs!(exit_open:
    sys_exit_open => EventKind::Open,
    sys_exit_creat => EventKind::Creat,
    sys_exit_open_by_handle_at => EventKind::OpenByHandleAt,
    sys_exit_openat => EventKind::Openat,
    sys_exit_openat2 => EventKind::Openat2,
);
