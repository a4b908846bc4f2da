//! Starting the workload with runc: `runc create` sets the container up and parks its init on
//! `exec.fifo` after `pivot_root` (as containerd uses it), the tracer is armed on its mount
//! namespace, then `runc start` lets it exec. The recorder is a child subreaper, so the
//! container's init becomes its child once `runc create` exits, and is reaped here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::bind::BindMount;
use super::plan::{PlanError, overlay_options};
use super::runtime_spec::{Confinement, SpecLayout, runtime_spec};
use super::spec::ProcessSpec;
use super::watchdog::{Watchdog, WatchedContainer};

/// Where runc is looked for first (Debian's package), before `PATH`.
const RUNC_PATHS: &[&str] = &["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"];

/// Why the sandbox could not start or run the workload.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No layers were given.
    #[error("no layers to mount")]
    NoLayers,
    /// The root or process cannot be handed to the kernel.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// runc is not installed.
    #[error("runc not found (looked in {} and PATH); `cargo xtask setup` installs it", RUNC_PATHS.join(", "))]
    RuncMissing,
    /// The OCI runtime spec could not be built.
    #[error("building the OCI runtime spec")]
    Spec(#[source] oci_spec::OciSpecError),
    /// The scratch directory is unusable.
    #[error("scratch directory {path}")]
    Scratch {
        /// The scratch directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A syscall in the recorder failed.
    #[error("{op}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Setting up the container failed.
    #[error("setting up the container: {step}")]
    Setup {
        /// The step that failed.
        step: String,
        /// What runc or the kernel said.
        #[source]
        source: io::Error,
    },
    /// The command could not be started.
    #[error("cannot run {command:?}: {step}")]
    Exec {
        /// `args[0]`.
        command: String,
        /// What failed.
        step: &'static str,
        /// What runc said.
        #[source]
        source: io::Error,
    },
}

fn sys(op: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Sys { op, source }
}

/// A profiling sandbox: an overlay of image layers with a throwaway upper dir as the root of a
/// runc container, confined as [`Confinement`] says.
#[derive(Debug)]
pub struct Sandbox {
    lowerdirs: Vec<PathBuf>,
    scratch: PathBuf,
    process: ProcessSpec,
    stdio: [Option<OwnedFd>; 3],
    confinement: Confinement,
    binds: Vec<BindMount>,
    watchdog: Option<Watchdog>,
}

impl Sandbox {
    /// A sandbox over `lowerdirs` (ordered bottom to top). `scratch` must not exist or be
    /// empty; the sandbox creates it (0700) and removes it, with the upper and work dirs and
    /// runc's state, at the end.
    pub fn new(lowerdirs: Vec<PathBuf>, scratch: PathBuf, process: ProcessSpec) -> Self {
        Self {
            lowerdirs,
            scratch,
            process,
            stdio: [None, None, None],
            confinement: Confinement::default(),
            binds: Vec::new(),
            watchdog: None,
        }
    }

    /// Has `watchdog` (which removes a directory holding the scratch dir) delete the
    /// container should this process die; by default the sandbox starts its own, which also
    /// removes the scratch dir.
    pub fn watchdog(mut self, watchdog: Watchdog) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// Contains the workload as `confinement` says (default: [`Confinement::default`]).
    pub fn confinement(mut self, confinement: Confinement) -> Self {
        self.confinement = confinement;
        self
    }

    /// Bind-mounts these host paths into the container (`--mount`).
    pub fn binds(mut self, binds: Vec<BindMount>) -> Self {
        self.binds = binds;
        self
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

    /// Creates the container (`runc create`), held before exec. Needs root. Makes this
    /// process a child subreaper.
    ///
    /// Synchronous (runc takes ~100 ms). The workload is killed and everything removed if the
    /// returned [`Pending`] (or later [`Running`]) is dropped, and by a watchdog process if
    /// this one dies.
    pub fn start(self) -> Result<Pending, SandboxError> {
        if self.lowerdirs.is_empty() {
            return Err(SandboxError::NoLayers);
        }
        if self.process.args.is_empty() {
            return Err(PlanError::NoArgs.into());
        }
        let runc = find_runc().ok_or(SandboxError::RuncMissing)?;
        let scratch = ScratchDir::create(&self.scratch)?;
        let upper = scratch.make_dir("upper", 0o755)?;
        let work = scratch.make_dir("work", 0o700)?;
        let rootfs = scratch.make_dir("rootfs", 0o755)?;
        let state = scratch.make_dir("runc", 0o700)?;
        // The overlay options name the lower dirs by short symlinks in the scratch dir (which
        // the kernel follows when it resolves them): a page of options then holds ~100
        // layers whatever the length of the paths to the cached layers (64 hex digits each).
        let links = scratch.make_dir("lower", 0o700)?;
        let mut lowers = Vec::with_capacity(self.lowerdirs.len());
        for (i, dir) in self.lowerdirs.iter().enumerate() {
            let link = links.join(i.to_string());
            std::path::absolute(dir)
                .and_then(|target| std::os::unix::fs::symlink(target, &link))
                .map_err(|source| SandboxError::Scratch {
                    path: link.clone(),
                    source,
                })?;
            lowers.push(link);
        }
        let overlay = overlay_options(&lowers, &upper, &work)?;
        let id = container_id();
        let spec = runtime_spec(
            &self.process,
            &SpecLayout {
                root: rootfs.clone(),
                // At the top of each hierarchy: `runc delete` removes it and leaves nothing.
                cgroups_path: PathBuf::from(format!("/{id}")),
                tmp_tmpfs: true,
                binds: self.binds.clone(),
            },
            &self.confinement,
        )
        .map_err(SandboxError::Spec)?;
        let bundle = scratch.path().to_owned();
        let config = serde_json::to_vec(&spec).map_err(|e| SandboxError::Spec(e.into()))?;
        std::fs::write(bundle.join("config.json"), config).map_err(|source| {
            SandboxError::Scratch {
                path: bundle.join("config.json"),
                source,
            }
        })?;

        set_child_subreaper()?;
        let container = WatchedContainer {
            runc,
            root: state,
            id,
        };
        let watchdog = match self.watchdog {
            Some(w) => w,
            None => Watchdog::spawn(&bundle).map_err(sys("start the watchdog"))?,
        };
        watchdog
            .watch(&container)
            .map_err(sys("tell the watchdog about the container"))?;
        let mut guard = ChildGuard {
            pid: None,
            container: Some(container.clone()),
            scratch: Some(scratch),
            watchdog: Some(watchdog),
        };

        let log = bundle.join("runc.log");
        let pid_file = bundle.join("init.pid");
        let mut cmd = runc_command(&container, &log);
        cmd.arg("create")
            .arg("--bundle")
            .arg(&bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&container.id);
        for (i, fd) in self.stdio.into_iter().enumerate() {
            let Some(fd) = fd else { continue };
            match i {
                0 => cmd.stdin(Stdio::from(fd)),
                1 => cmd.stdout(Stdio::from(fd)),
                _ => cmd.stderr(Stdio::from(fd)),
            };
        }
        let c_rootfs =
            CString::new(rootfs.as_os_str().as_bytes()).map_err(|e| SandboxError::Sys {
                op: "root path",
                source: io::Error::other(e),
            })?;
        let c_overlay = CString::new(overlay.as_bytes()).map_err(|e| SandboxError::Sys {
            op: "overlay options",
            source: io::Error::other(e),
        })?;
        // runc gets the overlay already mounted on the bundle's root, in a mount namespace of
        // its own: the host's never sees it (not even if the recorder is killed right now),
        // and the container's namespace, cloned from this one, keeps it after runc exits.
        // SAFETY: only async-signal-safe syscalls on CStrings prepared above.
        unsafe {
            cmd.pre_exec(move || {
                let null = std::ptr::null::<libc::c_char>();
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        null,
                        c"/".as_ptr(),
                        null,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        c"overlay".as_ptr(),
                        c_rootfs.as_ptr(),
                        c"overlay".as_ptr(),
                        0,
                        c_overlay.as_ptr().cast(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd.status().map_err(|source| SandboxError::Setup {
            step: format!("mount overlay ({overlay}) and run runc create"),
            source,
        })?;
        if !status.success() {
            let message = runc_error(&log, status);
            guard.cleanup();
            return Err(if is_exec_error(&message) {
                SandboxError::Exec {
                    command: self.process.args[0].clone(),
                    step: "runc create",
                    source: io::Error::other(message),
                }
            } else {
                SandboxError::Setup {
                    step: "runc create".into(),
                    source: io::Error::other(message),
                }
            });
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| SandboxError::Setup {
                step: "read runc's pid file".into(),
                source: io::Error::other(pid_file.display().to_string()),
            })?;
        guard.pid = Some(Pid::from_raw(pid));
        tracing::debug!(pid, id = container.id, "container created");
        let mntns_inode = crate::procfs::MntNs::of_pid(pid as u32)
            .map_err(sys("stat the container's mount namespace"))?
            .inode();
        if !self.confinement.net_host {
            loopback_up(pid as u32).map_err(sys("bring up loopback in the container"))?;
        }
        Ok(Pending {
            guard,
            mntns_inode,
            log,
            command: self.process.args[0].clone(),
        })
    }
}

/// runc's binary: a well-known path, else the first on `PATH`.
pub fn find_runc() -> Option<PathBuf> {
    let fixed = RUNC_PATHS.iter().map(PathBuf::from);
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("runc")).collect())
        .unwrap_or_default();
    fixed.chain(on_path).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn runc_command(container: &WatchedContainer, log: &Path) -> Command {
    let mut cmd = Command::new(&container.runc);
    cmd.arg("--root")
        .arg(&container.root)
        .arg("--log")
        .arg(log)
        .arg("--log-format")
        .arg("json");
    cmd
}

/// The last error runc logged, or its exit status.
fn runc_error(log: &Path, status: ExitStatus) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("runc {status}"))
}

/// Whether runc's message says the command itself is what is wrong.
fn is_exec_error(message: &str) -> bool {
    message.contains("exec: ") || message.contains("executable file not found")
}

/// A container id no other run uses: `recorder-` and 64 random bits.
fn container_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness, per process and per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("recorder-{:016x}", h.finish())
}

/// Orphaned descendants (the container's init, once `runc create` exits) become this
/// process's children rather than PID 1's, so they can be reaped here.
fn set_child_subreaper() -> Result<(), SandboxError> {
    // SAFETY: a plain prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(sys("become a child subreaper")(io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets `lo` up in the network namespace of `pid`: runc creates the namespace but leaves its
/// loopback down, where a container runtime's network setup would bring it up.
///
/// Done on a thread of its own that joins the namespace and then ends, so no thread of the
/// recorder stays in it. Hand-written (an ioctl) rather than running `ip`, which would need
/// `nsenter` too.
fn loopback_up(pid: u32) -> io::Result<()> {
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
struct ChildGuard {
    pid: Option<Pid>,
    container: Option<WatchedContainer>,
    scratch: Option<ScratchDir>,
    watchdog: Option<Watchdog>,
}

impl ChildGuard {
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

    fn kill_and_reap(&mut self) {
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
    fn cleanup(&mut self) {
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
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                    .map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
        // runc wants an absolute bundle and root.
        let path = std::path::absolute(path).map_err(err)?;
        Ok(Self { path: Some(path) })
    }

    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new("."))
    }

    fn make_dir(&self, name: &str, mode: u32) -> Result<PathBuf, SandboxError> {
        let dir = self.path().join(name);
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
