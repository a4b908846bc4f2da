//! No orphans under containerd (issue #10): after SIGKILL of `recorder run --containerd` its
//! container `recorder-run-…` kept running, with no label to find it by. Now its lease,
//! container and snapshot carry the recorder's pid (`dev.recorder.run.owner`), and the next
//! `recorder run --containerd` removes what a dead recorder left, task included.

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
    child.kill().unwrap();
    let _ = child.wait();
    let _ = log.join();

    // Left behind, running, and labelled with the dead recorder's pid.
    let list = |args: &[&str]| String::from_utf8(daemon.ctr_ok(args)).unwrap();
    let tasks = list(&["tasks", "ls"]);
    assert!(
        tasks.contains(RUN_ID_PREFIX) && tasks.contains("RUNNING"),
        "{tasks}"
    );
    let leases = list(&["leases", "ls"]);
    assert!(
        leases.contains(&format!("dev.recorder.run.owner={pid}")),
        "{leases}"
    );
    let id = list(&["containers", "ls", "-q"]).trim().to_owned();
    assert!(id.starts_with(&format!("{RUN_ID_PREFIX}{pid}-")), "{id}");
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
