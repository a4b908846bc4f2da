//! Starting the workload: clone into new mount and PID namespaces, hold it before exec, and
//! clean up on every way out.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

use super::child::{self, ChildFds, FAILED, MESSAGE_LEN, READY, stage};
use super::plan::{Plan, PlanError};
use super::spec::ProcessSpec;

/// Stack for the cloned child; it only runs [`child::run`], which uses little.
const CHILD_STACK: usize = 256 * 1024;

/// Why the sandbox could not start or run the workload.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No layers were given.
    #[error("no layers to mount")]
    NoLayers,
    /// The spec or paths cannot be handed to the kernel.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The scratch directory is unusable.
    #[error("scratch directory {path}: {source}")]
    Scratch {
        /// The scratch directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A syscall in the parent failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Setting up the container failed in the child.
    #[error("setting up the container: {step}: {source}")]
    Setup {
        /// The step that failed.
        step: String,
        /// The errno it failed with.
        #[source]
        source: io::Error,
    },
    /// The command could not be started.
    #[error("cannot run {command:?}: {step}: {source}")]
    Exec {
        /// `args[0]`.
        command: String,
        /// What failed (exec itself, or dropping privileges before it).
        step: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The child died without saying why.
    #[error("container process died during setup")]
    ChildDied,
}

fn sys(op: &'static str) -> impl FnOnce(Errno) -> SandboxError {
    move |e| SandboxError::Sys {
        op,
        source: e.into(),
    }
}

/// A profiling sandbox: an overlay of image layers with a throwaway upper dir, in private
/// mount and PID namespaces.
#[derive(Debug)]
pub struct Sandbox {
    lowerdirs: Vec<PathBuf>,
    scratch: PathBuf,
    process: ProcessSpec,
    stdio: [Option<OwnedFd>; 3],
}

impl Sandbox {
    /// A sandbox over `lowerdirs` (ordered bottom to top). `scratch` must not exist or be
    /// empty; the sandbox creates it and removes it, with the upper and work dirs, at the end.
    pub fn new(lowerdirs: Vec<PathBuf>, scratch: PathBuf, process: ProcessSpec) -> Self {
        Self {
            lowerdirs,
            scratch,
            process,
            stdio: [None, None, None],
        }
    }

    /// Gives the workload this stdin instead of the agent's.
    pub fn stdin(mut self, fd: OwnedFd) -> Self {
        self.stdio[0] = Some(fd);
        self
    }

    /// Gives the workload this stdout instead of the agent's.
    pub fn stdout(mut self, fd: OwnedFd) -> Self {
        self.stdio[1] = Some(fd);
        self
    }

    /// Gives the workload this stderr instead of the agent's.
    pub fn stderr(mut self, fd: OwnedFd) -> Self {
        self.stdio[2] = Some(fd);
        self
    }

    /// Sets up the container and stops just before exec. Needs root.
    ///
    /// Synchronous and quick (a clone and a few mounts). The workload is killed if the returned
    /// [`Pending`] (or later [`Running`]) is dropped.
    pub fn start(self) -> Result<Pending, SandboxError> {
        if self.lowerdirs.is_empty() {
            return Err(SandboxError::NoLayers);
        }
        let scratch = ScratchDir::create(&self.scratch)?;
        let upper = scratch.make_dir("upper", 0o755)?;
        let work = scratch.make_dir("work", 0o700)?;
        let new_root = scratch.make_dir("root", 0o755)?;
        let plan = Plan::new(&self.lowerdirs, &upper, &work, &new_root, &self.process)?;

        let (status_r, status_w) = pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        let (release_r, release_w) = pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        let raw = |fd: &Option<OwnedFd>| fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let fds = ChildFds {
            status_w: status_w.as_raw_fd(),
            release_r: release_r.as_raw_fd(),
            parent_ends: [status_r.as_raw_fd(), release_w.as_raw_fd()],
            stdio: [
                raw(&self.stdio[0]),
                raw(&self.stdio[1]),
                raw(&self.stdio[2]),
            ],
        };
        let mut stack = vec![0u8; CHILD_STACK];
        // SAFETY: without CLONE_VM the child gets a copy of this address space, like fork; the
        // callback only runs `child::run`, which makes async-signal-safe syscalls on `plan` and
        // `fds` (prepared above, never allocated in the child) and execs or exits.
        let pid = unsafe {
            nix::sched::clone(
                Box::new(|| child::run(&plan, &fds)),
                &mut stack,
                CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID,
                Some(libc::SIGCHLD),
            )
        }
        .map_err(sys("clone"))?;
        let mut guard = ChildGuard {
            pid: Some(pid),
            scratch: Some(scratch),
        };
        // Our copies of the child's ends must go, or EOF would never come.
        drop((status_w, release_r, self.stdio));
        tracing::debug!(pid = pid.as_raw(), "sandbox child cloned");

        let mut status_r = std::fs::File::from(status_r);
        match read_message(&mut status_r)? {
            Some([READY, _, _]) => {}
            Some([FAILED, code, errno]) => {
                let step = match code {
                    stage::MAKE_PRIVATE => "make / private".to_owned(),
                    stage::MOUNT_OVERLAY => {
                        format!("mount overlay ({})", plan.overlay_data.to_string_lossy())
                    }
                    stage::PIVOT_ROOT => "pivot_root".to_owned(),
                    stage::DETACH_OLD_ROOT => "detach the old root".to_owned(),
                    stage::WORKING_DIR => format!("chdir {}", self.process.cwd),
                    n => plan
                        .steps
                        .get(n.wrapping_sub(stage::STEP_BASE) as usize)
                        .map_or_else(|| format!("step {n}"), |s| s.describe()),
                };
                guard.reap()?;
                guard.cleanup()?;
                return Err(SandboxError::Setup {
                    step,
                    source: io::Error::from_raw_os_error(errno as i32),
                });
            }
            _ => {
                guard.reap()?;
                guard.cleanup()?;
                return Err(SandboxError::ChildDied);
            }
        }
        let mntns_inode = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .map_err(|source| SandboxError::Sys {
                op: "stat the child's mount namespace",
                source,
            })?
            .ino();
        Ok(Pending {
            guard,
            mntns_inode,
            release_w: std::fs::File::from(release_w),
            status_r,
            command: self.process.args.first().cloned().unwrap_or_default(),
        })
    }
}

fn read_message(from: &mut std::fs::File) -> Result<Option<[u32; 3]>, SandboxError> {
    let mut buf = [0u8; MESSAGE_LEN];
    let mut got = 0;
    while got < MESSAGE_LEN {
        match from.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SandboxError::Sys {
                    op: "read from the container process",
                    source,
                });
            }
        }
    }
    if got < MESSAGE_LEN {
        return Ok(None);
    }
    let word = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&buf[i * 4..i * 4 + 4]);
        u32::from_ne_bytes(w)
    };
    Ok(Some([word(0), word(1), word(2)]))
}

