//! The end-to-end suite, as one test binary (ripgrep's `tests/tests.rs`): each module is the
//! tests of one promise, as tests/README.md maps them. One binary links the test crate and the
//! recorder library once instead of once per file: 37 binaries of about 155 MB each (5.7 GB of
//! a 9 GB target dir, which filled a CI machine's disk) became one.
//!
//! Tests of different modules now run side by side (libtest's threads), as the tests of one
//! file always did: none may depend on another's absence, so each finds what it checks by its
//! own temp dir, container id or parent pid, never by a host-wide scan.

mod agent_record;
mod agent_run;
mod agent_status;
mod bounds;
mod capture_routes;
mod cli_forms;
mod containerd_content;
mod containerd_errors;
mod containerd_image;
mod containerd_leftovers;
mod containerd_record;
mod containerd_run;
mod containerd_targets;
mod containment;
mod ctr_conventions;
mod helpful_errors;
mod hostile_names;
mod image_errors;
mod image_estargz;
mod image_merged;
mod image_zstd_chunked;
mod interop_ctr_remote;
mod k8s_cri;
mod k8s_manifests;
mod layer_cache;
mod outcomes;
mod outputs;
mod poller_states;
mod progress;
mod record;
mod record_store;
mod record_views;
mod registry;
mod registry_referrers_api;
mod registry_run;
mod run_mounts;
mod run_one_pass;
mod run_overrides;
mod sandbox;
mod status_socket;
mod store;
mod tracer;
mod xtask;
