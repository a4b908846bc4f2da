//! The README's two commands: `cargo xtask setup` (which both start with) is idempotent, and
//! `cargo xtask demo` runs the main job end to end on its bundled workload.
//!
//! They run cargo in the workspace, as a user does. `cargo xtask test` runs setup before the
//! suite, so the run here is a second one: it must find everything in place and install nothing.
//! (How fast that is belongs to a benchmark, not to a test.)

use std::path::{Path, PathBuf};
use std::process::Output;

use xtask::cargo;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn xtask(args: &[&str]) -> Output {
    // The demo's `recorder run` keeps its layer cache here, not in the system's.
    let cache = tempfile::tempdir().unwrap();
    cargo()
        .env("RECORDER_CACHE_DIR", cache.path().join("layer-cache"))
        .current_dir(workspace())
        .arg("xtask")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn setup_run_again_finds_everything_in_place_and_installs_nothing() {
    let first = xtask(&["setup"]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let again = xtask(&["setup"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    // Every step prints a line only when it acts (installs, builds, mounts).
    assert_eq!(stderr, "setup: everything is in place\n");
    assert_eq!(String::from_utf8_lossy(&again.stdout), "");
}

#[test]
fn demo_records_its_workload_and_shows_the_record() {
    let out = xtask(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let manifest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("manifest "))
        .unwrap_or_else(|| panic!("no manifest line:\n{stdout}"))
        .to_owned();
    let shown = stdout
        .lines()
        .find_map(|l| l.strip_prefix("=== recorder record show "))
        .unwrap_or_else(|| panic!("no record show:\n{stdout}"))
        .to_owned();
    assert!(shown.starts_with("sha256:"), "{shown}");
    assert!(stderr.contains("record: complete"), "{stderr}");
    // The record file the demo prints is the record it committed, of the demo's image.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let record = std::fs::read(target.join("demo/record.json")).unwrap();
    assert_eq!(
        format!("{}", recorder::image::BlobDigest::of(&record)),
        shown
    );
    let lines = String::from_utf8(record).unwrap();
    assert!(lines.lines().count() > 1, "{lines}");
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["manifestDigest"], manifest.as_str(), "{line}");
        assert!(v["layerIndex"].is_u64(), "{line}");
        assert!(stdout.contains(line), "the demo did not show {line}");
    }
}
