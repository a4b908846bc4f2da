//! Self-contained profiling runs (`recorder run`): the image's layers as a read-only overlay
//! with a throwaway upper dir, in private mount and PID namespaces, held before exec so the
//! tracer can be armed on the workload's mount namespace first.
//!
//! - [`unpack_layer`] turns an uncompressed OCI layer tar into an overlay lowerdir.
//! - [`ImageProcess::to_spec`] turns an image config into a [`ProcessSpec`].
//! - [`Sandbox::start`] sets up the container and returns a [`Pending`] workload; arm the
//!   tracer with [`Pending::mntns_inode`], then [`Pending::release`] and [`Running::wait`].
//!
//! Mounts exist only in the workload's namespace and vanish with it (PID 1 exiting kills the
//! rest of the namespace); the scratch dir is removed on every way out, including drop.
//! The agent should turn SIGINT/SIGTERM into dropping (or killing and waiting for) the
//! workload: no parent-death signal is set, because Linux ties it to the forking *thread*,
//! and a tokio blocking-pool thread exiting would kill a healthy workload.

mod child;
mod plan;
mod run;
mod spec;
mod unpack;

pub use plan::PlanError;
pub use run::{Pending, Running, Sandbox, SandboxError};
pub use spec::{DEFAULT_PATH, ImageProcess, ProcessSpec, ResolvedUser, SpecError, resolve_user};
pub use unpack::{UnpackError, UnpackStats, unpack_layer};
