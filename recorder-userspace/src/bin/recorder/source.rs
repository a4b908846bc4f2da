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
    /// Read the image from containerd: SOURCE is then an image reference there. The socket
    /// defaults to /run/containerd/containerd.sock; give another as --containerd=ADDRESS.
    #[arg(
        long,
        value_name = "ADDRESS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = DEFAULT_ADDRESS
    )]
    pub containerd: Option<PathBuf>,
    /// containerd namespace of the image (with --containerd).
    #[arg(long, env = "CONTAINERD_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Platform to pick from an image index, os/arch[/variant]; default: this machine's.
    #[arg(long)]
    pub platform: Option<String>,
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
        match (&self.store, &self.manifest, &self.containerd, source) {
            (_, _, Some(address), Some(reference)) => {
                socket_hint(reference)?;
                let reference = reference
                    .to_str()
                    .with_context(|| format!("image reference {reference:?} is not UTF-8"))?;
                self.open_containerd(address, reference, &platform)
            }
            (_, _, Some(_), None) => bail!("--containerd needs an image reference as SOURCE"),
            (Some(store), Some(manifest), None, None) => {
                let digest: BlobDigest = manifest.parse()?;
                Ok(plain(Image::open_store(store, &digest, &platform)?))
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

    fn open_containerd(
        &self,
        address: &Path,
        reference: &str,
        platform: &Platform,
    ) -> anyhow::Result<OpenedImage> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the containerd client runtime")?;
        let client = runtime.block_on(Containerd::connect(address, &self.namespace))?;
        let target = runtime.block_on(client.resolve_image(reference))?;
        let source = ContainerdSource::new(client.clone(), runtime.handle().clone());
        let image = source
            .open_image(&target, platform)
            .with_context(|| format!("opening {reference} from containerd"))?;
        Ok(OpenedImage {
            image,
            containerd: Some(client),
            reference: Some(reference.to_owned()),
            _runtime: Some(runtime),
        })
    }
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
