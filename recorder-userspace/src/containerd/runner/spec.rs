//! The OCI runtime spec of a containerd run: the process from the image config, and what a
//! runtime gives a container by default (containerd's `oci.WithDefaultSpec` as `ctr run`
//! uses it): the usual mounts, fresh namespaces, the default capabilities, no terminal.

use std::path::PathBuf;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};

use super::RunError;
use crate::sandbox::ProcessSpec;

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

/// The spec for `process` in container `id` of containerd namespace `namespace`.
pub fn runtime_spec(process: &ProcessSpec, namespace: &str, id: &str) -> Result<Spec, RunError> {
    build(process, namespace, id).map_err(|e| RunError::Spec(e.to_string()))
}

fn build(process: &ProcessSpec, namespace: &str, id: &str) -> Result<Spec, OciSpecError> {
    let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let user = UserBuilder::default()
        .uid(process.uid)
        .gid(process.gid)
        .additional_gids(process.additional_gids.clone())
        .build()?;
    let proc = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(process.args.clone())
        .env(process.env.clone())
        .cwd(PathBuf::from(&process.cwd))
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .build()?,
        )
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .hard(1024u64)
                .soft(1024u64)
                .build()?,
        ])
        .no_new_privileges(true)
        .build()?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        // Where `ctr run` puts its containers, so cgroups are found and removed the same way.
        .cgroups_path(PathBuf::from(format!("/{namespace}/{id}")))
        // Deny every device; runc still allows and creates its defaults (null, zero, ...).
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![
                    LinuxDeviceCgroupBuilder::default()
                        .allow(false)
                        .access("rwm")
                        .build()?,
                ])
                .build()?,
        )
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .build()?;
    SpecBuilder::default()
        .version("1.0.2-dev")
        .process(proc)
        // Relative: the shim mounts the task's rootfs there, in the bundle.
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()?,
        )
        .mounts(default_mounts()?)
        .linux(linux)
        .build()
}

/// proc, a tmpfs /dev with devpts, shm and mqueue, and a read-only sysfs.
fn default_mounts() -> Result<Vec<Mount>, OciSpecError> {
    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    Ok(vec![
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
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_carries_the_process_and_the_defaults() {
        let process = ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/app".into(),
            uid: 1000,
            gid: 100,
            additional_gids: vec![5],
        };
        let spec = runtime_spec(&process, "ns", "c1").unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["process"]["args"][0], "/bin/sh");
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["user"]["additionalGids"][0], 5);
        assert_eq!(json["process"]["cwd"], "/app");
        assert_eq!(json["process"]["terminal"], false);
        assert_eq!(json["root"]["path"], "rootfs");
        assert_eq!(json["linux"]["cgroupsPath"], "/ns/c1");
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
    }
}
