//! Progress on a terminal only (issue #10: unpacking a 150 MB image printed nothing for 6 s):
//! with stderr on a terminal (a pseudo-terminal made by util-linux `script`), indexing shows
//! an indicatif bar; with stderr piped, or with `--quiet`, nothing of it is written.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use recorder_tests::agent_fixtures::{CACHE_DIR_ENV, recorder_bin, write_image};
use recorder_tests::deadline::output_within;

/// `recorder ARGS` with stdin, stdout and stderr on a new pseudo-terminal; what it wrote there.
fn on_a_terminal(args: &[&str]) -> String {
    on_a_terminal_with(args, &[])
}

/// [`on_a_terminal`] with environment variables `env` set.
fn on_a_terminal_with(args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut line = recorder_bin().display().to_string();
    for arg in args {
        assert!(
            arg.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b)),
            "needs quoting: {arg}"
        );
        line.push(' ');
        line.push_str(arg);
    }
    let child = Command::new("script")
        .args(["--quiet", "--return", "--command", &line, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script");
    let out = output_within(child, Duration::from_secs(60), "script");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn piped(args: &[&str]) -> Output {
    Command::new(recorder_bin())
        .args(args)
        .env("TERM", "xterm")
        .output()
        .unwrap()
}

fn layout(dir: &Path) -> String {
    let image = dir.join("image");
    write_image(&image);
    image.to_str().unwrap().to_owned()
}

#[test]
fn indexing_shows_a_bar_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let image = layout(dir.path());

    let shown = on_a_terminal(&["image", "inspect", &image]);
    assert!(
        shown.contains("indexing"),
        "no bar on a terminal: {shown:?}"
    );
    // The bar was cleared, and the command's own output is all there.
    assert!(shown.contains("manifest sha256:"), "{shown:?}");

    let quiet = on_a_terminal(&["--quiet", "image", "inspect", &image]);
    assert!(!quiet.contains("indexing"), "a bar with --quiet: {quiet:?}");
    assert!(quiet.contains("manifest sha256:"), "{quiet:?}");

    let out = piped(&["image", "inspect", &image]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("indexing") && !stderr.contains('\r') && !stderr.contains('\x1b'),
        "progress written to a pipe: {stderr:?}"
    );
}

/// `recorder run` on a terminal shows its unpacking too (the step that took 6 s in silence).
#[test]
fn unpacking_shows_a_bar_on_a_terminal() {
    recorder_tests::root::require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = layout(dir.path());
    let (store, work, cache) = (
        dir.path().join("store"),
        dir.path().join("work"),
        dir.path().join("cache"),
    );
    std::fs::create_dir(&work).unwrap();
    let shown = on_a_terminal_with(
        &[
            "run",
            "--image",
            &image,
            "--store",
            store.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--allow-empty",
            "--entrypoint",
            "/bin/sh",
            "--",
            "-c",
            "true",
        ],
        &[(CACHE_DIR_ENV, &cache)],
    );
    assert!(
        shown.contains("unpacking"),
        "no unpacking bar on a terminal: {shown:?}"
    );
    assert!(shown.contains("sha256:"), "no digest: {shown:?}");
}
