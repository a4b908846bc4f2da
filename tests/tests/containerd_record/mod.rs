//! `recorder record --containerd` end to end against a private containerd: the image comes
//! from containerd, the target is a container found through it (armed before its task starts,
//! or already running), and the record lands in containerd's content store, where `ctr content
//! get` returns it byte for byte with its labels. Errors name what is wrong.

use std::io::Write;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use recorder::status::{State, client};
use recorder_tests::agent_fixtures::{Expected, expected_record, record_entries, recorder_bin};
use recorder_tests::containerd::{
    AGENT_IMAGE as REF, ARMED_AT_CREATION, Daemon, agent_daemon as daemon_with_image, finish,
    recorder, wait_for_log,
};

mod arming;

/// The labels `ctr content ls` shows for `digest`.
fn content_labels(daemon: &Daemon, digest: &str) -> String {
    let ls = String::from_utf8(daemon.ctr_ok(&["content", "ls"])).unwrap();
    ls.lines()
        .find(|l| l.starts_with(digest))
        .unwrap_or_else(|| panic!("{digest} not in `ctr content ls`:\n{ls}"))
        .to_owned()
}

fn assert_labelled(daemon: &Daemon, digest: &str, manifest: &str) {
    let labels = content_labels(daemon, digest);
    for label in [
        "containerd.io/gc.root=".to_owned(),
        format!("dev.recorder.manifest={manifest}"),
        format!("dev.recorder.image={REF}"),
    ] {
        assert!(labels.contains(&label), "no {label} in: {labels}");
    }
}

#[test]
fn container_name_is_armed_before_start_and_the_record_goes_to_containerd() {
    let (daemon, manifest) = daemon_with_image();
    let mut child = recorder(
        &daemon,
        &[
            "--image",
            REF,
            "--target",
            "container-name:profiled-*",
            "--until-exit",
            "--period",
            "60s",
        ],
    )
    .spawn()
    .unwrap();
    let stderr = wait_for_log(&mut child, "waiting for a matching container");
    // Started only once the recorder listens; a non-matching container first, passed over.
    daemon.ctr_ok(&[
        "run",
        "--rm",
        "--null-io",
        REF,
        "other",
        "/bin/cat",
        "/etc/hosts",
    ]);
    daemon.ctr_ok(&["run", "--rm", "--null-io", REF, "profiled-1"]);
    let (code, digest, stderr) = finish(child, stderr);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains(ARMED_AT_CREATION), "{stderr}");
    assert!(stderr.contains("warnings: 0"), "{stderr}");
    assert!(
        stderr.contains("stopped: every target process exited"),
        "{stderr}"
    );

    let bytes = daemon.ctr_ok(&["content", "get", &digest]);
    // No runtime bind mount over /etc/hosts under `ctr run`: the image's file is read.
    assert_eq!(
        record_entries(&bytes, &manifest),
        expected_record(true),
        "stderr:\n{stderr}"
    );
    assert_labelled(&daemon, &digest, &manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_id_of_a_running_container_is_recorded_until_stop_requested() {
    let (daemon, manifest) = daemon_with_image();
    // Waits, without exec'ing anything, for a fifo the test makes, so that what it does after
    // the recorder is armed is known exactly.
    let script = "while [ ! -p /data/go ]; do :; done; read x < /data/go; \
                  cat /etc/shadowed; exec sleep 300";
    daemon.run_detached(REF, "running", &["/bin/sh", "-c", script]);
    let pid = daemon.task_pid("running");
    let fifo = format!("/proc/{pid}/root/data/go");
    nix::unistd::mkfifo(
        fifo.as_str(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    let socket = daemon.scratch().join("status.sock");
    let child = recorder(
        &daemon,
        &[
            "--image",
            REF,
            "--target",
            "container:running",
            "--status-socket",
            socket.to_str().unwrap(),
        ],
    )
    .spawn()
    .unwrap();
    client::wait_for(
        &socket,
        State::Tracing,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();

    let mut want = Expected::default();
    want.exec("cat").file("etc/shadowed", 1).exec("sleep");
    // The container keeps running: stop once everything it will read was seen.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client::status(&socket)
        .await
        .unwrap()
        .counters
        .recorded_paths
        < want.0.len() as u64
    {
        assert!(Instant::now() < deadline, "the workload's reads never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client::stop(&socket).await.unwrap();

    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("stopped: stop requested"), "{stderr}");
    let digest = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let bytes = daemon.ctr_ok(&["content", "get", &digest]);
    assert_eq!(
        record_entries(&bytes, &manifest),
        want.0,
        "stderr:\n{stderr}"
    );
    assert_labelled(&daemon, &digest, &manifest);
}

fn failed(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_containerd_input_is_named() {
    let (daemon, _) = daemon_with_image();
    let run = |args: &[&str]| failed(recorder(&daemon, args).output().unwrap());

    let stderr = run(&["--image", "docker.io/no/such:1", "--target", "container:x"]);
    assert!(
        stderr.contains("\"docker.io/no/such:1\" not found"),
        "{stderr}"
    );

    let stderr = run(&["--image", REF, "--target", "container:nobody"]);
    assert!(
        stderr.contains("container \"nobody\" not found"),
        "{stderr}"
    );

    // A container whose process has exited before the recorder could arm on it.
    daemon.run_detached(REF, "quick", &["/bin/cat", "/etc/hosts"]);
    daemon.wait_stopped("quick");
    let stderr = run(&["--image", REF, "--target", "container:quick"]);
    assert!(
        stderr.contains("container \"quick\" has no running task"),
        "{stderr}"
    );

    // containerd not running there.
    let absent = daemon.scratch().join("absent.sock");
    let out = Command::new(recorder_bin())
        .args(["record", &format!("--containerd={}", absent.display())])
        .args(["--image", REF, "--target", "container-name:x"])
        .output()
        .unwrap();
    let stderr = failed(out);
    assert!(
        stderr.contains(&format!(
            "containerd is not running at {}",
            absent.display()
        )),
        "{stderr}"
    );

    // Container targets need containerd.
    let out = Command::new(recorder_bin())
        .args(["record", "--image", REF, "--store", "/nonexistent"])
        .args(["--target", "container:x"])
        .output()
        .unwrap();
    // A usage error: exit status 2.
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("needs --containerd"), "{stderr}");
    // --store goes with a local image, not with containerd's store.
    let store = daemon.scratch().join("store");
    let args = ["--image", REF, "--store", store.to_str().unwrap()];
    let out = recorder(&daemon, &[&args[..], &["--target", "pid:1"]].concat())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--store"), "{stderr}");
}

#[test]
fn sigint_while_waiting_for_the_container_ends_cleanly() {
    let (daemon, _) = daemon_with_image();
    let mut child = recorder(
        &daemon,
        &["--image", REF, "--target", "container-name:never-*"],
    )
    .spawn()
    .unwrap();
    let stderr = wait_for_log(&mut child, "waiting for a matching container");
    // SAFETY: kill has no memory preconditions; the pid is the recorder this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, _, stderr) = finish(child, stderr);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("before tracing started"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
