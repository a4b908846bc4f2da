//! Writing an OCI image layout: `oci-layout`, `index.json` and `blobs/sha256/`.

use std::fs;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use super::layer::{LayerBlob, sha256_digest};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The config's `created`, fixed so the image digest depends only on content.
const CREATED: &str = "2024-01-01T00:00:00Z";

/// What the image runs (`config.config` in the image config).
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
}

/// A layer blob with a line for the config's history.
pub struct HistoryLayer {
    pub blob: LayerBlob,
    pub created_by: String,
}

/// Writes the layout into `dir` (which must not exist yet) and returns the manifest digest.
pub fn write(
    dir: &Path,
    ref_name: &str,
    run: &RunConfig,
    layers: &[HistoryLayer],
) -> anyhow::Result<String> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let mut layer_descriptors = Vec::new();
    for layer in layers {
        let descriptor = put_blob(&blobs, LAYER_TYPE, &layer.blob.gzip)?;
        debug_assert_eq!(descriptor["digest"], layer.blob.digest);
        layer_descriptors.push(descriptor);
    }
    let config = json!({
        "created": CREATED,
        "architecture": oci_architecture(),
        "os": "linux",
        "config": {
            "Entrypoint": run.entrypoint,
            "Cmd": run.cmd,
            "Env": run.env,
            "WorkingDir": run.working_dir,
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.blob.diff_id.as_str()).collect::<Vec<_>>(),
        },
        "history": layers
            .iter()
            .map(|l| json!({ "created": CREATED, "created_by": l.created_by }))
            .collect::<Vec<_>>(),
    });
    let config_descriptor = put_blob(&blobs, CONFIG_TYPE, &to_bytes(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config_descriptor,
        "layers": layer_descriptors,
    });
    let mut manifest_descriptor = put_blob(&blobs, MANIFEST_TYPE, &to_bytes(&manifest)?)?;
    manifest_descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": ref_name });
    manifest_descriptor["platform"] = json!({ "architecture": oci_architecture(), "os": "linux" });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_descriptor],
    });
    write_file(&dir.join("index.json"), &to_bytes(&index)?)?;
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(manifest_descriptor["digest"]
        .as_str()
        .context("the manifest descriptor has no digest")?
        .to_owned())
}

/// Stores `bytes` under its digest and returns its descriptor.
fn put_blob(blobs: &Path, media_type: &str, bytes: &[u8]) -> anyhow::Result<Value> {
    let digest = sha256_digest(bytes);
    let hex = digest.trim_start_matches("sha256:");
    write_file(&blobs.join(hex), bytes)?;
    Ok(json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() }))
}

fn to_bytes(value: &Value) -> anyhow::Result<Vec<u8>> {
    serde_json::to_vec(value).context("serialising image JSON")
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// This machine's architecture in OCI's spelling (`GOARCH`).
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}
