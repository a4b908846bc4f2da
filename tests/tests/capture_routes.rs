//! The record names what the kernel opened or executed, whatever route the workload took to it:
//! `recorder run` on a workload that reaches each image file by another route (io_uring, magic
//! links, `/proc/self/root`, fexecve, execveat, an exec of an unfaulted literal, symlinked
//! directories, a runtime symlink, a hard link, a `#!` script, a thread, a chroot, and nested
//! mount namespaces with a bind mount) records exactly the files the kernel opened, in order;
//! under `recorder run --containerd` too. The routes that need CAP_SYS_ADMIN (namespaces, the
//! bind mount) or io_uring (denied by the default seccomp profile) run with `--privileged`; the
//! rest are also recorded under the default confinement.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use recorder::sandbox::{Confinement, ProcessSpec, Sandbox, unpack_layer};
use recorder::status::{State, client};
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{record_entries, recorder_bin};
use recorder_tests::containerd::{Daemon, assert_run_left_nothing, recorder_run};
use recorder_tests::root::require_root;
use recorder_tests::routes_fixtures::{
    IMAGE, STEPS, confined_steps, expected_record, layers, write_image,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_routes-workload");

/// Runs `recorder run ARGS` on the routes image; returns its exit code, stderr and record
/// entries.
fn run(dir: &Path, steps: &[&str], args: &[&str]) -> (Option<i32>, String, Vec<(String, usize)>) {
    let (image, store) = (dir.join("image"), dir.join("store"));
    let manifest = write_image(&image, "routes", Path::new(WORKLOAD), steps);
    let record_out = dir.join("record.json");
    let out = Command::new(recorder_bin())
        .env("RECORDER_CACHE_DIR", dir.join("layer-cache"))
        .arg("run")
        .args(["--image".as_ref(), image.as_os_str()])
        .args(["--store".as_ref(), store.as_os_str()])
        .args(["--record-out".as_ref(), record_out.as_os_str()])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let bytes = std::fs::read(&record_out).unwrap_or_default();
    if let Some(last) = String::from_utf8_lossy(&out.stdout).lines().last()
        && let Ok(digest) = last.parse()
    {
        let stored = ContentStore::open(&store).unwrap().read(&digest).unwrap();
        assert_eq!(
            stored, bytes,
            "--record-out differs from the committed record"
        );
    }
    (out.status.code(), stderr, record_entries(&bytes, &manifest))
}

#[test]
fn every_route_to_an_image_file_is_recorded_as_the_file_the_kernel_opened() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, entries) = run(dir.path(), STEPS, &["--privileged"]);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(
        entries,
        expected_record(Path::new(WORKLOAD), STEPS),
        "stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("io-uring-fixed-slot") && !stderr.contains("unresolved-file"),
        "every file was named: {stderr}"
    );
    // The O_PATH open that preceded the magic-link reopen is excluded as such.
    assert!(stderr.contains("o-path="), "{stderr}");
}

#[test]
fn under_the_default_confinement_the_routes_it_allows_are_recorded() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let steps = confined_steps();
    let (code, stderr, entries) = run(dir.path(), &steps, &[]);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(
        entries,
        expected_record(Path::new(WORKLOAD), &steps),
        "stderr:\n{stderr}"
    );
}

/// The summary's count of failed opens and execs.
fn failures(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("failed opens: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no failed-opens count in:\n{stderr}"))
}

/// Failed execs are counted, never recorded: the same workload with two execs the kernel
/// refuses (ENOENT, EACCES) added has exactly two more failures and the same record.
#[test]
fn failed_execs_are_counted_and_not_recorded() {
    require_root();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (code, base_stderr, base) = run(a.path(), &["dirfd"], &[]);
    assert_eq!(code, Some(0), "stderr:\n{base_stderr}");
    let (code, stderr, entries) = run(b.path(), &["dirfd", "failed-exec"], &[]);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert_eq!(entries, base, "stderr:\n{stderr}");
    assert_eq!(
        entries,
        expected_record(Path::new(WORKLOAD), &["dirfd", "failed-exec"])
    );
    assert_eq!(
        failures(&stderr),
        failures(&base_stderr) + 2,
        "with failed execs:\n{stderr}\nwithout:\n{base_stderr}"
    );
}

