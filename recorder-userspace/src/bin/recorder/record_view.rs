//! `recorder record show --image`, `merge`, `export` and `report`: flags and output only; the
//! work is in the library (`recorder::record::{merge, export, needs, report}`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use recorder::agent::ImageSource;
use recorder::image::{Image, Platform};
use recorder::record::companion::{self, CompanionLine};
use recorder::record::export::Format;
use recorder::record::merge::Run;
use recorder::record::needs::{self, Needs, human_bytes, percent};
use recorder::record::{self, RecordEntry};
use tokio::runtime::Handle;

use crate::record_show::read_record;
use crate::record_store::Records;
use crate::source::{ContainerdArgs, PickArgs, open_containerd};

/// The image a record is shown against, and how much to show.
#[derive(clap::Args, Debug)]
pub struct ViewArgs {
    /// The image: an OCI layout directory, STORE_DIR@sha256:HEX, or with --containerd an image
    /// reference there.
    #[arg(long)]
    pub image: Option<String>,
    #[command(flatten)]
    pub source: ImageArgs,
    /// The record's companion (times of first access): a file, or `sha256:...` in --store
    /// (or containerd's store). Default: RECORD.companion next to a record file, or the
    /// companion a stored record's labels name, if there is one.
    #[arg(long, requires = "image")]
    pub companion: Option<String>,
    /// Print everything as one JSON object.
    #[arg(long, requires = "image")]
    pub json: bool,
    /// How many of the largest files read to list.
    #[arg(long, default_value_t = 10, requires = "image")]
    pub largest: usize,
}

/// Where the image is, besides --image.
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    #[command(flatten)]
    pub pick: PickArgs,
    #[command(flatten)]
    pub ctrd: ContainerdArgs,
}

/// `record merge`.
#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The runs' records (files, or `sha256:...` in --store); each one's companion is read
    /// from RECORD.companion when there is one.
    #[arg(required = true, num_args = 1..)]
    records: Vec<String>,
    /// Keep only files read in at least this many runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    min_runs: u32,
    /// Write the merged record here (and its companion to FILE.companion); default: stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Content store holding record blobs.
    #[arg(long)]
    store: Option<PathBuf>,
}

/// `record export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// stargz (the record, for ctr-remote --estargz-record-in), paths (one absolute path per
    /// line: nydusify --prefetch-patterns, stargz --prefetch-list), nydus-optimize (nydusify
    /// optimize --prefetch-files) or soci (soci create --prefetch-files-json).
    #[arg(long)]
    format: Format,
    /// A record file, or `sha256:...` of a record blob in --store.
    record: String,
    /// Content store holding record blobs.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Write here instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `record report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A record file, or `sha256:...` of a record blob in --store.
    record: String,
    /// Content store holding record blobs.
    #[arg(long)]
    store: Option<PathBuf>,
    #[command(flatten)]
    view: ViewArgs,
    /// The HTML file to write.
    #[arg(long, required = true)]
    out: PathBuf,
}

/// A record, its companion's lines (empty if it has none) and a name for messages.
fn load(
    record: &str,
    records: &Records,
    companion: Option<&str>,
) -> anyhow::Result<(Vec<RecordEntry>, Vec<Option<CompanionLine>>)> {
    let bytes = records.read(record)?;
    let entries = record::parse(&bytes).with_context(|| format!("reading {record}"))?;
    let companion_bytes = match companion {
        Some(c) => Some(records.read(c).context("reading the companion")?),
        None => records.companion(record)?,
    };
    let lines = match companion_bytes {
        Some(b) => companion::parse(&b, &entries)
            .with_context(|| format!("reading the companion of {record}"))?,
        None => Vec::new(),
    };
    Ok((entries, lines))
}

/// Opens and indexes the image, and computes what the record needed of it.
fn needs_of(
    record: &str,
    store: Option<&Path>,
    view: &ViewArgs,
    rt: &Handle,
) -> anyhow::Result<(Needs, String)> {
    let records = Records::open(store, Some((&view.source.ctrd, rt)))?;
    let (entries, lines) = load(record, &records, view.companion.as_deref())?;
    let src = view.image.as_deref().context("--image is required")?;
    let platform = view.source.pick.platform()?.unwrap_or_else(Platform::host);
    let (image, connection) = match &view.source.ctrd.address() {
        Some(address) => {
            let (image, connection) =
                open_containerd(rt, address, &view.source.ctrd.namespace, src, &platform)?;
            (image, Some(connection))
        }
        None => {
            let source: ImageSource = src.parse().with_context(|| format!("--image {src}"))?;
            let source = source.with_reference(view.source.pick.reference.clone());
            let image: Image = source
                .open(&platform)
                .with_context(|| format!("opening {source}"))?;
            (image, None)
        }
    };
    let (view_index, _) = crate::image::index(&image, 0, false)?;
    let needs = needs::compute(
        &entries,
        &lines,
        &image.manifest_digest().to_string(),
        image.layers(),
        view_index.layers(),
        view.largest,
    )
    .with_context(|| format!("reading {record} against {src}"))?;
    // The image's reads go through the connection: dropped before it.
    drop(image);
    drop(connection);
    Ok((needs, format!("record {record}, image {src}")))
}

