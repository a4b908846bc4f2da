//! `recorder run --mount` (issue #10: ctr-remote optimize has it, `run` had not), in
//! `ctr`'s syntax `type=bind,src=/host/path,dst=/in/container,options=rbind:ro`, repeatable,
//! under runc and under containerd: what the workload reads through a bind mount is not image
//! content and is left out of the record, even at a path the image also has; a bad spec is a
//! usage error (exit 2) naming the mount, before the image is opened.

use std::path::Path;
use std::process::Command;

use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{Expected, LocalRun, record_entries, recorder_bin};
use recorder_tests::containerd::{
    AGENT_IMAGE as REF, agent_daemon, assert_run_left_nothing, recorder_run,
};
use recorder_tests::deadline::output_within;
use recorder_tests::root::require_root;

/// Reads both mounts and an image file; writing to the read-only mount must fail (else exit 9).
const SCRIPT: &str = "cat /data/host.txt /app/rel.txt /app/sub/here.txt && \
                      { echo x > /data/written 2>/dev/null && exit 9; exit 0; }";

/// A host dir (for `/data`, read-only, over the image's own `/data`) and a host file (over the
/// image's `/app/rel.txt`); the `--mount` arguments.
fn host_mounts(dir: &Path) -> Vec<String> {
    let data = dir.join("hostdata");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("host.txt"), "from the host\n").unwrap();
    let file = dir.join("rel.txt");
    std::fs::write(&file, "host rel\n").unwrap();
    vec![
        "--mount".into(),
        format!(
            "type=bind,src={},dst=/data,options=rbind:ro",
            data.display()
        ),
        "--mount".into(),
        format!(
            "type=bind,source={},destination=/app/rel.txt",
            file.display()
        ),
    ]
}

/// What the record must be: the shell, cat, and the one image file; nothing read through the
/// mounts (`app/rel.txt` is an image path, but what was read there is the host's file).
fn expected() -> Vec<(String, usize)> {
    let mut want = Expected::default();
    want.exec("sh").exec("cat").file("app/sub/here.txt", 2);
    want.0
}

/// stdout is exactly what the workload printed, then the record's digest (its stderr, the
/// shell's "Read-only file system", is not there).
fn check_output(stdout: &str, dir: &Path) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.len() == 4 && lines[..3] == ["from the host", "host rel", "here"],
        "the mounts were not what the workload read: {stdout}"
    );
    assert!(
        !dir.join("hostdata/written").exists(),
        "options=ro was not applied"
    );
}

#[test]
fn what_is_read_through_a_bind_mount_is_not_recorded() {
    require_root();
    let run = LocalRun::new();
    let mounts = host_mounts(run.dir.path());
    let mut args: Vec<&str> = mounts.iter().map(String::as_str).collect();
    args.extend(["--entrypoint", "/bin/sh", "--", "-c", SCRIPT]);
    let out = run.run(&args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    check_output(&stdout, run.dir.path());
    let digest = stdout.lines().last().unwrap();
    let record = ContentStore::open(&run.store)
        .unwrap()
        .read(&digest.parse().unwrap())
        .unwrap();
    assert_eq!(
        record_entries(&record, &run.manifest),
        expected(),
        "{stderr}"
    );
}

#[test]
fn under_containerd_what_is_read_through_a_bind_mount_is_not_recorded() {
    let (daemon, manifest) = agent_daemon();
    let dir = tempfile::tempdir().unwrap();
    let mounts = host_mounts(dir.path());
    let mut args: Vec<&str> = vec!["--image", REF];
    args.extend(mounts.iter().map(String::as_str));
    args.extend(["--entrypoint", "/bin/sh", "--", "-c", SCRIPT]);
    let child = recorder_run(&daemon, &args).spawn().unwrap();
    let out = output_within(
        child,
        std::time::Duration::from_secs(180),
        "run --containerd",
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    check_output(&stdout, dir.path());
    let digest = stdout.lines().last().unwrap();
    let record = daemon.ctr_ok(&["content", "get", digest]);
    assert_eq!(record_entries(&record, &manifest), expected(), "{stderr}");
    assert_run_left_nothing(&daemon);
}

/// Each bad spec is refused with exit status 2 and a message naming the spec and what is wrong
/// with it, before the (missing) image is looked at; with `--containerd` alike.
#[test]
fn a_bad_mount_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().to_str().unwrap();
    let cases = [
        (
            "type=bind,src=/no/such/dir,dst=/data".to_owned(),
            "source /no/such/dir: No such file or directory",
        ),
        (
            format!("type=bind,src={src},dst=data"),
            "destination \"data\" must be an absolute path",
        ),
        (
            format!("type=bind,src={src},dst=/data,options=rbind:rox"),
            "unknown option \"rox\"",
        ),
        (
            format!("type=tmpfs,src={src},dst=/data"),
            "type \"tmpfs\" is not supported: only type=bind",
        ),
        (
            format!("type=bind,src={src},dst=/data,ro"),
            "\"ro\" is not KEY=VALUE",
        ),
    ];
    for (spec, why) in &cases {
        for containerd in [false, true] {
            let mut cmd = Command::new(recorder_bin());
            cmd.arg("run");
            if containerd {
                cmd.args(["--containerd", "-a", "/nonexistent/containerd.sock"]);
            }
            let out = cmd
                .args(["--image", "/nonexistent/image", "--store"])
                .arg(dir.path().join("store"))
                .args(["--mount", spec, "--", "/bin/true"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
            assert!(
                stderr.contains(&format!("'{spec}'")) && stderr.contains(why),
                "{spec}: {stderr}"
            );
            assert!(!stderr.contains("/nonexistent"), "{spec}: {stderr}");
        }
    }
}
