//! `recorder record show`: a per-layer summary of a record.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use recorder::image::BlobDigest;
use recorder::record;
use recorder::store::ContentStore;

/// `recorder record show ...` (the recording itself is `recorder record --image ...`).
#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Entries per layer of a record given as a file or as a digest in --store.
    Show {
        /// A record file, or `sha256:...` of a record blob in --store.
        record: String,
        /// Content store holding record blobs.
        #[arg(long)]
        store: Option<PathBuf>,
    },
}

/// Runs a `recorder record` subcommand.
pub fn run(sub: Sub) -> anyhow::Result<()> {
    match sub {
        Sub::Show { record, store } => show(&record, store),
    }
}

fn show(record: &str, store: Option<PathBuf>) -> anyhow::Result<()> {
    let bytes = match (record.parse::<BlobDigest>(), store) {
        (Ok(d), Some(dir)) => ContentStore::open(&dir)?
            .read_capped(&d, recorder::files::MAX_RECORD_BYTES)
            .with_context(|| format!("reading record {d} from {}", dir.display()))?,
        (Ok(d), None) if !std::path::Path::new(record).exists() => {
            anyhow::bail!("{d} is a digest: give --store DIR to read it from a content store")
        }
        _ => recorder::files::read_capped(record.as_ref(), recorder::files::MAX_RECORD_BYTES)
            .with_context(|| format!("reading {record}"))?,
    };
    let entries = record::parse(&bytes)?;
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
