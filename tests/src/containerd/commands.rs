//! The recorder run against a private daemon: its commands, its log, its outcome, and what a
//! `run --containerd` must leave behind (nothing).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::agent_fixtures::recorder_bin;

use super::Daemon;

/// What `recorder record` logs when the container's mount namespace was traced from its
/// creation by runc: armed before the container started, for certain (issue 17).
pub const ARMED_AT_CREATION: &str =
    "armed before the container started: traced since runc made its mount namespace";

/// `recorder record --containerd=SOCKET --namespace NS ARGS`, output piped.
pub fn recorder(daemon: &Daemon, args: &[&str]) -> Command {
    against(daemon, "record", args)
}

/// `recorder SUBCOMMAND --containerd=SOCKET --namespace NS ARGS`, output piped.
fn against(daemon: &Daemon, subcommand: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(recorder_bin());
    cmd.arg(subcommand)
        .arg(format!("--containerd={}", daemon.socket().display()))
        .args(["--namespace", daemon.namespace()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads the recorder's stderr until `line` appears (failing if it exits first), then keeps
/// collecting the rest in the background.
pub fn wait_for_log(child: &mut Child, needle: &str) -> std::thread::JoinHandle<String> {
    let stderr = child.stderr.take().unwrap();
    let mut reader = BufReader::new(stderr);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "the recorder ended before logging {needle:?}:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains(needle) {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        seen + &rest
    })
}

/// The recorder's exit code, stdout's last line (the record digest) and stderr.
pub fn finish(
    child: Child,
    stderr: std::thread::JoinHandle<String>,
) -> (Option<i32>, String, String) {
    let out = crate::deadline::output_within(child, Duration::from_secs(180), "the recorder");
    let stderr = stderr.join().unwrap();
    let digest = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    (out.status.code(), digest, stderr)
}

/// `recorder run --containerd=SOCKET --namespace NS ARGS`, output piped.
pub fn recorder_run(daemon: &Daemon, args: &[&str]) -> Command {
    against(daemon, "run", args)
}

/// The prefix of the ids `recorder run --containerd` gives its container, snapshot and lease.
pub const RUN_ID_PREFIX: &str = "recorder-run-";

/// Fails the test if a `recorder run --containerd` left a task, container, active snapshot,
/// lease or mount behind.
pub fn assert_run_left_nothing(daemon: &Daemon) {
    let list = |args: &[&str]| String::from_utf8(daemon.ctr_ok(args)).unwrap();
    assert_eq!(list(&["tasks", "ls", "-q"]), "", "tasks left");
    assert_eq!(list(&["containers", "ls", "-q"]), "", "containers left");
    let snapshots = list(&["snapshots", "ls"]);
    assert!(
        !snapshots.contains(RUN_ID_PREFIX) && !snapshots.contains("Active"),
        "snapshots left:\n{snapshots}"
    );
    let leases = list(&["leases", "ls"]);
    assert!(!leases.contains(RUN_ID_PREFIX), "leases left:\n{leases}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(RUN_ID_PREFIX) && l.contains(daemon.namespace()))
        .collect();
    assert!(ours.is_empty(), "mounts left: {ours:?}");
}
