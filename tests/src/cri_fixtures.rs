//! Images for the CRI tests: the pause image a sandbox needs, and the recorder's own image as
//! `cargo xtask image` builds it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::image_fixtures::{digest, oci_layout_with_config};
use crate::sandbox_fixtures::LayerBuilder;

/// The sandbox image the CRI is configured with; built here, never pulled.
pub const PAUSE_IMAGE: &str = "localhost/recorder-test/pause:1";

/// The recorder image's reference in the tests.
pub const RECORDER_IMAGE: &str = "localhost/recorder:test";

/// Writes the pause image (host `sleep` and its libraries, running `sleep infinity`) as an OCI
/// layout at `root`; returns its manifest digest. The sandbox's one process only has to stay
/// alive: the CRI stops it with SIGKILL.
pub fn pause_image(root: &Path) -> String {
    let mut layer = LayerBuilder::new();
    layer.host_programs(&["sleep"]);
    let layer = layer.finish();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "infinity"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}
    }))
    .unwrap();
    oci_layout_with_config(
        root,
        PAUSE_IMAGE,
        &config,
        &[("application/vnd.oci.image.layer.v1.tar".to_owned(), layer)],
    )
}

/// What `cargo xtask image` printed and wrote.
pub struct RecorderImage {
    pub reference: String,
    pub digest: String,
    pub layout: PathBuf,
    /// The docker-archive/OCI-archive tar, for `ctr images import`.
    pub archive: PathBuf,
    /// The image's file tree (`--rootfs`), as the Dockerfile copies it.
    pub rootfs: PathBuf,
}

/// Runs `cargo xtask image` on `binary` into `out`. The binary is this build's recorder with
/// its debug info stripped (objcopy, binutils): the same code, a quarter of the bytes to
/// compress and import.
pub fn recorder_image(binary: &Path, out: &Path) -> RecorderImage {
    let stripped = out.join("recorder-stripped");
    std::fs::create_dir_all(out).unwrap();
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&stripped)
        .status()
        .expect("running objcopy (binutils)");
    assert!(status.success(), "objcopy --strip-debug failed");
    let rootfs = out.join("rootfs");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = xtask::cargo()
        .current_dir(&workspace)
        .args(["xtask", "image", "--reference", RECORDER_IMAGE, "--binary"])
        .arg(&stripped)
        .arg("--out")
        .arg(out)
        .arg("--rootfs")
        .arg(&rootfs)
        .output()
        .expect("running cargo xtask image");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo xtask image failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no `{name}` line from cargo xtask image:\n{stdout}"))
            .to_owned()
    };
    RecorderImage {
        reference: field("reference"),
        digest: field("digest"),
        layout: field("oci-layout").into(),
        archive: field("archive").into(),
        rootfs,
    }
}
