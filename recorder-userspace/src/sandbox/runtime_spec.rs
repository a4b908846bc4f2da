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

use std::path::PathBuf;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::bind::BindMount;
use super::seccomp;
use super::spec::ProcessSpec;

/// The capabilities containerd grants a container by default.
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths containerd hides from a container (bind-mounted over with /dev/null or a tmpfs).
const MASKED_PATHS: &[&str] = &[
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
const READONLY_PATHS: &[&str] = &[
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

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| p.to_string()).collect()
}

/// Every capability the recorder itself may hold (its bounding set): runc cannot grant one
/// outside it (root here lacks `CAP_SYS_RESOURCE`, for one).
fn all_capabilities() -> Capabilities {
    every::ALL
        .into_iter()
        .enumerate()
        .filter(|(number, _)| {
            // SAFETY: PR_CAPBSET_READ only reads this thread's bounding set.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, *number as libc::c_ulong, 0, 0, 0) == 1 }
        })
        .map(|(_, cap)| cap)
        .collect()
}

/// The capabilities in the kernel's numbering (index = `CAP_*` number), spelled out because
/// oci-spec exposes no iterator over them.
mod every {
    use oci_spec::runtime::Capability::{self, *};
    pub(super) const ALL: [Capability; 41] = [
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ];
}

/// proc, a tmpfs /dev with devpts, shm and mqueue, and sysfs (read-only unless privileged);
/// `/tmp` a tmpfs when asked.
fn default_mounts(privileged: bool, tmp_tmpfs: bool) -> Result<Vec<Mount>, OciSpecError> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(strings(options))
            .build()
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &[
                "nosuid",
                "noexec",
                "nodev",
                if privileged { "rw" } else { "ro" },
            ],
        )?,
    ];
    if tmp_tmpfs {
        mounts.push(mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777"],
        )?);
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> ProcessSpec {
        ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/app".into(),
            uid: 1000,
            gid: 100,
            additional_gids: vec![5],
        }
    }

    fn layout() -> SpecLayout {
        SpecLayout {
            root: "rootfs".into(),
            cgroups_path: "/ns/c1".into(),
            tmp_tmpfs: false,
            binds: Vec::new(),
        }
    }

    #[test]
    fn spec_carries_the_process_and_the_defaults() {
        let spec = runtime_spec(&process(), &layout(), &Confinement::default()).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["args"][0], "/bin/sh");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["user"]["additionalGids"][0], 5);
        assert_eq!(json["process"]["cwd"], "/app");
        assert_eq!(json["process"]["terminal"], false);
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["linux"]["cgroupsPath"], "/ns/c1");
        assert_eq!(
            json["linux"]["resources"]["pids"]["limit"],
            DEFAULT_PIDS_LIMIT
        );
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(
            json["linux"]["readonlyPaths"]
                .as_array()
                .unwrap()
                .contains(&"/proc/sys".into())
        );
        let mounts: Vec<&str> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            mounts,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys"
            ]
        );
        assert_eq!(json["linux"]["namespaces"].as_array().unwrap().len(), 5);
        let with_bind = SpecLayout {
            binds: vec![BindMount::parse("type=bind,src=/,dst=/tmp/host,options=ro").unwrap()],
            tmp_tmpfs: true,
            ..layout()
        };
        let json = serde_json::to_value(
            runtime_spec(&process(), &with_bind, &Confinement::default()).unwrap(),
        )
        .unwrap();
        let mounts = json["mounts"].as_array().unwrap();
        // After the /tmp tmpfs, so that it is not hidden by it.
        assert_eq!(mounts[mounts.len() - 2]["destination"], "/tmp");
        assert_eq!(
            mounts[mounts.len() - 1],
            serde_json::json!({"destination": "/tmp/host", "type": "bind", "source": "/",
                               "options": ["rbind", "ro"]})
        );
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            DEFAULT_CAPABILITIES.len()
        );
    }

    #[test]
    fn opt_outs_change_only_what_they_name() {
        let net_host = Confinement {
            net_host: true,
            ..Confinement::default()
        };
        let json =
            serde_json::to_value(runtime_spec(&process(), &layout(), &net_host).unwrap()).unwrap();
        assert_eq!(json["linux"]["namespaces"].as_array().unwrap().len(), 4);
        assert!(json["linux"]["seccomp"].is_object());

        let unconfined = Confinement {
            seccomp: false,
            memory_bytes: Some(64 << 20),
            ..Confinement::default()
        };
        let json = serde_json::to_value(runtime_spec(&process(), &layout(), &unconfined).unwrap())
            .unwrap();
        assert!(json["linux"]["seccomp"].is_null());
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);

        let privileged = Confinement {
            privileged: true,
            ..Confinement::default()
        };
        let json = serde_json::to_value(runtime_spec(&process(), &layout(), &privileged).unwrap())
            .unwrap();
        assert!(json["linux"]["seccomp"].is_null());
        assert_eq!(json["linux"]["maskedPaths"], serde_json::json!([]));
        assert_eq!(json["linux"]["readonlyPaths"], serde_json::json!([]));
        assert!(json["linux"]["resources"]["pids"].is_null());
        assert_eq!(json["process"]["noNewPrivileges"], false);
        let ours = std::fs::read_to_string("/proc/self/status").unwrap();
        let bounding = ours
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            bounding.count_ones() as usize
        );
    }
}
