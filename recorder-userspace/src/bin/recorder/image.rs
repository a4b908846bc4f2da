//! `recorder image inspect|which`: what an image's layers hold and which layer provides a path.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use recorder::image::{Image, IndexOptions, MergedView, Reason, index_image, path};
use recorder::progress::Progress;
use tokio::runtime::Handle;

use crate::source::{OpenedImage, SourceArgs};

/// How the image is indexed.
#[derive(clap::Args, Debug, Clone)]
pub struct IndexArgs {
    /// Layers indexed at once (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Decompress every layer, eStargz and zstd:chunked ones too (whose table of contents is
    /// read instead by default); checks every layer blob against its digest.
    #[arg(long)]
    full_decompression: bool,
}

/// Where the image is and how it is indexed.
#[derive(clap::Args, Debug)]
struct ImageArgs {
    #[command(flatten)]
    src: SourceArgs,
    #[command(flatten)]
    index: IndexArgs,
}

/// `recorder image ...`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Manifest digest, then each layer's media type, size, entry count and whiteouts.
    Inspect {
        /// OCI image layout directory, or an image reference with --containerd (omit with
        /// --store).
        source: Option<PathBuf>,
        /// One JSON object (camelCase keys: manifestDigest, layers, entries...).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// The layer providing each path: `SOURCE PATH...`, or `PATH...` with --store. Every path
    /// is answered; exit status 1 if one is not in the image (absent, deleted by a whiteout,
    /// hidden by an opaque directory...), and the error names it.
    Which {
        /// The layout directory (or image reference with --containerd) followed by paths, or
        /// only paths with --store.
        #[arg(required = true)]
        args: Vec<PathBuf>,
        /// Resolve symlinks (inside the image root) instead of looking paths up literally.
        #[arg(long)]
        follow: bool,
        /// One JSON object per path.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        image: ImageArgs,
    },
}

/// Runs `recorder image`.
pub fn run(args: Args, rt: &Handle) -> anyhow::Result<()> {
    match args.command {
        Sub::Inspect {
            source,
            json,
            image,
        } => inspect(source, json, &image, rt),
        Sub::Which {
            args,
            follow,
            json,
            image,
        } => {
            let (source, paths) = if image.src.store.is_some() {
                (None, args)
            } else {
                let mut it = args.into_iter();
                (it.next(), it.collect())
            };
            if paths.is_empty() {
                bail!("no PATH given");
            }
            which(source, &image, &paths, follow, json, rt)
        }
    }
}

impl ImageArgs {
    fn open(&self, source: Option<PathBuf>, rt: &Handle) -> anyhow::Result<OpenedImage> {
        self.src.open(source.as_deref(), rt)
    }

    fn index(&self, image: &Image) -> anyhow::Result<(MergedView, Duration)> {
        index(image, self.index.threads, self.index.full_decompression)
    }
}

/// Indexes the image, with a progress bar on a terminal (none with --quiet).
pub fn index(
    image: &Image,
    threads: usize,
    full_decompression: bool,
) -> anyhow::Result<(MergedView, Duration)> {
    let total: u64 = image.layers().iter().map(|l| l.size).sum();
    let progress = Progress::bytes("indexing", total);
    let start = Instant::now();
    let opts = IndexOptions {
        threads,
        progress: Some(progress.counter()),
        full_decompression,
        cache: None,
    };
    let result = index_image(image, &opts);
    drop(progress);
    Ok((result.context("indexing the image")?, start.elapsed()))
}

