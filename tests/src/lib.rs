//! Shared helpers for the end-to-end tests.

pub mod agent_fixtures;
pub mod containerd;
pub mod cri;
pub mod cri_fixtures;
pub mod deadline;
pub mod estargz;
pub mod image_fixtures;
pub mod kubelet;
pub mod mntns;
pub mod registry;
pub mod root;
pub mod routes_fixtures;
pub mod sandbox_fixtures;
