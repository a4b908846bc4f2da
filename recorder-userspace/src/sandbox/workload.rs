//! The workload once `runc create` has made it: held before exec ([`Pending`]), then running
//! ([`Running`]), and the guard that kills and reaps its init, deletes the container and removes
//! the scratch dir on every way out ([`ChildGuard`]). The recorder is a child subreaper, so the
//! container's init is its child once `runc create` exits.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::run::{SandboxError, sys};
use super::runc::{runc_command, runc_error};
use super::scratch::ScratchDir;
use super::watchdog::{Watchdog, WatchedContainer};

/// Orphaned descendants (the container's init, once `runc create` exits) become this
/// process's children rather than PID 1's, so they can be reaped here.
pub(super) fn set_child_subreaper() -> Result<(), SandboxError> {
    // SAFETY: a plain prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(sys("become a child subreaper")(io::Error::last_os_error()));
    }
    Ok(())
}

/// A workload set up and held just before exec. Arm the tracer with
/// [`Pending::mntns_inode`], then [`Pending::release`]. Dropping it kills the workload.
#[derive(Debug)]
pub struct Pending {
    guard: ChildGuard,
    mntns_inode: u64,
    log: PathBuf,
    command: String,
}

impl Pending {
    /// The workload `guard` holds, `runc create` done: its mount namespace, runc's log and
    /// the command (for errors).
    pub(super) fn new(guard: ChildGuard, mntns_inode: u64, log: PathBuf, command: String) -> Self {
        Self {
            guard,
            mntns_inode,
            log,
            command,
        }
    }

    /// The container's init pid (in the agent's PID namespace).
    pub fn pid(&self) -> u32 {
        self.guard.pid.map_or(0, |p| p.as_raw() as u32)
    }

    /// The inode of the workload's mount namespace, which the tracer filters on.
    pub fn mntns_inode(&self) -> u64 {
        self.mntns_inode
    }

    /// Lets the workload exec (`runc start`).
    pub fn release(mut self) -> Result<Running, SandboxError> {
        let Some(container) = self.guard.container.clone() else {
            return Err(SandboxError::Setup {
                step: "runc start".into(),
                source: io::Error::other("the container is gone"),
            });
        };
        let status = runc_command(&container, &self.log)
            .arg("start")
            .arg(&container.id)
            .stdin(Stdio::null())
            .status()
            .map_err(sys("run runc start"))?;
        if !status.success() {
            let message = runc_error(&self.log, status);
            self.guard.kill_and_reap();
            self.guard.cleanup();
            return Err(SandboxError::Exec {
                command: self.command,
                step: "runc start",
                source: io::Error::other(message),
            });
        }
        Ok(Running { guard: self.guard })
    }
}

/// A workload that has been started. Dropping it without [`Running::wait`] kills it.
#[derive(Debug)]
pub struct Running {
    guard: ChildGuard,
}

impl Running {
    /// The workload's pid (in the agent's PID namespace).
    pub fn pid(&self) -> u32 {
        self.guard.pid.map_or(0, |p| p.as_raw() as u32)
    }

    /// Sends `signal` to the workload. As PID 1 of its namespace it only receives signals it
    /// handles, plus SIGKILL (which takes the whole namespace down).
    pub fn signal(&self, signal: Signal) -> Result<(), SandboxError> {
        match self.guard.pid {
            Some(pid) => kill(pid, signal).map_err(|e| sys("kill")(e.into())),
            None => Ok(()),
        }
    }

    /// Waits for the workload to exit, then deletes the container and removes the scratch
    /// dir. Cleanup happens even if this future is dropped mid-wait.
    pub async fn wait(self) -> Result<ExitStatus, SandboxError> {
        let mut guard = self.guard;
        tokio::task::spawn_blocking(move || {
            let status = guard.reap();
            guard.cleanup();
            status
        })
        .await
        .map_err(|e| sys("wait for the workload")(io::Error::other(e)))?
    }

    /// Blocking version of [`Running::wait`], for callers without a runtime.
    pub fn wait_blocking(mut self) -> Result<ExitStatus, SandboxError> {
        let status = self.guard.reap();
        self.guard.cleanup();
        status
    }
}

/// Owns the container: kills and reaps its init, deletes it from runc, removes the scratch
/// dir, and dismisses the watchdog.
#[derive(Debug)]
pub(super) struct ChildGuard {
    pid: Option<Pid>,
    container: Option<WatchedContainer>,
    scratch: Option<ScratchDir>,
    watchdog: Option<Watchdog>,
}

impl ChildGuard {
    /// Guards `container` (not created yet: no init to kill), `scratch` and `watchdog`.
    pub(super) fn new(
        container: WatchedContainer,
        scratch: ScratchDir,
        watchdog: Watchdog,
    ) -> Self {
        Self {
            pid: None,
            container: Some(container),
            scratch: Some(scratch),
            watchdog: Some(watchdog),
        }
    }

    /// The container's init is `pid`: killed and reaped from now on.
    pub(super) fn created(&mut self, pid: Pid) {
        self.pid = Some(pid);
    }

    /// Waits for the container's init to exit (if not yet reaped).
    fn reap(&mut self) -> Result<ExitStatus, SandboxError> {
        let Some(pid) = self.pid else {
            return Ok(ExitStatus::from_raw(0));
        };
        loop {
            match waitpid(pid, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.pid = None;
                    return Ok(ExitStatus::from_raw((code & 0xff) << 8));
                }
                Ok(WaitStatus::Signaled(_, signal, core)) => {
                    self.pid = None;
                    return Ok(ExitStatus::from_raw(
                        signal as i32 | if core { 0x80 } else { 0 },
                    ));
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.pid = None;
                    return Err(sys("waitpid")(e.into()));
                }
            }
        }
    }

    pub(super) fn kill_and_reap(&mut self) {
        if let Some(pid) = self.pid {
            // SIGKILL to PID 1 of the namespace kills every process in it. Not yet reaped, so
            // the pid is still the container's.
            let _ = kill(pid, Signal::SIGKILL);
            if let Err(error) = self.reap() {
                tracing::warn!(%error, "reaping the container");
            }
        }
    }

    /// Deletes the container (its cgroup and runc's state), removes the scratch dir, and
    /// dismisses the watchdog. Failures are logged: there is nothing else to do about them.
    pub(super) fn cleanup(&mut self) {
        if let Some(container) = self.container.take() {
            let log = self
                .scratch
                .as_ref()
                .map_or_else(|| PathBuf::from("/dev/null"), |s| s.path().join("runc.log"));
            match runc_command(&container, &log)
                .args(["delete", "--force"])
                .arg(&container.id)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
            {
                Ok(s) if s.success() => {
                    if let Some(watchdog) = &self.watchdog {
                        watchdog.forget();
                    }
                }
                Ok(s) => tracing::warn!(
                    id = container.id,
                    error = runc_error(&log, s),
                    "runc delete"
                ),
                Err(error) => tracing::warn!(%error, id = container.id, "runc delete"),
            }
        }
        if let Some(scratch) = self.scratch.take()
            && let Err(error) = scratch.remove()
        {
            tracing::warn!(%error, "removing the sandbox scratch dir");
        }
        // Dropping our handle dismisses the watchdog if it was the sandbox's own.
        self.watchdog = None;
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_and_reap();
        self.cleanup();
    }
}
