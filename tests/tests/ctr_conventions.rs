//! ctr's conventions (issue #10): `--containerd` as a switch with `-a/--address ADDR` (also
//! `unix://ADDR`) and `-n/--namespace NS`, `CONTAINERD_ADDRESS` and `CONTAINERD_NAMESPACE`
//! honoured, `--containerd=ADDR` still working; `--help` shows them and the exit statuses.

use std::process::{Command, Output, Stdio};

use recorder_tests::agent_fixtures::recorder_bin;
use recorder_tests::containerd::{Daemon, IMAGE, runnable_image};

fn recorder(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(recorder_bin());
    cmd.args(args)
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn address_and_namespace_come_as_ctr_takes_them() {
    let daemon = Daemon::start();
    let layout = daemon.scratch().join("layout");
    let manifest = runnable_image(&layout);
    daemon.import_layout(&layout);
    let socket = daemon.socket().to_str().unwrap().to_owned();
    let unix = format!("unix://{socket}");
    let equals = format!("--containerd={socket}");
    let ns = daemon.namespace();
    // (flags, environment)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: [Case; 5] = [
        (vec!["--containerd", "-a", &socket, "-n", ns], vec![]),
        (
            vec!["--containerd", "--address", &unix, "--namespace", ns],
            vec![],
        ),
        (
            vec!["--containerd"],
            vec![
                ("CONTAINERD_ADDRESS", &socket),
                ("CONTAINERD_NAMESPACE", ns),
            ],
        ),
        (
            vec!["--containerd", "-n", ns],
            vec![("CONTAINERD_ADDRESS", &unix)],
        ),
        (vec![&equals, "--namespace", ns], vec![]),
    ];
    for (flags, env) in cases {
        let mut args = vec!["image", "inspect"];
        args.extend(&flags);
        args.push(IMAGE);
        let out = recorder(&args, &env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{flags:?} {env:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("manifest {manifest}")),
            "{flags:?}: {stdout}"
        );
    }
    // -a alone is a usage error: --containerd is the switch.
    let out = recorder(&["image", "inspect", "-a", &socket, IMAGE], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--containerd"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--containerd SOCK` with a space gave three different errors depending on the command
/// (issue #10); now one, the same everywhere, saying how to give the socket (exit status 2).
#[test]
fn a_socket_after_containerd_with_a_space_is_one_clear_usage_error() {
    let want = "--containerd is a switch: give the socket as `--containerd -a /tmp/x.sock` \
                (as ctr takes it) or `--containerd=/tmp/x.sock`";
    for args in [
        &[
            "image",
            "inspect",
            "--containerd",
            "/tmp/x.sock",
            "docker.io/a:1",
        ][..],
        &[
            "image",
            "which",
            "--containerd",
            "/tmp/x.sock",
            "docker.io/a:1",
            "/x",
        ],
        &[
            "record",
            "--containerd",
            "/tmp/x.sock",
            "--image",
            "docker.io/a:1",
            "--target",
            "container:x",
        ],
        &[
            "run",
            "--containerd",
            "/tmp/x.sock",
            "--image",
            "docker.io/a:1",
        ],
        &["record", "ls", "--containerd", "/tmp/x.sock"],
    ] {
        let out = recorder(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn help_shows_the_conventions_and_the_exit_statuses() {
    for command in [&["record"][..], &["run"], &["image", "inspect"]] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = recorder(&args, &[]);
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command:?}");
        for flag in ["--containerd", "-a, --address", "-n, --namespace"] {
            assert!(
                help.contains(flag),
                "{command:?} --help lacks {flag}:\n{help}"
            );
        }
    }
    for command in [&["record"][..], &["run"], &[]] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = String::from_utf8_lossy(&recorder(&args, &[]).stdout).into_owned();
        for line in [
            "Exit status:",
            "0  the record is committed and complete",
            "2  usage",
            "3  the record is committed but incomplete",
            "4  the record is committed, but the workload failed",
        ] {
            assert!(
                help.contains(line),
                "{command:?} --help lacks {line:?}:\n{help}"
            );
        }
    }
}

/// `--json` on the reporting commands, one key case (camelCase, as the stargz record):
/// `image inspect` had none. (`status --json` is in `poller_states.rs`, `trace --json` in
/// `recorder-userspace/tests/trace_cli.rs`, `record`/`run --json` in `outcomes.rs`.)
#[test]
fn image_inspect_speaks_camel_case_json() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = recorder_tests::agent_fixtures::write_image(&layout);
    let out = recorder(
        &["image", "inspect", "--json", layout.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["manifestDigest"], manifest.as_str(), "{json}");
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{json}");
    for layer in layers {
        for key in [
            "digest",
            "mediaType",
            "size",
            "entries",
            "whiteouts",
            "refusedByRun",
        ] {
            assert!(layer.get(key).is_some(), "no {key} in {layer}");
        }
    }
    assert!(json["entries"].as_u64().is_some_and(|n| n > 0), "{json}");
}

/// Shell completions and a man page, generated from the clap definitions by `cargo xtask docs`
/// (item 8): they know the same flags as `--help`.
#[test]
fn xtask_docs_writes_completions_and_a_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let out = xtask::cargo()
        .current_dir(root)
        .args(["xtask", "docs", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "completions/recorder.bash",
        "completions/_recorder",
        "completions/recorder.fish",
        "completions/recorder.elv",
        "completions/_recorder.ps1",
        "man/recorder.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(text.contains("recorder"), "{file}");
        if file.starts_with("completions/") {
            // fish names long options without their dashes (`-l linger`).
            for flag in [
                "containerd",
                "address",
                "allow-empty",
                "linger",
                "digest-file",
            ] {
                assert!(text.contains(flag), "{file} lacks {flag}");
            }
        }
    }
    let man = std::fs::read_to_string(dir.path().join("man/recorder.1")).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH recorder"),
        "{man}"
    );
}
