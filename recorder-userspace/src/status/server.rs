//! The HTTP/1.1 server on the status socket.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::metrics;
use super::report::StatusHandle;
use super::stop::StopSignal;

/// How long a client may take to send a request's headers (a local client sends them in
/// microseconds).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a single connection may stay open, however it behaves.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// Read buffer cap; headers larger than this get `431` (hyper's floor is 8 KiB).
const MAX_BUF_SIZE: usize = 16 * 1024;
/// Connections held open at once. A new connection beyond this closes the *oldest* one rather
/// than waiting for a slot: idle clients can no longer keep a real `GET /status` waiting (1,000
/// idle connections used to delay one by 75 s, 64 at a time for 5 s each).
const MAX_CONNECTIONS: usize = 64;

/// Why the status socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another live server answers on the path already.
    #[error("status socket {0} is in use by another process")]
    InUse(PathBuf),
    /// The path exists and is not a socket, so it is not ours to remove.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The path has no parent directory or file name.
    #[error("invalid status socket path {0}")]
    InvalidPath(PathBuf),
    /// A filesystem or socket call failed.
    #[error("status socket {path}: {op} failed")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> ServeError + use<> {
    let path = path.to_owned();
    move |source| ServeError::Io { path, op, source }
}

/// A running status server. [`ServerHandle::shutdown`] (or dropping it) stops it and removes
/// the socket file.
#[derive(Debug)]
pub struct ServerHandle {
    path: PathBuf,
    // (dev, ino) of the socket file we created, so we never remove a successor's socket.
    identity: (u64, u64),
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, closes open connections and removes the socket file.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.remove_socket();
    }

    fn remove_socket(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {
                if let Err(error) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %crate::errors::Chain(&error), "could not remove status socket");
                }
            }
            _ => {}
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.remove_socket();
    }
}

/// Binds the status socket at `path` (mode 0600) and serves it on the current tokio runtime.
///
/// A stale socket file left by a dead process is replaced; a live one, or any other kind of
/// file, is an error.
pub fn serve(
    path: &Path,
    status: StatusHandle,
    stop: StopSignal,
) -> Result<ServerHandle, ServeError> {
    remove_stale(path)?;
    let listener = bind_private(path)?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path, "stat"))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        Arc::new(App { status, stop }),
        shutdown_rx,
    ));
    tracing::info!(path = %path.display(), "status socket listening");
    Ok(ServerHandle {
        path: path.to_owned(),
        identity: (meta.dev(), meta.ino()),
        shutdown,
        task: Some(task),
    })
}

fn remove_stale(path: &Path) -> Result<(), ServeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "stat")(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket(path.to_owned()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServeError::InUse(path.to_owned()));
    }
    tracing::info!(path = %path.display(), "removing stale status socket");
    std::fs::remove_file(path).map_err(io_err(path, "remove stale socket"))
}

/// Binds inside a fresh 0700 directory, chmods to 0600, then renames into place, so no other
/// user can ever connect to the socket while its mode is still the umask's.
fn bind_private(path: &Path) -> Result<UnixListener, ServeError> {
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(ServeError::InvalidPath(path.to_owned())),
    };
    if path.file_name().is_none() {
        return Err(ServeError::InvalidPath(path.to_owned()));
    }
    let staging = parent.join(format!(".recorder-status.{}", std::process::id()));
    // A leftover from a crashed run of the same pid is ours to clear.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_err(&staging, "create staging dir"))?;
    let staged = staging.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&staged).map_err(io_err(&staged, "bind"))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&staged, "chmod"))?;
        std::fs::rename(&staged, path).map_err(io_err(path, "rename into place"))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

struct App {
    status: StatusHandle,
    stop: StopSignal,
}

async fn accept_loop(listener: UnixListener, app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    // Dropping the set on exit aborts every open connection.
    let mut connections = JoinSet::new();
    // Oldest first, for eviction.
    let mut open: VecDeque<AbortHandle> = VecDeque::new();
    loop {
        let stream = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and friends are transient; back off instead of spinning.
                    tracing::warn!(error = %crate::errors::Chain(&error), "status socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        open.retain(|h| !h.is_finished());
        while open.len() >= MAX_CONNECTIONS {
            if let Some(oldest) = open.pop_front() {
                tracing::debug!("status socket full: closing the oldest connection");
                oldest.abort();
            }
        }
        let app = app.clone();
        let handle = connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(&app, &req)) }
            });
            // One request per connection: an idle keep-alive connection is what the cap is
            // about, and every client of this socket connects per request anyway.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(MAX_BUF_SIZE)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(error = %crate::errors::Chain(&error), "status connection ended with an error"),
                Err(_) => tracing::debug!("status connection closed after its lifetime"),
            }
        });
        open.push_back(handle);
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // An error means the handle is gone, which also means stop.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn route(app: &App, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let allowed = match req.uri().path() {
        "/status" | "/metrics" => (Method::GET, "GET"),
        "/stop" => (Method::POST, "POST"),
        other => {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("no such endpoint {other:?}"),
            );
        }
    };
    if req.method() != allowed.0 {
        let mut resp = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} {} is not supported", req.method(), req.uri().path()),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed.1));
        return resp;
    }
    match req.uri().path() {
        "/status" => match serde_json::to_vec(&app.status.snapshot()) {
            Ok(body) => respond(StatusCode::OK, "application/json", body),
            Err(error) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
        },
        "/metrics" => respond(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            metrics::render(&app.status),
        ),
        _ => {
            if app.stop.trigger() {
                tracing::info!("stop requested on the status socket");
            }
            respond(
                StatusCode::ACCEPTED,
                "application/json",
                serde_json::json!({ "stopping": true }).to_string(),
            )
        }
    }
}

fn respond(
    code: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_error(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    respond(
        code,
        "application/json",
        serde_json::json!({ "error": message }).to_string(),
    )
}
