//! `recorder record --target` end to end, as root, on a container started here: its bind
//! mount of /etc/hosts is excluded, a target that exits early still gets its record, a stop
//! request commits (after a malformed request did no harm), and errors name the problem.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use recorder::image::BlobDigest;
use recorder::sandbox::{Pending, ProcessSpec, Sandbox, unpack_layer};
use recorder::status::{State, client};
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{
    Expected, bind_into, expected_record, layers, record_entries, recorder_bin, write_image,
};
use recorder_tests::deadline::output_within;
use recorder_tests::root::require_root;

struct Setup {
    dir: tempfile::TempDir,
    image: PathBuf,
    store: PathBuf,
    manifest: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let manifest = write_image(&image);
    let store = dir.path().join("store");
    Setup {
        dir,
        image,
        store,
        manifest,
    }
}

/// The image's workload (or `args`) in a sandbox, held before exec.
fn container(dir: &Path, args: &[&str]) -> Pending {
    let lowerdirs: Vec<PathBuf> = layers()
        .iter()
        .enumerate()
        .map(|(i, tar)| {
            let d = dir.join(format!("layer{i}"));
            std::fs::create_dir(&d).unwrap();
            unpack_layer(tar.as_slice(), &d).unwrap();
            d
        })
        .collect();
    let spec = ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/app".into(),
        ..ProcessSpec::default()
    };
    Sandbox::new(lowerdirs, dir.join("scratch"), spec)
        .start()
        .unwrap()
}

