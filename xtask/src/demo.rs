//! `cargo xtask demo`: the README's main command. Builds a small multi-layer OCI image from
//! programs on this machine, runs the workload in it under `recorder run`, shows the record,
//! what the workload needed of each layer (`record show --image`), and writes the HTML report.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::cmd;
use crate::demo_image::{self, BuiltImage, DEMO_SCRIPT, Workload};

#[derive(clap::Args)]
pub struct Args {
    /// Build and run the release binary. By default the demo uses the debug build that
    /// `cargo xtask test` also uses, so the README's two commands share one build (a release
    /// build of the workspace adds about 1.5 GB and several minutes on a fresh clone).
    #[arg(long)]
    release: bool,
}

/// A cargo build profile: the `target/` subdirectory and the flag that selects it.
#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }

    fn flags(self) -> &'static [&'static str] {
        match self {
            Profile::Debug => &[],
            Profile::Release => &["--release"],
        }
    }
}

/// Paths the demo (and the agent benchmark) use, all under the cargo target dir.
pub struct DemoPaths {
    pub recorder: PathBuf,
    pub image: PathBuf,
    pub store: PathBuf,
    pub record: PathBuf,
}

impl DemoPaths {
    pub fn under(name: &str, profile: Profile) -> Self {
        let target = target_dir();
        let dir = target.join(name);
        Self {
            recorder: target.join(profile.dir()).join("recorder"),
            image: dir.join("image"),
            store: dir.join("store"),
            record: dir.join("record.json"),
        }
    }

    /// `recorder run --image IMAGE --store STORE`, as the demo and the agent benchmark both
    /// start it; the caller adds its own options.
    pub fn recorder_run(&self) -> Command {
        let mut command = Command::new(&self.recorder);
        command
            .arg("run")
            .arg("--image")
            .arg(&self.image)
            .arg("--store")
            .arg(&self.store);
        command
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let profile = if args.release {
        Profile::Release
    } else {
        Profile::Debug
    };
    let paths = DemoPaths::under("demo", profile);
    heading(&format!(
        "building the recorder (cargo build {}-p recorder-userspace --bin recorder)",
        profile
            .flags()
            .iter()
            .map(|f| format!("{f} "))
            .collect::<String>()
    ));
    build_recorder(profile)?;

    heading(&format!(
        "building the demo image in {}",
        paths.image.display()
    ));
    let image = demo_image::build(
        &paths.image,
        &Workload {
            ref_name: "demo:latest",
            script: DEMO_SCRIPT,
            args: vec!["--demo".into()],
        },
    )?;
    print_layers(&image);

    heading("recorder image inspect");
    cmd::run(
        Command::new(&paths.recorder)
            .args(["image", "inspect"])
            .arg(&paths.image),
    )?;

    heading("recorder run: the workload, traced from its first instruction");
    recreate_dir(&paths.store)?;
    let digest = record_run(&paths, &[])?;

    heading(&format!("recorder record show {digest}"));
    cmd::run(
        Command::new(&paths.recorder)
            .args(["record", "show", &digest, "--store"])
            .arg(&paths.store),
    )?;

    heading(&format!("the record ({})", paths.record.display()));
    let record = fs::read_to_string(&paths.record)
        .with_context(|| format!("reading {}", paths.record.display()))?;
    print!("{record}");

    heading("recorder record show --image: what the workload needed, per layer");
    cmd::run(
        Command::new(&paths.recorder)
            .args(["record", "show"])
            .arg(&paths.record)
            .arg("--image")
            .arg(&paths.image),
    )?;

    let report = paths.record.with_file_name("report.html");
    heading(&format!(
        "recorder record report --out {}",
        report.display()
    ));
    cmd::run(
        Command::new(&paths.recorder)
            .args(["record", "report"])
            .arg(&paths.record)
            .arg("--image")
            .arg(&paths.image)
            .arg("--out")
            .arg(&report),
    )?;
    println!("open file://{} in a browser", report.display());
    Ok(())
}

/// The benchmarks' recorder at `paths`: built now, or (`no_build`) the one already there.
pub fn ensure_recorder(paths: &DemoPaths, no_build: bool) -> anyhow::Result<()> {
    if no_build {
        anyhow::ensure!(
            paths.recorder.is_file(),
            "--no-build: there is no {}",
            paths.recorder.display()
        );
        return Ok(());
    }
    eprintln!("building the recorder");
    build_recorder(Profile::Release)
}

/// `cargo build [--release] -p recorder-userspace --bin recorder` in this workspace.
///
/// With `-p` and [`crate::cargo`]'s environment, as the tests' fixtures build it: the same
/// features and the same watched variables, so the same binary, and a build that finds it up
/// to date leaves `target/debug/recorder` alone. Either difference made another binary, and
/// the demo's test relinked `target/debug/recorder` while other tests of the suite spawned it
/// (seen: ENOENT spawning the recorder, in CI).
pub fn build_recorder(profile: Profile) -> anyhow::Result<()> {
    cmd::run(
        crate::cargo()
            .current_dir(workspace_root())
            .arg("build")
            .args(profile.flags())
            .args(["-p", "recorder-userspace", "--bin", "recorder"]),
    )
}

/// Runs `recorder run` on the image with its stdout passed through, and returns the record
/// digest it prints as its last line.
pub fn record_run(paths: &DemoPaths, extra_args: &[&str]) -> anyhow::Result<String> {
    let mut command = paths.recorder_run();
    command
        .arg("--record-out")
        .arg(&paths.record)
        .args(extra_args)
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let stdout = child.stdout.take().context("recorder run's stdout")?;
    let mut last = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading recorder run's stdout")?;
        println!("{line}");
        last = Some(line);
    }
    let status = child.wait().context("waiting for recorder run")?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    let digest = last.context("recorder run printed nothing (expected the record digest)")?;
    if !digest.starts_with("sha256:") {
        bail!("recorder run's last line is not a digest: {digest:?}");
    }
    Ok(digest)
}

fn print_layers(image: &BuiltImage) {
    println!("manifest {}", image.manifest_digest);
    for (i, layer) in image.layers.iter().enumerate() {
        println!(
            "layer {i}: {} entries, {} bytes gzip, {}  ({})",
            layer.entries, layer.compressed_bytes, layer.digest, layer.what
        );
    }
}

fn heading(text: &str) {
    println!("\n=== {text}");
}

fn recreate_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `CARGO_TARGET_DIR` when set (as cargo reads it, relative to the current dir), else the
/// workspace's `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
