//! Workload for the tracer tests.
//!
//! Enters a fresh mount namespace, prints `ready <mntns-inode>`, waits for a line on stdin (the
//! test arms the filter meanwhile), then makes one call of every kind the tracer must see, in a
//! fixed order, and finally execs `/bin/true`. Each call's result is printed as
//! `<step> <return value>` so the test can match the kernel's view against the process's own.

use std::{
    ffi::CString,
    io::{BufRead, Write},
    os::unix::fs::MetadataExt,
};

fn c(path: &str) -> CString {
    CString::new(path).expect("no NUL in test paths")
}

fn report(step: &str, ret: i64) {
    println!("{step} {ret}");
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: tracer-workload DIR LONG_RELATIVE_PATH");
    let long = std::env::args()
        .nth(2)
        .expect("usage: tracer-workload DIR LONG_RELATIVE_PATH");

    // SAFETY: plain syscall on this single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        panic!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
    }
    let mntns = std::fs::metadata("/proc/self/ns/mnt")
        .expect("own mntns")
        .ino();
    println!("ready {mntns}");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");

    // SAFETY (all blocks below): raw syscalls with valid NUL-terminated paths and plain ints;
    // each fd is closed right after.
    unsafe {
        let abs = c(&format!("{dir}/abs.txt"));
        let fd = libc::syscall(libc::SYS_open, abs.as_ptr(), libc::O_RDONLY);
        report("open", fd);
        libc::close(fd as i32);

        let d = c(&dir);
        libc::chdir(d.as_ptr());
        let fd = libc::openat(libc::AT_FDCWD, c("rel.txt").as_ptr(), libc::O_RDONLY);
        report("openat-relative", fd.into());
        libc::close(fd);

        let dirfd = libc::openat(
            libc::AT_FDCWD,
            c("sub").as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        );
        report("openat-dir", dirfd.into());
        let fd = libc::openat(dirfd, c("viadirfd.txt").as_ptr(), libc::O_RDONLY);
        report("openat-dirfd", fd.into());
        libc::close(fd);
        report("dirfd-value", dirfd.into());
        libc::close(dirfd);

        // struct open_how { u64 flags; u64 mode; u64 resolve; } (libc's is non-exhaustive).
        let how: [u64; 3] = [(libc::O_RDONLY | libc::O_CLOEXEC) as u64, 0, 0];
        let o2 = c(&format!("{dir}/o2.txt"));
        let fd = libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            o2.as_ptr(),
            how.as_ptr(),
            std::mem::size_of_val(&how),
        );
        report("openat2", fd);
        libc::close(fd as i32);

        // creat(2): open's O_CREAT | O_WRONLY | O_TRUNC, here of a new file.
        let created = c(&format!("{dir}/creat.txt"));
        let fd = libc::syscall(libc::SYS_creat, created.as_ptr(), 0o644);
        report("creat", fd);
        libc::close(fd as i32);

        // open_by_handle_at(2): the file named by a handle, with no path (CAP_DAC_READ_SEARCH).
        // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, room for
        // MAX_HANDLE_SZ (128) bytes.
        let mut handle = [0u32; 2 + 32];
        handle[0] = 128;
        let mut mount_id: libc::c_int = 0;
        let named = c(&format!("{dir}/handle.txt"));
        let r = libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            named.as_ptr(),
            handle.as_mut_ptr(),
            &mut mount_id,
            0,
        );
        report("name-to-handle", r);
        let mount_fd = libc::open(d.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        let fd = libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd,
            handle.as_ptr(),
            libc::O_RDONLY,
        );
        report("open-by-handle", fd);
        libc::close(fd as i32);
        libc::close(mount_fd);

        let missing = c(&format!("{dir}/missing.txt"));
        let fd = libc::openat(libc::AT_FDCWD, missing.as_ptr(), libc::O_RDONLY);
        report(
            "openat-missing",
            if fd < 0 {
                -(*libc::__errno_location()) as i64
            } else {
                fd.into()
            },
        );

        let fd = libc::openat(libc::AT_FDCWD, c(&long).as_ptr(), libc::O_RDONLY);
        report("openat-long", fd.into());
        libc::close(fd);

        // A directory across a mount point: /proc is its own mount.
        libc::chdir(c("/proc/self").as_ptr());
        let fd = libc::openat(libc::AT_FDCWD, c("status").as_ptr(), libc::O_RDONLY);
        report("openat-proc", fd.into());
        libc::close(fd);

        // Inside a chroot the directory is relative to the new root.
        std::io::stdout().flush().expect("stdout");
        let child = libc::fork();
        if child == 0 {
            libc::chroot(d.as_ptr());
            libc::chdir(c("/sub").as_ptr());
            let fd = libc::openat(libc::AT_FDCWD, c("viadirfd.txt").as_ptr(), libc::O_RDONLY);
            libc::_exit(if fd >= 0 { 0 } else { 1 });
        }
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        report("chroot-child", status.into());

        std::io::stdout().flush().expect("stdout");
        let true_bin = c("/bin/true");
        let argv = [true_bin.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        libc::execve(true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
        panic!("execve /bin/true: {}", std::io::Error::last_os_error());
    }
}
