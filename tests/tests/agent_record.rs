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
    let out = child.wait_with_output().unwrap();
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
        let mut reply = Vec::new();
        let _ = conn.read_to_end(&mut reply);
    }
    let report = client::status(&socket).await.unwrap();
    assert_eq!(
        report.state,
        State::Tracing,
        "malformed requests stop nothing"
    );
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