/// A workload set up and held just before exec. Arm the tracer with
/// [`Pending::mntns_inode`], then [`Pending::release`]. Dropping it kills the workload.
#[derive(Debug)]
pub struct Pending {
    guard: ChildGuard,
    mntns_inode: u64,
    release_w: std::fs::File,
    status_r: std::fs::File,
    command: String,
}

impl Pending {
    /// The workload's pid (in the agent's PID namespace).
    pub fn pid(&self) -> u32 {
        self.guard.pid.map_or(0, |p| p.as_raw() as u32)
    }

    /// The inode of the workload's mount namespace, which the tracer filters on.
    pub fn mntns_inode(&self) -> u64 {
        self.mntns_inode
    }

    /// Lets the workload exec. Returns once exec has succeeded, or with an error naming the
    /// command if it failed (the child is then reaped and the scratch dir removed).
    pub fn release(mut self) -> Result<Running, SandboxError> {
        self.release_w
            .write_all(&[1])
            .map_err(|source| SandboxError::Sys {
                op: "release the container process",
                source,
            })?;
        // EOF here means the status pipe was closed by a successful exec (it is CLOEXEC).
        match read_message(&mut self.status_r)? {
            None => Ok(Running { guard: self.guard }),
            Some([_, code, errno]) => {
                let step = match code {
                    stage::STDIO => "set up stdio",
                    stage::SETGROUPS => "setgroups",
                    stage::SETGID => "setgid",
                    stage::SETUID => "setuid",
                    _ => "exec",
                };
                self.guard.reap()?;
                self.guard.cleanup()?;
                Err(SandboxError::Exec {
                    command: self.command,
                    step,
                    source: io::Error::from_raw_os_error(errno as i32),
                })
            }
        }
    }
}

