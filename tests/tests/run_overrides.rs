//! `recorder run`'s workload overrides and script conventions (issue #10): `--entrypoint`
//! (docker's form: `-- ARGS` become its arguments), `--env`, `--env-file`, `--user`, `--cwd`
//! did not exist; `--digest-file` and `--quiet` for scripts; one duration syntax with zero
//! refused where it makes no sense (`--period 0` was accepted).

use std::process::{Command, Stdio};
use std::time::Duration;

use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{recorder_bin, write_image};
use recorder_tests::deadline::output_within;
use recorder_tests::root::require_root;

#[test]
fn entrypoint_env_user_and_cwd_replace_the_image_config() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, store) = (dir.path().join("image"), dir.path().join("store"));
    write_image(&image);
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "# from a file\nB=2\nA=overridden\n").unwrap();
    let digest_file = dir.path().join("digest");
    // Every override checked inside: a miss is exit 9, which the recorder reports as 4.
    let script = "[ \"$A\" = 1 ] && [ \"$B\" = 2 ] || exit 9; \
                  grep -q '^Uid:.1234' /proc/self/status || exit 9; \
                  cat here.txt";
    let child = Command::new(recorder_bin())
        .env("RECORDER_CACHE_DIR", dir.path().join("layer-cache"))
        .args(["--quiet", "run", "--image"])
        .arg(&image)
        .arg("--store")
        .arg(&store)
        .args(["--entrypoint", "/bin/sh", "--env", "A=1", "--env-file"])
        .arg(&env_file)
        .args(["--user", "1234:1234", "--cwd", "/app/sub", "--digest-file"])
        .arg(&digest_file)
        .args(["--", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, Duration::from_secs(180), "recorder run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // --quiet: no summary, no progress log.
    assert!(!stderr.contains("recorded paths:"), "{stderr}");
    assert!(!stderr.contains("INFO"), "{stderr}");
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last().unwrap_or_default(),
        digest.trim_end(),
        "stdout:\n{stdout}"
    );
    let record = ContentStore::open(&store)
        .unwrap()
        .read(&digest.trim_end().parse().unwrap())
        .unwrap();
    let record = String::from_utf8_lossy(&record);
    assert!(record.contains("\"path\":\"app/sub/here.txt\""), "{record}");
    // The image's Cmd (/app/run.sh) was dropped with its entrypoint.
    assert!(!record.contains("app/run.sh"), "{record}");
}

#[test]
fn durations_have_one_syntax_and_zero_is_refused_where_meaningless() {
    for (args, want) in [
        (
            &[
                "run",
                "--image",
                "/nonexistent",
                "--store",
                "/tmp",
                "--period",
                "0",
            ][..],
            "must be more than zero",
        ),
        (
            &[
                "status",
                "--socket",
                "/nonexistent",
                "--wait",
                "done",
                "--interval",
                "0s",
            ],
            "must be more than zero",
        ),
        (
            &[
                "run",
                "--image",
                "/nonexistent",
                "--store",
                "/tmp",
                "--period",
                "5x",
            ],
            "expected a duration such as 500ms, 30s or 1h30m",
        ),
    ] {
        let out = Command::new(recorder_bin()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // A bare number is seconds, a fraction too: the wait times out after 300 ms, not 300 s.
    let out = Command::new(recorder_bin())
        .args([
            "status",
            "--socket",
            "/nonexistent/s.sock",
            "--wait",
            "done",
        ])
        .args(["--timeout", "0.3", "--interval", "100ms"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("timed out after 300ms"), "{stderr}");
    // --version, as users expect.
    let out = Command::new(recorder_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("recorder "));
}
