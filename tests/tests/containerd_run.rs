//! `recorder run --containerd` end to end against a private containerd: the image's container
//! is created through containerd (snapshot, spec from its config, runc task), traced from
//! before Tasks.Start, and the record lands in containerd's content store; the task,
//! container, snapshot and lease are gone afterwards, also when the command does not exist.
//! The workload's stdout and stderr reach ours apart, while it runs.

use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use recorder_tests::agent_fixtures::{Expected, expected_record, record_entries};
use recorder_tests::containerd::{
    AGENT_IMAGE as REF, RUN_ID_PREFIX, agent_daemon, assert_run_left_nothing, finish, recorder_run,
    wait_for_log,
};
use recorder_tests::deadline::output_within;

/// Runs `recorder run --containerd ... ARGS`; returns exit code, stdout and stderr.
fn run(
    daemon: &recorder_tests::containerd::Daemon,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let out = recorder_run(daemon, args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_image_config_is_run_through_containerd_and_recorded_into_it() {
    let (daemon, manifest) = agent_daemon();
    let out_file = daemon.scratch().join("record.json");
    let (code, stdout, stderr) = run(
        &daemon,
        &[
            "--image",
            REF,
            "--period",
            "60s",
            "--record-out",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("stopped: workload exited (exit status 0)"),
        "{stderr}"
    );
    assert!(stderr.contains("warnings: 0"), "{stderr}");
    let digest = stdout.lines().last().unwrap_or_default();
    let bytes = daemon.ctr_ok(&["content", "get", digest]);
    assert_eq!(bytes, std::fs::read(&out_file).unwrap());
    // Our spec mounts nothing over /etc/hosts: the image's file is read.
    assert_eq!(
        record_entries(&bytes, &manifest),
        expected_record(true),
        "stderr:\n{stderr}"
    );
    let labels = String::from_utf8(daemon.ctr_ok(&["content", "ls"])).unwrap();
    let line = labels.lines().find(|l| l.starts_with(digest)).unwrap();
    assert!(
        line.contains(&format!("dev.recorder.manifest={manifest}")),
        "{line}"
    );
    assert!(
        line.contains(&format!("dev.recorder.image={REF}")),
        "{line}"
    );
    assert!(line.contains("containerd.io/gc.root="), "{line}");
    assert_run_left_nothing(&daemon);
}

#[test]
fn a_given_command_replaces_cmd_and_its_output_reaches_ours() {
    let (daemon, manifest) = agent_daemon();
    let (code, stdout, stderr) = run(
        &daemon,
        &["--image", REF, "--", "/bin/cat", "/etc/shadowed"],
    );
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("high"), "stdout:\n{stdout}");
    let digest = lines.next().unwrap_or_default();
    let bytes = daemon.ctr_ok(&["content", "get", digest]);
    let mut want = Expected::default();
    want.exec("cat").file("etc/shadowed", 1);
    assert_eq!(
        record_entries(&bytes, &manifest),
        want.0,
        "stderr:\n{stderr}"
    );
    assert_run_left_nothing(&daemon);
}

#[test]
fn a_missing_command_fails_clearly_and_leaves_nothing() {
    let (daemon, _) = agent_daemon();
    let (code, stdout, stderr) = run(&daemon, &["--image", REF, "--", "/bin/no-such-binary"]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("creating the task of container recorder-run-"),
        "{stderr}"
    );
    assert!(stderr.contains("/bin/no-such-binary"), "{stderr}");
    assert_run_left_nothing(&daemon);
}

#[test]
fn a_stop_period_kills_the_workload_and_leaves_nothing() {
    let (daemon, manifest) = agent_daemon();
    let (code, stdout, stderr) = run(
        &daemon,
        &["--image", REF, "--period", "1s", "--", "/bin/sleep", "300"],
    );
    assert!(stderr.contains("stopped: period of 1s ended"), "{stderr}");
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("record: complete"), "{stderr}");
    let digest = stdout.lines().last().unwrap_or_default();
    let bytes = daemon.ctr_ok(&["content", "get", digest]);
    let mut want = Expected::default();
    want.exec("sleep");
    assert_eq!(
        record_entries(&bytes, &manifest),
        want.0,
        "stderr:\n{stderr}"
    );
    assert_run_left_nothing(&daemon);
}

#[test]
fn sigint_kills_the_workload_commits_and_leaves_nothing() {
    let (daemon, manifest) = agent_daemon();
    let mut child = recorder_run(&daemon, &["--image", REF, "--", "/bin/sleep", "300"])
        .spawn()
        .unwrap();
    let stderr = wait_for_log(&mut child, "task started");
    // Interrupt only once sleep runs and its loader has opened its libraries, so that the
    // record is exact.
    let tasks = String::from_utf8(daemon.ctr_ok(&["tasks", "ls"])).unwrap();
    let pid = tasks
        .lines()
        .find_map(|l| l.strip_prefix(RUN_ID_PREFIX)?.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no task in:\n{tasks}"))
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(std::time::Instant::now() < deadline, "sleep never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // ...and is in its sleep call: the loader is done for certain (no fixed sleep).
    let sleeping = [libc::SYS_clock_nanosleep, libc::SYS_nanosleep].map(|n| n.to_string());
    while !std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .is_some_and(|n| sleeping.iter().any(|s| s == n))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "sleep never reached its sleep call"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, digest, stderr) = finish(child, stderr);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("stopped: SIGINT"), "{stderr}");
    assert!(stderr.contains("record: complete"), "{stderr}");
    let bytes = daemon.ctr_ok(&["content", "get", &digest]);
    let mut want = Expected::default();
    want.exec("sleep");
    assert_eq!(
        record_entries(&bytes, &manifest),
        want.0,
        "stderr:\n{stderr}"
    );
    assert_run_left_nothing(&daemon);
}

/// The workload's stdout and stderr each reach ours, and as they come (containerd 1.6's
/// `file://` stdio put both into the stdout file, in no fixed order, printed at the end):
/// stdout has its stdout lines then the record's digest, stderr its stderr line. The workload
/// prints, then waits for a file that the test creates only once it has read the line.
#[test]
fn the_workloads_stdout_and_stderr_reach_ours_apart_while_it_runs() {
    let (daemon, _) = agent_daemon();
    let dir = tempfile::tempdir().unwrap();
    let mount = format!("type=bind,src={},dst=/data", dir.path().display());
    let script = "echo out1; echo err1 >&2; echo out2; \
                  while [ ! -e /data/go ]; do sleep 0.1; done; echo out3";
    let mut child = recorder_run(
        &daemon,
        &[
            "--image",
            REF,
            // A backstop: the workload ends even if the test fails before creating the file.
            "--period",
            "120s",
            "--mount",
            &mount,
            "--entrypoint",
            "/bin/sh",
            "--",
            "-c",
            script,
        ],
    )
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap());
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while seen.last().is_none_or(|l| l != "out2") {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!(
                    "out2 did not reach stdout while the workload ran; stdout so far: \
                     {seen:?}; stderr:\n{}",
                    stderr_reader.join().unwrap()
                );
            }
        }
    }
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = output_within(child, Duration::from_secs(180), "run --containerd").status;
    stdout_reader.join().unwrap();
    seen.extend(lines.try_iter());
    let stderr = stderr_reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    let [out1, out2, out3, digest] = seen.as_slice() else {
        panic!("stdout is not the workload's 3 lines and the digest: {seen:?}\n{stderr}")
    };
    assert_eq!([out1, out2, out3], ["out1", "out2", "out3"]);
    assert!(digest.starts_with("sha256:"), "{seen:?}");
    daemon.ctr_ok(&["content", "get", digest]);
    assert!(stderr.lines().any(|l| l == "err1"), "stderr:\n{stderr}");
    assert_run_left_nothing(&daemon);

    // With the record on stdout, the workload's stdout goes to our stderr, its stderr too.
    let (code, stdout, stderr) = run(
        &daemon,
        &[
            "--image",
            REF,
            "--record-out",
            "-",
            "--entrypoint",
            "/bin/sh",
            "--",
            "-c",
            "echo out1; echo err1 >&2",
        ],
    );
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(
        !stdout.contains("out1") && !stdout.contains("err1"),
        "{stdout}"
    );
    for line in ["out1", "err1"] {
        assert!(
            stderr.lines().any(|l| l == line),
            "{line}: stderr:\n{stderr}"
        );
    }
    assert_run_left_nothing(&daemon);
}
