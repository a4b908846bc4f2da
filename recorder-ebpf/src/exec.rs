//! Execs: every successful one from `sched_process_exec` (BTF tracepoint, 5.5+), named by the
//! file the kernel runs and a `#!` script by the kernel's own copies of its name; failed
//! `execve`/`execveat` calls only counted, at their exits.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::btf_tracepoint,
    programs::{BtfTracePointContext, TracePointContext},
};
use recorder_common::{
    AT_FDCWD, Counter, EXEC_SCRIPT, EXEC_SCRIPT_FILE, EXEC_SCRIPT_NAMED, EventBuf, EventKind,
    FILE_NONE, FILE_UNRESOLVED, PATH_MAX, PATH_READ_FAILED, walk,
};

use crate::{
    ARG_PATHS, RET, SCRATCH,
    dir::append_dir,
    file::append_file,
    kernel::{arg, current_task, exit_programs, global, load, syscall_args, walk_offset},
    record::{count, emit, fill_header, path_is_relative, read_path},
    task::{fd_file, target_mntns},
};

/// A failed exec, at its exit: counted, with its path for `recorder trace`. Successful execs
/// are named by `sched_process_exec`.
#[inline(always)]
pub(crate) fn exit_exec(ctx: &TracePointContext, kind: EventKind) {
    let ret = arg::<i64>(ctx, RET);
    if ret >= 0 {
        return;
    }
    let task = current_task();
    let Some(mntns) = target_mntns(task) else {
        return;
    };
    // A failed exec leaves the caller's registers and memory in place.
    let [a0, a1, a4] = syscall_args(task, [walk::PT_REGS_DI, walk::PT_REGS_SI, walk::PT_REGS_R8]);
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

exit_programs!(exit_exec:
    sys_exit_execve => EventKind::Execve,
    sys_exit_execveat => EventKind::Execveat,
);

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
    let bprm: *const u8 = ctx.arg(2);
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
    // SAFETY: bprm is the tracepoint's BTF pointer and these are its fields (see load): plain
    // loads, where helper reads cost about 50 ns each.
    let (filename, interp, file) = unsafe {
        (
            load::<u64>(bprm, walk_offset(walk::BPRM_FILENAME) as usize),
            load::<u64>(bprm, walk_offset(walk::BPRM_INTERP) as usize),
            load::<u64>(bprm, walk_offset(walk::BPRM_FILE) as usize),
        )
    };
    if bprm.is_null() || file == 0 || filename == 0 {
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
pub(crate) fn fd_of_name(buf: &EventBuf) -> Option<i64> {
    // Compared as words: a slice comparison compiles to a call of `memcmp`, a byte loop on BPF.
    const DEV_FD: u64 = u64::from_le_bytes(*b"/dev/fd/");
    const PROC_FD: [u64; 2] = [
        u64::from_le_bytes(*b"/proc/se"),
        u64::from_le_bytes(*b"lf/fd/\0\0"),
    ];
    const LOW_6_BYTES: u64 = (1 << 48) - 1;
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&buf.strings[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let len = buf.header.path_len as usize;
    let first = word(0);
    let start = if first == DEV_FD {
        8
    } else if first == PROC_FD[0] && word(8) & LOW_6_BYTES == PROC_FD[1] {
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
