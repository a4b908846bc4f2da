//! The client end of the status socket, used by `recorder status` and the tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::report::StatusReport;
use super::state::State;

/// How long one request may take end to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to the status socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (or it does not exist).
    #[error("connecting to status socket {path} failed")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the status socket request failed")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("building the request failed")]
    Request(#[from] hyper::http::Error),
    /// The server answered with an error status.
    #[error("status socket answered {code}: {body}")]
    Status {
        /// The HTTP status.
        code: StatusCode,
        /// The response body, as text.
        body: String,
    },
    /// The `/status` body was not a status report.
    #[error("decoding the status report failed")]
    Decode(#[from] serde_json::Error),
    /// The server did not answer in time.
    #[error("status socket did not answer within {0:?}")]
    Timeout(Duration),
}

/// Why waiting for a state ended without reaching it.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The agent failed before reaching the state.
    #[error("agent failed before reaching {wanted}: {}", report.error.as_deref().unwrap_or("no error given"))]
    Failed {
        /// The state waited for.
        wanted: State,
        /// The last report.
        report: Box<StatusReport>,
    },
    /// The agent finished without ever entering the state.
    #[error("agent is {} and never entered {wanted}", report.state)]
    Unreachable {
        /// The state waited for.
        wanted: State,
        /// The last report.
        report: Box<StatusReport>,
    },
    /// The socket went away after answering: the recorder exited without the state showing.
    #[error(
        "the recorder's status socket went away (last state: {last}) before it entered \
         {wanted}; give the recorder --linger 10s to keep its final state readable"
    )]
    Gone {
        /// The state waited for.
        wanted: State,
        /// The last state seen.
        last: State,
    },
    /// The timeout elapsed first.
    #[error("timed out after {timeout:?} waiting for {wanted} (last: {last})")]
    Timeout {
        /// The state waited for.
        wanted: State,
        /// How long we waited.
        timeout: Duration,
        /// The last state seen, or the last error.
        last: String,
    },
}

/// Sends one request and returns the status code and body.
async fn request(
    path: &Path,
    method: Method,
    uri: &str,
) -> Result<(StatusCode, Bytes), ClientError> {
    let exchange = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let code = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        driver.abort();
        Ok((code, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))?
}

async fn request_ok(path: &Path, method: Method, uri: &str) -> Result<Bytes, ClientError> {
    let (code, body) = request(path, method, uri).await?;
    if !code.is_success() {
        return Err(ClientError::Status {
            code,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body)
}

/// `GET /status`.
pub async fn status(path: &Path) -> Result<StatusReport, ClientError> {
    let body = request_ok(path, Method::GET, "/status").await?;
    Ok(serde_json::from_slice(&body)?)
}

/// `GET /metrics`, as text.
pub async fn metrics(path: &Path) -> Result<String, ClientError> {
    let body = request_ok(path, Method::GET, "/metrics").await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `POST /stop`: asks the agent to begin committing.
pub async fn stop(path: &Path) -> Result<(), ClientError> {
    request_ok(path, Method::POST, "/stop").await.map(drop)
}

/// Polls `GET /status` every `interval` until `wanted` has been entered, the agent can no
/// longer reach it, or `timeout` elapses. Connection errors are retried: the agent may not
/// have created its socket yet.
pub async fn wait_for(
    path: &Path,
    wanted: State,
    timeout: Duration,
    interval: Duration,
) -> Result<StatusReport, WaitError> {
    let deadline = Instant::now() + timeout;
    let mut last;
    let mut seen: Option<State> = None;
    loop {
        match status(path).await {
            Ok(report) => {
                seen = Some(report.state);
                if report.has_passed(wanted) {
                    return Ok(report);
                }
                if report.state == State::Failed {
                    return Err(WaitError::Failed {
                        wanted,
                        report: Box::new(report),
                    });
                }
                if report.state.is_terminal() {
                    return Err(WaitError::Unreachable {
                        wanted,
                        report: Box::new(report),
                    });
                }
                last = report.state.to_string();
            }
            Err(ClientError::Connect { source, .. })
                if seen.is_some()
                    && matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
            {
                return Err(WaitError::Gone {
                    wanted,
                    last: seen.unwrap_or(State::Starting),
                });
            }
            Err(error) => {
                tracing::debug!(%error, "status not available yet");
                last = error.to_string();
            }
        }
        if Instant::now() + interval > deadline {
            return Err(WaitError::Timeout {
                wanted,
                timeout,
                last,
            });
        }
        tokio::time::sleep(interval).await;
    }
}