/// A file whose absolute path is PATH_MAX - 1 bytes (the longest open() takes) is recorded
/// with its whole path.
#[test]
fn a_path_of_path_max_minus_one_bytes_is_recorded() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr, entries) = run(dir.path(), &["long-path"], &[]);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let long = recorder_tests::routes_fixtures::long_path();
    assert_eq!(long.len() + 1, libc::PATH_MAX as usize - 1);
    assert_eq!(
        entries,
        expected_record(Path::new(WORKLOAD), &["long-path"]),
        "stderr:\n{stderr}"
    );
    assert_eq!(entries.last().map(|(p, _)| p.as_str()), Some(long.as_str()));
}

#[test]
fn under_containerd_every_route_is_recorded_as_well() {
    let daemon = Daemon::start();
    let steps = STEPS;
    let layout = daemon.scratch().join("routes-layout");
    let manifest = write_image(&layout, IMAGE, Path::new(WORKLOAD), steps);
    daemon.import_layout(&layout);
    let record_out = daemon.scratch().join("record.json");
    let out = recorder_run(
        &daemon,
        &[
            "--image",
            IMAGE,
            "--privileged",
            "--period",
            "60s",
            "--record-out",
            record_out.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("workload exited (exit status 0)"),
        "{stderr}"
    );
    let bytes = std::fs::read(&record_out).unwrap();
    let digest = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(daemon.ctr_ok(&["content", "get", &digest]), bytes);
    assert_eq!(
        record_entries(&bytes, &manifest),
        expected_record(Path::new(WORKLOAD), steps),
        "stderr:\n{stderr}"
    );
    assert_run_left_nothing(&daemon);
}

/// `record --until-exit` waits for the namespaces the target's tasks made too: the workload
/// moves itself into a mount namespace of its own, so none of its processes is left in the one
/// that was armed, and reads a file half a second later, which must be in the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_exit_waits_for_the_namespaces_the_target_made() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let workload = Path::new(WORKLOAD);
    let (image, store, socket) = (
        dir.path().join("image"),
        dir.path().join("store"),
        dir.path().join("status.sock"),
    );
    let manifest = write_image(&image, "routes", workload, &[]);
    let lowerdirs: Vec<PathBuf> = layers(workload)
        .iter()
        .enumerate()
        .map(|(i, tar)| {
            let d = dir.path().join(format!("layer{i}"));
            std::fs::create_dir(&d).unwrap();
            unpack_layer(tar.as_slice(), &d).unwrap();
            d
        })
        .collect();
    let spec = ProcessSpec {
        args: vec!["/bin/routes".into(), "late".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    };
    // The workload makes a mount namespace: CAP_SYS_ADMIN, and no seccomp filter.
    let pending = Sandbox::new(lowerdirs, dir.path().join("scratch"), spec)
        .confinement(Confinement {
            privileged: true,
            ..Confinement::default()
        })
        .start()
        .unwrap();
    let recorder = Command::new(recorder_bin())
        .arg("record")
        .args(["--image".as_ref(), image.as_os_str()])
        .args(["--store".as_ref(), store.as_os_str()])
        .args(["--target", &format!("pid:{}", pending.pid())])
        .args(["--until-exit", "--period", "1h"])
        .args(["--status-socket".as_ref(), socket.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    let status = pending.release().unwrap().wait().await.unwrap();
    assert!(status.success(), "workload: {status}");
    let out = recorder.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("every target process exited"), "{stderr}");
    let digest = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .parse()
        .unwrap();
    let bytes = ContentStore::open(&store).unwrap().read(&digest).unwrap();
    assert_eq!(
        record_entries(&bytes, &manifest),
        expected_record(workload, &["late"]),
        "stderr:\n{stderr}"
    );
}
