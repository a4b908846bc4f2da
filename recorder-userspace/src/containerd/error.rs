//! Errors of the containerd side: each names the socket, namespace, image or container at fault.

use std::path::PathBuf;

use crate::image::ImageError;
use crate::tracer::TracerError;

/// Why containerd could not be reached or could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// Nothing exists at the socket path, or nothing listens on it.
    #[error("containerd is not running at {address} ({detail})")]
    NotRunning {
        /// The socket path.
        address: PathBuf,
        /// What was found there.
        detail: String,
    },
    /// The socket exists but this user may not connect to it.
    #[error(
        "permission denied connecting to containerd at {address} (run as root, or as a user allowed on the socket)"
    )]
    PermissionDenied {
        /// The socket path.
        address: PathBuf,
    },
    /// The path exists but is not a unix socket.
    #[error("{address} is not a unix socket, so not containerd's address")]
    NotASocket {
        /// The path.
        address: PathBuf,
    },
    /// Something listens, but it does not answer containerd's gRPC API in time or at all.
    #[error("{address} does not answer as containerd: {message}")]
    Protocol {
        /// The socket path.
        address: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A namespace name containerd would refuse.
    #[error("invalid containerd namespace {0:?}: use letters, digits, '.', '_' and '-'")]
    BadNamespace(String),
    /// The image reference is not in the namespace.
    #[error("image {reference:?} not found in containerd namespace {namespace:?} at {address}")]
    ImageNotFound {
        /// The reference asked for.
        reference: String,
        /// The namespace searched.
        namespace: String,
        /// The socket path.
        address: PathBuf,
    },
    /// The container does not exist.
    #[error("container {id:?} not found in containerd namespace {namespace:?}")]
    ContainerNotFound {
        /// The container id.
        id: String,
        /// The namespace searched.
        namespace: String,
    },
    /// The container exists but has no running task.
    #[error("container {id:?} has no running task (not started, or it has exited)")]
    NoTask {
        /// The container id.
        id: String,
    },
    /// The container's process was gone before the filter could be armed.
    #[error("container {id:?} (pid {pid}) exited before the filter was armed")]
    Exited {
        /// The container id.
        id: String,
        /// Its init process.
        pid: u32,
    },
    /// The task's process exists but its mount namespace cannot be read by this process.
    #[error(
        "the mount namespace of container {id:?} (pid {pid}) is not readable: the recorder needs \
         CAP_SYS_PTRACE (or the workload's uid) to read /proc/{pid}/ns/mnt"
    )]
    Unreadable {
        /// The container id.
        id: String,
        /// Its init process.
        pid: u32,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A target string is not `container:ID` or `container-name:PATTERN`.
    #[error("invalid containerd target {0:?}: expected container:ID or container-name:PATTERN")]
    BadTarget(String),
    /// The event subscription ended before a matching task was created.
    #[error("containerd's event stream at {address} ended: {message}")]
    EventsEnded {
        /// The socket path.
        address: PathBuf,
        /// Why.
        message: String,
    },
    /// A containerd call failed.
    #[error("containerd {call} at {address}: {message}")]
    Rpc {
        /// The RPC, e.g. `Content.Write`.
        call: &'static str,
        /// The socket path.
        address: PathBuf,
        /// The status code and message.
        message: String,
    },
    /// Reading or checking image content failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Reading a process's namespace failed.
    #[error(transparent)]
    Tracer(#[from] TracerError),
}

/// Result of the containerd side.
pub type Result<T, E = ContainerdError> = std::result::Result<T, E>;