/// A workload that has exec'd. Dropping it without [`Running::wait`] kills it.
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
            Some(pid) => kill(pid, signal).map_err(sys("kill")),
            None => Ok(()),
        }
    }

    /// Waits for the workload to exit, then removes the scratch dir. The mounts went with the
    /// workload's namespace. Cleanup happens even if this future is dropped mid-wait.
    pub async fn wait(self) -> Result<ExitStatus, SandboxError> {
        let mut guard = self.guard;
        tokio::task::spawn_blocking(move || {
            let status = guard.reap()?;
            guard.cleanup()?;
            Ok(status)
        })
        .await
        .map_err(|e| SandboxError::Sys {
            op: "wait for the workload",
            source: io::Error::other(e),
        })?
    }

    /// Blocking version of [`Running::wait`], for callers without a runtime.
    pub fn wait_blocking(mut self) -> Result<ExitStatus, SandboxError> {
        let status = self.guard.reap()?;
        self.guard.cleanup()?;
        Ok(status)
    }
}

/// Owns the child and the scratch dir: kills and reaps the one, then removes the other.
#[derive(Debug)]
struct ChildGuard {
    pid: Option<Pid>,
    scratch: Option<ScratchDir>,
}

impl ChildGuard {
    /// Waits for the child to exit (if not yet reaped).
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
                    return Err(sys("waitpid")(e));
                }
            }
        }
    }

    fn cleanup(&mut self) -> Result<(), SandboxError> {
        match self.scratch.take() {
            Some(scratch) => scratch.remove(),
            None => Ok(()),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SIGKILL to PID 1 of the namespace kills every process in it.
            let _ = kill(pid, Signal::SIGKILL);
            if let Err(error) = self.reap() {
                tracing::warn!(%error, "reaping the sandbox child");
            }
        }
        if let Err(error) = self.cleanup() {
            tracing::warn!(%error, "removing the sandbox scratch dir");
        }
    }
}

/// The scratch directory, removed explicitly or on drop.
#[derive(Debug)]
struct ScratchDir {
    path: Option<PathBuf>,
}

impl ScratchDir {
    fn create(path: &Path) -> Result<Self, SandboxError> {
        let err = |source| SandboxError::Scratch {
            path: path.to_owned(),
            source,
        };
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Only an empty dir is ours to take over; anything else may be someone's data.
                if std::fs::read_dir(path).map_err(err)?.next().is_some() {
                    return Err(err(io::Error::new(
                        io::ErrorKind::DirectoryNotEmpty,
                        "scratch directory is not empty",
                    )));
                }
            }
            Err(e) => return Err(err(e)),
        }
        Ok(Self {
            path: Some(path.to_owned()),
        })
    }

    fn make_dir(&self, name: &str, mode: u32) -> Result<PathBuf, SandboxError> {
        let base = self.path.as_deref().unwrap_or(Path::new("."));
        let dir = base.join(name);
        std::fs::create_dir(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)))
            .map_err(|source| SandboxError::Scratch {
                path: dir.clone(),
                source,
            })?;
        Ok(dir)
    }

    fn remove(mut self) -> Result<(), SandboxError> {
        match self.path.take() {
            Some(path) => std::fs::remove_dir_all(&path)
                .map_err(|source| SandboxError::Scratch { path, source }),
            None => Ok(()),
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take()
            && let Err(error) = std::fs::remove_dir_all(&path)
        {
            tracing::warn!(path = %path.display(), %error, "removing the sandbox scratch dir");
        }
    }
}
