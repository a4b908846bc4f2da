//! `cargo xtask image`: the recorder's container image, the one the Kubernetes Job runs
//! (docs/kubernetes.md).
//!
//! One layer holding what the recorder needs at run time and nothing else:
//! - `/usr/local/bin/recorder`, the release binary (dynamically linked to glibc);
//! - the shared libraries `ldd` lists for it and the dynamic loader, with the symlinks met on
//!   the way (usrmerge's `/lib -> usr/lib`) so paths resolve as on the build machine;
//! - `/etc/ssl/certs/ca-certificates.crt`, the roots the registry push verifies TLS against.
//!
//! No shell, no package manager: the startup probe execs the same binary (`recorder status`).
//! The layer is reproducible (sorted entries, fixed mtimes and owners, fixed gzip settings), so
//! the digest only changes when the binary or the build machine's libraries do.
//!
//! Written as an OCI image layout, and as one tar of that layout with a `manifest.json` added,
//! which `ctr images import` reads as an OCI archive and `docker load` as a docker archive.
//! `deploy/container/Dockerfile` runs this same command with `--rootfs` in its build stage and
//! copies that tree into a `scratch` image, so both give the same files.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cmd::run;
use crate::demo_image::host;
use crate::demo_image::layer::Layer;
use crate::demo_image::layout::{self, HistoryLayer, RunConfig};

/// Where the binary goes in the image; the Job's `command: ["recorder"]` finds it on `PATH`.
pub const BINARY_PATH: &str = "/usr/local/bin/recorder";
/// TLS roots for the registry push (rustls reads the system's bundle).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(clap::Args)]
pub struct Args {
    /// The image's reference (name and tag).
    #[arg(long, default_value = concat!("localhost/recorder:", env!("CARGO_PKG_VERSION")))]
    pub reference: String,
    /// Package this binary instead of building the release one (the tests package their
    /// debug build this way).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Where to write `oci/` (the layout) and `recorder.tar` (the archive); default
    /// `target/image`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write the image's file tree into DIR (which must not exist): what the Dockerfile
    /// copies into its `scratch` stage.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
}

pub fn run_image(args: Args) -> anyhow::Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the xtask crate has no parent directory")?
        .to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let binary = match args.binary {
        Some(binary) => binary,
        None => {
            eprintln!("image: building the release binary");
            run(crate::cargo().current_dir(&workspace).args([
                "build",
                "--release",
                "--locked",
                "-p",
                "recorder-userspace",
                "--bin",
                "recorder",
            ]))?;
            target.join("release/recorder")
        }
    };
    let out = args.out.unwrap_or_else(|| target.join("image"));
    eprintln!("image: packaging {}", binary.display());
    let layer = layer(&binary)?;
    if let Some(rootfs) = &args.rootfs {
        layer
            .unpack(rootfs)
            .with_context(|| format!("writing the image's files into {}", rootfs.display()))?;
    }
    let built = write(&out, &args.reference, &layer)?;
    println!("reference {}", args.reference);
    println!("digest {}", built.digest);
    println!("oci-layout {}", built.layout.display());
    println!("archive {}", built.archive.display());
    Ok(())
}

/// The image's one layer.
fn layer(binary: &Path) -> anyhow::Result<Layer> {
    let data = fs::read(binary).with_context(|| {
        format!(
            "reading the recorder binary {} (build it, or leave out --binary)",
            binary.display()
        )
    })?;
    let mut layer = Layer::default();
    layer.file(BINARY_PATH, 0o755, data)?;
    for library in host::libraries(binary)? {
        host::add_path(&mut layer, &library)?;
    }
    if !Path::new(CA_BUNDLE).is_file() {
        bail!("{CA_BUNDLE} is missing: install Debian's ca-certificates");
    }
    host::add_path(&mut layer, Path::new(CA_BUNDLE))?;
    Ok(layer)
}

struct Built {
    digest: String,
    layout: PathBuf,
    archive: PathBuf,
}

/// Writes `out/oci` and `out/recorder.tar`, replacing earlier ones.
fn write(out: &Path, reference: &str, layer: &Layer) -> anyhow::Result<Built> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let blob = layer.write().context("writing the image's layer")?;
    let run_config = RunConfig {
        entrypoint: vec![BINARY_PATH.into()],
        cmd: Vec::new(),
        env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
        working_dir: "/".into(),
    };
    let history = [HistoryLayer {
        blob,
        created_by: "cargo xtask image: the recorder, its libraries and TLS roots".into(),
    }];
    let layout_dir = out.join("oci");
    let staging = out.join("oci.partial");
    remove_if_present(&staging)?;
    let digest = layout::write(&staging, reference, &run_config, &history)?;
    remove_if_present(&layout_dir)?;
    fs::rename(&staging, &layout_dir)
        .with_context(|| format!("moving {} into place", staging.display()))?;
    let archive = out.join("recorder.tar");
    write_archive(&layout_dir, &digest, reference, &archive)?;
    Ok(Built {
        digest,
        layout: layout_dir,
        archive,
    })
}

/// Tars the layout and adds docker's `manifest.json` naming the same blobs. Entries are
/// sorted with fixed metadata, so the archive is as reproducible as the layout.
fn write_archive(
    layout_dir: &Path,
    digest: &str,
    reference: &str,
    archive: &Path,
) -> anyhow::Result<()> {
    let blob_path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let manifest: Value = serde_json::from_slice(
        &fs::read(layout_dir.join(blob_path(digest))).context("reading back the image manifest")?,
    )
    .context("parsing the image manifest")?;
    let config = manifest["config"]["digest"]
        .as_str()
        .context("the manifest has no config digest")?;
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .context("the manifest has no layers")?
        .iter()
        .filter_map(|l| l["digest"].as_str().map(blob_path))
        .collect();
    let docker_manifest = serde_json::to_vec(&json!([{
        "Config": blob_path(config),
        "RepoTags": [reference],
        "Layers": layers,
    }]))
    .context("serialising manifest.json")?;

    let mut files: Vec<(String, Vec<u8>)> = vec![("manifest.json".into(), docker_manifest)];
    for name in ["oci-layout", "index.json"] {
        let bytes =
            fs::read(layout_dir.join(name)).with_context(|| format!("reading back {name}"))?;
        files.push((name.into(), bytes));
    }
    let blobs = layout_dir.join("blobs/sha256");
    let mut names: Vec<String> = fs::read_dir(&blobs)
        .with_context(|| format!("listing {}", blobs.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", blobs.display()))?;
    names.sort();
    for name in names {
        let bytes = fs::read(blobs.join(&name)).with_context(|| format!("reading blob {name}"))?;
        files.push((format!("blobs/sha256/{name}"), bytes));
    }

    let staging = archive.with_extension("tar.partial");
    let file =
        fs::File::create(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut header, dir, std::io::empty())
            .context("writing the archive")?;
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, bytes) in &files {
        let mut header = fixed_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        tar.append_data(&mut header, name, bytes.as_slice())
            .with_context(|| format!("adding {name} to the archive"))?;
    }
    tar.into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .context("finishing the archive")?;
    fs::rename(&staging, archive)
        .with_context(|| format!("moving {} into place", staging.display()))
}

fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(crate::demo_image::layer::FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
