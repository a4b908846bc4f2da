//! The code that runs in the cloned child, between clone and exec.
//!
//! It runs in a copy of a multi-threaded process, so it may only make async-signal-safe
//! calls: raw syscalls on data prepared by [`Plan`], no allocation, no locks, no logging.
//! Failures are reported to the parent as a fixed-size [`Message`] on a pipe.

use std::os::fd::RawFd;

use super::plan::{Plan, Step};

/// Where in the child's script something failed (step indexes are offset by `STEP_BASE`).
pub(crate) mod stage {
    pub const MAKE_PRIVATE: u32 = 1;
    pub const MOUNT_OVERLAY: u32 = 2;
    pub const PIVOT_ROOT: u32 = 3;
    pub const DETACH_OLD_ROOT: u32 = 4;
    pub const WORKING_DIR: u32 = 5;
    pub const STDIO: u32 = 6;
    pub const SETGROUPS: u32 = 7;
    pub const SETGID: u32 = 8;
    pub const SETUID: u32 = 9;
    pub const EXEC: u32 = 10;
    pub const STEP_BASE: u32 = 1000;
}

/// Message kinds on the status pipe.
pub(crate) const READY: u32 = 1;
pub(crate) const FAILED: u32 = 2;

/// One status-pipe message: `[kind, stage, errno]`, native-endian.
pub(crate) type Message = [u32; 3];
pub(crate) const MESSAGE_LEN: usize = std::mem::size_of::<Message>();

/// The child's file descriptors (raw: the child owns nothing, it execs or exits).
pub(crate) struct ChildFds {
    pub(crate) status_w: RawFd,
    pub(crate) release_r: RawFd,
    /// The parent's ends, which the child must close so EOF means what it should.
    pub(crate) parent_ends: [RawFd; 2],
    /// Replacement stdin/stdout/stderr, or -1 to inherit.
    pub(crate) stdio: [RawFd; 3],
}

/// Runs the child's script; returns only on failure (as the exit code for clone).
///
/// # Safety
/// Must be called only in a freshly cloned child (new mount and PID namespaces), with `plan`
/// and `fds` valid in it. It never allocates and never returns after a successful exec.
pub(crate) unsafe fn run(plan: &Plan, fds: &ChildFds) -> isize {
    // SAFETY (whole body): every call is a plain syscall wrapper on pointers into `plan`,
    // which outlives this function; see the module docs for why nothing else is allowed here.
    unsafe {
        for fd in fds.parent_ends {
            libc::close(fd);
        }
        let fail = |stage: u32| -> isize {
            let errno = *libc::__errno_location();
            send(fds.status_w, [FAILED, stage, errno as u32]);
            127
        };
        let null = std::ptr::null::<libc::c_char>();
        libc::umask(0);

        // Nothing we mount may propagate back to the host.
        if libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return fail(stage::MAKE_PRIVATE);
        }
        if libc::mount(
            c"overlay".as_ptr(),
            plan.new_root.as_ptr(),
            c"overlay".as_ptr(),
            0,
            plan.overlay_data.as_ptr().cast(),
        ) != 0
        {
            return fail(stage::MOUNT_OVERLAY);
        }
        // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves
        // only the container's tree, so later paths (and image symlinks) resolve inside it.
        if libc::chdir(plan.new_root.as_ptr()) != 0
            || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
        {
            return fail(stage::PIVOT_ROOT);
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
            return fail(stage::DETACH_OLD_ROOT);
        }

        for (i, step) in plan.steps.iter().enumerate() {
            let ok = match step {
                Step::Mkdir { path, mode } => {
                    libc::mkdir(path.as_ptr(), *mode) == 0
                        || *libc::__errno_location() == libc::EEXIST
                }
                Step::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    data,
                } => {
                    libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        fstype.as_ptr(),
                        *flags,
                        data.as_ptr().cast(),
                    ) == 0
                }
                Step::CharDev { path, major, minor } => {
                    libc::mknod(
                        path.as_ptr(),
                        libc::S_IFCHR | 0o666,
                        libc::makedev(*major, *minor),
                    ) == 0
                }
                Step::Symlink { target, path } => {
                    libc::symlink(target.as_ptr(), path.as_ptr()) == 0
                }
            };
            if !ok {
                return fail(stage::STEP_BASE + i as u32);
            }
        }

        // Like runc, create a missing working directory.
        for prefix in &plan.cwd_prefixes {
            libc::mkdir(prefix.as_ptr(), 0o755);
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            return fail(stage::WORKING_DIR);
        }

        send(fds.status_w, [READY, 0, 0]);
        // Block until the parent has armed the tracer. EOF means the parent gave up.
        let mut go = 0u8;
        loop {
            let n = libc::read(fds.release_r, (&raw mut go).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(0);
        }
        libc::close(fds.release_r);

        for (target, fd) in fds.stdio.iter().enumerate() {
            if *fd >= 0 && libc::dup2(*fd, target as i32) < 0 {
                return fail(stage::STDIO);
            }
        }
        // No descriptor of the agent leaks into the workload; the status pipe closes at exec.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );

        if libc::setgroups(plan.groups.len(), plan.groups.as_ptr()) != 0 {
            return fail(stage::SETGROUPS);
        }
        if libc::setgid(plan.gid) != 0 {
            return fail(stage::SETGID);
        }
        if libc::setuid(plan.uid) != 0 {
            return fail(stage::SETUID);
        }

        // Give the workload what a container runtime would: default umask, signals unblocked,
        // SIGPIPE at its default (Rust programs ignore it, and exec keeps "ignored").
        libc::umask(0o022);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        // execvp semantics over the container's PATH: EACCES is remembered, ENOENT skipped.
        let mut saw_eacces = false;
        for candidate in &plan.exec_candidates {
            libc::execve(candidate.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
            match *libc::__errno_location() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => saw_eacces = true,
                _ => return fail(stage::EXEC),
            }
        }
        if saw_eacces {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(stage::EXEC)
    }
}

fn send(fd: RawFd, msg: Message) {
    // SAFETY: writes MESSAGE_LEN bytes from a live stack array; a short write can only mean the
    // parent is gone, and then nobody is listening anyway.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), MESSAGE_LEN);
    }
}
