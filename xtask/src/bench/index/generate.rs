//! The benchmark's image: an OCI layout of tar+gzip layers of made-up files, the same every
//! time (a fixed-seed PRNG), generated once and cached under `target/bench-index/`.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};
use sha2::{Digest, Sha256};

use super::{Args, target_dir};

/// A small deterministic PRNG, so the image is the same every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Text-like content that gzip compresses about 3:1, like real binaries and sources.
fn pool(rng: &mut Rng) -> Vec<u8> {
    let words: Vec<String> = (0..2_000)
        .map(|_| {
            let len = 2 + rng.below(9);
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(1 << 20);
    while out.len() < 1 << 20 {
        out.extend_from_slice(words[rng.below(words.len())].as_bytes());
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    out
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    ensure!(out.status.success(), "sha256sum {} failed", path.display());
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Writes one tar+gzip layer (gzip -1 does the compressing) and returns `(path, size, tar bytes)`.
fn write_layer(
    dir: &Path,
    n: usize,
    args: &Args,
    pool: &[u8],
) -> anyhow::Result<(PathBuf, u64, u64)> {
    let path = dir.join(format!("layer{n}.tar.gz"));
    let out = File::create(&path)?;
    let mut gz = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(out)
        .spawn()
        .context("running gzip")?;
    let stdin = gz.stdin.take().context("gzip stdin")?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, stdin));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1));
    let mut tar_bytes = 0u64;
    let mut dir_name = String::new();
    for i in 0..args.entries_per_layer {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        if i % 50 == 0 {
            dir_name = format!(
                "usr/share/layer{n}/pkg-{:04}/lib/python3/site-packages/module_{:03}",
                i / 2_000,
                (i / 50) % 40
            );
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, format!("{dir_name}/"), std::io::empty())?;
            tar_bytes += 512;
            continue;
        }
        let size = rng.below(2 * args.mean_file_size);
        let start = rng.below(pool.len() - size);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(size as u64);
        let name = format!("{dir_name}/file_{i:06}_{:x}.py", rng.next() & 0xffff);
        tar.append_data(&mut h, name, &pool[start..start + size])?;
        tar_bytes += 512 + size.div_ceil(512) as u64 * 512;
    }
    tar.into_inner()?.flush()?;
    let status = gz.wait()?;
    ensure!(status.success(), "gzip failed");
    let size = fs::metadata(&path)?.len();
    Ok((path, size, tar_bytes))
}

pub(super) struct Generated {
    pub(super) dir: PathBuf,
    pub(super) layer_files: Vec<PathBuf>,
    pub(super) tar_bytes: u64,
    pub(super) entries: u64,
}

fn put_json(blobs: &Path, v: &serde_json::Value) -> anyhow::Result<(String, usize)> {
    let bytes = serde_json::to_vec(v)?;
    let hex = format!("{:x}", Sha256::digest(&bytes));
    fs::write(blobs.join(&hex), &bytes)?;
    Ok((format!("sha256:{hex}"), bytes.len()))
}

pub(super) fn generate(args: &Args) -> anyhow::Result<Generated> {
    let dir = target_dir().join("bench-index").join(format!(
        "image-l{}-e{}-s{}",
        args.layers, args.entries_per_layer, args.mean_file_size
    ));
    let blobs = dir.join("blobs").join("sha256");
    let meta = dir.join("bench-meta.json");
    if let Ok(m) = fs::read(&meta) {
        let m: serde_json::Value = serde_json::from_slice(&m)?;
        let layer_files = m["layers"]
            .as_array()
            .context("meta layers")?
            .iter()
            .filter_map(|v| v.as_str().map(|h| blobs.join(h)))
            .collect();
        eprintln!("using cached image {}", dir.display());
        return Ok(Generated {
            dir,
            layer_files,
            tar_bytes: m["tar_bytes"].as_u64().unwrap_or(0),
            entries: m["entries"].as_u64().unwrap_or(0),
        });
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&blobs)?;
    eprintln!(
        "generating {} layers of {} entries in {}",
        args.layers,
        args.entries_per_layer,
        dir.display()
    );
    let pool = pool(&mut Rng(42));
    let mut descs = Vec::new();
    let mut hexes = Vec::new();
    let mut tar_total = 0;
    for n in 0..args.layers {
        let (path, size, tar_bytes) = write_layer(&dir, n, args, &pool)?;
        let hex = sha256_file(&path)?;
        fs::rename(&path, blobs.join(&hex))?;
        tar_total += tar_bytes;
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{hex}"),
            "size": size,
        }));
        hexes.push(hex);
    }
    let manifest_for = |layers: &[serde_json::Value]| -> anyhow::Result<serde_json::Value> {
        let cfg = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let (cd, cs) = put_json(&blobs, &cfg)?;
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers,
        });
        let (md, ms) = put_json(&blobs, &m)?;
        Ok(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms,
        }))
    };
    let mut all = manifest_for(&descs)?;
    all["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "all"});
    let mut one = manifest_for(&descs[..1])?;
    one["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "one"});
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [all, one]}))?,
    )?;
    let entries = (args.layers * args.entries_per_layer) as u64;
    fs::write(
        &meta,
        serde_json::to_vec(
            &serde_json::json!({"layers": hexes, "tar_bytes": tar_total, "entries": entries}),
        )?,
    )?;
    Ok(Generated {
        dir,
        layer_files: hexes.iter().map(|h| blobs.join(h)).collect(),
        tar_bytes: tar_total,
        entries,
    })
}
