//! The Kubernetes manifests: the kustomize base and example overlay, built by the real
//! `kubectl kustomize`, and the Job `recorder k8s job` renders, each validated offline against
//! the Kubernetes schemas by the pinned kubernetes-validate, and checked for the structure the
//! profiling run depends on (docs/kubernetes.md).
//!
//! `cargo xtask setup` installs kubectl and the validator; these tests fail when either is
//! missing rather than pass without checking.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

mod kustomize;
mod rendered;
mod shape;

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
