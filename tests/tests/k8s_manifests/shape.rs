//! What a profiling-run Job must be for the recorder to work, and its push wiring.

use std::collections::BTreeSet;
use std::path::Path;

use serde_norway::Value;

use super::{env, flag, strings, workspace};

/// What a profiling-run Job must be for the recorder to work; returns the workload container.
pub(super) fn check_profiling_job(job: &Value) -> &Value {
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    assert_eq!(job["spec"]["backoffLimit"].as_u64(), Some(0));
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert!(pod.get("shareProcessNamespace").is_none());
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= 60);

    // The recorder is the first init container, a native sidecar gated by a startup probe.
    let inits = pod["initContainers"].as_sequence().unwrap();
    let recorder = &inits[0];
    assert_eq!(recorder["name"].as_str(), Some("recorder"));
    assert_eq!(recorder["restartPolicy"].as_str(), Some("Always"));
    let probe = strings(&recorder["startupProbe"]["exec"]["command"]);
    assert_eq!(probe[..2], ["recorder", "status"]);
    assert_eq!(flag(&probe, "--wait"), Some("armed"));
    let wait: f64 = flag(&probe, "--timeout").unwrap().parse().unwrap();
    let probe_timeout = recorder["startupProbe"]["timeoutSeconds"].as_u64().unwrap();
    assert!(
        probe_timeout as f64 > wait,
        "the probe would cut its own wait short"
    );

    // The workload: the one regular container, which the recorder targets by name and image.
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let workload = &containers[0];
    let workload_name = workload["name"].as_str().unwrap();
    assert_eq!(strings(&recorder["command"]), ["recorder"]);
    let args = strings(&recorder["args"]);
    assert_eq!(args[0], "record");
    assert_eq!(
        flag(&args, "--target"),
        Some(format!("k8s:$(POD_UID)/{workload_name}").as_str())
    );
    assert_eq!(flag(&args, "--image"), Some("$(WORKLOAD_IMAGE)"));
    assert_eq!(
        env(recorder, "WORKLOAD_IMAGE")["value"].as_str(),
        workload["image"].as_str()
    );
    assert_eq!(
        env(recorder, "POD_UID")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.uid")
    );
    // The CLI takes the socket only as `--containerd=ADDRESS` (a bare --containerd means the
    // default socket, and the next word would be a stray argument).
    assert!(
        args.contains(&"--containerd=/run/containerd/containerd.sock"),
        "{args:?}"
    );
    assert!(args.contains(&"--linger-until-signal"), "{args:?}");
    assert_eq!(flag(&args, "--namespace"), Some("k8s.io"));
    assert!(args.contains(&"--until-exit"));
    let socket = flag(&args, "--status-socket").unwrap();
    assert_eq!(flag(&probe, "--socket"), Some(socket));
    assert_eq!(
        flag(&args, "--termination-message-path"),
        recorder["terminationMessagePath"].as_str()
    );
    assert_eq!(
        recorder["terminationMessagePolicy"].as_str(),
        Some("FallbackToLogsOnError")
    );

    // Least privilege: these capabilities and no more, each documented.
    let security = &recorder["securityContext"];
    assert_eq!(security["privileged"].as_bool(), Some(false));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<&str> = strings(&security["capabilities"]["add"])
        .into_iter()
        .collect();
    assert_eq!(added, BTreeSet::from(["BPF", "PERFMON", "SYS_PTRACE"]));
    let docs = std::fs::read_to_string(workspace().join("docs/kubernetes.md")).unwrap();
    for cap in &added {
        assert!(
            docs.contains(&format!("CAP_{cap}")),
            "CAP_{cap} is not documented"
        );
    }
    assert!(workload.get("securityContext").is_none());

    // Host mounts: exactly tracefs and the containerd socket, for the recorder alone.
    let volumes = pod["volumes"].as_sequence().unwrap();
    let host: BTreeSet<&str> = volumes
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host,
        BTreeSet::from(["/sys/kernel/tracing", "/run/containerd/containerd.sock"])
    );
    let host_volumes: BTreeSet<&str> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mounts = |c: &Value| -> BTreeSet<(String, String)> {
        c["volumeMounts"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|m| {
                        let field = |k: &str| m[k].as_str().unwrap().to_owned();
                        (field("name"), field("mountPath"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for (name, path) in mounts(recorder) {
        if host_volumes.contains(name.as_str()) {
            let host_path = volumes
                .iter()
                .find(|v| v["name"].as_str() == Some(&name))
                .unwrap()["hostPath"]["path"]
                .as_str()
                .unwrap();
            assert_eq!(
                path, host_path,
                "{name} is mounted elsewhere than on the host"
            );
        }
    }
    for container in inits.iter().skip(1).chain(containers) {
        for (name, _) in mounts(container) {
            assert!(
                !host_volumes.contains(name.as_str()),
                "{name} leaks to {container:?}"
            );
        }
    }
    // The status socket is on an emptyDir the recorder alone mounts.
    let run_dir = Path::new(socket).parent().unwrap().to_str().unwrap();
    let (run_volume, _) = mounts(recorder)
        .into_iter()
        .find(|(_, path)| path == run_dir)
        .expect("the status socket's directory is a mount");
    assert!(
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(&run_volume))
            .unwrap()
            .get("emptyDir")
            .is_some()
    );
    workload
}

/// The sidecar pushes to `repository`, with the credentials of Secret `secret` (when given)
/// mounted read-only where RECORDER_REGISTRY_CONFIG points, and mounted in no other container.
pub(super) fn check_push_wiring(job: &Value, repository: &str, secret: Option<&str>) {
    let pod = &job["spec"]["template"]["spec"];
    let recorder = &pod["initContainers"][0];
    assert_eq!(
        env(recorder, "RECORDER_PUSH")["value"].as_str(),
        Some(repository)
    );
    let volumes = pod["volumes"].as_sequence().unwrap();
    let secret_volumes: Vec<&Value> = volumes
        .iter()
        .filter(|v| v.get("secret").is_some())
        .collect();
    let Some(secret) = secret else {
        assert!(secret_volumes.is_empty(), "{secret_volumes:?}");
        return;
    };
    assert_eq!(secret_volumes.len(), 1, "{volumes:?}");
    let volume = secret_volumes[0];
    assert_eq!(volume["secret"]["secretName"].as_str(), Some(secret));
    assert_eq!(
        volume["secret"]["items"][0]["key"].as_str(),
        Some(".dockerconfigjson")
    );
    let file = volume["secret"]["items"][0]["path"].as_str().unwrap();
    let name = volume["name"].as_str().unwrap();
    let mount = recorder["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some(name))
        .expect("the Secret is mounted in the recorder");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let config = env(recorder, "RECORDER_REGISTRY_CONFIG")["value"]
        .as_str()
        .unwrap();
    assert_eq!(
        config,
        format!("{}/{file}", mount["mountPath"].as_str().unwrap())
    );
    let others = pod["containers"].as_sequence().unwrap();
    for c in others {
        assert!(
            !format!("{c:?}").contains(name),
            "the Secret leaks to {c:?}"
        );
    }
}
