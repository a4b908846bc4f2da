//! `recorder record push` and `recorder record pull`, and the `--push` of `recorder run` and
//! `recorder record`: records as OCI artifacts next to their image in a registry.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use recorder::agent::Summary;
use recorder::image::{BlobDigest, BlobSource, Platform};
use recorder::registry::{
    ANNOTATION_COMMAND, ANNOTATION_COMPLETE, ANNOTATION_IMAGE, ANNOTATION_PERIOD,
    ANNOTATION_STOPPED, CredentialSource, Discovery, Pushed, RecordArtifact, Registry,
    RegistryOptions, newest, parse_reference, pull_record, push_record, records_of,
};
use recorder::store::ContentStore;

use crate::parse::PositiveDuration;
use crate::record::CommonArgs;
use crate::source::{ContainerdArgs, connect_containerd};
use recorder::recording::Connection;
use tokio::runtime::Handle;

/// How to reach and log in to the registry.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Registry credentials: a docker config.json (default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json; `auths`, `credsStore` and `credHelpers` are honoured).
    #[arg(long, value_name = "FILE", env = "RECORDER_REGISTRY_CONFIG")]
    pub registry_config: Option<PathBuf>,
    /// Plain HTTP to the registry (default: only for localhost and 127.0.0.1).
    #[arg(long)]
    pub insecure: bool,
    /// PEM file of CA certificates to trust for the registry, besides the system's.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// A containerd/docker-style certs.d directory: the `*.crt` files of DIR/HOST[:PORT]/ are
    /// trusted for that registry (repeatable; default: /etc/containerd/certs.d and
    /// /etc/docker/certs.d).
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Vec<PathBuf>,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            certs_dirs: self.certs_dir.clone(),
            credentials: match &self.registry_config {
                Some(path) => CredentialSource::File(path.clone()),
                None => CredentialSource::DockerConfig,
            },
        }
    }
}

/// `recorder record push RECORD REF`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// The record: a file, or `sha256:...` of a record blob in --store or (with --containerd)
    /// in containerd's content store.
    record: String,
    /// The image's repository, HOST[:PORT]/NAME (a tag or digest in it is ignored): the
    /// manifest the record was made from must be there.
    reference: String,
    /// Content store holding the record (and companion) blobs.
    #[arg(long, conflicts_with = "containerd")]
    store: Option<PathBuf>,
    #[command(flatten)]
    ctrd: ContainerdArgs,
    /// The companion blob to push along: a file, or a digest in the same store.
    #[arg(long, value_name = "FILE|DIGEST")]
    companion: Option<String>,
    /// An annotation of the artifact, KEY=VALUE (repeatable), e.g.
    /// dev.recorder.workload.command="python app.py".
    #[arg(long = "annotation", value_name = "KEY=VALUE", value_parser = parse_annotation)]
    annotations: Vec<(String, String)>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `recorder record pull IMAGE`.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The image, HOST[:PORT]/NAME:TAG or HOST[:PORT]/NAME@sha256:...; an index is resolved to
    /// --platform's manifest.
    image: String,
    /// Write the record here (default: stdout), byte for byte.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also write the companion blob here, when the record has one.
    #[arg(long, value_name = "FILE")]
    companion_out: Option<PathBuf>,
    /// Platform to pick from an image index, os/arch[/variant]; default: this machine's.
    #[arg(long)]
    platform: Option<String>,
    /// List every record referring to the image (newest first) instead of pulling one.
    #[arg(long)]
    all: bool,
    /// Describe the record(s) as JSON on stdout (with a pull, the record needs --out).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

