//! The server: states, counters, metrics, `POST /stop`, malformed and stuck clients, the socket file.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::{Duration, Instant};

use recorder::status::{self, ServeError, State, StatusHandle, StopSignal, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{raw, start, status_line};

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
