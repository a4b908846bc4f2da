//! The one OCI runtime spec builder, shared by `recorder run` (runc directly) and
//! `recorder run --containerd` (through containerd's runc shim): the process from the image
//! config, and what a container runtime gives a container by default (containerd's
//! `oci.WithDefaultSpec`, as `ctr run` uses it) plus what Kubernetes' restricted pods add.
//!
//! Confined by default ([`Confinement::default`]):
//! - containerd's default capability set (no `CAP_SYS_ADMIN`, `CAP_NET_ADMIN`, `CAP_SYS_PTRACE`...);
//! - `noNewPrivileges` (as `allowPrivilegeEscalation: false`): setuid files and file
//!   capabilities grant nothing on exec, and the seccomp filter cannot be dropped;
//! - masked paths (`/proc/kcore`, `/proc/keys`, `/sys/firmware`...) and read-only paths
//!   (`/proc/sys`, `/proc/sysrq-trigger`, `/proc/irq`, `/proc/bus`, `/proc/fs`); `/sys` is
//!   mounted read-only;
//! - new mount, PID, UTS, IPC and network namespaces (`net_host` keeps the host's network);
//! - the project's seccomp profile ([`super::seccomp`]);
//! - a pids limit, and a memory limit when asked for.
//!
//! [`Confinement::privileged`] opts out of all of that but the namespaces (as
//! `docker run --privileged` does): every capability, no seccomp, no masked or read-only
//! paths, `/sys` writable, privileges may be gained.

//!
//! Here the spec and what it is built from ([`Confinement`], [`SpecLayout`]); beside it
//! `capabilities` (containerd's default set, and every one the recorder holds) and `mounts`
//! (proc, /dev, /sys and the rest a container runtime mounts by default).

mod capabilities;
mod mounts;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};

use super::bind::BindMount;
use super::seccomp;
use super::spec::ProcessSpec;
use capabilities::{DEFAULT_CAPABILITIES, all_capabilities};
use mounts::default_mounts;

/// Paths containerd hides from a container (bind-mounted over with /dev/null or a tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths containerd makes read-only in a container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default pids limit: plenty for a build or test workload, and a fork bomb stops there
/// instead of exhausting the host's pid space.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

/// How tightly the workload is contained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confinement {
    /// Every capability, no seccomp, no masked or read-only paths, `/sys` writable.
    pub privileged: bool,
    /// Apply the project's seccomp profile (ignored when privileged).
    pub seccomp: bool,
    /// Share the host's network namespace.
    pub net_host: bool,
    /// Memory limit in bytes (the cgroup's `memory.limit_in_bytes`).
    pub memory_bytes: Option<i64>,
    /// Most processes and threads the container may have.
    pub pids_limit: Option<i64>,
}

impl Default for Confinement {
    fn default() -> Self {
        Self {
            privileged: false,
            seccomp: true,
            net_host: false,
            memory_bytes: None,
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
        }
    }
}

/// Where the container's pieces are, for the runtime.
#[derive(Clone, Debug)]
pub struct SpecLayout {
    /// `root.path`: relative to the bundle (containerd's shim mounts the rootfs at
    /// `rootfs`), or absolute.
    pub root: PathBuf,
    /// `linux.cgroupsPath`.
    pub cgroups_path: PathBuf,
    /// Mount a private tmpfs on `/tmp`, as the self-contained runs always have.
    pub tmp_tmpfs: bool,
    /// Host paths bind-mounted in (`--mount`), after the defaults so that one may go below
    /// `/tmp`.
    pub binds: Vec<BindMount>,
}

/// The spec for `process` laid out as `layout`, contained as `confinement` says.
pub fn runtime_spec(
    process: &ProcessSpec,
    layout: &SpecLayout,
    confinement: &Confinement,
) -> Result<Spec, OciSpecError> {
    let privileged = confinement.privileged;
    let caps: Capabilities = if privileged {
        all_capabilities()
    } else {
        DEFAULT_CAPABILITIES.into_iter().collect()
    };
    let user = UserBuilder::default()
        .uid(process.uid)
        .gid(process.gid)
        .additional_gids(process.additional_gids.clone())
        .build()?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps);
    let proc = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(process.args.clone())
        .env(process.env.clone())
        .cwd(PathBuf::from(&process.cwd))
        .capabilities(capabilities.build()?)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(1024u64)
                .soft(1024u64)
                .build()?,
        ])
        .no_new_privileges(!privileged)
        .build()?;
    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if !confinement.net_host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        // Deny every device; runc still allows and creates its defaults (null, zero, ...).
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
    ]);
    if let Some(limit) = confinement.pids_limit.filter(|_| !privileged) {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    if let Some(limit) = confinement.memory_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(layout.cgroups_path.clone())
        .resources(resources.build()?);
    if privileged {
        // Explicitly none: oci-spec's defaults would fill them in.
        linux = linux.masked_paths(Vec::new()).readonly_paths(Vec::new());
    } else {
        linux = linux
            .masked_paths(strings(MASKED_PATHS))
            .readonly_paths(strings(READONLY_PATHS));
        if confinement.seccomp {
            linux = linux.seccomp(seccomp::default_profile()?);
        }
    }
    SpecBuilder::default()
        .version("1.0.2-dev")
        .process(proc)
        .root(
            RootBuilder::default()
                .path(layout.root.clone())
                .readonly(false)
                .build()?,
        )
        .mounts({
            let mut mounts = default_mounts(privileged, layout.tmp_tmpfs)?;
            for bind in &layout.binds {
                mounts.push(bind.to_oci()?);
            }
            mounts
        })
        .linux(linux.build()?)
        .build()
}

pub(super) fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| p.to_string()).collect()
}
