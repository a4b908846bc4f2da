//! Where an image comes from, as command-line options shared by the commands that read one:
//! an OCI layout directory, a local content store with a manifest digest, or an image
//! reference in containerd.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use recorder::containerd::{Containerd, DEFAULT_ADDRESS, DEFAULT_NAMESPACE};
use recorder::image::{BlobDigest, Image, Platform};
use recorder::recording::Connection;
use tokio::runtime::Handle;

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

/// Which manifest of the image `record`, `run` and `record show --image` read: its name in a
/// layout, and the platform.
#[derive(clap::Args, Debug, Clone)]
pub struct PickArgs {
    /// Manifest name (`org.opencontainers.image.ref.name`) in a layout with several.
    #[arg(long = "ref", conflicts_with = "containerd")]
    pub reference: Option<String>,
    /// Platform to pick from an image index, os/arch[/variant]; default: this machine's.
    #[arg(long)]
    pub platform: Option<String>,
}

impl PickArgs {
    /// `--platform`, parsed when given.
    pub fn platform(&self) -> anyhow::Result<Option<Platform>> {
        parse_platform(self.platform.as_deref())
    }
}

/// Where containerd is, for the commands that can use it, as `ctr` names it.
#[derive(clap::Args, Debug, Clone)]
pub struct ContainerdArgs {
    /// Use containerd: the image is then an image reference there. The socket is -a ADDRESS,
    /// else $CONTAINERD_ADDRESS, else /run/containerd/containerd.sock (--containerd=ADDRESS
    /// also names it).
    #[arg(
        long,
        value_name = "ADDRESS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = DEFAULT_ADDRESS
    )]
    pub containerd: Option<PathBuf>,
    /// containerd's socket, as ctr's --address (`unix://` accepted); with --containerd.
    #[arg(short = 'a', long, value_name = "ADDRESS", requires = "containerd")]
    pub address: Option<String>,
    /// containerd namespace (with --containerd), as ctr's --namespace.
    #[arg(short = 'n', long, env = "CONTAINERD_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

/// The environment variable ctr reads the socket from.
pub const ADDRESS_ENV: &str = "CONTAINERD_ADDRESS";

impl ContainerdArgs {
    /// The socket to use, when --containerd was given: `--containerd=ADDRESS`, `-a`,
    /// `$CONTAINERD_ADDRESS`, or the default; a `unix://` prefix is dropped.
    pub fn address(&self) -> Option<PathBuf> {
        let given = self.containerd.as_ref()?;
        // A bare --containerd reads as the default address (clap refuses an empty one), so
        // -a and the environment take over from exactly that value.
        let address = if given.as_os_str() != DEFAULT_ADDRESS {
            given.as_os_str().to_owned()
        } else if let Some(a) = &self.address {
            a.into()
        } else if let Some(a) = std::env::var_os(ADDRESS_ENV).filter(|a| !a.is_empty()) {
            a
        } else {
            DEFAULT_ADDRESS.into()
        };
        let address = PathBuf::from(address);
        Some(
            match address.to_str().and_then(|a| a.strip_prefix("unix://")) {
                Some(path) => PathBuf::from(path),
                None => address,
            },
        )
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
}

impl SourceArgs {
    /// The platform to pick.
    pub fn platform(&self) -> anyhow::Result<Platform> {
        Ok(parse_platform(self.platform.as_deref())?.unwrap_or_else(Platform::host))
    }