fn inspect(
    source: Option<PathBuf>,
    json: bool,
    args: &ImageArgs,
    rt: &Handle,
) -> anyhow::Result<()> {
    let opened = args.open(source, rt)?;
    let image = &opened.image;
    if json {
        let (view, _) = args.index(image)?;
        let layers: Vec<serde_json::Value> = image
            .layers()
            .iter()
            .zip(view.layers())
            .map(|(layer, idx)| {
                let s = idx.stats();
                serde_json::json!({
                    "digest": layer.digest.to_string(),
                    "mediaType": layer.media_type.to_string(),
                    "size": layer.size,
                    "entries": s.entries,
                    "whiteouts": s.whiteouts,
                    "opaques": s.opaques,
                    "refusedByRun": s.refused_by_run,
                    "indexedFrom": if s.from_toc { "toc" } else { "tar" },
                })
            })
            .collect();
        let mut out = serde_json::json!({
            "manifestDigest": image.manifest_digest().to_string(),
            "layers": layers,
            "entries": view.entry_count(),
        });
        if let Some(reference) = &opened.reference {
            out["reference"] = serde_json::Value::String(reference.clone());
        }
        println!("{out}");
        return Ok(());
    }
    if let (Some(client), Some(reference)) = (&opened.containerd, &opened.reference) {
        println!(
            "image {reference} from containerd {} namespace {}",
            client.address().display(),
            client.namespace()
        );
    }
    let (view, took) = args.index(image)?;
    println!("manifest {}", image.manifest_digest());
    for (i, (layer, idx)) in image.layers().iter().zip(view.layers()).enumerate() {
        let s = idx.stats();
        println!(
            "layer {i} {} {} size {} entries {} whiteouts {} opaque {} refused-by-run {}",
            layer.digest,
            layer.media_type,
            layer.size,
            s.entries,
            s.whiteouts,
            s.opaques,
            s.refused_by_run
        );
        if let Some((name, why)) = &s.first_refused {
            eprintln!(
                "warning: layer {i} has {} entries `recorder run` refuses to unpack, e.g. {name:?}: {why} (indexed here as its cleaned path)",
                s.refused_by_run
            );
        }
    }
    let entries = view.entry_count();
    let bytes = view.heap_bytes();
    println!(
        "index {entries} entries, {bytes} bytes ({:.1} bytes/entry), {:.3}s",
        bytes as f64 / entries.max(1) as f64,
        took.as_secs_f64()
    );
    Ok(())
}

fn reason_text(r: &Reason) -> String {
    r.to_string()
}

fn which(
    source: Option<PathBuf>,
    args: &ImageArgs,
    paths: &[PathBuf],
    follow: bool,
    json: bool,
    rt: &Handle,
) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let opened = args.open(source, rt)?;
    let (view, _) = args.index(&opened.image)?;
    for (i, idx) in view.layers().iter().enumerate() {
        if let Some((name, why)) = &idx.stats().first_refused {
            eprintln!(
                "warning: layer {i} has {} entries `recorder run` refuses to unpack, e.g. {name:?}: {why}; answers below use their cleaned paths",
                idx.stats().refused_by_run
            );
        }
    }
    // Every path is answered; the ones not in the merged image make the command fail
    // afterwards (exit status 1), as `which` and `grep` do, so scripts can test for a path.
    let mut missing = Vec::new();
    for p in paths {
        let raw = p.as_os_str().as_bytes();
        let (path, result, target, chain) = if follow {
            let r = view.which_follow(raw);
            (r.path, r.result, Some(r.target), r.chain)
        } else {
            let l = view.which(raw);
            (l.path, l.result, None, Vec::new())
        };
        if let Err(r) = &result {
            missing.push(format!("/{}: {}", path::display(&path), reason_text(r)));
        }
        if json {
            let mut obj = serde_json::json!({
                "path": String::from_utf8_lossy(&path),
                "layerIndex": result.as_ref().ok().map(|f| f.layer),
                "reason": result.as_ref().err().map(reason_text),
            });
            if let Some(t) = &target {
                obj["target"] = serde_json::Value::String(String::from_utf8_lossy(t).into());
            }
            println!("{obj}");
            continue;
        }
        let mut line = format!("/{}", path::display(&path));
        for link in &chain {
            line.push_str(&format!(
                " -> {} (symlink in layer {})",
                path::display(&link.target),
                link.layer
            ));
        }
        if follow && !chain.is_empty() {
            line.push_str(&format!(
                " => /{}",
                path::display(target.as_deref().unwrap_or_default())
            ));
        }
        match &result {
            Ok(f) => line.push_str(&format!(": layer {} ({})", f.layer, f.kind.as_str())),
            Err(r) => line.push_str(&format!(": {}", reason_text(r))),
        }
        println!("{line}");
    }
    match missing.as_slice() {
        [] => Ok(()),
        [one] => anyhow::bail!("not in the image: {one}"),
        many => anyhow::bail!(
            "{} of {} paths are not in the image: {}",
            many.len(),
            paths.len(),
            many.join("; ")
        ),
    }
}
