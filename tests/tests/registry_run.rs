//! The pipeline end to end, as root: `recorder run --push` records a workload and pushes the
//! record next to its image in a real registry (distribution 2.8, started by the test),
//! `recorder record pull` gets the same bytes back by the image's reference, and
//! `ctr-remote image convert --estargz-record-in` puts every recorded file ahead of the
//! prefetch landmark. A push that fails exits 1 and leaves the record committed. The
//! Kubernetes sidecar's flow pushes with the credentials of a mounted Secret.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use recorder::image::BlobDigest;
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{
    LocalRun, expected_record, record_entries, recorder_bin, write_image_named,
};
use recorder_tests::containerd::{
    AGENT_IMAGE, Daemon, agent_daemon, assert_run_left_nothing, recorder as recorder_record,
    recorder_run,
};
use recorder_tests::estargz::assert_prefetched;
use recorder_tests::registry::{Registry, docker_config, free_port, read};
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

    // The same record pushed again from containerd's content store, by digest: a second
    // artifact (its annotations differ), and the record's bytes still the same.
    let out = Command::new(recorder_bin())
        .env("DOCKER_CONFIG", &docker_config)
        .args(["record", "push", digest, &repository])
        .arg(format!("--containerd={}", daemon.socket().display()))
        .args(["--namespace", daemon.namespace()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let again = Command::new(recorder_bin())
        .env("DOCKER_CONFIG", &docker_config)
        .args([
            "record",
            "pull",
            &format!("{repository}:1"),
            "--all",
            "--json",
        ])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(listed["records"].as_array().unwrap().len(), 2, "{listed}");
    // The one --push made carries what was known of the workload.
    let annotations = &listed["records"][1]["annotations"];
    assert_eq!(annotations["dev.recorder.image"], AGENT_IMAGE, "{listed}");
    assert_eq!(
        annotations["dev.recorder.workload.period"], "30s",
        "{listed}"
    );
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
    let LocalRun {
        dir,
        image,
        store,
        work,
        manifest,
    } = LocalRun::new();
    let record_out = dir.path().join("record.json");
    let unreachable = format!("127.0.0.1:{}", free_port());

    let out = Command::new(recorder_bin())
        .env("DOCKER_CONFIG", dir.path().join("docker"))
        .env("RECORDER_CACHE_DIR", dir.path().join("layer-cache"))
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

/// The sidecar's flow as `recorder k8s job --push REF --registry-secret NAME` renders it
/// (RECORDER_PUSH, RECORDER_REGISTRY_CONFIG on the mounted Secret's config.json), with this
/// test playing the kubelet's part on a private containerd, against a registry with basic auth:
/// the record is pushed after the commit, and the termination message is the artifact's
/// reference, from which `recorder record pull` gets the committed bytes.
#[test]
fn sidecar_pushes_with_the_mounted_secret_and_reports_the_artifact() {
    const POD_UID: &str = "3c1e9a57-2b4d-4f6e-8a0c-5d7b9e1f3a2c";
    let registry = Registry::start_with_basic_auth("pusher", "pa55");
    let daemon = Daemon::start();
    let socket = daemon.scratch().join("status.sock");
    let termination = daemon.scratch().join("termination-log");
    let work = daemon.scratch().join("work");
    std::fs::create_dir(&work).unwrap();
    // The Secret's .dockerconfigjson, as the volume projects it to config.json.
    let secret_dir = daemon.scratch().join("secret");
    std::fs::create_dir(&secret_dir).unwrap();
    let config = docker_config(&secret_dir, &registry.host(), "pusher", "pa55");
    let repository = format!("{}/recorder/agent-test", registry.host());

    let target = format!("k8s:{POD_UID}/workload");
    let mut child = recorder_record(
        &daemon,
        &[
            "--image",
            AGENT_IMAGE,
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
    .env("RECORDER_PUSH", &repository)
    .env("RECORDER_REGISTRY_CONFIG", &config)
    // Nothing else to fall back on.
    .env("DOCKER_CONFIG", daemon.scratch().join("no-docker-config"))
    .spawn()
    .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let probe = Command::new(recorder_bin())
        .args(["status", "--socket", socket.to_str().unwrap()])
        .args(["--wait", "armed", "--timeout", "120"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&probe.stderr)
    );

    // The kubelet pulls the image (the registry has it) and runs the pod's workload.
    let layout = daemon.scratch().join("agent-layout");
    let manifest = write_image_named(&layout, AGENT_IMAGE);
    registry.push_layout(&layout, AGENT_IMAGE, "recorder/agent-test:1");
    daemon.import_layout(&layout);
    let uid_label = format!("io.kubernetes.pod.uid={POD_UID}");
    daemon.ctr_ok(&[
        "run",
        "--rm",
        "--null-io",
        "--label",
        &uid_label,
        "--label",
        "io.kubernetes.container.name=workload",
        AGENT_IMAGE,
        "workload-1",
    ]);

    let stdout = child.stdout.take().unwrap();
    let digest = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("record: ").map(str::to_owned))
        .expect("the recorder closed stdout before printing `record: `");
    let message = std::fs::read_to_string(&termination).unwrap();
    assert!(
        message.starts_with(&format!("{repository}@sha256:")),
        "termination message {message:?}"
    );
    // SAFETY: kill has no memory preconditions; the pid is the recorder this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");

    let committed = daemon.ctr_ok(&["content", "get", &digest]);
    assert_eq!(record_entries(&committed, &manifest), expected_record(true));
    // The artifact the message names, pulled by the image's reference with the same Secret.
    let out = Command::new(recorder_bin())
        .args([
            "record",
            "pull",
            &format!("{repository}:1"),
            "--all",
            "--json",
        ])
        .arg("--registry-config")
        .arg(&config)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        Some(listed["records"][0]["digest"].as_str().unwrap()),
        message.rsplit('@').next()
    );
    assert_eq!(
        listed["records"][0]["annotations"]["dev.recorder.image"],
        AGENT_IMAGE
    );
    let pulled = Command::new(recorder_bin())
        .args(["record", "pull", &format!("{repository}:1")])
        .arg("--registry-config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(pulled.stdout, committed);
}
