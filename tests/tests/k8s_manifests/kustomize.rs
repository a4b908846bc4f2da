//! The kustomize base and example overlay, built by the real `kubectl kustomize` and validated.

use std::process::Command;

use super::{
    documents, kustomize, shape::check_profiling_job, shape::check_push_wiring, strings, validate,
    validator,
};

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