fn record(s: &Setup, target: u32, extra: &[&str]) -> Child {
    Command::new(recorder_bin())
        .arg("record")
        .args(["--image".as_ref(), s.image.as_os_str()])
        .args(["--store".as_ref(), s.store.as_os_str()])
        .args(["--target", &format!("pid:{target}")])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child, s: &Setup) -> (Vec<(String, usize)>, String) {
    let out = output_within(child, Duration::from_secs(120), "recorder record");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let digest: BlobDigest = stdout.lines().last().unwrap_or_default().parse().unwrap();
    let bytes = ContentStore::open(&s.store).unwrap().read(&digest).unwrap();
    (record_entries(&bytes, &s.manifest), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_of_a_container_excludes_its_bind_mounts_and_commits_when_it_exits() {
    require_root();
    let s = setup();
    let pending = container(s.dir.path(), &["/bin/sh", "/app/run.sh"]);
    let hosts = s.dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 runtime\n").unwrap();
    bind_into(pending.pid(), &hosts, "/etc/hosts");

    let socket = s.dir.path().join("status.sock");
    // The period is far away: the target exiting early is what stops the recording.
    let child = record(
        &s,
        pending.pid(),
        &[
            "--until-exit",
            "--period",
            "1h",
            "--status-socket",
            socket.to_str().unwrap(),
        ],
    );
    client::wait_for(
        &socket,
        State::Tracing,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
    let status = pending.release().unwrap().wait().await.unwrap();
    assert!(status.success(), "workload: {status}");

    let (entries, stderr) = finish(child, &s);
    assert_eq!(entries, expected_record(false), "stderr:\n{stderr}");
    assert!(
        stderr.contains("stopped: every target process exited"),
        "{stderr}"
    );
    assert!(stderr.contains(" bind="), "{stderr}");
    assert!(stderr.contains("record: complete"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_request_commits_and_malformed_requests_do_no_harm() {
    require_root();
    let s = setup();
    let pending = container(s.dir.path(), &["/bin/sh", "-c", "cat /etc/shadowed"]);
    let socket = s.dir.path().join("status.sock");
    let child = record(
        &s,
        pending.pid(),
        &["--status-socket", socket.to_str().unwrap()],
    );
    client::wait_for(
        &socket,
        State::Tracing,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
    pending.release().unwrap().wait().await.unwrap();

    for garbage in [
        &b"\x00\x01garbage\r\n\r\n"[..],
        b"POST /stop HTTP/9.9\r\n\r\n",
        b"GET /status HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    ] {
        let mut conn = UnixStream::connect(&socket).unwrap();
        conn.write_all(garbage).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply)
            .unwrap_or_else(|e| panic!("no reply to {garbage:?} within 10 s: {e}"));
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "reply to {garbage:?}: {reply:?}"
        );
    }
    // An honoured stop would leave tracing within milliseconds; watch for a second.
    let watch_until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < watch_until {
        let report = client::status(&socket).await.unwrap();
        assert_eq!(
            report.state,
            State::Tracing,
            "malformed requests stop nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client::stop(&socket).await.unwrap();

    let (entries, stderr) = finish(child, &s);
    let mut want = Expected::default();
    want.exec("sh").exec("cat").file("etc/shadowed", 1);
    assert_eq!(entries, want.0, "stderr:\n{stderr}");
    assert!(stderr.contains("stopped: stop requested"), "{stderr}");
}

#[test]
fn errors_name_the_vanished_target_and_the_unreadable_image() {
    let s = setup();
    // A pid that existed and is gone: a reaped child's.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let out = record(&s, gone.id(), &[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("pid:{}", gone.id())), "{stderr}");

    let bad = Setup {
        image: s.dir.path().join("no-such-layout"),
        ..setup()
    };
    let out = record(&bad, std::process::id(), &[])
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-layout"), "{stderr}");
}

/// Waits until the recorder behind `socket` traces.
async fn tracing(socket: &Path) {
    client::wait_for(
        socket,
        State::Tracing,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
}

/// Waits (at most 60 s) until the recorder has recorded `n` paths: the workload read everything
/// it reads before it sleeps.
async fn recorded(socket: &Path, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let report = client::status(socket).await.unwrap();
        if report.counters.recorded_paths == n as u64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "60 s and {} of {n} paths recorded",
            report.counters.recorded_paths
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `--period` stops `record` (exit 0, complete) with the target still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_stops_record_and_commits() {
    require_root();
    let s = setup();
    let pending = container(
        s.dir.path(),
        &["/bin/sh", "-c", "cat /etc/shadowed; exec sleep 300"],
    );
    let socket = s.dir.path().join("status.sock");
    let child = record(
        &s,
        pending.pid(),
        &[
            "--period",
            "5s",
            "--status-socket",
            socket.to_str().unwrap(),
        ],
    );
    tracing(&socket).await;
    let workload = pending.release().unwrap();
    let (entries, stderr) = finish(child, &s);
    let mut want = Expected::default();
    want.exec("sh")
        .exec("cat")
        .file("etc/shadowed", 1)
        .exec("sleep");
    assert_eq!(entries, want.0, "stderr:\n{stderr}");
    assert!(stderr.contains("stopped: period of 5s ended"), "{stderr}");
    assert!(stderr.contains("record: complete"), "{stderr}");
    drop(workload);
}

/// SIGINT and SIGTERM stop `record` while it traces: exit 0, everything read until then
/// committed, the stop named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_sigterm_stop_record_and_commit() {
    require_root();
    for (signal, name) in [
        (nix::sys::signal::Signal::SIGINT, "SIGINT"),
        (nix::sys::signal::Signal::SIGTERM, "SIGTERM"),
    ] {
        let s = setup();
        let pending = container(
            s.dir.path(),
            &["/bin/sh", "-c", "cat /etc/shadowed; exec sleep 300"],
        );
        let socket = s.dir.path().join("status.sock");
        let child = record(
            &s,
            pending.pid(),
            &[
                "--period",
                "1h",
                "--status-socket",
                socket.to_str().unwrap(),
            ],
        );
        tracing(&socket).await;
        let workload = pending.release().unwrap();
        let mut want = Expected::default();
        want.exec("sh")
            .exec("cat")
            .file("etc/shadowed", 1)
            .exec("sleep");
        recorded(&socket, want.0.len()).await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let (entries, stderr) = finish(child, &s);
        assert_eq!(entries, want.0, "{name}: stderr:\n{stderr}");
        assert!(stderr.contains(&format!("stopped: {name}")), "{stderr}");
        drop(workload);
    }
}

/// A storm of opens into a one-page ring: the kernel drops events, and `record` still commits
/// what arrived, exits 3 and says how many were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_overflow_commits_and_exits_3_with_the_drop_count() {
    require_root();
    let s = setup();
    // One cat opening the same file 20000 times as fast as it can: ~20000 records of some
    // 120 bytes each against 4 KiB of ring and a consumer that polls every 5 ms.
    let mut args = vec!["/bin/cat"];
    args.extend(std::iter::repeat_n("/etc/shadowed", 20_000));
    let pending = container(s.dir.path(), &args);
    let socket = s.dir.path().join("status.sock");
    let child = record(
        &s,
        pending.pid(),
        &[
            "--until-exit",
            "--ring-bytes",
            "4096",
            "--status-socket",
            socket.to_str().unwrap(),
        ],
    );
    tracing(&socket).await;
    let status = pending.release().unwrap().wait().await.unwrap();
    assert!(status.success(), "workload: {status}");
    let out = output_within(child, Duration::from_secs(120), "recorder record");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{stderr}");
    let drops: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("events lost: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no drop count in:\n{stderr}"));
    assert!(drops > 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "record: INCOMPLETE ({drops} events lost; exit status 3)"
        )),
        "{stderr}"
    );
    // Committed all the same: the digest is the last line and the store has it.
    let digest: BlobDigest = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .parse()
        .unwrap();
    let bytes = ContentStore::open(&s.store).unwrap().read(&digest).unwrap();
    let entries = record_entries(&bytes, &s.manifest);
    assert!(!entries.is_empty(), "{stderr}");
}

/// A store that fails at commit: exit 1, and the message names the file the record was kept
/// in, which holds the whole record (with --record-out, that file; without, the work dir).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_exits_1_and_names_where_the_record_is_kept() {
    require_root();
    for with_record_out in [true, false] {
        let s = setup();
        let pending = container(s.dir.path(), &["/bin/sh", "-c", "cat /etc/shadowed"]);
        let socket = s.dir.path().join("status.sock");
        let work = s.dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let record_out = s.dir.path().join("record.json");
        let mut extra = vec![
            "--until-exit".to_owned(),
            "--status-socket".to_owned(),
            socket.to_str().unwrap().to_owned(),
            "--work-dir".to_owned(),
            work.to_str().unwrap().to_owned(),
        ];
        if with_record_out {
            extra.extend([
                "--record-out".to_owned(),
                record_out.to_str().unwrap().to_owned(),
            ]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let child = record(&s, pending.pid(), &extra);
        tracing(&socket).await;
        // The store's place is taken by a regular file: no store can be made there.
        let _ = std::fs::remove_dir_all(&s.store);
        std::fs::write(&s.store, "not a directory").unwrap();
        let status = pending.release().unwrap().wait().await.unwrap();
        assert!(status.success(), "workload: {status}");

        let out = output_within(child, Duration::from_secs(120), "recorder record");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
        let kept = if with_record_out {
            record_out.clone()
        } else {
            let files: Vec<PathBuf> = std::fs::read_dir(&work)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("recorder-record-"))
                })
                .collect();
            assert_eq!(files.len(), 1, "{files:?}\nstderr:\n{stderr}");
            files[0].clone()
        };
        assert!(
            stderr.contains(&format!("the record is kept in {}", kept.display())),
            "{stderr}"
        );
        assert!(stderr.contains("content store"), "{stderr}");
        let mut want = Expected::default();
        want.exec("sh").exec("cat").file("etc/shadowed", 1);
        assert_eq!(
            record_entries(&std::fs::read(&kept).unwrap(), &s.manifest),
            want.0,
            "stderr:\n{stderr}"
        );
    }
}
