//! Starting the workload with runc: `runc create` sets the container up and parks its init on
//! `exec.fifo` after `pivot_root` (as containerd uses it), the tracer is armed on its mount
//! namespace, then `runc start` lets it exec. The recorder is a child subreaper, so the
//! container's init becomes its child once `runc create` exits, and is reaped here.
//!
//! Here the [`Sandbox`] and how it starts; beside it `runc` (calling runc), `scratch` (the
//! run's private dir), `loopback` (the container's `lo`) and `workload` ([`Pending`],
//! [`Running`] and the guard that cleans up after them).

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;

use nix::unistd::Pid;

use super::bind::BindMount;
use super::loopback::loopback_up;
use super::plan::{PlanError, overlay_options};
use super::runc::{RUNC_PATHS, container_id, find_runc, is_exec_error, runc_command, runc_error};
use super::runtime_spec::{Confinement, SpecLayout, runtime_spec};
use super::scratch::ScratchDir;
use super::spec::ProcessSpec;
use super::watchdog::{Watchdog, WatchedContainer};
use super::workload::{ChildGuard, Pending, set_child_subreaper};

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

pub(super) fn sys(op: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
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
    /// returned [`Pending`] (or later [`Running`](super::Running)) is dropped, and by a
    /// watchdog process if this one dies.
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
        let mut guard = ChildGuard::new(container.clone(), scratch, watchdog);

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
        guard.created(Pid::from_raw(pid));
        tracing::debug!(pid, id = container.id, "container created");
        let mntns_inode = crate::procfs::MntNs::of_pid(pid as u32)
            .map_err(sys("stat the container's mount namespace"))?
            .inode();
        if !self.confinement.net_host {
            loopback_up(pid as u32).map_err(sys("bring up loopback in the container"))?;
        }
        Ok(Pending::new(
            guard,
            mntns_inode,
            log,
            self.process.args[0].clone(),
        ))
    }
}
