//! The demo image: a small multi-layer OCI image layout built from programs on this machine.
//!
//! Layers, bottom to top:
//! 0. base: `/bin/sh` and a few coreutils with every library they load (real paths and
//!    symlinks kept, usrmerge links included), `/etc/passwd`, `/etc/group`;
//! 1. app: the workload script `/app/run.sh` and text files under `/app/data`;
//! 2. update: a newer `/app/data/config.txt`, a whiteout deleting `old.txt`, and an opaque
//!    `/app/data/cache` that hides the app layer's files there;
//! 3. links: symlinks to files of lower layers.
//!
//! Every byte is deterministic (sorted entries, fixed mtimes and owners, fixed gzip settings),
//! so the manifest digest only changes when this machine's programs do.

pub mod host;
pub mod layer;
pub mod layout;

use std::fs;
use std::path::Path;

use anyhow::Context;

use layer::Layer;
use layout::{HistoryLayer, RunConfig};

/// The demo workload script, installed as `/app/run.sh`.
pub const DEMO_SCRIPT: &str = include_str!("demo_image/run.sh");

/// Programs copied into the base layer, with their libraries.
const BASE_PROGRAMS: &[&str] = &[
    "/bin/sh",
    "cat",
    "date",
    "head",
    "ls",
    "sha256sum",
    "sort",
    "wc",
];

/// What the image runs: `/app/run.sh` with this script, given `args` (the config's `Cmd`).
pub struct Workload<'a> {
    pub ref_name: &'a str,
    pub script: &'a str,
    pub args: Vec<String>,
}

/// A built image: its manifest digest and a line per layer.
pub struct BuiltImage {
    pub manifest_digest: String,
    pub layers: Vec<LayerSummary>,
}

pub struct LayerSummary {
    pub digest: String,
    pub compressed_bytes: usize,
    pub entries: usize,
    pub what: String,
}

/// Builds the image into `dir`, replacing whatever is there.
pub fn build(dir: &Path, workload: &Workload) -> anyhow::Result<BuiltImage> {
    build_with(dir, workload, Vec::new())
}

/// As [`build`], with `extra` layers (and their history lines) on top.
pub fn build_with(
    dir: &Path,
    workload: &Workload,
    extra: Vec<(Layer, String)>,
) -> anyhow::Result<BuiltImage> {
    let mut layers = vec![
        (
            base_layer()?,
            "base: /bin/sh, coreutils and their libraries, /etc/passwd",
        ),
        (
            app_layer(workload.script)?,
            "app: /app/run.sh and /app/data",
        ),
        (
            update_layer()?,
            "update: new config.txt, whiteout old.txt, opaque cache/",
        ),
        (links_layer()?, "links: symlinks to lower-layer files"),
    ]
    .into_iter()
    .map(|(layer, what)| (layer, what.to_owned()))
    .collect::<Vec<_>>();
    layers.extend(extra);
    let mut written = Vec::new();
    for (layer, what) in &layers {
        written.push(HistoryLayer {
            blob: layer
                .write()
                .with_context(|| format!("writing the {what} layer"))?,
            created_by: what.clone(),
        });
    }
    let run = RunConfig {
        entrypoint: vec!["/app/run.sh".into()],
        cmd: workload.args.clone(),
        env: vec![
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
            "DEMO_GREETING=hello from the image config".into(),
        ],
        working_dir: "/app".into(),
    };
    // Build next to the destination and swap it in, so a failed build leaves no half image.
    let staging = dir.with_extension("partial");
    remove_dir_if_present(&staging)?;
    let manifest_digest = layout::write(&staging, workload.ref_name, &run, &written)?;
    remove_dir_if_present(dir)?;
    fs::rename(&staging, dir)
        .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
    Ok(BuiltImage {
        manifest_digest,
        layers: written
            .into_iter()
            .map(|l| LayerSummary {
                digest: l.blob.digest,
                compressed_bytes: l.blob.gzip.len(),
                entries: l.blob.entries,
                what: l.created_by,
            })
            .collect(),
    })
}

fn base_layer() -> anyhow::Result<Layer> {
    let mut layer = Layer::default();
    host::add_programs(&mut layer, BASE_PROGRAMS)?;
    layer.file(
        "etc/passwd",
        0o644,
        "root:x:0:0:root:/root:/bin/sh\n\
         app:x:1000:1000:demo app:/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    layer.file(
        "etc/group",
        0o644,
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )?;
    layer.dir("root", 0o700)?;
    layer.dir("tmp", 0o1777)?;
    Ok(layer)
}

fn app_layer(script: &str) -> anyhow::Result<Layer> {
    let mut layer = Layer::default();
    layer.file("app/run.sh", 0o755, script)?;
    // The workload's data under app/data, in this order in the tar: what it reads, what the
    // update layer deletes (old.txt) and hides behind an opaque dir (cache/).
    let data = [
        ("config.txt", "greeting = hello\nversion = 1\n".to_owned()),
        ("words.txt", words(200)),
        ("numbers.txt", numbers(100)),
        (
            "old.txt",
            "this file is deleted by the update layer\n".to_owned(),
        ),
        ("notes/a.txt", "first note\n".to_owned()),
        ("notes/b.txt", "second note\n".to_owned()),
        ("cache/stale-1.txt", "hidden by the opaque dir\n".to_owned()),
        ("cache/stale-2.txt", "hidden by the opaque dir\n".to_owned()),
    ];
    for (path, text) in data {
        layer.file(&format!("app/data/{path}"), 0o644, text)?;
    }
    Ok(layer)
}

fn update_layer() -> anyhow::Result<Layer> {
    let mut layer = Layer::default();
    layer.file(
        "app/data/config.txt",
        0o644,
        "greeting = hello again\nversion = 2\n",
    )?;
    layer.whiteout("app/data/old.txt")?;
    layer.opaque("app/data/cache")?;
    layer.file(
        "app/data/cache/fresh.txt",
        0o644,
        "the only file left in cache/\n",
    )?;
    Ok(layer)
}

fn links_layer() -> anyhow::Result<Layer> {
    let mut layer = Layer::default();
    // Relative, to the update layer's config.txt; and absolute, to the base layer's wc.
    layer.symlink("app/data/latest", "config.txt")?;
    layer.symlink("usr/local/bin/count", "/usr/bin/wc")?;
    Ok(layer)
}

/// `n` made-up words, one a line.
fn words(n: usize) -> String {
    const SYLLABLES: &[&str] = &["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi"];
    (0..n)
        .map(|i| {
            let a = SYLLABLES[i % SYLLABLES.len()];
            let b = SYLLABLES[(i * 5 + 3) % SYLLABLES.len()];
            let c = SYLLABLES[(i * 3 + 1) % SYLLABLES.len()];
            format!("{a}{b}{c}\n")
        })
        .collect()
}

/// The numbers `1..=n` shuffled by a fixed permutation (multiplying by a unit mod a prime).
fn numbers(n: usize) -> String {
    const PRIME: usize = 101;
    (1..PRIME)
        .map(|i| i * 37 % PRIME)
        .filter(|&v| v <= n)
        .map(|v| format!("{v}\n"))
        .collect()
}

fn remove_dir_if_present(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}