    /// Opens the image `source` (a layout directory or a containerd reference; none with
    /// --store). Call it from plain (non-async) code: `rt` drives a containerd image's reads.
    pub fn open(&self, source: Option<&Path>, rt: &Handle) -> anyhow::Result<OpenedImage> {
        let platform = self.platform()?;
        let plain = |image| OpenedImage {
            image,
            containerd: None,
            reference: None,
        };
        match (&self.store, &self.manifest, &self.ctrd.address(), source) {
            (_, _, Some(address), Some(reference)) => {
                socket_hint(reference)?;
                let reference = reference
                    .to_str()
                    .with_context(|| format!("image reference {reference:?} is not UTF-8"))?;
                let (image, connection) =
                    open_containerd(rt, address, &self.ctrd.namespace, reference, &platform)?;
                Ok(OpenedImage {
                    image,
                    containerd: Some(connection.client),
                    reference: Some(connection.reference),
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
                check_exists("image", &dir.to_string_lossy(), dir)?;
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
/// plain (non-async) code: `rt` drives the connection.
pub fn open_containerd(
    rt: &Handle,
    address: &Path,
    namespace: &str,
    reference: &str,
    platform: &Platform,
) -> anyhow::Result<(Image, Connection)> {
    let connection = connect_containerd(rt, address, namespace, reference)?;
    let image = rt.block_on(connection.open(platform))?;
    Ok((image, connection))
}

/// `--platform`, parsed when given.
pub fn parse_platform(given: Option<&str>) -> anyhow::Result<Option<Platform>> {
    given
        .map(|p| Platform::parse(p).with_context(|| format!("--platform {p}")))
        .transpose()
}

/// Fails, naming the path, when the layout or store directory `dir` of `given` does not exist;
/// when `given` looks like an image reference (`name:tag`, `host/name`), says to add
/// --containerd.
pub fn check_exists(flag: &str, given: &str, dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let looks_like_reference = !given.starts_with('/')
        && !given.starts_with('.')
        && (given.contains(':') || given.contains('/'));
    if looks_like_reference {
        bail!(
            "{flag} {given}: no such OCI layout directory ({} does not exist); to use the image \
             {given} in containerd, add --containerd",
            dir.display()
        );
    }
    bail!(
        "{flag} {given}: no such OCI layout directory ({} does not exist)",
        dir.display()
    )
}

/// Fails at once, saying what is needed, when this process cannot trace (CAP_BPF,
/// CAP_PERFMON, CAP_SYS_ADMIN) or, for `run` (`mounts`), is not root: rather than a
/// `Permission denied` from deep inside, or a `chown` after the image was unpacked.
pub fn require_privileges(command: &str, mounts: bool) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    if mounts {
        bail!(
            "{command} must run as root: it unpacks the image with its owners, mounts overlayfs \
             and starts runc (try sudo)"
        );
    }
    // CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39 in /proc/self/status's CapEff mask.
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let needed = (1u64 << 21) | (1 << 38) | (1 << 39);
    if caps & needed != needed {
        bail!(
            "{command} needs root, or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN, to load its eBPF \
             programs and read tracefs (try sudo)"
        );
    }
    Ok(())
}

/// `--containerd /path ref` parses as a bare --containerd, making the socket SOURCE: say so.
fn socket_hint(source: &Path) -> anyhow::Result<()> {
    if std::fs::metadata(source).is_ok_and(|m| m.file_type().is_socket()) {
        bail!(
            "{} is a socket, not an OCI layout; to read from containerd there, write \
             --containerd -a {} REFERENCE (or --containerd={} REFERENCE)",
            source.display(),
            source.display(),
            source.display()
        );
    }
    Ok(())
}

/// Connects to containerd at `address`, namespace `namespace`, for image `reference` that
/// may not exist yet. Call it from plain (non-async) code, as [`open_containerd`].
pub fn connect_containerd(
    rt: &Handle,
    address: &Path,
    namespace: &str,
    reference: &str,
) -> anyhow::Result<Connection> {
    Ok(rt.block_on(Connection::connect(address, namespace, reference))?)
}

/// A socket given after `--containerd` with a space (`--containerd /run/x.sock`): clap would
/// take it for a positional argument, or a subcommand, and say something different for each
/// command; this names the mistake once, the same everywhere. Looks at the arguments before
/// `--` for `--containerd` followed by what can only be an address: `unix://...`, a name
/// ending in `.sock`, or an existing socket file (a layout directory or a record file is
/// neither).
pub fn containerd_address_with_a_space(args: &[std::ffi::OsString]) -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    let args: Vec<&std::ffi::OsStr> = args
        .iter()
        .map(|a| a.as_os_str())
        .take_while(|a| *a != "--")
        .collect();
    args.windows(2).find_map(|pair| {
        let next = pair[1].to_str()?;
        let is_address = next.starts_with("unix://")
            || (!next.starts_with('-') && next.ends_with(".sock"))
            || std::fs::metadata(next).is_ok_and(|m| m.file_type().is_socket());
        (pair[0] == "--containerd" && is_address).then(|| {
            format!(
                "--containerd is a switch: give the socket as `--containerd -a {next}` (as ctr \
                 takes it) or `--containerd={next}`"
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_after_a_space_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("c");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let socket = socket.to_str().unwrap();
        let layout = dir.path().to_str().unwrap();
        for (args, found) in [
            (
                vec!["image", "inspect", "--containerd", "/run/x.sock", "a:1"],
                true,
            ),
            (
                vec!["run", "--containerd", "unix:///run/c", "--image", "a:1"],
                true,
            ),
            (vec!["record", "ls", "--containerd", socket], true),
            (
                vec!["image", "inspect", "--containerd", "-a", "/run/x.sock"],
                false,
            ),
            (
                vec!["image", "inspect", "--containerd=/run/x.sock", "a:1"],
                false,
            ),
            (
                vec!["image", "inspect", "--containerd", "docker.io/a:1"],
                false,
            ),
            (vec!["record", "push", "--containerd", layout, "h/r"], false),
            (
                vec!["run", "--containerd", "--image", "a", "--", "x.sock"],
                false,
            ),
        ] {
            let argv: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            let said = containerd_address_with_a_space(&argv);
            assert_eq!(said.is_some(), found, "{args:?}: {said:?}");
        }
        let said = containerd_address_with_a_space(&["--containerd".into(), "/run/x.sock".into()]);
        assert_eq!(
            said.as_deref(),
            Some(
                "--containerd is a switch: give the socket as `--containerd -a /run/x.sock` \
                 (as ctr takes it) or `--containerd=/run/x.sock`"
            )
        );
    }
}
