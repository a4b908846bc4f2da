//! The Kubernetes manifests: the kustomize base and example overlay, built by the real
//! `kubectl kustomize`, and the Job `recorder k8s job` renders, each validated offline against
//! the Kubernetes schemas by the pinned kubernetes-validate, and checked for the structure the
//! profiling run depends on (docs/kubernetes.md).
//!
//! `cargo xtask setup` installs kubectl and the validator; these tests fail when either is
//! missing rather than pass without checking.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use recorder::k8s::{JobRequest, render_job};
use serde::Deserialize;
use serde_norway::Value;

/// Native sidecars are on by default from 1.29 (beta) and GA in 1.33: validate against both.
const KUBERNETES_VERSIONS: &[&str] = &["1.29.0", "1.33.0"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kustomize(dir: &str) -> String {
    let path = workspace().join(dir);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running kubectl (run `cargo xtask setup`): {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}\n{}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The venv `cargo xtask setup` installs the pinned validator into.
fn validator() -> PathBuf {
    let venv = Path::new(&std::env::var_os("HOME").expect("HOME"))
        .join(".cache/recorder/kubernetes-validate");
    let pins =
        std::fs::read_to_string(workspace().join("deploy/kubernetes/validator-requirements.txt"))
            .unwrap();
    let installed = std::fs::read_to_string(venv.join("requirements.txt")).unwrap_or_default();
    assert_eq!(
        installed,
        pins,
        "the validator venv at {} is missing or not the pinned one: run `cargo xtask setup`",
        venv.display()
    );
    venv.join("bin/kubernetes-validate")
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Validates every document strictly (unknown fields are errors) against each version, and
/// checks the validator said so for each resource, since it passes an empty input too.
fn validate(yaml: &str) {
    let validator = validator();
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let names: Vec<String> = documents(yaml)
        .iter()
        .map(|d| {
            let kind = d["kind"].as_str().unwrap().to_lowercase();
            format!("{kind}/{}", d["metadata"]["name"].as_str().unwrap())
        })
        .collect();
    assert!(!names.is_empty(), "no documents in:\n{yaml}");
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .arg(file.path())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", validator.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate {version}:\n{text}\n{yaml}"
        );
        let short = version.trim_end_matches(".0");
        for name in &names {
            let said = format!("passed for resource {name} against version {short}");
            assert!(text.contains(&said), "expected `{said}` in:\n{text}");
        }
    }
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1).copied())
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_sequence()
        .and_then(|s| s.iter().find(|e| e["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("no env {name} in {container:?}"))
}

/// What a profiling-run Job must be for the recorder to work; returns the workload container.
fn check_profiling_job(job: &Value) -> &Value {
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

#[test]
fn base_builds_validates_and_is_a_profiling_job() {
    let yaml = kustomize("deploy/kubernetes/base");
    validate(&yaml);
    let docs = documents(&yaml);
    assert_eq!(docs.len(), 1);
    check_profiling_job(&docs[0]);
}

#[test]
fn example_overlay_sets_workload_and_recorder_images() {
    let yaml = kustomize("deploy/kubernetes/overlays/example");
    validate(&yaml);
    let docs = documents(&yaml);
    assert_eq!(docs.len(), 1);
    let job = &docs[0];
    let workload = check_profiling_job(job);
    assert_eq!(
        workload["image"].as_str(),
        Some("docker.io/library/python:3.12-slim")
    );
    assert_eq!(strings(&workload["command"])[0], "python3");
    let recorder = &job["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        recorder["image"].as_str(),
        Some("registry.example.com/tools/recorder:0.1.0")
    );
    assert_eq!(
        job["metadata"]["name"].as_str(),
        Some("example-recorder-profile")
    );
    check_push_wiring(job, "docker.io/library/python", Some("registry-push"));
}

/// The sidecar pushes to `repository`, with the credentials of Secret `secret` (when given)
/// mounted read-only where RECORDER_REGISTRY_CONFIG points, and mounted in no other container.
fn check_push_wiring(job: &Value, repository: &str, secret: Option<&str>) {
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

#[test]
fn rendered_job_with_push_validates_and_mounts_the_secret() {
    for secret in [Some("registry-push"), None] {
        let yaml = render_job(&JobRequest {
            image: "quay.io/acme/api:2.4.1".into(),
            push: Some("quay.io/acme/api".into()),
            registry_secret: secret.map(str::to_owned),
            ..JobRequest::default()
        })
        .unwrap();
        validate(&yaml);
        let docs = documents(&yaml);
        check_profiling_job(&docs[0]);
        check_push_wiring(&docs[0], "quay.io/acme/api", secret);
    }
}

#[test]
fn rendered_job_validates_and_is_a_profiling_job() {
    let yaml = render_job(&JobRequest {
        image: "quay.io/acme/api:2.4.1".into(),
        command: vec!["/srv/api".into(), "--self-test".into()],
        name: Some("profile-api".into()),
        namespace: Some("perf".into()),
        recorder_image: Some("registry.example.com/tools/recorder:0.1.0".into()),
        ..JobRequest::default()
    })
    .unwrap();
    validate(&yaml);
    let docs = documents(&yaml);
    assert_eq!(docs.len(), 1);
    let workload = check_profiling_job(&docs[0]);
    assert_eq!(workload["image"].as_str(), Some("quay.io/acme/api:2.4.1"));
    assert_eq!(strings(&workload["command"]), ["/srv/api", "--self-test"]);
    assert_eq!(docs[0]["metadata"]["namespace"].as_str(), Some("perf"));
}

#[test]
fn rendered_base_workload_is_the_kustomize_base() {
    // One source of truth: rendering the base's own workload gives what kustomize builds.
    let built = documents(&kustomize("deploy/kubernetes/base"));
    let workload = &built[0]["spec"]["template"]["spec"]["containers"][0];
    let rendered = render_job(&JobRequest {
        image: workload["image"].as_str().unwrap().to_owned(),
        command: strings(&workload["command"])
            .into_iter()
            .map(str::to_owned)
            .collect(),
        ..JobRequest::default()
    })
    .unwrap();
    assert_eq!(documents(&rendered), built);
}

#[test]
fn validator_rejects_native_sidecars_before_kubernetes_1_28() {
    // Proof that the validation is strict about the field that matters: restartPolicy on an
    // init container did not exist in 1.27.
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), kustomize("deploy/kubernetes/base")).unwrap();
    let out = Command::new(validator())
        .args(["--strict", "--kubernetes-version", "1.27.0"])
        .arg(file.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("'restartPolicy' was unexpected"), "{text}");
}

/// `recorder k8s job` as a user runs it: its stdout (and `--output FILE`) is the Job the library
/// renders for the same request, and it validates.
#[test]
fn the_k8s_job_command_prints_the_rendered_job() {
    let want = render_job(&JobRequest {
        image: "quay.io/acme/api:2.4.1".into(),
        command: vec!["/srv/api".into(), "--self-test".into()],
        name: Some("profile-api".into()),
        namespace: Some("perf".into()),
        recorder_image: Some("registry.example.com/tools/recorder:0.1.0".into()),
        push: None,
        registry_secret: None,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    let args = [
        "k8s",
        "job",
        "--image",
        "quay.io/acme/api:2.4.1",
        "--name",
        "profile-api",
        "--namespace",
        "perf",
        "--recorder-image",
        "registry.example.com/tools/recorder:0.1.0",
        "--",
        "/srv/api",
        "--self-test",
    ];
    let bin = recorder_tests::agent_fixtures::recorder_bin();
    let out = Command::new(&bin).args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim_end(), want.trim_end());
    validate(&printed);
    let workload = check_profiling_job(&documents(&printed)[0]).clone();
    assert_eq!(strings(&workload["command"]), ["/srv/api", "--self-test"]);

    let mut with_output: Vec<&str> = args[..10].to_vec();
    let file_arg = file.to_str().unwrap();
    with_output.extend(["--output", file_arg, "--", "/srv/api", "--self-test"]);
    let out = Command::new(&bin).args(&with_output).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), want);
}
