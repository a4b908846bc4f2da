//! No orphans under containerd (issue #10): after SIGKILL of `recorder run --containerd` its
//! container `recorder-run-…` kept running, with no label to find it by. Now the workload is
//! killed at once by the recorder's watchdog (its task stops), its lease, container and
//! snapshot carry the recorder's pid (`dev.recorder.run.owner`), and the next
//! `recorder run --containerd` removes what a dead recorder left, task included.

use std::time::{Duration, Instant};

use recorder_tests::containerd::{
    AGENT_IMAGE as REF, RUN_ID_PREFIX, agent_daemon, assert_run_left_nothing, recorder_run,
    wait_for_log,
};
use recorder_tests::deadline::output_within;

#[test]
fn the_next_run_removes_what_a_killed_recorder_left() {
    let (daemon, _) = agent_daemon();
    let mut child = recorder_run(
        &daemon,
        &[
            "--image",
            REF,
            "--period",
            "120s",
            "--",
            "/bin/sleep",
            "300",
        ],
    )
    .spawn()
    .unwrap();
    let pid = child.id();
    let log = wait_for_log(&mut child, "task started");
    let list = |args: &[&str]| String::from_utf8(daemon.ctr_ok(args)).unwrap();
    let id = list(&["containers", "ls", "-q"]).trim().to_owned();
    assert!(id.starts_with(&format!("{RUN_ID_PREFIX}{pid}-")), "{id}");
    let workload = daemon.task_pid(&id);
    let workload_start = start_time(workload).expect("the workload runs");
    // SIGKILL: the recorder can clean nothing up itself.
    child.kill().unwrap();
    let _ = child.wait();
    let _ = log.join();

    // Its watchdog killed the workload at once (not at the next run): the task stopped, and
    // the process that ran `sleep 300` is gone (or its pid is another process's now).
    daemon.wait_stopped(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while start_time(workload) == Some(workload_start) {
        assert!(
            Instant::now() < deadline,
            "workload {workload} still alive after the recorder was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its task, container, snapshot and lease are left, labelled with the dead recorder's pid.
    let tasks = list(&["tasks", "ls"]);
    assert!(tasks.contains(&id) && tasks.contains("STOPPED"), "{tasks}");
    let leases = list(&["leases", "ls"]);
    assert!(
        leases.contains(&format!("dev.recorder.run.owner={pid}")),
        "{leases}"
    );
    let info = list(&["containers", "info", &id]);
    assert!(info.contains("dev.recorder.run.owner"), "{info}");

    let child = recorder_run(
        &daemon,
        &[
            "--image",
            REF,
            "--period",
            "60s",
            "--",
            "/bin/cat",
            "/etc/shadowed",
        ],
    )
    .spawn()
    .unwrap();
    let out = output_within(child, std::time::Duration::from_secs(180), "the next run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("removed the leftovers of a dead recorder") && stderr.contains(&id),
        "{stderr}"
    );
    assert_run_left_nothing(&daemon);
}

/// When process `pid` started (field 22 of `/proc/PID/stat`), or `None` once it is gone or
/// reaped.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    // A zombie is dead already.
    if fields.next() == Some("Z") {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
}
