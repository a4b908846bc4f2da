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
    #[error("{address} does not answer as containerd")]
    Protocol {
        /// The socket path.
        address: PathBuf,
        /// What went wrong.
        #[source]
        source: ProtocolFault,
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
        message: &'static str,
    },
    /// The event subscription failed before a matching task was created.
    #[error("containerd's event stream at {address} ended")]
    EventsFailed {
        /// The socket path.
        address: PathBuf,
        /// containerd's status.
        #[source]
        status: GrpcStatus,
    },
    /// A containerd call failed.
    #[error("containerd {call} at {address}")]
    Rpc {
        /// The RPC, e.g. `Content.Write`.
        call: &'static str,
        /// The socket path.
        address: PathBuf,
        /// containerd's status.
        #[source]
        status: GrpcStatus,
    },
    /// A containerd call that cannot be made as asked, or whose reply cannot be used.
    #[error("containerd {call} at {address}: {message}")]
    BadCall {
        /// The RPC, e.g. `Content.Write`.
        call: &'static str,
        /// The socket path.
        address: PathBuf,
        /// What is wrong with the request or the reply.
        message: String,
    },
    /// Reading or checking image content failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Reading a process's namespace failed.
    #[error(transparent)]
    Tracer(#[from] TracerError),
}

/// Why a socket does not answer as containerd ([`ContainerdError::Protocol`]).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolFault {
    /// The path could not be checked or connected to.
    #[error(transparent)]
    Socket(std::io::Error),
    /// The gRPC connection was not made in time.
    #[error("timed out connecting")]
    ConnectTimeout,
    /// The gRPC connection failed; the transport error and its causes say how.
    #[error(transparent)]
    Connect(containerd_client::tonic::transport::Error),
    /// The Version call did not answer in time.
    #[error("no answer to Version within {0:?}")]
    VersionTimeout(std::time::Duration),
    /// The Version call failed.
    #[error(transparent)]
    Version(GrpcStatus),
}

/// A gRPC status as containerd's errors name it, `Code: message` (tonic's own display adds
/// the details and metadata, which say nothing here).
#[derive(Debug, thiserror::Error)]
#[error("{}", super::client::status_text(.0))]
pub struct GrpcStatus(pub containerd_client::tonic::Status);

/// Result of the containerd side.
pub type Result<T, E = ContainerdError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_client::tonic::{Code, Status};

    #[test]
    fn statuses_chain_as_code_and_message() {
        let address = PathBuf::from("/run/c.sock");
        for (error, want) in [
            (
                ContainerdError::Rpc {
                    call: "Content.Info",
                    address: address.clone(),
                    status: GrpcStatus(Status::new(Code::NotFound, "blob x: not found")),
                },
                "containerd Content.Info at /run/c.sock: NotFound: blob x: not found",
            ),
            (
                ContainerdError::Protocol {
                    address: address.clone(),
                    source: ProtocolFault::VersionTimeout(std::time::Duration::from_secs(10)),
                },
                "/run/c.sock does not answer as containerd: no answer to Version within 10s",
            ),
            (
                ContainerdError::EventsFailed {
                    address: address.clone(),
                    status: GrpcStatus(Status::new(Code::Unknown, "")),
                },
                "containerd's event stream at /run/c.sock ended: unknown error",
            ),
        ] {
            assert_eq!(crate::errors::Chain(&error).to_string(), want);
        }
    }
}
