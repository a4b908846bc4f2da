//! The workload without the recorder: the same layers as a read-only overlay in a private
//! mount namespace, then `chroot`, so the traced run's slowdown has something to compare with.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::cmd;
use crate::demo_image::BuiltImage;

/// The image's layers unpacked one dir each, bottom first.
pub struct UnpackedLayers {
    dirs: Vec<PathBuf>,
    merged: PathBuf,
}

/// Unpacks each layer of the layout at `layout` with `tar` into a sibling `layers/` dir.
///
/// Whiteouts stay plain `.wh.*` files: the workload touches neither the deleted file nor the
/// hidden ones, so it opens the same files as in the recorder's overlay.
pub fn unpack(image: &BuiltImage, layout: &Path) -> anyhow::Result<UnpackedLayers> {
    let root = layout.with_file_name("layers");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    let mut dirs = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let dir = root.join(i.to_string());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let hex = layer.digest.trim_start_matches("sha256:");
        let blob = layout.join("blobs").join("sha256").join(hex);
        cmd::run(
            Command::new("tar")
                .arg("-xzf")
                .arg(&blob)
                .arg("-C")
                .arg(&dir),
        )?;
        dirs.push(dir);
    }
    let merged = root.join("merged");
    fs::create_dir_all(&merged).with_context(|| format!("creating {}", merged.display()))?;
    Ok(UnpackedLayers { dirs, merged })
}

/// Runs `/app/run.sh LOOPS` in the overlay and returns its own start-to-exit time.
pub fn run(layers: &UnpackedLayers, loops: u64) -> anyhow::Result<Duration> {
    // overlayfs lists lowerdirs top first.
    let lower: Vec<String> = layers
        .dirs
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect();
    let merged = layers.merged.display();
    let script = format!(
        "mount -t overlay overlay -o ro,lowerdir={} {merged} && exec chroot {merged} /app/run.sh {loops}",
        lower.join(":")
    );
    let out = cmd::output(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(&script),
    )?;
    let stamp = |key: &str| -> anyhow::Result<u64> {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("the baseline workload printed no {key}:\n{out}"))?
            .trim()
            .parse()
            .with_context(|| format!("reading the baseline's {key}"))
    };
    let ns = stamp("workload-exit-ns=")?.saturating_sub(stamp("workload-start-ns=")?);
    Ok(Duration::from_nanos(ns))
}
