//! What the xtask binary shares with the tests, which run cargo as it does.

use std::path::Path;
use std::process::Command;

/// A command for the cargo running this process (so nested builds use the same toolchain),
/// without the variables cargo set for the crate it runs.
///
/// Why: build scripts may watch those variables (ring's watches `CARGO_MANIFEST_DIR` and
/// `CARGO_PKG_*`), and cargo compares them with its own environment. A build run from xtask or
/// from a test with them set rebuilt ring, rustls and the recorder, and relinked
/// `target/debug/recorder` while the test suite was spawning it: ENOENT in CI. Stripped, a
/// build from xtask, from a test or from a shell sees one environment and makes one binary.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_set_by_cargo_for_a_crate) {
            command.env_remove(name);
        }
    }
    command
}

/// Whether `name` is one of the variables cargo sets when it runs a crate's binary or tests
/// (not the user's own configuration, such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn is_set_by_cargo_for_a_crate(name: &str) -> bool {
    const NAMES: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    const PREFIXES: [&str; 2] = ["CARGO_PKG_", "CARGO_BIN_EXE_"];
    NAMES.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The config of a private containerd keeping everything (root, state, opt, sockets) in `dir`,
/// with `plugins` (TOML: which plugins are disabled, and their sections). Unix socket paths are
/// limited to 108 bytes: keep `dir` short.
pub fn containerd_config(dir: &Path, plugins: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
{plugins}
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
    )
}

/// A `skopeo` command (its arguments to be added) that runs in a mount namespace of its own,
/// with a tmpfs on `/var/lib`. Run as root, skopeo keeps a blob info cache in
/// `/var/lib/containers/cache`, and has no flag to put it elsewhere; the tests and benchmarks
/// leave the host as they found it (seen: `blob-info-cache-v1.boltdb` there after a suite run).
/// Nothing else of `/var/lib` is used by the transports they use (`oci:`, `docker-archive:`,
/// `docker://`).
pub fn skopeo() -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /var/lib && exec "$@""#)
        .args(["sh", "skopeo"]);
    command
}

/// A [`skopeo`] `copy` of image `src` to `dst` (transport references such as `oci:DIR:TAG`)
/// with its layers recompressed as zstd:chunked: how the tests and the benchmarks make a
/// zstd:chunked image, as podman and buildah write them.
pub fn skopeo_copy_to_zstd_chunked(src: &str, dst: &str) -> Command {
    let mut command = skopeo();
    command
        .args(["copy", "--quiet"])
        .args(["--dest-compress-format", "zstd:chunked", "--dest-compress"])
        .args([src, dst]);
    command
}

/// The plugins line of a private containerd without Kubernetes' CRI plugin.
pub const NO_CRI: &str = r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#;

#[cfg(test)]
mod tests {
    use super::is_set_by_cargo_for_a_crate;

    #[test]
    fn only_what_cargo_sets_for_a_crate_is_stripped() {
        let cases = [
            ("CARGO_MANIFEST_DIR", true),
            ("CARGO_PKG_NAME", true),
            ("CARGO_PKG_VERSION_MAJOR", true),
            ("CARGO_BIN_EXE_recorder", true),
            ("OUT_DIR", true),
            ("CARGO", false),
            ("CARGO_HOME", false),
            ("CARGO_TARGET_DIR", false),
            ("CARGO_BUILD_JOBS", false),
            ("RUSTFLAGS", false),
            ("PATH", false),
        ];
        for (name, stripped) in cases {
            assert_eq!(is_set_by_cargo_for_a_crate(name), stripped, "{name}");
        }
    }
}
