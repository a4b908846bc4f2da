//! `recorder record show|merge|export|report|ls|rm`: what a record says, and which records a
//! content store holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use recorder::record;
use tokio::runtime::Handle;

use crate::record_store::{self, Records};
use crate::record_view;

/// `recorder record show ...` (the recording itself is `recorder record --image ...`).
#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Entries per layer of a record given as a file or as a digest in --store or containerd's
    /// content store (--containerd); with --image,
    /// what the workload needed of the image: per layer the files read and their bytes
    /// against the layer's totals, the whole image, the time to the last first access and
    /// the largest files read.
    Show {
        /// A record file, or `sha256:...` of a record blob in --store or (with --containerd and
        /// no --store) in containerd's content store.
        record: String,
        /// Content store holding record blobs.
        #[arg(long)]
        store: Option<PathBuf>,
        #[command(flatten)]
        view: Box<record_view::ViewArgs>,
    },
    /// List the records in a content store (--store DIR, or containerd's with --containerd),
    /// newest first, with their manifest, image and companion.
    Ls(Box<record_store::LsArgs>),
    /// Remove records (and their companions) from a content store.
    Rm(Box<record_store::RmArgs>),
    /// Merge the records of several runs of one image into one prefetch order: by mean rank
    /// over the runs that read each file.
    Merge(Box<record_view::MergeArgs>),
    /// Write a record in the input format of a lazy-pulling converter.
    Export(Box<record_view::ExportArgs>),
    /// Write one self-contained HTML page of what the workload needed of the image.
    Report(Box<record_view::ReportArgs>),
    /// Push a record to a registry, as an OCI artifact referring to its image's manifest.
    Push(Box<crate::registry::PushArgs>),
    /// Pull the newest record referring to an image from a registry (or list them, --all).
    Pull(Box<crate::registry::PullArgs>),
}

/// Runs a `recorder record` subcommand.
pub fn run(sub: Sub, rt: &Handle) -> anyhow::Result<()> {
    match sub {
        Sub::Show {
            record,
            store,
            view,
        } if view.image.is_some() => record_view::show(&record, store.as_deref(), &view, rt),
        Sub::Show {
            record,
            store,
            view,
        } => show(
            &record,
            &Records::open(store.as_deref(), Some((&view.source.ctrd, rt)))?,
        ),
        Sub::Ls(args) => record_store::ls(&args, rt),
        Sub::Rm(args) => record_store::rm(&args, rt),
        Sub::Merge(args) => record_view::merge(&args),
        Sub::Export(args) => record_view::export(&args),
        Sub::Report(args) => record_view::report(&args, rt),
        Sub::Push(args) => crate::registry::push(*args, rt),
        Sub::Pull(args) => crate::registry::pull(*args, rt),
    }
}

/// The bytes of `record`: a file, or a digest in the content store `store` (read up to the
/// record size cap).
pub fn read_record(record: &str, store: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    Records::open(store, None)?.read(record)
}

fn show(record: &str, records: &Records) -> anyhow::Result<()> {
    let bytes = records.read(record)?;
    let entries = record::parse(&bytes).with_context(|| format!("reading {record}"))?;
    let mut manifests: BTreeMap<&str, usize> = BTreeMap::new();
    let mut layers: BTreeMap<Option<usize>, (usize, &[u8])> = BTreeMap::new();
    for e in &entries {
        *manifests.entry(e.manifest_digest.as_str()).or_default() += 1;
        layers.entry(e.layer_index).or_insert((0, &e.path)).0 += 1;
    }
    println!("entries {}", entries.len());
    for (m, n) in &manifests {
        let m = if m.is_empty() {
            "(none)".to_owned()
        } else {
            recorder::image::path::display(m.as_bytes())
        };
        println!("manifest {m} entries {n}");
    }
    for (layer, (n, first)) in &layers {
        let name = layer.map_or_else(|| "none".to_owned(), |l| l.to_string());
        println!(
            "layer {name} entries {n} first /{}",
            recorder::image::path::display(first)
        );
    }
    Ok(())
}
