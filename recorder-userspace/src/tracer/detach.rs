//! Detaching the programs: at once in parallel threads, or handed to a process of its own.
//!
//! Closing a syscall tracepoint's perf event waits for grace periods in the closing task
//! (`tracepoint_synchronize_unregister`, under the kernel's `event_mutex`, so the waits only
//! partly overlap): one after another the eight tracepoints took 0.58–0.67 s to detach here
//! (`recorder trace`, SIGINT to exit, 3 runs), closed from one thread each 0.30–0.37 s, and
//! under two CPU-bound processes one detach took 6.6 s. The BTF tracepoints' links close at
//! once.
//!
//! A recorder that is about to exit has nothing left to wait for: its record is committed. So
//! it can hand the attachments to a child process that closes them (by exiting) while the
//! recorder exits at once. The child keeps only their descriptors (every other one,
//! pipes and sockets included, is closed at once, so no reader waits on it for an end of
//! file), blocks every signal, and is reaped by whoever inherits it.

use std::os::fd::RawFd;

use nix::{
    sys::signal::{SigSet, SigmaskHow, pthread_sigmask},
    unistd::{ForkResult, fork},
};
use tracing::debug;

/// What `/proc/self/fd/N` links to for the programs' attachments: BPF links (aya attaches a
/// tracepoint through a perf event held by a BPF link where the kernel has them, 5.15+), or the
/// perf events themselves.
const ATTACHMENTS: [&str; 2] = ["anon_inode:bpf_link", "anon_inode:[perf_event]"];

/// Drops `links` from one thread each, all at once, and returns when every one is detached.
pub(super) fn in_parallel(links: Vec<Box<dyn Send>>) {
    std::thread::scope(|scope| {
        for link in links {
            let detach = move || drop(link);
            // A thread that cannot be made leaves the detach to this one.
            if let Err(error) = std::thread::Builder::new()
                .name("recorder-detach".into())
                .spawn_scoped(scope, detach)
            {
                debug!(error = %crate::errors::Chain(&error), "detaching in the dropping thread");
            }
        }
    });
}

/// Hands the process's attachments to a child that closes them, then drops `links` here (at
/// once: the child still holds them). Without a child (the fork failed, or no attachment was
/// found) it detaches in parallel instead.
pub(super) fn in_background(links: Vec<Box<dyn Send>>) {
    let keep = attachment_fds();
    if keep.is_empty() {
        return in_parallel(links);
    }
    // Computed here: the child must not allocate (another thread may hold the allocator's lock).
    let close = gaps(&keep);
    // SAFETY: the child only makes async-signal-safe calls (sigprocmask, close_range, _exit)
    // and touches no memory another thread may have held locked.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None);
            for &(first, last) in &close {
                close_range(first, last);
            }
            // SAFETY: ends the child without running this process's exit handlers; exiting
            // closes the attachments, which is what the child is for.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            debug!(%child, links = keep.len(), "detaching the tracepoints in a child process");
            drop(links);
        }
        Err(error) => {
            debug!(%error, "fork failed: detaching here");
            in_parallel(links);
        }
    }
}

/// The process's BPF link and perf-event descriptors, in increasing order (the tracer's: the
/// recorder makes no other).
fn attachment_fds() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<RawFd> = dir
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|to| ATTACHMENTS.iter().any(|kind| to.as_os_str() == *kind))
        })
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The ranges of descriptors to close to keep only `keep` (sorted, distinct), for
/// `close_range` (5.9+; on an older kernel the calls fail and the child merely holds more until
/// it exits).
fn gaps(keep: &[RawFd]) -> Vec<(u32, u32)> {
    let mut ranges = Vec::with_capacity(keep.len() + 1);
    let mut from: u32 = 0;
    for &fd in keep {
        let fd = fd.unsigned_abs();
        if fd > from {
            ranges.push((from, fd - 1));
        }
        from = fd + 1;
    }
    ranges.push((from, u32::MAX));
    ranges
}

fn close_range(first: u32, last: u32) {
    // SAFETY: a plain syscall on integers; nix has no wrapper for it.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gaps_between_kept_descriptors_are_closed() {
        type Case = (&'static [RawFd], &'static [(u32, u32)]);
        let cases: [Case; 4] = [
            (&[], &[(0, u32::MAX)]),
            (&[0], &[(1, u32::MAX)]),
            (&[5], &[(0, 4), (6, u32::MAX)]),
            (&[3, 4, 9], &[(0, 2), (5, 8), (10, u32::MAX)]),
        ];
        for (keep, expected) in cases {
            assert_eq!(gaps(keep), expected, "{keep:?}");
        }
    }
}
