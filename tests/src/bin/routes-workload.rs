//! A workload that reaches image files by every route a process has to a file besides a plain
//! `open` of its path: io_uring, a magic link, `/proc/self/root`, fexecve, `execveat` on a dirfd,
//! an exec of a literal in a page the child never touched, a relative open after `chdir`
//! through a symlinked directory, `..` after a symlink, a symlink made at runtime, a hard link,
//! `creat`, a `#!` script, a second thread, a chroot, and opens from mount namespaces it makes
//! itself (`unshare` and `clone`, with a bind mount inside).
//!
//! It runs inside the image of `recorder_tests::routes_fixtures`, which has every file named
//! here; each route reads a file of its own, so the record shows which routes were seen. Steps
//! run in a fixed order, each child waited for, so the record's order is known. Arguments name
//! the steps to run (all by default); a step that fails exits with status 1 naming it.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// The one list of steps, shared with the fixture that expects their record.
use recorder_tests::mntns::private_mount_namespace;
use recorder_tests::routes_fixtures::{STEPS, long_path};

/// The path the forked child execs, in this binary's read-only data: after fork() the child's
/// page tables do not map it until it faults it in, which is what a tracer reading the exec's
/// path from user memory at syscall entry cannot do.
static TRUE_PATH: &[u8] = b"/bin/true\0";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: Vec<&str> = if args.is_empty() {
        STEPS.to_vec()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for step in steps {
        if let Err(e) = run(step) {
            eprintln!("routes-workload: step {step}: {e}");
            std::process::exit(1);
        }
    }
}

