//! `recorder record push` and `recorder record pull` against a real registry (Debian's
//! distribution 2.8, started by the test; it has no referrers API, so these go through the
//! referrers tag schema): byte-for-byte round trips, the artifact's shape, newest-first
//! discovery, basic auth with docker config files, and the errors a user meets.

use std::path::Path;
use std::process::{Command, Output};

use recorder_tests::agent_fixtures::{recorder_bin, write_image};
use recorder_tests::registry::Registry;

mod auth;
mod errors;
mod round_trip;

const ARTIFACT_TYPE: &str = "application/vnd.recorder.record.v1+json";
const REPO: &str = "recorder/agent";

/// `recorder ARGS` with `DOCKER_CONFIG` pointing at `docker_config_dir` (never the host's).
fn recorder(docker_config_dir: &Path, args: &[&str]) -> Output {
    Command::new(recorder_bin())
        .env("DOCKER_CONFIG", docker_config_dir)
        .env("RECORDER_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The stderr of a run that must fail with status 1.
fn failed(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    stderr
}

/// A record of the image whose manifest is `manifest`, `n` entries.
fn record_of(manifest: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "{{\"path\":\"app/f{i}\",\"manifestDigest\":\"{manifest}\",\"layerIndex\":1}}\n"
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// A layout with the agent image, copied to `registry` as `REPO:1`; its manifest digest.
fn image_in(registry: &Registry, dir: &Path) -> String {
    let layout = dir.join("layout");
    let manifest = write_image(&layout);
    registry.push_layout(&layout, "agent", &format!("{REPO}:1"));
    manifest
}
