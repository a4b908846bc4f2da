//! `recorder record ls` and `recorder record rm`, and where the other `record` commands read a
//! record given as a digest: the local content store (`--store DIR`) or containerd's
//! (`--containerd`), both through the one content interface (`recorder::content::Store`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use recorder::containerd::ContainerdContent;
use recorder::content::{self, BlobDigest};
use recorder::files::MAX_RECORD_BYTES;
use recorder::record::companion;
use recorder::record::needs::human_bytes;
use recorder::record::stored::{self, Listed};
use recorder::store::ContentStore;

use tokio::runtime::Handle;

use crate::source::{ContainerdArgs, connect_containerd};

/// Which content store: `--store DIR` or `--containerd`.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// The local content store (as `record --store` commits to).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "containerd",
        conflicts_with = "containerd"
    )]
    store: Option<PathBuf>,
    #[command(flatten)]
    ctrd: ContainerdArgs,
}

/// `recorder record ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only the records of this manifest (`sha256:...`).
    #[arg(long, value_name = "DIGEST")]
    manifest: Option<BlobDigest>,
    /// Print only the records' digests, one a line.
    #[arg(long, short = 'q', conflicts_with = "json")]
    quiet: bool,
    /// Print the records as a JSON array.
    #[arg(long)]
    json: bool,
}

/// `recorder record rm`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The records to remove (`sha256:...`); each one's companion goes with it. Blobs that are
    /// not records (image layers, manifests) are refused.
    #[arg(required = true, value_name = "DIGEST")]
    records: Vec<BlobDigest>,
}

/// Where records given as digests are read from: a content store, or none (files only).
pub struct Records {
    store: Option<Box<dyn content::Store>>,
}

impl Records {
    /// `--store DIR` if given, else containerd's store with `--containerd`, else files only.
    /// Call it from plain (non-async) code: `rt` drives a containerd connection.
    pub fn open(
        store: Option<&Path>,
        ctrd: Option<(&ContainerdArgs, &Handle)>,
    ) -> anyhow::Result<Records> {
        if let Some(dir) = store {
            let store = ContentStore::open(dir)
                .with_context(|| format!("opening the content store {}", dir.display()))?;
            return Ok(Records {
                store: Some(Box::new(store)),
            });
        }
        let Some((address, namespace, rt)) =
            ctrd.and_then(|(c, rt)| Some((c.containerd.as_deref()?, &c.namespace, rt)))
        else {
            return Ok(Records { store: None });
        };
        let connection = connect_containerd(rt, address, namespace, "")?;
        let store = ContainerdContent::new(connection.client.clone(), connection.handle());
        Ok(Records {
            store: Some(Box::new(store)),
        })
    }

    fn store(&self) -> anyhow::Result<&dyn content::Store> {
        self.store.as_deref().context("no content store")
    }

    /// The digest `arg` names in the store, if it is one (a digest, and a store is given or
    /// no file has that name).
    fn digest(&self, arg: &str) -> Option<BlobDigest> {
        let digest = arg.parse::<BlobDigest>().ok()?;
        (self.store.is_some() || !Path::new(arg).exists()).then_some(digest)
    }

    /// The bytes of `arg`: a file, or a digest in the store (up to the record size cap).
    pub fn read(&self, arg: &str) -> anyhow::Result<Vec<u8>> {
        let Some(digest) = self.digest(arg) else {
            return recorder::files::read_capped(arg.as_ref(), MAX_RECORD_BYTES)
                .with_context(|| format!("reading {arg}"));
        };
        let Some(store) = &self.store else {
            bail!(
                "{digest} is a digest: give --store DIR or --containerd to read it from a \
                 content store"
            );
        };
        store
            .read_blob(&digest, MAX_RECORD_BYTES)
            .with_context(|| format!("reading {digest} from {}", store.name()))
    }

    /// The companion of the record `arg`: `RECORD.companion` next to a record file, or the
    /// blob a stored record's labels name; none if there is none.
    pub fn companion(&self, record: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(digest) = self.digest(record) else {
            let sidecar = companion::sidecar_path(Path::new(record));
            return match std::fs::read(&sidecar) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("reading {}", sidecar.display())),
            };
        };
        let store = self.store()?;
        let Some(companion) = stored::companion_of(store, &digest)
            .with_context(|| format!("reading the labels of {digest} in {}", store.name()))?
        else {
            return Ok(None);
        };
        match store.read_blob(&companion, MAX_RECORD_BYTES) {
            Ok(bytes) => Ok(Some(bytes)),
            // Removed by hand: the record stands without its times.
            Err(content::ContentError::NotFound { .. }) => {
                tracing::warn!(record = %digest, %companion, "the record's companion is gone");
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("reading the companion of {digest}")),
        }
    }
}

impl StoreArgs {
    fn open(&self, rt: &Handle) -> anyhow::Result<Records> {
        Records::open(self.store.as_deref(), Some((&self.ctrd, rt)))
    }
}

/// Runs `recorder record ls`.
pub fn ls(args: &LsArgs, rt: &Handle) -> anyhow::Result<()> {
    let records = args.store.open(rt)?;
    let store = records.store()?;
    let mut listed =
        stored::list(store).with_context(|| format!("listing the records in {}", store.name()))?;
    if let Some(manifest) = &args.manifest {
        let manifest = manifest.to_string();
        listed.retain(|l| l.manifest.as_deref() == Some(manifest.as_str()));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &listed)?;
        writeln!(out)?;
    } else if args.quiet {
        for l in &listed {
            writeln!(out, "{}", l.digest)?;
        }
    } else {
        write_table(&mut out, &listed)?;
    }
    Ok(())
}

fn write_table(out: &mut impl Write, listed: &[Listed]) -> std::io::Result<()> {
    let short = |d: &str| d.get(..19).unwrap_or(d).to_owned();
    writeln!(
        out,
        "{:<71}  {:>10}  {:<20}  {:<19}  {:<19}  IMAGE",
        "DIGEST", "SIZE", "CREATED", "MANIFEST", "COMPANION"
    )?;
    for l in listed {
        writeln!(
            out,
            "{:<71}  {:>10}  {:<20}  {:<19}  {:<19}  {}",
            l.digest,
            human_bytes(l.size),
            l.created.as_deref().unwrap_or("-"),
            l.manifest.as_deref().map_or_else(|| "-".to_owned(), short),
            l.companion
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| short(&c.to_string())),
            l.image.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

/// Runs `recorder record rm`: removes every record it can, then fails if any could not be.
pub fn rm(args: &RmArgs, rt: &Handle) -> anyhow::Result<()> {
    let records = args.store.open(rt)?;
    let store = records.store()?;
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for digest in &args.records {
        match stored::remove(store, digest) {
            Ok(companion) => {
                writeln!(out, "{digest}")?;
                if let Some(c) = companion {
                    writeln!(out, "{c}")?;
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {:#}", anyhow::Error::from(e));
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} records not removed from {}",
            args.records.len(),
            store.name()
        );
    }
    Ok(())
}
