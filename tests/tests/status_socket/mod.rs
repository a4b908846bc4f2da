//! The status socket, end to end: a real Unix socket, real HTTP/1.1 clients (ours, raw bytes,
//! curl), and the `recorder status` command.

use std::path::{Path, PathBuf};
use std::time::Duration;

use recorder::status::{self, StatusHandle, StopSignal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

mod clients;
mod server;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    status: StatusHandle,
    stop: StopSignal,
    server: Option<status::ServerHandle>,
}

fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.sock");
    let status = StatusHandle::new();
    let stop = StopSignal::new();
    let server = status::serve(&path, status.clone(), stop.clone()).unwrap();
    Fixture {
        _dir: dir,
        path,
        status,
        stop,
        server: Some(server),
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it or `limit`.
async fn raw(path: &Path, request: &[u8], limit: Duration) -> (String, bool) {
    let mut stream = UnixStream::connect(path).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(limit, stream.read_to_end(&mut buf))
        .await
        .is_ok();
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}
