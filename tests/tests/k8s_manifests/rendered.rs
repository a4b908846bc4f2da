//! The Job `recorder k8s job` renders: validated, the base's workload, push wiring, the command.

use std::process::Command;

use recorder::k8s::{JobRequest, render_job};

use super::{
    documents, kustomize, shape::check_profiling_job, shape::check_push_wiring, strings, validate,
};

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
