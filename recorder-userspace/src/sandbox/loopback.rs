//! The container's loopback interface, brought up from the recorder.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

/// Sets `lo` up in the network namespace of `pid`: runc creates the namespace but leaves its
/// loopback down, where a container runtime's network setup would bring it up.
///
/// Done on a thread of its own that joins the namespace and then ends, so no thread of the
/// recorder stays in it. Hand-written (an ioctl) rather than running `ip`, which would need
/// `nsenter` too.
pub(super) fn loopback_up(pid: u32) -> io::Result<()> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
            // SAFETY: socket(2) with constant arguments; the fd is owned right away.
            let sock =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if sock < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: sock is a fresh, valid fd nobody else owns.
            let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
            // SAFETY: ifreq is plain old data; all zero is a valid value.
            let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
            for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the live `req`.
            unsafe {
                if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
                    return Err(io::Error::last_os_error());
                }
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the loopback thread panicked")))
    })
}
