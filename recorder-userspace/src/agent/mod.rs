//! The recording agent: indexes an image, arms the tracer on a container's mount namespace,
//! turns events into image paths, and commits the record.
//!
//! - [`session`]: the lifecycle, [`Agent`] → [`Indexed`] (or [`Ready`] → [`Buffering`]) → [`Tracing`] → [`Stopped`] →
//!   [`Committing`] → [`Summary`], moving the status along.
//! - [`tracing`]: [`Tracing`], the armed filter's events through the [`core`] (events to
//!   decisions, record entries and counters, no kernel) into the record; [`stopped`]:
//!   [`Stopped`] and [`Committing`].
//! - [`resolve`]: one event to one decision (the image path and layer read, or why not).
//! - [`mounts`]: the container's mounts, whose content the image does not provide.
//! - [`stop`]: period, signals, `--until-exit`, `POST /stop`.
//! - [`commit`]: the record to the content store, `--record-out`, and a fallback file.
//! - [`summary`]: what happened; [`outcome`]: what it means, and the exit status.
//! - [`workdir`]: the scratch space of `recorder run`; [`opened`]: its image, indexed where
//!   that costs no decompression; [`unpack`]: its layers unpacked, the others indexed meanwhile.

pub mod catch;
pub mod commit;
pub mod core;
pub mod interp;
pub mod mounts;
pub mod opened;
pub mod outcome;
pub mod procs;
pub mod resolve;
pub mod session;
pub mod source;
pub mod stop;
pub mod stopped;
pub mod summary;
pub mod tracing;
pub mod unpack;
pub mod workdir;

use std::io;

pub use catch::{Catching, Caught};
pub use commit::{CommitError, CommitOptions, Committed, ContainerdSink, RecordSink};
pub use mounts::{MountTable, MountsError};
pub use opened::Opened;
pub use outcome::{
    EXIT_USAGE, EXIT_WORKLOAD_FAILED, Outcome, OutcomeReport, Verdict, WorkloadExit,
};
pub use resolve::{Decision, Exclusion, Resolver};
pub use session::{Agent, Buffering, IndexFailure, Indexed, Ready, Target};
pub use source::ImageSource;
pub use stop::{StopConditions, StopReason, Stops};
pub use stopped::{COMMIT_TIMEOUT, Committing, Stopped};
pub use summary::{EXIT_COMPLETE, EXIT_ERROR, EXIT_INCOMPLETE, Summary};
pub use tracing::Tracing;
pub use unpack::{UnpackTo, Unpacked, unpack_layers};
pub use workdir::WorkDir;

use crate::containerd::{ContainerdError, RunError};
use crate::image::ImageError;
use crate::sandbox::{SandboxError, SpecError, UnpackError};
use crate::tracer::TracerError;

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The image could not be read or indexed.
    #[error("using image {image} failed")]
    Image {
        /// Which image (or layer).
        image: String,
        /// The cause.
        #[source]
        source: ImageError,
    },
    /// The tracer failed.
    #[error(transparent)]
    Tracer(#[from] TracerError),
    /// The target's mounts could not be read.
    #[error(transparent)]
    Mounts(#[from] MountsError),
    /// The target does not exist or cannot be traced.
    #[error("target {target}: {message}")]
    Target {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        message: String,
    },
    /// The target's process is gone.
    #[error("target {target}: the process vanished")]
    Vanished {
        /// The target as given.
        target: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The target could not be looked at (its mount namespace, its processes).
    #[error("target {target}: {op} failed")]
    TargetUnreadable {
        /// The target as given.
        target: String,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The tracer's events were already taken.
    #[error("the tracer's event stream was already taken")]
    StreamTaken,
    /// The record could not be committed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// A layer could not be unpacked for `recorder run`.
    #[error("unpacking layer {layer} failed")]
    Unpack {
        /// The layer.
        layer: usize,
        /// The cause.
        #[source]
        source: UnpackError,
    },
    /// The layer cache could not be used.
    #[error(transparent)]
    Cache(#[from] crate::sandbox::CacheError),
    /// The image's process could not be turned into a command.
    #[error("building the image's process failed")]
    Spec(#[from] SpecError),
    /// The sandbox failed.
    #[error("the sandbox failed")]
    Sandbox(#[from] SandboxError),
    /// Running the workload through containerd failed.
    #[error(transparent)]
    Run(RunError),
    /// A signal or stop request came before tracing started: there is nothing to commit.
    #[error("stopped ({0}) before tracing started; nothing was recorded")]
    StoppedEarly(StopReason),
    /// Nothing was recorded, and `--allow-empty` was not given: nothing is committed.
    #[error(
        "nothing was recorded ({detail}); nothing was committed. Check that --target is the \
         container that runs --image and that the workload reads its image's files; to commit \
         an empty record anyway, pass --allow-empty"
    )]
    EmptyRecord {
        /// What was seen instead: events, exclusions, what stopped tracing.
        detail: String,
    },
    /// A system call failed.
    #[error("{op} failed")]
    Io {
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// containerd could not find, or lost, the target container.
    #[error(transparent)]
    Containerd(Box<crate::containerd::ContainerdError>),
    /// A background task panicked or was cancelled.
    #[error("a background task failed")]
    Join(#[source] tokio::task::JoinError),
    /// The image could not be opened from containerd.
    #[error("opening {reference} from containerd")]
    OpenImage {
        /// The image reference.
        reference: String,
        /// The cause.
        #[source]
        source: Box<ContainerdError>,
    },
    /// The status socket could not be served.
    #[error(transparent)]
    Status(#[from] crate::status::ServeError),
}

impl From<ContainerdError> for AgentError {
    fn from(e: ContainerdError) -> Self {
        AgentError::Containerd(Box::new(e))
    }
}

impl From<RunError> for AgentError {
    fn from(error: RunError) -> Self {
        match error {
            RunError::Containerd(e) => e.into(),
            RunError::Process(e) => AgentError::Spec(e),
            other => AgentError::Run(other),
        }
    }
}