fn parse_annotation(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// Where a record or companion is read from.
enum Blobs<'a> {
    /// Files only.
    Files,
    /// A local content store.
    Store(&'a Path),
    /// containerd's content store.
    Containerd(&'a Connection),
}

impl Blobs<'_> {
    /// A file, or (when it parses as one and no such file exists) a digest in the store.
    fn read(&self, what: &str, arg: &str) -> anyhow::Result<Vec<u8>> {
        match arg.parse::<BlobDigest>() {
            Ok(digest) if !Path::new(arg).exists() => self.read_digest(&digest),
            _ => std::fs::read(arg).with_context(|| format!("reading the {what} file {arg}")),
        }
    }

    fn read_digest(&self, digest: &BlobDigest) -> anyhow::Result<Vec<u8>> {
        match self {
            Blobs::Files => {
                bail!(
                    "{digest} is a digest: give --store DIR or --containerd to read it from a content store"
                )
            }
            Blobs::Store(dir) => ContentStore::open(dir)?
                .read(digest)
                .with_context(|| format!("reading {digest} from {}", dir.display())),
            Blobs::Containerd(connection) => {
                let source = connection.source();
                let mut out = Vec::new();
                source
                    .open(digest, None)
                    .map_err(anyhow::Error::from)
                    .and_then(|mut reader| Ok(reader.read_to_end(&mut out)?))
                    .with_context(|| format!("reading {digest} from {}", source.name()))?;
                Ok(out)
            }
        }
    }
}

/// Runs `recorder record push`.
pub fn push(args: PushArgs, rt: &Handle) -> anyhow::Result<()> {
    let connection = match &args.ctrd.address() {
        Some(address) => Some(connect_containerd(rt, address, &args.ctrd.namespace, "")?),
        None => None,
    };
    let blobs = match (&args.store, &connection) {
        (_, Some(connection)) => Blobs::Containerd(connection),
        (Some(dir), None) => Blobs::Store(dir),
        (None, None) => Blobs::Files,
    };
    let artifact = RecordArtifact {
        record: blobs.read("record", &args.record)?,
        companion: match &args.companion {
            Some(c) => Some(blobs.read("companion", c)?),
            None => None,
        },
        annotations: args.annotations.iter().cloned().collect(),
    };
    let pushed = rt.block_on(push_to(&args.reference, &args.registry, &artifact))?;
    println!("{}", pushed.reference);
    Ok(())
}

async fn push_to(
    reference: &str,
    registry: &RegistryArgs,
    artifact: &RecordArtifact,
) -> anyhow::Result<Pushed> {
    let repository = parse_reference(reference)?;
    let registry = Registry::connect(&repository, &registry.options()).await?;
    let pushed = push_record(&registry, &repository, artifact).await?;
    let how = match &pushed.discovery {
        Discovery::Listed => "listed by the registry".to_owned(),
        Discovery::TagUpdated { tag } => format!("listed in referrers tag {tag}"),
    };
    eprintln!(
        "record pushed: {} (refers to {}; {how})",
        pushed.reference, pushed.subject
    );
    Ok(pushed)
}

/// Runs `recorder record pull`.
pub fn pull(args: PullArgs, rt: &Handle) -> anyhow::Result<()> {
    if args.json && !args.all && args.out.is_none() {
        bail!("--json describes the pulled record on stdout: give --out FILE for the record");
    }
    let platform =
        crate::source::parse_platform(args.platform.as_deref())?.unwrap_or_else(Platform::host);
    rt.block_on(pull_async(&args, &platform))
}

async fn pull_async(args: &PullArgs, platform: &Platform) -> anyhow::Result<()> {
    let image = parse_reference(&args.image)?;
    let registry = Registry::connect(&image, &args.registry.options()).await?;
    let (subject, records) = records_of(&registry, &image, platform).await?;
    if args.all {
        if args.json {
            let list = serde_json::json!({
                "image": image.whole(),
                "subject": subject.to_string(),
                "records": records,
            });
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            for r in &records {
                let notes: Vec<String> = r
                    .annotations
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("{} {}", r.digest, notes.join(" "));
            }
        }
        return Ok(());
    }
    let Some(chosen) = newest(&records) else {
        bail!("no record refers to {}", image.whole());
    };
    let pulled = pull_record(&registry, &image, chosen).await?;
    match &args.out {
        Some(path) => write_atomically(path, &pulled.record)?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&pulled.record)?;
            stdout.flush()?;
        }
    }
    if let (Some(path), Some(companion)) = (&args.companion_out, &pulled.companion) {
        write_atomically(path, companion)?;
    }
    let created = chosen.created().unwrap_or("(no time)");
    eprintln!(
        "record {} of manifest {subject}, pushed {created} (newest of {}): {} bytes",
        chosen.digest,
        records.len(),
        pulled.record.len()
    );
    if args.json {
        let described = serde_json::json!({
            "image": image.whole(),
            "subject": subject.to_string(),
            "record": chosen,
            "bytes": pulled.record.len(),
            "out": args.out,
        });
        println!("{}", serde_json::to_string_pretty(&described)?);
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// The `--push` of `recorder run` and `recorder record`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PushOption {
    /// After the commit, push the record (and companion) to this repository, HOST[:PORT]/NAME,
    /// as an OCI artifact referring to the image's manifest (which must be there). A failed
    /// push exits 1; the record stays committed.
    #[arg(long, value_name = "REF", env = "RECORDER_PUSH")]
    pub push: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What is known of the workload, as annotations.
pub fn workload_annotations(
    common: &CommonArgs,
    command: Option<String>,
    summary: &Summary,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if let Some(command) = command {
        a.insert(ANNOTATION_COMMAND.to_owned(), command);
    }
    if let Some(PositiveDuration(period)) = common.period {
        a.insert(ANNOTATION_PERIOD.to_owned(), format!("{period:?}"));
    }
    if let Some(image) = &common.image {
        a.insert(ANNOTATION_IMAGE.to_owned(), image.clone());
    }
    a.insert(ANNOTATION_STOPPED.to_owned(), summary.stopped.to_string());
    a.insert(
        ANNOTATION_COMPLETE.to_owned(),
        summary.complete().to_string(),
    );
    a
}

/// Pushes a committed record (read back from where it was committed) as `--push` asks.
pub async fn push_committed(
    common: &CommonArgs,
    containerd: Option<&Connection>,
    summary: &Summary,
    annotations: BTreeMap<String, String>,
) -> anyhow::Result<Option<Pushed>> {
    let Some(reference) = &common.push.push else {
        return Ok(None);
    };
    let blobs = match (containerd, &common.store) {
        (Some(connection), _) => Blobs::Containerd(connection),
        (None, Some(dir)) => Blobs::Store(dir),
        (None, None) => Blobs::Files,
    };
    let committed = &summary.committed;
    let artifact = RecordArtifact {
        record: blobs.read_digest(&committed.record)?,
        companion: match &committed.companion {
            Some(d) => Some(blobs.read_digest(d)?),
            None => None,
        },
        annotations,
    };
    push_to(reference, &common.push.registry, &artifact)
        .await
        .map(Some)
}

/// The message of a failed `--push`: the record is committed, and where.
pub fn push_failed(common: &CommonArgs, summary: &Summary) -> String {
    let mut kept = format!("the record is committed as {}", summary.committed.record);
    if let Some(dir) = &common.store {
        kept.push_str(&format!(" in {}", dir.display()));
    } else if common.ctrd.containerd.is_some() {
        kept.push_str(" in containerd's content store");
    }
    if let Some(out) = &summary.committed.record_out {
        kept.push_str(&format!(" and written to {}", out.display()));
    }
    format!(
        "pushing the record to {} failed ({kept})",
        common.push.push.as_deref().unwrap_or("?")
    )
}
