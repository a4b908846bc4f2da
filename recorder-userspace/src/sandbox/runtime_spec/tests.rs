//! The spec's unit tests: the process and the defaults carried, each opt-out changing only
//! what it names.

use super::capabilities::DEFAULT_CAPABILITIES;
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
    let json =
        serde_json::to_value(runtime_spec(&process(), &layout(), &unconfined).unwrap()).unwrap();
    assert!(json["linux"]["seccomp"].is_null());
    assert_eq!(json["process"]["noNewPrivileges"], true);
    assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);

    let privileged = Confinement {
        privileged: true,
        ..Confinement::default()
    };
    let json =
        serde_json::to_value(runtime_spec(&process(), &layout(), &privileged).unwrap()).unwrap();
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