fn run(step: &str) -> std::io::Result<()> {
    match step {
        "thread" => std::thread::spawn(|| read("/routes/thread.txt"))
            .join()
            .map_err(|_| std::io::Error::other("the thread panicked"))?,
        "dirfd" => {
            let dir = open(c"/routes", libc::O_RDONLY | libc::O_DIRECTORY)?;
            // SAFETY: a valid dirfd and C string; the fd returned is ours.
            let fd =
                unsafe { libc::openat(dir.as_raw_fd(), c"dirfd.txt".as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: just returned by openat.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Ok(())
        }
        // The upper layer made routes/opq opaque: the lower layer's file is gone.
        "opaque" => match read("/routes/opq/old.txt") {
            Ok(()) => Err(std::io::Error::other("routes/opq/old.txt is visible")),
            Err(_) => read("/routes/opq/new.txt"),
        },
        "uring" => uring_open("/routes/uring.txt", false),
        "uring-fixed" => uring_open("/routes/uring-fixed.txt", true),
        "opath" => {
            let fd = open(c"/routes/opath.txt", libc::O_PATH)?;
            read(&format!("/proc/self/fd/{}", fd.as_raw_fd()))
        }
        "procroot" => read("/proc/self/root/routes/procroot.txt"),
        "chdir-symlink" => {
            std::env::set_current_dir("/linkdir")?;
            let result = read("file.txt");
            std::env::set_current_dir("/")?;
            result
        }
        "dotdot" => read("/linkdir/../dotdot.txt"),
        "runtime-symlink" => {
            let link = format!("/tmp/routes-link-{}", std::process::id());
            std::os::unix::fs::symlink("/routes/symtarget.txt", &link)?;
            let result = read(&link);
            std::fs::remove_file(&link)?;
            result
        }
        "hardlink" => read("/routes/hard.txt"),
        // creat(2), which glibc's creat() no longer uses (it calls openat): the image file is
        // opened for writing and truncated.
        "creat" => {
            // SAFETY: a C string; the fd returned is ours.
            let fd =
                unsafe { libc::syscall(libc::SYS_creat, c"/routes/creat.txt".as_ptr(), 0o644) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: just returned by creat.
            drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            Ok(())
        }
        "fork-exec" => in_child(|| {
            let argv = [TRUE_PATH.as_ptr().cast::<libc::c_char>(), std::ptr::null()];
            // SAFETY: a NUL-terminated static path and a NULL-terminated argv.
            unsafe { libc::execv(TRUE_PATH.as_ptr().cast(), argv.as_ptr()) };
            Err(std::io::Error::last_os_error())
        }),
        "fexecve" => {
            let fd = open(c"/bin/cat", libc::O_RDONLY | libc::O_CLOEXEC)?;
            in_child(move || {
                quiet();
                let args = [c"cat", c"/routes/fexecve.txt"];
                let argv = argv(&args);
                let envp = [std::ptr::null()];
                // SAFETY: a valid fd and NULL-terminated argv and envp.
                unsafe { libc::fexecve(fd.as_raw_fd(), argv.as_ptr(), envp.as_ptr()) };
                Err(std::io::Error::last_os_error())
            })
        }
        "execveat" => {
            let dir = open(c"/bin", libc::O_PATH | libc::O_DIRECTORY)?;
            in_child(move || {
                let args = [c"grep", c"-q", c"x", c"/routes/execveat.txt"];
                let argv = argv(&args);
                let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                // SAFETY: a valid dirfd, C strings and NULL-terminated argv and envp.
                unsafe {
                    libc::syscall(
                        libc::SYS_execveat,
                        dir.as_raw_fd(),
                        c"grep".as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                        0,
                    )
                };
                Err(std::io::Error::last_os_error())
            })
        }
        "script" => in_child(|| {
            let args = [c"/routes/script.sh"];
            let argv = argv(&args);
            // SAFETY: a C string and a NULL-terminated argv.
            unsafe { libc::execv(c"/routes/script.sh".as_ptr(), argv.as_ptr()) };
            Err(std::io::Error::last_os_error())
        }),
        // A #! script run through an fd: its only name is /dev/fd/N.
        "fexecve-script" => {
            // O_PATH: this open reads nothing (and is not recorded); the exec does.
            let fd = open(c"/routes/fd-script.sh", libc::O_PATH)?;
            in_child(move || {
                let args = [c"fd-script.sh"];
                let argv = argv(&args);
                let envp = [std::ptr::null()];
                // SAFETY: a valid fd (not close-on-exec: a script needs its name to stay
                // openable) and NULL-terminated argv and envp.
                unsafe { libc::fexecve(fd.as_raw_fd(), argv.as_ptr(), envp.as_ptr()) };
                Err(std::io::Error::last_os_error())
            })
        }
        "chroot" => in_child(|| {
            nix::unistd::chroot("/routes/jail")?;
            std::env::set_current_dir("/")?;
            read("/inside.txt")
        }),
        "unshare" => in_child(|| {
            use nix::mount::{MsFlags, mount};
            private_mount_namespace()?;
            mount(
                Some("/routes/bindsrc"),
                "/mnt",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            read("/mnt/bound.txt")?;
            read("/routes/nested.txt")
        }),
        "clone-newns" => {
            // SAFETY: clone without CLONE_VM behaves as fork; the child only opens a file and
            // exits without returning into the parent's stack frames.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_NEWNS | libc::SIGCHLD,
                    0,
                    0,
                    0,
                    0,
                )
            };
            match pid {
                -1 => Err(std::io::Error::last_os_error()),
                0 => {
                    let code = i32::from(read("/routes/cloned.txt").is_err());
                    // SAFETY: ends the child at once.
                    unsafe { libc::_exit(code) }
                }
                pid => wait(pid as libc::pid_t),
            }
        }
        // Not in STEPS: this process itself moves to a mount namespace of its own, leaving the
        // one it started in empty, and reads a file only after a while.
        "late" => {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            std::thread::sleep(std::time::Duration::from_millis(500));
            read("/routes/late.txt")
        }
        // Not in STEPS: two execs the kernel refuses (no such file; a file without the execute
        // bit), both from this process, which goes on. Recorded nothing, counted as failures.
        "failed-exec" => {
            for path in [c"/routes/no-such-program", c"/routes/thread.txt"] {
                let args = [path];
                let argv = argv(&args);
                // SAFETY: a C string and a NULL-terminated argv; on success nothing returns.
                unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
                let err = std::io::Error::last_os_error();
                if !matches!(err.raw_os_error(), Some(libc::ENOENT | libc::EACCES)) {
                    return Err(err);
                }
            }
            Ok(())
        }
        // Not in STEPS: a file whose absolute path is PATH_MAX - 1 bytes, the longest open()
        // takes (`routes_fixtures::long_path`, which the image is built with too).
        "long-path" => read(&format!("/{}", long_path())),
        other => Err(std::io::Error::other(format!("no step {other:?}"))),
    }
}

fn read(path: &str) -> std::io::Result<()> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?.read_to_end(&mut buf)?;
    Ok(())
}

fn open(path: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: a C string; the returned fd is owned by nobody else.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn argv(args: &[&CStr]) -> Vec<*const libc::c_char> {
    args.iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Output of exec'd programs goes nowhere.
fn quiet() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto stdout of a valid fd.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

/// Runs `child` in a forked process and waits for it; it must exec or return `Ok`.
fn in_child(child: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
    // SAFETY: the child runs only `child` and exits; this process has one thread here.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            let code = match child() {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("routes-workload: child: {e}");
                    1
                }
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        pid => wait(pid),
    }
}

fn wait(pid: libc::pid_t) -> std::io::Result<()> {
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "child ended with {status:#x}"
        )))
    }
}

/// Opens `path` with io_uring's `IORING_OP_OPENAT`, into the fd table or, with `fixed`, into
/// slot 0 of a registered file table; reads it through the fd.
fn uring_open(path: &str, fixed: bool) -> std::io::Result<()> {
    use io_uring::{IoUring, opcode, types};
    let mut ring = IoUring::new(4)?;
    let path = CString::new(path)?;
    // A fixed-slot open refuses O_CLOEXEC (EINVAL): a slot is not an fd.
    let flags = if fixed {
        libc::O_RDONLY
    } else {
        libc::O_RDONLY | libc::O_CLOEXEC
    };
    let mut op = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr()).flags(flags);
    if fixed {
        ring.submitter().register_files_sparse(1)?;
        let slot = types::DestinationSlot::try_from_slot_target(0)
            .map_err(|_| std::io::Error::other("slot 0 is no slot"))?;
        op = op.file_index(Some(slot));
    }
    let entry = op.build().user_data(7);
    // SAFETY: `path` outlives the submission, which completes before this returns.
    unsafe { ring.submission().push(&entry) }
        .map_err(|_| std::io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| std::io::Error::other("no completion"))?;
    let res = cqe.result();
    if res < 0 {
        return Err(std::io::Error::from_raw_os_error(-res));
    }
    if !fixed {
        // SAFETY: a successful OPENAT completion's result is a new fd we own.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(res) });
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
    }
    Ok(())
}
