//! A typed view of the parts of a Job that rendering changes; every other field is carried
//! through untouched in `rest`, so the base manifest stays the authority on them.

use serde::{Deserialize, Serialize};
use serde_norway::Mapping;

/// A `batch/v1` Job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// `batch/v1`.
    pub api_version: String,
    /// `Job`.
    pub kind: String,
    /// Name, namespace and the rest of the object metadata.
    pub metadata: ObjectMeta,
    /// The Job's spec.
    pub spec: JobSpec,
    /// Fields this view does not touch.
    #[serde(flatten)]
    pub rest: Mapping,
}

/// Object metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The object's name.
    pub name: String,
    /// The object's namespace, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels, annotations and the like.
    #[serde(flatten)]
    pub rest: Mapping,
}

/// A Job's spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The pod template.
    pub template: PodTemplate,
    /// Fields this view does not touch.
    #[serde(flatten)]
    pub rest: Mapping,
}

/// A pod template.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodTemplate {
    /// The template's metadata, untouched.
    #[serde(default, skip_serializing_if = "Mapping::is_empty")]
    pub metadata: Mapping,
    /// The pod's spec.
    pub spec: PodSpec,
}

/// A pod's spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// Init containers, native sidecars among them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// The regular containers.
    pub containers: Vec<Container>,
    /// Fields this view does not touch.
    #[serde(flatten)]
    pub rest: Mapping,
}

/// A container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Container {
    /// The container's name.
    pub name: String,
    /// The container's image reference.
    pub image: String,
    /// The entrypoint override; none runs the image's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Fields this view does not touch.
    #[serde(flatten)]
    pub rest: Mapping,
}

/// An environment variable of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvVar {
    /// The variable's name.
    pub name: String,
    /// A literal value (absent when the value comes from `valueFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `valueFrom` and the like.
    #[serde(flatten)]
    pub rest: Mapping,
}

impl Job {
    /// The pod spec of the Job's template.
    pub fn pod_spec_mut(&mut self) -> &mut PodSpec {
        &mut self.spec.template.spec
    }
}

impl PodSpec {
    /// The regular container called `name`.
    pub fn container_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|c| c.name == name)
    }

    /// The init container called `name`.
    pub fn init_container_mut(&mut self, name: &str) -> Option<&mut Container> {
        self.init_containers.iter_mut().find(|c| c.name == name)
    }
}

impl Container {
    /// The literal env var called `name`.
    pub fn env_mut(&mut self, name: &str) -> Option<&mut EnvVar> {
        self.env.iter_mut().find(|e| e.name == name)
    }
}
