//! What a record says, through the `recorder` binary: `record merge` of several runs,
//! `record export` to each converter's format (checked against golden files and read back by
//! readers written to each consumer's documented schema), `record show --json` against sums
//! computed here from the image's own tar listing, and `record report` opened in headless
//! Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use recorder_tests::agent_fixtures::recorder_bin;

mod export;
mod merge;
mod report;
mod show;

fn recorder(args: &[&str]) -> Output {
    Command::new(recorder_bin())
        .args(args)
        .env("RECORDER_LOG", "warn")
        .output()
        .expect("running recorder")
}

fn ok(args: &[&str]) -> Output {
    let out = recorder(args);
    assert!(
        out.status.success(),
        "recorder {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A record of the agent image (its manifest), some of each layer, with a companion.
fn agent_record(dir: &Path, manifest: &str) -> PathBuf {
    let entries: &[(&str, Option<usize>, u64)] = &[
        ("bin/sh", Some(0), 1_000_000),
        ("app/run.sh", Some(2), 2_000_000),
        ("etc/shadowed", Some(1), 3_000_000),
        ("bin/cat", Some(0), 4_000_000),
        ("app/conf", Some(2), 5_000_000),
        ("opt/real/tool.conf", Some(0), 6_000_000),
        ("app/tree/deep/found.txt", Some(1), 7_000_000),
        ("proc/self/status", None, 8_000_000),
        ("app/<script>alert(1)</script>", Some(2), 9_600_000),
    ];
    let record = dir.join("agent.json");
    let mut r = String::new();
    let mut c = String::new();
    for (i, (p, layer, t)) in entries.iter().enumerate() {
        let layer = layer
            .map(|l| format!(",\"layerIndex\":{l}"))
            .unwrap_or_default();
        r.push_str(&format!(
            "{{\"path\":\"{p}\",\"manifestDigest\":\"{manifest}\"{layer}}}\n"
        ));
        c.push_str(&format!(
            "{{\"index\":{i},\"path\":\"{p}\",\"offsetNs\":{t}}}\n"
        ));
    }
    std::fs::write(&record, r).unwrap();
    std::fs::write(dir.join("agent.json.companion"), c).unwrap();
    record
}
