//! States a poller can use (issue #10): with a `container-name:` target the status said
//! `indexing` while the recorder already waited for the container, so `--wait tracing` timed out
//! and "start the container after the recorder" was a race; and the socket went away with the
//! commit, so `done` and the record digest were never seen. Now `armed` is the signal to start
//! the container, and `--linger` keeps the final state, digest and outcome readable.

use std::process::{Command, Stdio};
use std::time::Duration;

use recorder::status::{State, client};
use recorder_tests::agent_fixtures::recorder_bin;
use recorder_tests::containerd::{AGENT_IMAGE as REF, agent_daemon, recorder};
use recorder_tests::deadline::output_within;

/// `recorder status --socket SOCKET ARGS`: exit code and stdout.
fn status(socket: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(recorder_bin())
        .args(["status", "--socket", socket.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn armed_is_the_signal_to_start_the_container_and_done_stays_readable() {
    let (daemon, manifest) = agent_daemon();
    let socket = daemon.scratch().join("status.sock");
    let child = recorder(
        &daemon,
        &[
            "--image",
            REF,
            "--target",
            "container-name:polled-*",
            "--until-exit",
            "--period",
            "120s",
            "--status-socket",
            socket.to_str().unwrap(),
            "--linger",
            "60s",
        ],
    )
    .spawn()
    .unwrap();
    let pid = child.id();

    // The probe a script or the kubelet runs; no container exists yet.
    let (code, _, stderr) = status(&socket, &["--wait", "armed", "--timeout", "120"]);
    assert_eq!(code, Some(0), "--wait armed: {stderr}");
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client::status(&socket))
        .unwrap();
    assert_eq!(report.state, State::Armed, "{report:?}");
    assert!(report.has_reached(State::Indexing), "{report:?}");
    assert_eq!(report.manifest_digest.as_deref(), Some(manifest.as_str()));

    // Started only now, and recorded from its first instruction.
    daemon.ctr_ok(&[
        "run",
        "--rm",
        "--null-io",
        REF,
        "polled-1",
        "/bin/cat",
        "/etc/shadowed",
    ]);

    // The final state, with the digest and the outcome, is readable after the commit.
    let (code, stdout, stderr) = status(&socket, &["--wait", "done", "--timeout", "120", "--json"]);
    assert_eq!(code, Some(0), "--wait done: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["state"], "done", "{json}");
    let states: Vec<&str> = json["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "starting",
            "indexing",
            "armed",
            "tracing",
            "committing",
            "done"
        ],
        "{json}"
    );
    let digest = json["recordDigest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{json}");
    assert_eq!(json["outcome"]["verdict"], "complete", "{json}");
    assert_eq!(json["outcome"]["exitStatus"], 0, "{json}");
    assert_eq!(json["outcome"]["recordDigest"], digest.as_str(), "{json}");

    // Lingering: still answering. A stop request ends nothing more; SIGTERM ends the wait.
    let (code, _, _) = status(&socket, &[]);
    assert_eq!(code, Some(0));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = output_within(child, Duration::from_secs(90), "the lingering recorder");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(last, digest);
    assert!(!socket.exists(), "the socket outlived the recorder");
}
