//! Kubernetes: the profiling-run Job that runs a workload beside the recorder as a native sidecar.
//!
//! `deploy/kubernetes/base/job.yaml` is the one source of the Job; this module embeds it and
//! patches it structurally, so `recorder k8s job` and the kustomize base cannot drift apart.
//! [`normalize_reference`] turns a pod spec's image into the name the CRI gives it in containerd.

mod job;
mod manifest;
mod reference;

pub use job::{JobRequest, K8sError, render_job};
pub use manifest::{Container, EnvVar, Job};
pub use reference::normalize_reference;

/// The base Job manifest, as kustomize builds it from `deploy/kubernetes/base`.
pub const BASE_JOB_YAML: &str = include_str!("../../../deploy/kubernetes/base/job.yaml");

/// Name of the workload container; the recorder's `--target k8s:$(POD_UID)/NAME` names it.
pub const WORKLOAD_CONTAINER: &str = "workload";

/// Name of the recorder's sidecar (a restartable init container).
pub const RECORDER_CONTAINER: &str = "recorder";

/// Env var of the recorder container holding the workload's image (its `--image`).
pub const WORKLOAD_IMAGE_ENV: &str = "WORKLOAD_IMAGE";

/// Env var of the recorder container naming the repository to push the record to (read by
/// `--push`).
pub const PUSH_ENV: &str = "RECORDER_PUSH";

/// Env var of the recorder container naming the registry credentials file (read by
/// `--registry-config`).
pub const REGISTRY_CONFIG_ENV: &str = "RECORDER_REGISTRY_CONFIG";

/// Where the registry Secret's docker config.json is mounted in the recorder container.
pub const REGISTRY_CONFIG_PATH: &str = "/etc/recorder/registry/config.json";

/// Name of the volume holding the registry Secret.
pub const REGISTRY_VOLUME: &str = "registry-credentials";
