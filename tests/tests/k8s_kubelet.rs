//! The recorder as a pod's native sidecar, with this test playing the kubelet against a
//! private containerd: the recorder starts before the workload's image exists, its startup
//! probe (`recorder status --wait tracing`) passes, the image is then imported (the pull),
//! and containers labelled as the CRI labels a pod's are run. The recorder must pick the
//! workload by pod uid and container name, record it exactly, commit into containerd, report
//! the digest on stdout and in the termination message file, and exit 0 on SIGTERM.
//!
//! The daemon's namespace is the test's private one rather than `k8s.io`, so that parallel
//! tests and their cleanup stay apart; the recorder is told it with `--namespace` as in a pod.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use recorder_tests::agent_fixtures::{
    expected_record, record_entries, recorder_bin, write_image_named,
};
use recorder_tests::containerd::{AGENT_IMAGE, Daemon, recorder};

const POD_UID: &str = "0b5f3c2e-7d1a-4e8b-9c6f-2a4d8e1f3b7c";
const OTHER_POD_UID: &str = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";

/// `ctr run` of the fixture image as a container of pod `uid` named `name` in its pod spec.
fn run_in_pod(daemon: &Daemon, uid: &str, name: &str, id: &str, command: &[&str]) {
    let uid_label = format!("io.kubernetes.pod.uid={uid}");
    let name_label = format!("io.kubernetes.container.name={name}");
    let mut args = vec![
        "run",
        "--rm",
        "--null-io",
        "--label",
        &uid_label,
        "--label",
        &name_label,
        AGENT_IMAGE,
        id,
    ];
    args.extend_from_slice(command);
    daemon.ctr_ok(&args);
}

/// Reads the recorder's stdout until its `record: ` line, which it prints once committed;
/// fails the test (killing the recorder) if that takes more than 120 s.
fn record_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(digest) = line.strip_prefix("record: ") {
                let _ = tx.send(digest.to_owned());
                break;
            }
        }
    });
    match rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(digest) => digest,
        Err(e) => {
            let _ = child.kill();
            panic!("no `record: ` line from the recorder within 120 s ({e})");
        }
    }
}

#[test]
fn sidecar_armed_before_the_pull_records_its_pods_workload_and_exits_0_on_sigterm() {
    let daemon = Daemon::start();
    let socket = daemon.scratch().join("status.sock");
    let termination = daemon.scratch().join("termination-log");
    let work = daemon.scratch().join("work");
    std::fs::create_dir(&work).unwrap();
    let target = format!("k8s:{POD_UID}/workload");
    // As a pod spec writes it; the CRI stores it as AGENT_IMAGE.
    let short = AGENT_IMAGE.strip_prefix("docker.io/").unwrap();
    let mut child = recorder(
        &daemon,
        &[
            "--image",
            short,
            "--target",
            &target,
            "--until-exit",
            "--status-socket",
            socket.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--termination-message-path",
            termination.to_str().unwrap(),
            "--linger-until-signal",
        ],
    )
    .spawn()
    .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });

    // The startup probe, exactly as the manifests run it (with a longer timeout: the tracer
    // loads here from cold, and the kubelet would simply retry).
    let probe = Command::new(recorder_bin())
        .args(["status", "--socket", socket.to_str().unwrap()])
        .args(["--wait", "tracing", "--timeout", "120"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // The kubelet pulls the image only now.
    let layout = daemon.scratch().join("agent-layout");
    let manifest = write_image_named(&layout, AGENT_IMAGE);
    daemon.import_layout(&layout);
    // Same container name in another pod, and another container of the same pod: not targets.
    run_in_pod(
        &daemon,
        OTHER_POD_UID,
        "workload",
        "decoy-other-pod",
        &["/bin/cat", "/etc/hosts"],
    );
    run_in_pod(
        &daemon,
        POD_UID,
        "sidecar",
        "decoy-other-name",
        &["/bin/cat", "/etc/hosts"],
    );
    run_in_pod(&daemon, POD_UID, "workload", "workload-1", &[]);

    let digest = record_line(&mut child);
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(std::fs::read_to_string(&termination).unwrap(), digest);
    // Lingering until the kubelet's SIGTERM: still running after the commit, watched for 2 s
    // (the exit of a recorder that does not linger follows its commit within milliseconds).
    let watch_until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < watch_until {
        assert_eq!(child.try_wait().unwrap(), None, "exited without SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bytes = daemon.ctr_ok(&["content", "get", &digest]);
    assert_eq!(record_entries(&bytes, &manifest), expected_record(true));
    let labels = String::from_utf8(daemon.ctr_ok(&["content", "ls"])).unwrap();
    let line = labels.lines().find(|l| l.starts_with(&digest)).unwrap();
    assert!(
        line.contains(&format!("dev.recorder.image={AGENT_IMAGE}")),
        "{line}"
    );
    assert!(line.contains("containerd.io/gc.root="), "{line}");

    // SAFETY: kill has no memory preconditions; the pid is the recorder this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = recorder_tests::deadline::output_within(
        child,
        std::time::Duration::from_secs(60),
        "the sidecar after SIGTERM",
    )
    .status;
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains(recorder_tests::containerd::ARMED_AT_CREATION),
        "{stderr}"
    );
    assert!(stderr.contains("warnings: 0"), "{stderr}");
    assert!(
        stderr.contains("stopped: every target process exited"),
        "{stderr}"
    );
}
