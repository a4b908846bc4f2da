//! Images imported into a private daemon: a runnable one built from host programs, and the
//! agent fixture image.

use std::path::Path;

use crate::agent_fixtures::write_image_named;
use crate::image_fixtures::{digest, oci_layout_with_config};
use crate::sandbox_fixtures::LayerBuilder;

use super::{Daemon, HELLO, IMAGE, PROGRAMS};

/// Writes a runnable image as an OCI layout at `root` and returns its manifest digest.
///
/// Layer 0 (gzip) has host `sh`, `cat` and `sleep` with their libraries; layer 1
/// (uncompressed) has `/etc/hello` and shadows nothing. The default command is
/// `/bin/cat /etc/hello`.
pub fn runnable_image(root: &Path) -> String {
    let mut base = LayerBuilder::new();
    base.dir("etc", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .dir("tmp", 0o1777)
        .host_programs(PROGRAMS);
    let base = base.finish();
    let mut top = LayerBuilder::new();
    top.dir("etc", 0o755).file(HELLO, 0o644, b"hello\n");
    let top = top.finish();
    let gz = crate::image_fixtures::Comp::Gzip.compress(&base);
    let layers = [
        ("application/vnd.oci.image.layer.v1.tar+gzip", gz, &base),
        ("application/vnd.oci.image.layer.v1.tar", top.clone(), &top),
    ];
    let diff_ids: Vec<String> = layers.iter().map(|(_, _, raw)| digest(raw)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/cat", "/etc/hello"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let blobs: Vec<(String, Vec<u8>)> = layers
        .into_iter()
        .map(|(mt, blob, _)| (mt.to_owned(), blob))
        .collect();
    oci_layout_with_config(root, IMAGE, &config, &blobs)
}

/// The agent fixture image's name in containerd.
pub const AGENT_IMAGE: &str = "docker.io/recorder/agent-test:1";

/// A daemon with the agent fixture image imported as [`AGENT_IMAGE`]; and its manifest digest.
pub fn agent_daemon() -> (Daemon, String) {
    let daemon = Daemon::start();
    let layout = daemon.scratch().join("agent-layout");
    let manifest = write_image_named(&layout, AGENT_IMAGE);
    daemon.import_layout(&layout);
    (daemon, manifest)
}
