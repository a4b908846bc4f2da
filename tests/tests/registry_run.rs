//! The pipeline end to end, as root: `recorder run --push` records a workload and pushes the
//! record next to its image in a real registry (distribution 2.8, started by the test),
//! `recorder record pull` gets the same bytes back by the image's reference, and
//! `ctr-remote image convert --estargz-record-in` puts every recorded file ahead of the
//! prefetch landmark. A push that fails exits 1 and leaves the record committed.

use std::process::Command;

use recorder::image::BlobDigest;
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{record_entries, recorder_bin, write_image};
use recorder_tests::containerd::{
    AGENT_IMAGE, agent_daemon, assert_run_left_nothing, recorder_run,
};
use recorder_tests::estargz::assert_prefetched;
use recorder_tests::registry::{Registry, free_port, read};
use recorder_tests::root::require_root;

#[test]
fn run_push_then_pull_by_image_reference_then_convert() {
    let registry = Registry::start();
    let (daemon, manifest) = agent_daemon();
    // The image in containerd is the one in the registry: same layout, digests kept.
    let layout = daemon.scratch().join("agent-layout");
    registry.push_layout(&layout, AGENT_IMAGE, "recorder/agent-test:1");
    let repository = format!("{}/recorder/agent-test", registry.host());
    let docker_config = daemon.scratch().join("docker");

    let record_out = daemon.scratch().join("run.json");
    let out = recorder_run(
        &daemon,
        &[
            "--image",
            AGENT_IMAGE,
            "--period",
            "30s",
            "--record-out",
            record_out.to_str().unwrap(),
            "--push",
            &repository,
        ],
    )
    .env("DOCKER_CONFIG", &docker_config)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("record pushed: {repository}@sha256:")),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let digest = stdout.lines().last().unwrap_or_default();
    let committed = read(&record_out);
    assert_eq!(daemon.ctr_ok(&["content", "get", digest]), committed);
    assert_run_left_nothing(&daemon);

    // Elsewhere (a CI runner): the record, by the image's reference.
    let pulled = daemon.scratch().join("pulled.json");
    let out = Command::new(recorder_bin())
        .env("DOCKER_CONFIG", &docker_config)
        .args(["record", "pull", &format!("{repository}:1"), "--out"])
        .arg(&pulled)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read(&pulled), committed);
    let entries = record_entries(&committed, &manifest);
    assert!(!entries.is_empty());

    let converted = "docker.io/recorder/agent-test:esgz";
    let out = Command::new("ctr-remote")
        .arg("-a")
        .arg(daemon.socket())
        .args(["-n", daemon.namespace()])
        .args([
            "image",
            "convert",
            "--oci",
            "--estargz",
            "--estargz-record-in",
        ])
        .arg(&pulled)
        .args([AGENT_IMAGE, converted])
        .output()
        .expect("running ctr-remote (`cargo xtask setup` installs stargz-snapshotter)");
    assert!(
        out.status.success(),
        "ctr-remote image convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_prefetched(&daemon, converted, &entries);
}

#[test]
fn a_failed_push_exits_1_and_leaves_the_record_committed() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, store, work) = (
        dir.path().join("image"),
        dir.path().join("store"),
        dir.path().join("work"),
    );
    std::fs::create_dir(&work).unwrap();
    let manifest = write_image(&image);
    let record_out = dir.path().join("record.json");
    let unreachable = format!("127.0.0.1:{}", free_port());

    let out = Command::new(recorder_bin())
        .env("DOCKER_CONFIG", dir.path().join("docker"))
        .arg("run")
        .args(["--image".as_ref(), image.as_os_str()])
        .args(["--store".as_ref(), store.as_os_str()])
        .args(["--record-out".as_ref(), record_out.as_os_str()])
        .args(["--work-dir".as_ref(), work.as_os_str()])
        .args(["--push", &format!("{unreachable}/recorder/agent")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let digest: BlobDigest = stdout.lines().last().unwrap_or_default().parse().unwrap();
    let bytes = ContentStore::open(&store).unwrap().read(&digest).unwrap();
    assert_eq!(read(&record_out), bytes);
    assert!(!record_entries(&bytes, &manifest).is_empty());
    assert!(
        stderr.contains(&format!(
            "pushing the record to {unreachable}/recorder/agent failed (the record is committed \
             as {digest} in {} and written to {})",
            store.display(),
            record_out.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("registry {unreachable} is unreachable")),
        "{stderr}"
    );
}
