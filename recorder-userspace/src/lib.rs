//! recorder: watches a container and records which files of its image it reads, in what order,
//! and from which layer, in stargz-snapshotter's record format.

pub mod agent;
pub mod containerd;
pub mod content;
pub mod errors;
pub mod escape;
pub mod files;
pub mod image;
pub mod k8s;
pub mod outputs;
pub mod procfs;
pub mod progress;
pub mod record;
pub mod recording;
pub mod registry;
pub mod sandbox;
pub mod status;
pub mod store;
pub mod time;
pub mod tracer;
