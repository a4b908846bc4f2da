//! The status socket, end to end: a real Unix socket, real HTTP/1.1 clients (ours, raw bytes,
//! curl), and the `recorder status` command.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use recorder::status::{self, ServeError, State, StatusHandle, StopSignal, client};
use recorder_tests::agent_fixtures::recorder_bin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_state_history_and_counters() {
    let f = start();
    let mode = std::fs::symlink_metadata(&f.path).unwrap();
    assert!(mode.file_type().is_socket());
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let report = client::status(&f.path).await.unwrap();
    assert_eq!(report.state, State::Starting);
    assert!(report.target.is_none() && report.record_digest.is_none() && report.error.is_none());

    f.status.set_target("ctr-1234");
    f.status.set_manifest_digest("sha256:abc");
    f.status.set_state(State::Indexing);
    f.status.set_state(State::Tracing);
    f.status.add_events(10);
    f.status.add_recorded_paths(4);
    f.status.add_failed_opens(2);
    f.status.add_excluded("not-in-image", 3);
    f.status.set_lost(1);
    f.status.set_state(State::Committing);
    f.status.set_record_digest("sha256:def");
    f.status.set_state(State::Done);

    let report = client::status(&f.path).await.unwrap();
    assert_eq!(report.state, State::Done);
    let states: Vec<State> = report.states.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [
            State::Starting,
            State::Indexing,
            State::Tracing,
            State::Committing,
            State::Done
        ]
    );
    assert!(report.states.iter().all(|c| c.since.ends_with('Z')));
    assert_eq!(report.since, report.states[4].since);
    assert_eq!(report.target.as_deref(), Some("ctr-1234"));
    assert_eq!(report.manifest_digest.as_deref(), Some("sha256:abc"));
    assert_eq!(report.record_digest.as_deref(), Some("sha256:def"));
    assert_eq!(report.counters.events, 10);
    assert_eq!(report.counters.recorded_paths, 4);
    assert_eq!(report.counters.failed_opens, 2);
    assert_eq!(report.counters.excluded["not-in-image"], 3);
    assert_eq!(report.counters.lost, 1);

    // The wire names are the ones the issue specifies.
    let (resp, _) = raw(
        &f.path,
        b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    for key in [
        "state",
        "since",
        "states",
        "target",
        "manifestDigest",
        "counters",
        "recordDigest",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    for key in ["events", "recordedPaths", "failedOpens", "excluded", "lost"] {
        assert!(
            json["counters"].get(key).is_some(),
            "missing counters.{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_state_carries_the_error() {
    let f = start();
    f.status.set_state(State::Indexing);
    f.status.fail("image not found: foo");
    let report = client::status(&f.path).await.unwrap();
    assert_eq!(report.state, State::Failed);
    assert_eq!(report.error.as_deref(), Some("image not found: foo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text() {
    let f = start();
    f.status.set_state(State::Tracing);
    f.status.add_events(7);
    f.status.add_excluded("pseudo-fs", 5);
    let text = client::metrics(&f.path).await.unwrap();
    for name in [
        "recorder_events_total",
        "recorder_recorded_paths_total",
        "recorder_failed_opens_total",
        "recorder_events_lost_total",
        "recorder_excluded_total",
    ] {
        assert!(text.contains(&format!("# HELP {name} ")), "{text}");
        assert!(text.contains(&format!("# TYPE {name} counter\n")), "{text}");
    }
    assert!(text.contains("# TYPE recorder_state gauge\n"));
    assert!(text.contains("\nrecorder_events_total 7\n"));
    assert!(text.contains("\nrecorder_excluded_total{reason=\"pseudo-fs\"} 5\n"));
    assert!(text.contains("\nrecorder_state{state=\"tracing\"} 1\n"));
    assert!(text.contains("\nrecorder_state{state=\"done\"} 0\n"));
    let (resp, _) = raw(
        &f.path,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        resp.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{resp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_stop_fires_the_signal() {
    let f = start();
    let waiter = tokio::spawn({
        let stop = f.stop.clone();
        async move { stop.triggered().await }
    });
    assert!(!f.stop.is_triggered());
    client::stop(&f.path).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("stop signal did not fire")
        .unwrap();
    // Stopping twice is harmless.
    client::stop(&f.path).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_the_server_keeps_working() {
    let f = start();
    let limit = Duration::from_secs(5);

    let (resp, closed) = raw(&f.path, b"\x00\x01\x02garbage\xff\xfe\r\n\r\n", limit).await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 400"), "{resp:?}");
    assert!(closed, "connection not closed after garbage");

    let (resp, _) = raw(
        &f.path,
        b"DELETE /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        limit,
    )
    .await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 405"), "{resp}");
    assert!(resp.to_ascii_lowercase().contains("allow: get"), "{resp}");

    let (resp, _) = raw(
        &f.path,
        b"GET /stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        limit,
    )
    .await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 405"), "{resp}");
    assert!(!f.stop.is_triggered(), "GET /stop must not stop the agent");

    let (resp, _) = raw(
        &f.path,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        limit,
    )
    .await;
    assert!(status_line(&resp).starts_with("HTTP/1.1 404"), "{resp}");

    let mut huge = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    huge.extend(b"\r\n\r\n");
    let mut stream = UnixStream::connect(&f.path).await.unwrap();
    // The server may close before it has read everything; a broken pipe here is fine.
    let _ = stream.write_all(&huge).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await;
    let resp = String::from_utf8_lossy(&buf);
    assert!(status_line(&resp).starts_with("HTTP/1.1 431"), "{resp:?}");

    // After all that abuse, the agent's server still answers.
    f.status.set_state(State::Tracing);
    assert_eq!(client::status(&f.path).await.unwrap().state, State::Tracing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_does_not_block_others_and_is_timed_out() {
    let f = start();
    let mut stuck = UnixStream::connect(&f.path).await.unwrap();
    stuck
        .write_all(b"GET /status HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut idle = UnixStream::connect(&f.path).await.unwrap();

    let started = Instant::now();
    for _ in 0..5 {
        client::status(&f.path).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "others were blocked"
    );

    // The server gives up on the stuck clients after its header read timeout.
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stuck.read_to_end(&mut buf))
        .await
        .expect("stuck client was never disconnected")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut buf))
        .await
        .expect("idle client was never disconnected")
        .unwrap();
    assert_eq!(
        client::status(&f.path).await.unwrap().state,
        State::Starting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_file_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");

    // A regular file is never replaced.
    std::fs::write(&path, b"not a socket").unwrap();
    let err = status::serve(&path, StatusHandle::new(), StopSignal::new()).unwrap_err();
    assert!(matches!(err, ServeError::NotASocket(_)), "{err}");
    std::fs::remove_file(&path).unwrap();

    // A stale socket (nobody listening) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = status::serve(&path, StatusHandle::new(), StopSignal::new()).unwrap();

    // A live one is not.
    let err = status::serve(&path, StatusHandle::new(), StopSignal::new()).unwrap_err();
    assert!(matches!(err, ServeError::InUse(_)), "{err}");
    client::status(&path).await.unwrap();

    server.shutdown().await;
    assert!(!path.exists(), "socket file left behind after shutdown");
    assert!(client::status(&path).await.is_err());
    // No staging directory left behind either.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Dropping the handle also cleans up.
    let server = status::serve(&path, StatusHandle::new(), StopSignal::new()).unwrap();
    drop(server);
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_follows_the_agent() {
    let f = start();
    let agent = tokio::spawn({
        let status = f.status.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            status.set_state(State::Indexing);
            tokio::time::sleep(Duration::from_millis(300)).await;
            status.set_state(State::Tracing);
        }
    });
    let interval = Duration::from_millis(50);
    let report = client::wait_for(&f.path, State::Tracing, Duration::from_secs(10), interval)
        .await
        .unwrap();
    assert_eq!(report.state, State::Tracing);
    agent.await.unwrap();

    // A state already passed counts as reached.
    f.status.set_state(State::Committing);
    client::wait_for(&f.path, State::Indexing, Duration::from_secs(5), interval)
        .await
        .unwrap();

    // Not reached in time.
    let err = client::wait_for(&f.path, State::Done, Duration::from_millis(300), interval)
        .await
        .unwrap_err();
    assert!(matches!(err, client::WaitError::Timeout { .. }), "{err}");

    f.status.fail("disk full");
    let err = client::wait_for(&f.path, State::Done, Duration::from_secs(5), interval)
        .await
        .unwrap_err();
    assert!(matches!(err, client::WaitError::Failed { .. }), "{err}");
    assert!(err.to_string().contains("disk full"));

    let g = start();
    g.status.set_state(State::Done);
    let err = client::wait_for(&g.path, State::Failed, Duration::from_secs(5), interval)
        .await
        .unwrap_err();
    assert!(
        matches!(err, client::WaitError::Unreachable { .. }),
        "{err}"
    );

    // A socket that does not exist yet is retried until the timeout.
    let missing = g.path.with_file_name("later.sock");
    let err = client::wait_for(
        &missing,
        State::Starting,
        Duration::from_millis(300),
        interval,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, client::WaitError::Timeout { .. }), "{err}");
    drop(g.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_to_the_socket() {
    assert!(
        which("curl").is_some(),
        "curl is not installed: `cargo xtask setup` installs it"
    );
    let f = start();
    f.status.set_state(State::Tracing);
    let curl = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["--silent", "--show-error", "--unix-socket"])
            .arg(&f.path)
            .args(args);
        cmd
    };
    let out = curl(&["http://localhost/status"]).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state"], "tracing");

    let out = curl(&["http://localhost/metrics"]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("recorder_state{state=\"tracing\"} 1"));

    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "http://localhost/status",
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");

    let out = curl(&["-X", "POST", "http://localhost/stop"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert!(f.stop.is_triggered());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_status_command() {
    let bin = recorder_bin();
    let f = start();
    f.status.set_target("my-container");
    f.status.set_state(State::Tracing);
    f.status.add_events(3);

    let out = tokio::process::Command::new(&bin)
        .args(["status", "--socket"])
        .arg(&f.path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state:    tracing"), "{text}");
    assert!(text.contains("my-container"), "{text}");

    let out = tokio::process::Command::new(&bin)
        .args(["status", "--json", "--socket"])
        .arg(&f.path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["counters"]["events"], 3);

    // --wait returns once the agent gets there.
    let mut waiter = tokio::process::Command::new(&bin)
        .args(["status", "--wait", "done", "--timeout", "10", "--socket"])
        .arg(&f.path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "--wait done returned while the agent was still tracing"
    );
    f.status.set_state(State::Done);
    let out = tokio::time::timeout(Duration::from_secs(30), waiter.wait_with_output())
        .await
        .expect("--wait done did not return within 30 s of the agent reaching done")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state:    done"), "{text}");

    // ...and fails when the state can no longer be reached.
    let g = start();
    g.status.fail("boom");
    let out = tokio::process::Command::new(&bin)
        .args(["status", "--wait", "tracing", "--timeout", "5", "--socket"])
        .arg(&g.path)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("agent failed before reaching tracing: boom"),
        "{stderr}"
    );

    // ...and when no agent answers in time.
    let out = tokio::process::Command::new(&bin)
        .args([
            "status",
            "--wait",
            "tracing",
            "--timeout",
            "0.3",
            "--socket",
        ])
        .arg(g.path.with_file_name("absent.sock"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("timed out after 300ms waiting for tracing"),
        "{stderr}"
    );
    assert!(stderr.contains("absent.sock"), "{stderr}");
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_delay_a_real_request() {
    let f = start();
    // 300 clients that connect and say nothing: with 64 slots held 5 s each, a real request
    // used to wait behind them for ~25 s. Now the oldest is closed to make room.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(UnixStream::connect(&f.path).await.unwrap());
    }
    f.status.set_state(State::Indexing);
    let report = tokio::time::timeout(Duration::from_secs(5), client::status(&f.path))
        .await
        .expect("GET /status waited behind idle connections")
        .unwrap();
    assert_eq!(report.state, State::Indexing);
    let stop = tokio::time::timeout(Duration::from_secs(5), client::stop(&f.path))
        .await
        .expect("POST /stop waited behind idle connections");
    assert!(stop.is_ok(), "{stop:?}");
    assert!(f.stop.is_triggered());
}
