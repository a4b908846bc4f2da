//! containerd as an image source, a record sink and a way to find containers: its gRPC API
//! over the unix socket, through the `containerd-client` crate.
//!
//! - [`client`]: connecting, with errors that say why a socket does not answer.
//! - [`source`]: image references resolved through Images, blobs read through Content.
//! - [`content`]: its content service (records written protected from GC, listed, removed),
//!   and [`ContainerdContent`], the [`crate::content::Store`] over it.
//! - [`target`]: a container's task, or the next matching task as soon as it is created.
//! - [`pattern`]: the `container-name:PATTERN` matcher.
//! - [`runner`]: running an image's container through containerd, held between create and start.
//! - [`stdio`]: the FIFOs through which such a run's stdout and stderr reach ours.
//! - `wait`: waiting for a call from synchronous code, on the process's one runtime.
//! - [`leftovers`]: removing what a dead recorder's runs left (task, container, snapshot, lease).

pub mod client;
pub mod content;
pub mod error;
pub mod leftovers;
pub mod pattern;
pub mod runner;
pub mod source;
pub mod stdio;
pub mod target;
pub(crate) mod wait;

pub use crate::record::stored::{GC_ROOT_LABEL, IMAGE_LABEL, MANIFEST_LABEL, RecordLabels};
pub use client::{Containerd, DEFAULT_ADDRESS, DEFAULT_NAMESPACE};
pub use content::ContainerdContent;
pub use error::{ContainerdError, GrpcStatus, ProtocolFault};
pub use pattern::ContainerPattern;
pub use runner::{ContainerRun, RunError, RunRequest};
pub use source::{ContainerdSource, ImageTarget};
pub use target::{ArmTiming, CreatedTask, TaskTarget, TaskWatcher, Watched};
