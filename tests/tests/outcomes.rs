//! Outcomes that mean something (issue #10): each of these used to exit 0 and print
//! `record: complete`. A failed workload exits 4 with its status in the summary and the JSON
//! (the record still committed); nothing recorded is an error unless `--allow-empty`; a layout
//! with several manifests for the platform and no `--ref`, a `--platform` the image is not
//! built for, and a container running another image than `--image` are errors naming the
//! choices. (The late arm, exit 3, is `containerd_record/arming.rs` ::
//! `an_arm_after_the_entrypoint_started_is_reported_as_a_warning`.)

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use recorder::image::BlobDigest;
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{LocalRun, recorder_bin, write_image};
use recorder_tests::containerd::{IMAGE, agent_daemon, recorder, runnable_image, wait_for_log};
use recorder_tests::deadline::output_within;
use recorder_tests::image_fixtures::{descriptor, put_manifest_with_config, write_layout_index};
use recorder_tests::root::require_root;

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let child = Command::new(recorder_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    output_within(child, Duration::from_secs(180), "the recorder")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// Blobs in a local content store (none if it was never created).
fn blobs_in(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256")).map_or(0, |d| d.count())
}

/// A process that reads nothing of any image while it lives, in a mount namespace of its own
/// (a private copy of the host's): the filter is by mount namespace, and in the host's every
/// other process that opens `/bin/sh` or libc would count (seen: a record that was not empty
/// while builds ran beside the test). Killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Self {
        let mut command = Command::new("sleep");
        command.arg("120");
        // SAFETY: private_mount_namespace makes raw syscalls only, without allocating, as
        // required between fork and exec. spawn returns once `sleep` was executed, so the pid
        // is in its own namespace when the target is taken from it.
        unsafe {
            command.pre_exec(|| {
                recorder_tests::mntns::private_mount_namespace().map_err(std::io::Error::from)
            })
        };
        Sleeper(command.spawn().unwrap())
    }
    fn target(&self) -> String {
        format!("pid:{}", self.0.id())
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_failed_workload_exits_4_with_its_status_and_the_record_committed() {
    require_root();
    let LocalRun {
        dir,
        image,
        store,
        work,
        manifest: _,
    } = LocalRun::new();
    let cache = dir.path().join("layer-cache");
    let out = run(&[
        "run".as_ref(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
        "--image".as_ref(),
        image.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--work-dir".as_ref(),
        work.as_os_str(),
        "--json".as_ref(),
        "--".as_ref(),
        "/bin/sh".as_ref(),
        "-c".as_ref(),
        "cat /etc/shadowed >/dev/null; exit 127".as_ref(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "stderr:\n{err}");
    assert!(err.contains("workload: exit status 127\n"), "{err}");
    assert!(
        err.contains("record: committed, but the WORKLOAD FAILED (exit status 127; exit status 4)"),
        "{err}"
    );
    // The --json summary is the last stdout line, and names the record, which is committed.
    let json: serde_json::Value = serde_json::from_str(&last_line(&out)).unwrap();
    assert_eq!(json["verdict"], "workloadFailed", "{json}");
    assert_eq!(json["exitStatus"], 4, "{json}");
    assert_eq!(json["workload"]["code"], 127, "{json}");
    assert_eq!(json["workload"]["stoppedByRecorder"], false, "{json}");
    let digest: BlobDigest = json["recordDigest"].as_str().unwrap().parse().unwrap();
    let record = ContentStore::open(&store).unwrap().read(&digest).unwrap();
    assert!(
        String::from_utf8_lossy(&record).contains("\"path\":\"etc/shadowed\""),
        "{}",
        String::from_utf8_lossy(&record)
    );
}

#[test]
fn a_workload_that_succeeds_exits_0_and_says_so() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, store) = (dir.path().join("image"), dir.path().join("store"));
    write_image(&image);
    let cache = dir.path().join("layer-cache");
    let out = run(&[
        "run".as_ref(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
        "--image".as_ref(),
        image.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--".as_ref(),
        "/bin/cat".as_ref(),
        "/etc/shadowed".as_ref(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert!(err.contains("workload: exit status 0\n"), "{err}");
    assert!(err.contains("record: complete\n"), "{err}");
}

#[test]
fn an_empty_record_is_an_error_unless_allowed() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, store) = (dir.path().join("image"), dir.path().join("store"));
    write_image(&image);
    let sleeper = Sleeper::start();
    let target = sleeper.target();
    let args = |extra: &[&str]| {
        let mut v: Vec<std::ffi::OsString> = vec![
            "record".into(),
            "--image".into(),
            image.clone().into(),
            "--store".into(),
            store.clone().into(),
            "--target".into(),
            target.clone().into(),
            "--period".into(),
            "1s".into(),
        ];
        v.extend(extra.iter().map(Into::into));
        v
    };

    let out = run(&args(&[]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains("nothing was recorded (period of 1s ended;"),
        "{err}"
    );
    assert!(err.contains("pass --allow-empty"), "{err}");
    assert_eq!(blobs_in(&store), 0, "an empty record was committed");
    assert!(out.stdout.is_empty(), "{}", last_line(&out));

    let out = run(&args(&["--allow-empty"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    assert_eq!(last_line(&out), BlobDigest::of(b"").to_string());
}

/// A layout whose index lists two manifests for this machine's platform, named `a` and `b`,
/// each descriptor with a platform (so nothing but `--ref` tells them apart).
fn two_manifest_layout(root: &Path) {
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let config_type = "application/vnd.oci.image.config.v1+json";
    let descs: Vec<serde_json::Value> = ["a", "b"]
        .iter()
        .map(|name| {
            let config = serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"Cmd": ["/bin/true"], "Labels": {"name": name}},
                "rootfs": {"type": "layers", "diff_ids": []}
            }))
            .unwrap();
            let (manifest, d) = put_manifest_with_config(root, mt, config_type, &config, &[]);
            let mut desc = descriptor(mt, &manifest, &d);
            desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
            desc["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
            desc
        })
        .collect();
    write_layout_index(root, &descs);
}

#[test]
fn a_layout_with_two_manifests_and_no_ref_is_an_error_listing_them() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, store) = (dir.path().join("image"), dir.path().join("store"));
    two_manifest_layout(&image);
    let sleeper = Sleeper::start();
    let out = run(&[
        "record".as_ref(),
        "--image".as_ref(),
        image.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--target".as_ref(),
        sleeper.target().as_ref(),
        "--period".as_ref(),
        "1s".as_ref(),
        "--allow-empty".as_ref(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(
            "2 manifests for platform linux/amd64 and no --ref to choose one: a (linux/amd64), \
             b (linux/amd64)"
        ),
        "{err}"
    );
    assert_eq!(blobs_in(&store), 0);
}

#[test]
fn a_platform_the_image_is_not_built_for_is_an_error_naming_its_platform() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, store) = (dir.path().join("image"), dir.path().join("store"));
    let manifest = write_image(&image);
    let sleeper = Sleeper::start();
    let out = run(&[
        "record".as_ref(),
        "--image".as_ref(),
        image.as_os_str(),
        "--store".as_ref(),
        store.as_os_str(),
        "--platform".as_ref(),
        "linux/arm64".as_ref(),
        "--target".as_ref(),
        sleeper.target().as_ref(),
        "--period".as_ref(),
        "1s".as_ref(),
        "--allow-empty".as_ref(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(&format!(
            "manifest {manifest} is for linux/amd64, not --platform linux/arm64"
        )),
        "{err}"
    );
    assert_eq!(blobs_in(&store), 0);
}

#[test]
fn a_container_running_another_image_than_image_is_an_error() {
    let (daemon, _) = agent_daemon();
    let other = daemon.scratch().join("other-layout");
    runnable_image(&other);
    daemon.import_layout(&other);
    let mut child = recorder(
        &daemon,
        &[
            "--image",
            recorder_tests::containerd::AGENT_IMAGE,
            "--target",
            "container-name:mismatch-*",
            "--until-exit",
            "--period",
            "60s",
        ],
    )
    .spawn()
    .unwrap();
    let log = wait_for_log(&mut child, "waiting for a matching container");
    daemon.ctr_ok(&["run", "--rm", "--null-io", IMAGE, "mismatch-1"]);
    let out = output_within(child, Duration::from_secs(120), "the recorder");
    let err = log.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{err}");
    assert!(
        err.contains(&format!(
            "target container:mismatch-1: it runs image {IMAGE} (sha256:"
        )) && err.contains(&format!(
            "not --image {} (sha256:",
            recorder_tests::containerd::AGENT_IMAGE
        )) && err.contains(&format!("give --image {IMAGE}")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
