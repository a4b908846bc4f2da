//! Where an image comes from, as command-line options shared by the commands that read one:
//! an OCI layout directory, a local content store with a manifest digest, or an image
//! reference in containerd.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use recorder::containerd::{Containerd, ContainerdSource, DEFAULT_ADDRESS, DEFAULT_NAMESPACE};
use recorder::image::{BlobDigest, Image, Platform};

/// Image source options; SOURCE itself is a positional argument of each command.
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Manifest name (`org.opencontainers.image.ref.name`) in the OCI layout.
    #[arg(long = "ref")]
    pub reference: Option<String>,
    /// A containerd-style local content store directory (with --manifest) instead of a layout.
    #[arg(long, requires = "manifest", conflicts_with = "containerd")]
    pub store: Option<PathBuf>,
    /// Digest of the manifest or index in --store.
    #[arg(long, requires = "store")]
    pub manifest: Option<String>,
    #[command(flatten)]
    pub ctrd: ContainerdArgs,
    /// Platform to pick from an image index, os/arch[/variant]; default: this machine's.
    #[arg(long)]
    pub platform: Option<String>,
}

/// Where containerd is, for the commands that can use it.
#[derive(clap::Args, Debug, Clone)]
pub struct ContainerdArgs {
    /// Use containerd: the image is then an image reference there. The socket defaults to
    /// /run/containerd/containerd.sock; give another as --containerd=ADDRESS.
    #[arg(
        long,
        value_name = "ADDRESS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = DEFAULT_ADDRESS
    )]
    pub containerd: Option<PathBuf>,
    /// containerd namespace (with --containerd).
    #[arg(long, env = "CONTAINERD_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

/// A containerd connection, with the runtime that drives its I/O.
pub struct ContainerdSession {
    /// The connection.
    pub client: Containerd,
    /// The image reference opened through it.
    pub reference: String,
    runtime: tokio::runtime::Runtime,
}

impl ContainerdSession {
    /// The runtime the connection and the image's reads are driven on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.runtime.handle().clone()
    }
}

/// An opened image, with what keeps a containerd-backed one readable.
pub struct OpenedImage {
    /// The image.
    pub image: Image,
    /// The containerd connection, when the image came from containerd.
    pub containerd: Option<Containerd>,
    /// The image reference in containerd, when it came from one.
    pub reference: Option<String>,
    // Drives the gRPC streams behind a containerd-backed image; dropped last.
    _runtime: Option<tokio::runtime::Runtime>,
}

impl SourceArgs {
    /// The platform to pick.
    pub fn platform(&self) -> anyhow::Result<Platform> {
        match &self.platform {
            Some(p) => Platform::parse(p).with_context(|| format!("--platform {p}")),
            None => Ok(Platform::host()),
        }
    }

    /// Opens the image `source` (a layout directory or a containerd reference; none with
    /// --store). Call it from plain (non-async) code: a containerd image gets its own runtime.
    pub fn open(&self, source: Option<&Path>) -> anyhow::Result<OpenedImage> {
        let platform = self.platform()?;
        let plain = |image| OpenedImage {
            image,
            containerd: None,
            reference: None,
            _runtime: None,
        };
        match (&self.store, &self.manifest, &self.ctrd.containerd, source) {
            (_, _, Some(address), Some(reference)) => {
                socket_hint(reference)?;
                let reference = reference
                    .to_str()
                    .with_context(|| format!("image reference {reference:?} is not UTF-8"))?;
                let (image, session) =
                    open_containerd(address, &self.ctrd.namespace, reference, &platform)?;
                Ok(OpenedImage {
                    image,
                    containerd: Some(session.client),
                    reference: Some(session.reference),
                    _runtime: Some(session.runtime),
                })
            }
            (_, _, Some(_), None) => bail!("--containerd needs an image reference as SOURCE"),
            (Some(store), Some(manifest), None, None) => {
                let digest: BlobDigest = manifest.parse()?;
                Ok(plain(Image::open_store(store, &digest, &platform)?))
            }
            (None, None, None, Some(dir))
                if !dir.exists()
                    && let Some((store, hex)) =
                        dir.to_str().and_then(|s| s.rsplit_once("@sha256:")) =>
            {
                // `STORE_DIR@sha256:HEX`, as `--image` takes it for `record` and `run`.
                let digest: BlobDigest = format!("sha256:{hex}").parse()?;
                Ok(plain(Image::open_store(
                    Path::new(store),
                    &digest,
                    &platform,
                )?))
            }
            (None, None, None, Some(dir)) => {
                socket_hint(dir)?;
                Ok(plain(Image::open_oci_layout(
                    dir,
                    self.reference.as_deref(),
                    &platform,
                )?))
            }
            (Some(_), _, None, Some(dir)) => bail!(
                "give either an OCI layout directory ({}) or --store/--manifest, not both",
                dir.display()
            ),
            _ => bail!(
                "no image source: give an OCI layout directory, --store DIR --manifest DIGEST, \
                 or --containerd and an image reference"
            ),
        }
    }
}

/// Opens image `reference` from containerd at `address`, namespace `namespace`. Call it from
/// plain (non-async) code: the connection gets a runtime of its own, returned with it.
pub fn open_containerd(
    address: &Path,
    namespace: &str,
    reference: &str,
    platform: &Platform,
) -> anyhow::Result<(Image, ContainerdSession)> {
    let session = connect_containerd(address, namespace, reference)?;
    let target = session
        .runtime
        .block_on(session.client.resolve_image(reference))?;
    let source = ContainerdSource::new(session.client.clone(), session.handle());
    let image = source
        .open_image(&target, platform)
        .with_context(|| format!("opening {reference} from containerd"))?;
    Ok((image, session))
}

/// `--containerd /path ref` parses as a bare --containerd, making the socket SOURCE: say so.
fn socket_hint(source: &Path) -> anyhow::Result<()> {
    if std::fs::metadata(source).is_ok_and(|m| m.file_type().is_socket()) {
        bail!(
            "{} is a socket, not an OCI layout; to read from containerd there, write \
             --containerd={} REFERENCE",
            source.display(),
            source.display()
        );
    }
    Ok(())
}

/// Connects to containerd at `address`, namespace `namespace`, for image `reference` that
/// may not exist yet (it is opened later, e.g. once a pod's workload is created). Call it from
/// plain (non-async) code, as [`open_containerd`].
pub fn connect_containerd(
    address: &Path,
    namespace: &str,
    reference: &str,
) -> anyhow::Result<ContainerdSession> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the containerd client runtime")?;
    let client = runtime.block_on(Containerd::connect(address, namespace))?;
    Ok(ContainerdSession {
        client,
        reference: reference.to_owned(),
        runtime,
    })
}
