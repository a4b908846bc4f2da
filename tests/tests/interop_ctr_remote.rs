//! Our record with stargz-snapshotter's own client (`ctr-remote` 0.12): `image convert
//! --estargz-record-in` accepts it and puts every recorded file ahead of the prefetch landmark
//! of its layer, and `image optimize --record-out` (the fanotify analyzer) on the same image
//! and workload records the same set of paths.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use recorder_tests::agent_fixtures::record_entries;
use recorder_tests::containerd::{
    AGENT_IMAGE, Daemon, agent_daemon, assert_run_left_nothing, finish, recorder, recorder_run,
    wait_for_log,
};
use recorder_tests::estargz::{assert_prefetched, manifest_of};
use recorder_tests::routes_fixtures::{self, unprivileged_steps};

fn require_ctr_remote() {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("ctr-remote").is_file());
    assert!(
        found,
        "ctr-remote is not installed; `cargo xtask setup` installs stargz-snapshotter"
    );
}

fn ctr_remote(daemon: &Daemon, args: &[&str]) -> Output {
    let out = Command::new("ctr-remote")
        .arg("-a")
        .arg(daemon.socket())
        .args(["-n", daemon.namespace()])
        .args(args)
        .output()
        .expect("running ctr-remote");
    assert!(
        out.status.success(),
        "ctr-remote {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Records the image's own workload under `ctr run`; returns the record's bytes (from
/// `--record-out`, checked equal to containerd's copy).
fn our_record(daemon: &Daemon) -> Vec<u8> {
    our_record_named(daemon, "ours")
}

/// As [`our_record`], the container and the `--record-out` file (`NAME.json`, its companion
/// next to it) named `name`.
fn our_record_named(daemon: &Daemon, name: &str) -> Vec<u8> {
    let out_file = daemon.scratch().join(format!("{name}.json"));
    let mut child = recorder(
        daemon,
        &[
            "--image",
            AGENT_IMAGE,
            "--target",
            &format!("container-name:{name}"),
            "--until-exit",
            "--record-out",
            out_file.to_str().unwrap(),
        ],
    )
    .spawn()
    .unwrap();
    let stderr = wait_for_log(&mut child, "waiting for a matching container");
    daemon.ctr_ok(&["run", "--rm", "--null-io", AGENT_IMAGE, name]);
    let (code, digest, stderr) = finish(child, stderr);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    // Traced from the namespace's creation by runc (issue 17): an arm that was not would be
    // named here rather than as a path difference below.
    assert!(
        stderr.contains(recorder_tests::containerd::ARMED_AT_CREATION)
            && stderr.contains("warnings: 0"),
        "armed late:\n{stderr}"
    );
    let bytes = std::fs::read(&out_file).unwrap();
    assert_eq!(daemon.ctr_ok(&["content", "get", &digest]), bytes);
    bytes
}

/// Records the image's own workload with `recorder run --containerd` (our runner, as
/// `optimize` runs it); returns the record's bytes, checked equal to containerd's copy.
fn our_run_record(daemon: &Daemon) -> Vec<u8> {
    let out_file = daemon.scratch().join("ours-run.json");
    let out = recorder_run(
        daemon,
        &[
            "--image",
            AGENT_IMAGE,
            "--period",
            "30s",
            "--record-out",
            out_file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let digest = stdout.lines().last().unwrap_or_default();
    let bytes = std::fs::read(&out_file).unwrap();
    assert_eq!(daemon.ctr_ok(&["content", "get", digest]), bytes);
    assert_run_left_nothing(daemon);
    bytes
}

/// `ctr-remote image optimize --record-out` of the image's own workload; the record's paths.
fn optimize_paths(daemon: &Daemon) -> BTreeSet<String> {
    let theirs_file = daemon.scratch().join("theirs.json");
    ctr_remote(
        daemon,
        &[
            "image",
            "optimize",
            "--oci",
            "--period",
            "30",
            "--record-out",
            theirs_file.to_str().unwrap(),
            AGENT_IMAGE,
            "docker.io/recorder/agent-test:opt",
        ],
    );
    paths(&std::fs::read(Path::new(&theirs_file)).unwrap())
}

#[test]
fn convert_with_our_record_prefetches_every_recorded_file() {
    require_ctr_remote();
    let (daemon, manifest) = agent_daemon();
    let bytes = our_record(&daemon);
    let entries = record_entries(&bytes, &manifest);
    assert!(!entries.is_empty());
    let record = daemon.scratch().join("record.json");
    std::fs::write(&record, &bytes).unwrap();
    convert_and_check(
        &daemon,
        &record,
        &entries,
        "docker.io/recorder/agent-test:esgz",
    );
}

/// `ctr-remote image convert --oci --estargz --estargz-record-in RECORD` of the agent image to
/// `converted`; checks that every entry of the record is ahead of its layer's prefetch landmark.
fn convert_and_check(daemon: &Daemon, record: &Path, entries: &[(String, usize)], converted: &str) {
    ctr_remote(
        daemon,
        &[
            "image",
            "convert",
            "--oci",
            "--estargz",
            "--estargz-record-in",
            record.to_str().unwrap(),
            AGENT_IMAGE,
            converted,
        ],
    );
    let manifest = manifest_of(daemon, converted);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{manifest}");
    assert_prefetched(daemon, converted, entries);
}

#[test]
fn convert_accepts_a_merged_record_of_three_runs() {
    require_ctr_remote();
    let (daemon, manifest) = agent_daemon();
    let mut files = Vec::new();
    for run in 0..3 {
        let name = format!("run{run}");
        our_record_named(&daemon, &name);
        let file = daemon.scratch().join(format!("{name}.json"));
        assert!(
            recorder::record::companion::sidecar_path(&file).is_file(),
            "--record-out wrote no companion next to {}",
            file.display()
        );
        files.push(file.to_str().unwrap().to_owned());
    }
    let merged = daemon.scratch().join("merged.json");
    let mut args = vec![
        "record",
        "merge",
        "--min-runs",
        "2",
        "--out",
        merged.to_str().unwrap(),
    ];
    args.extend(files.iter().map(String::as_str));
    let out = Command::new(recorder_tests::agent_fixtures::recorder_bin())
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&merged).unwrap();
    let entries = record_entries(&bytes, &manifest);
    assert!(!entries.is_empty());
    // Every merged file is one some run recorded.
    let recorded: BTreeSet<String> = files
        .iter()
        .flat_map(|f| paths(&std::fs::read(f).unwrap()))
        .collect();
    assert!(
        entries.iter().all(|(p, _)| recorded.contains(p)),
        "{entries:?}"
    );
    convert_and_check(
        &daemon,
        &merged,
        &entries,
        "docker.io/recorder/agent-test:merged",
    );

    // `record show` reads the image from containerd too, and the merged companion's times.
    let out = Command::new(recorder_tests::agent_fixtures::recorder_bin())
        .args([
            "record",
            "show",
            merged.to_str().unwrap(),
            "--image",
            AGENT_IMAGE,
        ])
        .arg(format!("--containerd={}", daemon.socket().display()))
        .args(["--namespace", daemon.namespace(), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest"], manifest.as_str());
    assert_eq!(v["layers"].as_array().unwrap().len(), 3);
    assert_eq!(v["entries"], entries.len());
    assert!(v["read"]["bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["lastAccessNs"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["runs"].as_u64() >= Some(2)),
        "{v}"
    );
}

/// The deduplicated paths of a record.
fn paths(bytes: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn optimize_analyzer_records_the_same_paths() {
    require_ctr_remote();
    let (daemon, _) = agent_daemon();
    let ours = paths(&our_record(&daemon));

    let theirs = optimize_paths(&daemon);
    let only_ours: Vec<&str> = ours.difference(&theirs).map(String::as_str).collect();
    let only_theirs: Vec<&str> = theirs.difference(&ours).map(String::as_str).collect();
    // The one difference is the workload's environment, not the analyzers: `optimize`
    // bind-mounts a generated /etc/hosts (its --add-hosts) over the image's, so the script's
    // `cat /etc/hosts` reads no image file there; under `ctr run` nothing covers it, and the
    // image's etc/hosts (layer 0) is what is read, so recording it is right.
    assert_eq!(
        (only_ours, only_theirs),
        (vec!["etc/hosts"], Vec::<&str>::new()),
        "ours: {ours:?}\ntheirs: {theirs:?}"
    );
}

#[test]
fn optimize_analyzer_and_our_containerd_runner_record_the_same_paths() {
    require_ctr_remote();
    let (daemon, _) = agent_daemon();
    let ours = paths(&our_run_record(&daemon));
    let theirs = optimize_paths(&daemon);
    let only_ours: Vec<&str> = ours.difference(&theirs).map(String::as_str).collect();
    let only_theirs: Vec<&str> = theirs.difference(&ours).map(String::as_str).collect();
    // Both run the image's config through containerd and runc with a default spec; what
    // differs is only what each spec mounts over the image. `optimize` bind-mounts its
    // generated /etc/hosts (and /etc/resolv.conf, which the script does not read); our spec
    // mounts only proc, /dev (tmpfs, devpts, shm, mqueue) and a read-only sysfs, none of
    // which holds image files, so the script's `cat /etc/hosts` reads the image's etc/hosts.
    assert_eq!(
        (only_ours, only_theirs),
        (vec!["etc/hosts"], Vec::<&str>::new()),
        "ours: {ours:?}\ntheirs: {theirs:?}"
    );
}

/// The routes workload (io_uring, magic links, fexecve, execveat, a `#!` script, ...: every
/// route that needs no CAP_SYS_ADMIN, which neither spec grants) under `ctr-remote image
/// optimize` and under `recorder run --containerd --seccomp unconfined` (optimize applies no
/// seccomp profile, so io_uring works under both): every file fanotify reported is in our
/// record, and nothing else.
#[test]
fn optimize_analyzer_records_nothing_the_routes_workload_read_that_we_miss() {
    require_ctr_remote();
    let daemon = Daemon::start();
    let workload = Path::new(env!("CARGO_BIN_EXE_routes-workload"));
    let layout = daemon.scratch().join("routes-layout");
    write_image_for_routes(&daemon, &layout, workload);

    let out_file = daemon.scratch().join("ours-routes.json");
    let out = recorder_run(
        &daemon,
        &[
            "--image",
            routes_fixtures::IMAGE,
            "--seccomp",
            "unconfined",
            "--period",
            "30s",
            "--record-out",
            out_file.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let ours = paths(&std::fs::read(&out_file).unwrap());
    assert_run_left_nothing(&daemon);

    let theirs_file = daemon.scratch().join("theirs-routes.json");
    ctr_remote(
        &daemon,
        &[
            "image",
            "optimize",
            "--oci",
            "--period",
            "30",
            "--record-out",
            theirs_file.to_str().unwrap(),
            routes_fixtures::IMAGE,
            "docker.io/recorder/routes-test:opt",
        ],
    );
    let theirs = paths(&std::fs::read(&theirs_file).unwrap());
    let only_theirs: Vec<&str> = theirs.difference(&ours).map(String::as_str).collect();
    let only_ours: Vec<&str> = ours.difference(&theirs).map(String::as_str).collect();
    assert_eq!(
        (only_theirs, only_ours),
        (Vec::<&str>::new(), Vec::<&str>::new()),
        "ours: {ours:?}\ntheirs: {theirs:?}"
    );
}

fn write_image_for_routes(daemon: &Daemon, layout: &Path, workload: &Path) {
    routes_fixtures::write_image(
        layout,
        routes_fixtures::IMAGE,
        workload,
        &unprivileged_steps(),
    );
    daemon.import_layout(layout);
}