/// `record show RECORD --image SRC`.
pub fn show(
    record: &str,
    store: Option<&Path>,
    view: &ViewArgs,
    rt: &Handle,
) -> anyhow::Result<()> {
    let (needs, _) = needs_of(record, store, view, rt)?;
    let mut out = std::io::stdout().lock();
    if view.json {
        serde_json::to_writer_pretty(&mut out, &needs)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "record {record}: {} entries, manifest {}",
        needs.entries, needs.manifest
    )?;
    writeln!(
        out,
        "{:<6} {:<19} {:>10} {:>8} {:>16} {:>24} {:>6}",
        "layer", "digest", "blob", "entries", "files read/all", "bytes needed/all", "%"
    )?;
    for l in &needs.layers {
        let name = l.index.to_string();
        needs_row(
            &mut out,
            &name,
            short(&l.digest),
            l.blob_bytes,
            l.entries,
            &l.read,
            &l.total,
        )?;
    }
    needs_row(
        &mut out,
        "image",
        "",
        needs.blob_bytes,
        needs.entries,
        &needs.read,
        &needs.total,
    )?;
    if needs.outside > 0 {
        writeln!(out, "outside the image: {} entries", needs.outside)?;
    }
    match needs.last_access_ns {
        Some(ns) => writeln!(
            out,
            "last first access: {:.3} s after the start",
            ns as f64 / 1e9
        )?,
        None => writeln!(
            out,
            "last first access: unknown (no companion with times; see --companion)"
        )?,
    }
    if !needs.largest.is_empty() {
        writeln!(out, "largest files read:")?;
        for f in &needs.largest {
            let layer = f.layer.map_or_else(|| "-".to_owned(), |l| l.to_string());
            writeln!(
                out,
                "  {:>10}  layer {layer:<3} {}",
                human_bytes(f.bytes),
                f.path.escape_debug()
            )?;
        }
    }
    Ok(())
}

/// One row of `record show`'s table: a layer's (or the image's) blob, entries, files and bytes
/// read against its totals.
fn needs_row(
    out: &mut impl Write,
    name: &str,
    digest: &str,
    blob_bytes: u64,
    entries: u64,
    read: &needs::Amount,
    total: &needs::Amount,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<6} {:<19} {:>10} {:>8} {:>16} {:>24} {:>6.1}",
        name,
        digest,
        human_bytes(blob_bytes),
        entries,
        format!("{}/{}", read.files, total.files),
        format!("{} / {}", human_bytes(read.bytes), human_bytes(total.bytes)),
        percent(read.bytes, total.bytes)
    )
}

/// `sha256:0123456789ab` of a digest.
fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

/// `record report`.
pub fn report(args: &ReportArgs, rt: &Handle) -> anyhow::Result<()> {
    let (needs, title) = needs_of(&args.record, args.store.as_deref(), &args.view, rt)?;
    let html = record::report::render(&needs, &title)?;
    std::fs::write(&args.out, html).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "report: {} ({} of {} file bytes needed)",
        args.out.display(),
        human_bytes(needs.read.bytes),
        human_bytes(needs.total.bytes)
    );
    Ok(())
}

/// `record merge`.
pub fn merge(args: &MergeArgs) -> anyhow::Result<()> {
    let mut runs = Vec::with_capacity(args.records.len());
    for r in &args.records {
        let (entries, companion) = load(r, &Records::open(args.store.as_deref(), None)?, None)?;
        runs.push(Run {
            name: r.clone(),
            entries,
            companion,
        });
    }
    let merged = record::merge::merge(&runs, args.min_runs as usize)?;
    let bytes = merged.to_bytes();
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            let sidecar = companion::sidecar_path(path);
            std::fs::write(&sidecar, merged.companion_bytes())
                .with_context(|| format!("writing {}", sidecar.display()))?;
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    eprintln!(
        "merged {} runs: {} files kept, {} read in fewer than {} runs dropped",
        merged.runs,
        merged.entries.len(),
        merged.dropped,
        args.min_runs
    );
    Ok(())
}

/// `record export`.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let bytes = read_record(&args.record, args.store.as_deref())?;
    let entries = record::parse(&bytes).with_context(|| format!("reading {}", args.record))?;
    let out = record::export::export(&entries, args.format)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, &out).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(&out)?,
    }
    Ok(())
}
