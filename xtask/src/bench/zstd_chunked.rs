//! The zstd:chunked case of `cargo xtask bench index`: one of the generated layers copied by
//! `skopeo copy --dest-compress-format zstd:chunked` into an OCI layout (cached), which
//! `recorder image inspect LAYOUT --ref latest` reads.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};

/// The converted image's layout and its layer blob.
pub struct Converted {
    pub layout: PathBuf,
    pub layer: PathBuf,
}

/// Converts the tar+gzip layer `layer` to zstd:chunked (once; cached under `dir`).
pub fn convert(layer: &Path, dir: &Path) -> anyhow::Result<Converted> {
    let layout = dir.join("layout");
    let done = dir.join("converted");
    if !done.exists() {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir)?;
        eprintln!("converting {} to zstd:chunked with skopeo", layer.display());
        let src = dir.join("src");
        super::estargz::source_layout(layer, &src)?;
        let from = format!("oci:{}:latest", src.display());
        let to = format!("oci:{}:latest", layout.display());
        let out = xtask::skopeo_copy_to_zstd_chunked(&from, &to)
            .output()
            .context("running skopeo under unshare (`cargo xtask setup` installs skopeo)")?;
        ensure!(
            out.status.success(),
            "skopeo copy to zstd:chunked: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::remove_dir_all(&src)?;
        fs::write(&done, b"")?;
    } else {
        eprintln!("using cached zstd:chunked image {}", layout.display());
    }
    let blobs = layout.join("blobs").join("sha256");
    let read = |d: &str| fs::read(blobs.join(d.trim_start_matches("sha256:")));
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let md = index["manifests"][0]["digest"]
        .as_str()
        .context("the converted layout has no manifest")?;
    let manifest: serde_json::Value = serde_json::from_slice(&read(md)?)?;
    let l0 = &manifest["layers"][0];
    ensure!(
        l0["annotations"].as_object().is_some_and(|a| a
            .keys()
            .any(|k| k.ends_with("zstd-chunked.manifest-checksum"))),
        "the converted layer has no zstd:chunked annotations: {l0}"
    );
    let hex = l0["digest"]
        .as_str()
        .context("converted manifest has no layer")?
        .trim_start_matches("sha256:");
    Ok(Converted {
        layer: blobs.join(hex),
        layout,
    })
}
