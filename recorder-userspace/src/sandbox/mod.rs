//! Self-contained profiling runs (`recorder run`): the image's layers as an overlay with a
//! throwaway upper dir, as the root of a runc container confined like a container runtime's
//! (see [`runtime_spec`](mod@runtime_spec)), held before exec so the tracer can be armed on
//! the workload's mount namespace first.
//!
//! - [`unpack_layer`] turns an uncompressed OCI layer tar into an overlay lowerdir.
//! - [`LayerCache`] keeps unpacked layers for later runs, keyed by diff id.
//! - [`ImageProcess::to_spec`] turns an image config into a [`ProcessSpec`].
//! - [`runtime_spec()`] builds the OCI runtime spec, for runc here and for containerd's shim.
//! - [`Sandbox::start`] creates the container and returns a [`Pending`] workload; arm the
//!   tracer with [`Pending::mntns_inode`], then [`Pending::release`] and [`Running::wait`].
//!
//! The overlay exists only in the container's mount namespace and vanishes with it; the
//! scratch dir is removed on every way out, including drop, and by a [`Watchdog`] if the
//! recorder is killed.
//!
//! The rooms, one concept each:
//!
//! | module | what it is for |
//! | --- | --- |
//! | `unpack/` | a layer tar into a lower dir: the entry walk (each entry also given to a `TarIndexer` when the layer is indexed in the same pass); `budget`, `dirs`, `entry`, `file`, `xattr`; `workers`: small files created on worker threads |
//! | [`cache`] | the layer cache: opening it; `entry` (acquire, make), `eviction` (list, clear, evict), `lock` |
//! | `spec`, `overrides` | the process: from the image config, and what `run`'s flags change of it |
//! | [`runtime_spec`](mod@runtime_spec) | the one OCI runtime spec builder; `capabilities`, `mounts` |
//! | [`seccomp`], `bind`, `plan` | the seccomp profile, `--mount`'s bind mounts, the overlay's options |
//! | `run` | [`Sandbox`] and its start |
//! | `runc`, `scratch`, `loopback` | calling runc, the run's private dir, the container's `lo` |
//! | `workload` | [`Pending`], [`Running`] and the guard that cleans up after them |
//! | [`watchdog`] | the process that cleans up after a killed recorder |

mod bind;
pub mod cache;
mod loopback;
mod overrides;
mod plan;
mod run;
mod runc;
pub mod runtime_spec;
mod scratch;
pub mod seccomp;
mod spec;
mod unpack;
pub mod watchdog;
mod workload;

pub use bind::{BindMount, BindMountError};
pub use cache::{CacheError, CachedLayer, DEFAULT_CACHE_DIR, LayerCache, Lookup};
pub use overrides::{ProcessOverrides, parse_env_file};
pub use plan::PlanError;
pub use run::{Sandbox, SandboxError};
pub use runc::find_runc;
pub use runtime_spec::{Confinement, DEFAULT_PIDS_LIMIT, SpecLayout, runtime_spec};
pub use spec::{DEFAULT_PATH, ImageProcess, ProcessSpec, ResolvedUser, SpecError, resolve_user};
pub use unpack::{
    UnpackBudget, UnpackError, UnpackStats, unpack_layer, unpack_layer_indexed,
    unpack_layer_with_workers, unpack_layer_within,
};
pub use watchdog::{Watchdog, WatchedContainer};
pub use workload::{Pending, Running};
