//! Names an image controls reach people safely (issue 11): control characters are escaped in
//! human output (`record show`, `image which`), and `image inspect`/`which` flag the entries
//! `recorder run` would refuse to unpack instead of silently answering with their cleaned path.

use std::process::{Command, Output};

use recorder_tests::agent_fixtures::recorder_bin;
use recorder_tests::image_fixtures::{Comp, E, oci_layout};

fn recorder(args: &[&str]) -> Output {
    Command::new(recorder_bin()).args(args).output().unwrap()
}

const RED: &str = "etc/a\x1b[31mred\x07";

#[test]
fn image_names_are_escaped_and_entries_run_refuses_are_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    oci_layout(
        &layout,
        "hostile",
        &[vec![
            E::Dir("etc"),
            E::File("etc/a\x1b[31mred\x07", b"x"),
            E::File("../../tmp/x", b"escape"),
        ]],
        Comp::Tar,
    );
    let layout = layout.to_str().unwrap();

    let out = recorder(&["image", "inspect", layout]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("refused-by-run 1"), "{stdout}");
    assert!(
        stderr.contains("\"../../tmp/x\": path contains a '..' component"),
        "{stderr}"
    );

    let out = recorder(&["image", "which", layout, "tmp/x", RED]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("entries `recorder run` refuses"),
        "{stderr}"
    );
    assert!(stdout.contains("/tmp/x: layer 0"), "{stdout}");
    assert!(
        !out.stdout.contains(&0x1b),
        "raw escape in output: {stdout:?}"
    );
    assert!(
        stdout.contains("/etc/a\\u{1b}[31mred\\u{7}: layer 0"),
        "{stdout}"
    );
}

#[test]
fn record_show_escapes_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record.json");
    std::fs::write(
        &record,
        "{\"path\":\"etc/\\u001b]0;pwned\\u0007x\",\"manifestDigest\":\"sha256:\\u001b[2J\",\"layerIndex\":0}\n",
    )
    .unwrap();
    let out = recorder(&["record", "show", record.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.stdout.contains(&0x1b),
        "raw escape in output: {stdout:?}"
    );
    assert!(!out.stdout.contains(&0x07), "raw BEL in output: {stdout:?}");
    assert!(
        stdout.contains("first /etc/\\u{1b}]0;pwned\\u{7}x"),
        "{stdout}"
    );
    assert!(stdout.contains("manifest sha256:\\u{1b}[2J"), "{stdout}");
}
