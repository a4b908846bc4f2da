//! The eStargz case of `cargo xtask bench index`: one of the generated layers converted by
//! `ctr-remote image convert --oci --estargz` in a private containerd, kept (cached) as a
//! containerd content store directory that `recorder image inspect STORE@sha256:…` reads.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};
use sha2::{Digest, Sha256};

use super::containerd::Containerd;

const NAMESPACE: &str = "bench-estargz";
const SOURCE: &str = "docker.io/bench/index-src:latest";
const CONVERTED: &str = "docker.io/bench/index-estargz:latest";

/// The converted image: a content store directory and the converted image's target digest.
pub struct Converted {
    pub store: PathBuf,
    pub digest: String,
    /// The eStargz layer blob.
    pub layer: PathBuf,
}

impl Converted {
    /// `STORE@sha256:…`, the form `recorder image inspect` takes.
    pub fn image_arg(&self) -> String {
        format!("{}@{}", self.store.display(), self.digest)
    }
}

fn sha256_of_stream(cmd: &mut Command) -> anyhow::Result<String> {
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut out, &mut hasher)?;
    ensure!(child.wait()?.success(), "{cmd:?} failed");
    Ok(format!("sha256:{:x}", hasher.finalize()))
}

fn put(blobs: &Path, bytes: &[u8]) -> anyhow::Result<(String, usize)> {
    let hex = format!("{:x}", Sha256::digest(bytes));
    fs::write(blobs.join(&hex), bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}

/// An OCI layout at `src` of one image, `latest`, whose only layer is the tar+gzip `layer`, with
/// its real diff id (converters check or rewrite the config's); also the source of the
/// zstd:chunked case.
pub fn source_layout(layer: &Path, src: &Path) -> anyhow::Result<()> {
    let blobs = src.join("blobs").join("sha256");
    fs::create_dir_all(&blobs)?;
    let layer_hex = layer
        .file_name()
        .and_then(|n| n.to_str())
        .context("layer blob name")?
        .to_owned();
    fs::hard_link(layer, blobs.join(&layer_hex))
        .or_else(|_| fs::copy(layer, blobs.join(&layer_hex)).map(|_| ()))?;
    let diff_id = sha256_of_stream(Command::new("gzip").arg("-dc").arg(layer))?;
    let cfg = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))?;
    let (cd, cs) = put(&blobs, &cfg)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_hex}"),
            "size": fs::metadata(layer)?.len(),
        }],
    }))?;
    let (md, ms) = put(&blobs, &manifest)?;
    fs::write(src.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::write(
        src.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
            "annotations": {"io.containerd.image.name": SOURCE,
                            "org.opencontainers.image.ref.name": "latest"},
        }]}))?,
    )?;
    Ok(())
}

/// Converts the tar+gzip layer `layer` to eStargz (once; cached under `dir`).
pub fn convert(layer: &Path, dir: &Path) -> anyhow::Result<Converted> {
    let meta = dir.join("converted.json");
    let store = dir.join("store");
    if let Ok(m) = fs::read(&meta) {
        let m: serde_json::Value = serde_json::from_slice(&m)?;
        let digest = m["digest"].as_str().context("meta digest")?.to_owned();
        let layer = m["layer"].as_str().context("meta layer")?;
        eprintln!("using cached eStargz image {}", store.display());
        return Ok(Converted {
            layer: store.join("blobs/sha256").join(layer),
            store,
            digest,
        });
    }
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    eprintln!("converting {} to eStargz with ctr-remote", layer.display());

    let src = dir.join("src");
    source_layout(layer, &src)?;
    let archive = dir.join("src.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()?;
    ensure!(status.success(), "tar of the source layout failed");

    let daemon_dir = dir.join("containerd");
    fs::create_dir_all(&daemon_dir)?;
    let digest = {
        let daemon = Containerd::start(&daemon_dir, NAMESPACE)?;
        let archive = archive.to_str().context("archive path")?;
        daemon.client(
            "ctr",
            &[
                "images",
                "import",
                "--no-unpack",
                "--base-name",
                "docker.io/bench/index-src",
                archive,
            ],
        )?;
        daemon.client(
            "ctr-remote",
            &["image", "convert", "--oci", "--estargz", SOURCE, CONVERTED],
        )?;
        let ls = daemon.client("ctr", &["images", "ls"])?;
        ls.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&CONVERTED)).then(|| f.get(2).map(|d| d.to_string()))?
            })
            .with_context(|| format!("no {CONVERTED} after the conversion:\n{ls}"))?
    };
    fs::rename(
        daemon_dir
            .join("root")
            .join("io.containerd.content.v1.content"),
        &store,
    )?;
    fs::remove_dir_all(&daemon_dir)?;
    fs::remove_dir_all(&src)?;
    fs::remove_file(&archive)?;
    // The converted layer: the manifest's only layer.
    let store_blobs = store.join("blobs").join("sha256");
    let read = |d: &str| fs::read(store_blobs.join(d.trim_start_matches("sha256:")));
    let manifest: serde_json::Value = serde_json::from_slice(&read(&digest)?)?;
    let estargz_layer = manifest["layers"][0]["digest"]
        .as_str()
        .context("converted manifest has no layer")?
        .trim_start_matches("sha256:")
        .to_owned();
    ensure!(
        manifest["layers"][0]["annotations"]["containerd.io/snapshot/stargz/toc.digest"]
            .is_string(),
        "the converted layer has no TOC annotation"
    );
    fs::write(
        &meta,
        serde_json::to_vec(&serde_json::json!({"digest": digest, "layer": estargz_layer}))?,
    )?;
    Ok(Converted {
        layer: store_blobs.join(&estargz_layer),
        store,
        digest,
    })
}
