//! The clients: `client::wait_for`, curl, and the `recorder status` command.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use recorder::status::{State, client};
use recorder_tests::agent_fixtures::recorder_bin;

use super::start;

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
