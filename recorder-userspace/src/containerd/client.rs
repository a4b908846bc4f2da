//! Connecting to containerd: a gRPC channel over its unix socket, bound to one namespace.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::version_client::VersionClient;
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use tracing::debug;

use super::error::{ContainerdError, GrpcStatus, ProtocolFault, Result};

/// containerd's usual socket.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";

/// The namespace `ctr` and most clients use when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How long connecting and the first call may take before the socket is declared not to be
/// containerd: a live daemon answers Version in milliseconds.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// A connection to one containerd, scoped to one namespace. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    address: PathBuf,
    namespace: String,
    namespace_header: AsciiMetadataValue,
    version: String,
}

impl Containerd {
    /// Connects to the socket at `address` and checks that containerd answers there.
    pub async fn connect(address: impl AsRef<Path>, namespace: &str) -> Result<Containerd> {
        let address = address.as_ref().to_path_buf();
        let namespace_header = namespace_header(namespace)?;
        probe(&address)?;
        let channel = tokio::time::timeout(HANDSHAKE_TIMEOUT, containerd_client::connect(&address))
            .await
            .map_err(|_| protocol(&address, ProtocolFault::ConnectTimeout))?
            .map_err(|e| protocol(&address, ProtocolFault::Connect(e)))?;
        let version = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            VersionClient::new(channel.clone()).version(()),
        )
        .await
        .map_err(|_| protocol(&address, ProtocolFault::VersionTimeout(HANDSHAKE_TIMEOUT)))?
        .map_err(|s| protocol(&address, ProtocolFault::Version(GrpcStatus(s))))?
        .into_inner();
        debug!(address = %address.display(), version = %version.version, namespace, "connected to containerd");
        Ok(Containerd {
            channel,
            address,
            namespace: namespace.to_owned(),
            namespace_header,
            version: version.version,
        })
    }

    /// The socket path.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The namespace every namespaced call is made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's version string, as it reported it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The underlying channel, for services this module does not wrap.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A request carrying this client's namespace.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace_header.clone());
        req
    }

    /// The error of a failed `call` to get one thing: `not_found` when containerd has no such
    /// thing, else [`Self::rpc_error`].
    pub(crate) fn get_error(
        &self,
        call: &'static str,
        status: Status,
        not_found: impl FnOnce() -> ContainerdError,
    ) -> ContainerdError {
        match status.code() {
            Code::NotFound => not_found(),
            _ => self.rpc_error(call, status),
        }
    }

    /// The error for a failed call that has no more specific meaning.
    pub(crate) fn rpc_error(&self, call: &'static str, status: Status) -> ContainerdError {
        ContainerdError::Rpc {
            call,
            address: self.address.clone(),
            status: GrpcStatus(status),
        }
    }
}

/// Checks a namespace the way containerd does (a label: letters, digits, `.`, `_`, `-`), so
/// that a bad one is reported before any call.
fn namespace_header(namespace: &str) -> Result<AsciiMetadataValue> {
    let valid = !namespace.is_empty()
        && namespace.len() <= 76
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && namespace.as_bytes()[0].is_ascii_alphanumeric();
    if !valid {
        return Err(ContainerdError::BadNamespace(namespace.to_owned()));
    }
    AsciiMetadataValue::try_from(namespace)
        .map_err(|_| ContainerdError::BadNamespace(namespace.to_owned()))
}

/// Connects once with a plain socket: tonic folds connect failures into an opaque transport
/// error, and the cause (absent, refused, forbidden, not a socket) is what the user needs.
fn probe(address: &Path) -> Result<()> {
    match std::fs::metadata(address) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ContainerdError::NotRunning {
                address: address.to_owned(),
                detail: "no socket there".into(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ContainerdError::PermissionDenied {
                address: address.to_owned(),
            });
        }
        Err(e) => return Err(protocol(address, ProtocolFault::Socket(e))),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(ContainerdError::NotASocket {
                address: address.to_owned(),
            });
        }
        Ok(_) => {}
    }
    match std::os::unix::net::UnixStream::connect(address) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.kind() {
            io::ErrorKind::ConnectionRefused => ContainerdError::NotRunning {
                address: address.to_owned(),
                detail: "the socket exists but nothing listens on it".into(),
            },
            io::ErrorKind::PermissionDenied => ContainerdError::PermissionDenied {
                address: address.to_owned(),
            },
            _ => protocol(address, ProtocolFault::Socket(e)),
        }),
    }
}

fn protocol(address: &Path, source: ProtocolFault) -> ContainerdError {
    ContainerdError::Protocol {
        address: address.to_owned(),
        source,
    }
}

/// `code: message` of a gRPC status, e.g. `NotFound: image "x": not found`.
pub(crate) fn status_text(status: &Status) -> String {
    let code = match status.code() {
        Code::Unknown if status.message().is_empty() => return "unknown error".into(),
        code => format!("{code:?}"),
    };
    format!("{code}: {}", status.message())
}
