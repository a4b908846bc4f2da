//! `cargo xtask bench run`: the wall time of a whole `recorder run` with its layer cache cold
//! (every layer unpacked) and warm (every layer cached), against `tar -xzf` of the same layer
//! blobs one after another into fresh dirs (the baseline, measured in the same rounds), and its
//! peer, `ctr-remote image optimize` of the same image already in a private containerd, on the
//! demo image and on the demo image under a layer of many small files.
//!
//! The workload is `/bin/sh -c :` (it reads next to nothing), so a run's time is the recorder's
//! fixed cost plus the unpacking. Rounds interleave the four measurements; medians are
//! reported. The page cache is left warm for all three (dropping it is host-global).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use super::agent::report::{machine_description, median, write_section};
use super::containerd::Containerd;
use crate::demo::{self, DemoPaths};
use crate::demo_image::{self, DEMO_SCRIPT, Workload, layer::Layer};

const DOCS_SECTION: &str = "## Layer cache (`cargo xtask bench run`)";

/// What every run runs: it reads next to nothing, so a run's time is its fixed cost plus what
/// it does to the image.
const WORKLOAD: [&str; 3] = ["/bin/sh", "-c", ":"];

#[derive(clap::Args)]
pub struct Args {
    /// Interleaved rounds; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Files in the many-files layer.
    #[arg(long, default_value_t = 60_000)]
    files: usize,
    /// Bytes per file of the many-files layer.
    #[arg(long, default_value_t = 2_500)]
    file_size: usize,
    /// Also write the results into docs/benchmarks.md (section "## Layer cache").
    #[arg(long)]
    write_docs: bool,
    /// Use the release `recorder` already built instead of building it first.
    #[arg(long)]
    no_build: bool,
}

/// One image's medians, in seconds.
struct Row {
    name: String,
    layers: usize,
    entries: usize,
    compressed: usize,
    tar: f64,
    cold: f64,
    warm: f64,
    optimize: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let paths = DemoPaths::under("bench-run", demo::Profile::Release);
    demo::ensure_recorder(&paths, args.no_build)?;
    let root = paths.image.parent().context("the bench dir")?.to_owned();
    let workload = Workload {
        ref_name: "bench-run:latest",
        script: DEMO_SCRIPT,
        args: Vec::new(),
    };
    let mut rows = Vec::new();
    // Under /tmp: its socket's path must stay short.
    let containerd_dir = PathBuf::from(format!("/tmp/recorder-bench-ctrd-{}", std::process::id()));
    remove(&containerd_dir)?;
    let containerd = Containerd::start(&containerd_dir, "bench-run")?;
    let demo_dir = root.join("demo");
    eprintln!("building the demo image");
    let demo = demo_image::build(&demo_dir.join("image"), &workload)?;
    rows.push(measure(
        &paths,
        &demo_dir,
        "demo (4 layers)",
        &demo,
        args.rounds,
        &containerd,
    )?);

    let many_dir = root.join("many-files");
    eprintln!(
        "building the image with {} files of {} bytes",
        args.files, args.file_size
    );
    let many = demo_image::build_with(
        &many_dir.join("image"),
        &workload,
        vec![(
            many_files(args.files, args.file_size)?,
            format!("{} small files", args.files),
        )],
    )?;
    let name = format!("{} small files (+ demo)", args.files);
    rows.push(measure(
        &paths,
        &many_dir,
        &name,
        &many,
        args.rounds,
        &containerd,
    )?);
    drop(containerd);
    remove(&containerd_dir)?;

    let text = markdown(&rows, args.rounds);
    println!("{text}");
    if args.write_docs {
        write_section(DOCS_SECTION, &text)?;
    }
    Ok(())
}

/// `files` files of `size` bytes under 60 directories, each different (a counter and the name
/// lead them) and compressible like text.
fn many_files(files: usize, size: usize) -> anyhow::Result<Layer> {
    let mut layer = Layer::default();
    layer.dir("data", 0o755)?;
    for d in 0..60 {
        layer.dir(&format!("data/d{d:02}"), 0o755)?;
    }
    let filler = b"the quick brown fox jumps over the lazy dog\n".repeat(size / 44 + 1);
    for i in 0..files {
        let path = format!("data/d{:02}/f{i:06}.py", i % 60);
        let mut data = format!("# {path} {i}\n").into_bytes();
        data.extend_from_slice(&filler);
        data.truncate(size);
        layer.file(&path, 0o644, data)?;
    }
    Ok(layer)
}

fn measure(
    paths: &DemoPaths,
    dir: &Path,
    name: &str,
    image: &demo_image::BuiltImage,
    rounds: usize,
    containerd: &Containerd,
) -> anyhow::Result<Row> {
    let layout = dir.join("image");
    let blobs: Vec<PathBuf> = image
        .layers
        .iter()
        .map(|l| {
            layout
                .join("blobs/sha256")
                .join(l.digest.trim_start_matches("sha256:"))
        })
        .collect();
    let warm_cache = dir.join("cache-warm");
    // Nothing is deleted before or between measurements: on ext4 without a journal, inode
    // allocation skips inodes freed in the last minutes (`recently_deleted`, up to 360 s), so
    // creating 60,000 files right after deleting a tree of 60,000 took 10-40 s instead of 1.8 s.
    // Each round's tar tree and cold cache go to a fresh dir under `trash/`; what an earlier
    // run left (its trash, its warm cache) is moved there too, and the trash is removed after
    // the last round. A run started within minutes of that removal waits for it to age out.
    let trash = dir.join("trash");
    settle(dir, name)?;
    let stale = dir.join(format!("stale-{}", std::process::id()));
    fs::create_dir_all(&stale).with_context(|| format!("creating {}", stale.display()))?;
    for (i, old) in [
        &trash,
        &warm_cache,
        &dir.join("tar"),
        &dir.join("cache-cold"),
    ]
    .into_iter()
    .enumerate()
    {
        if old.exists() {
            let to = stale.join(i.to_string());
            fs::rename(old, &to)
                .with_context(|| format!("moving {} to {}", old.display(), to.display()))?;
        }
    }
    fs::create_dir_all(&trash).with_context(|| format!("creating {}", trash.display()))?;
    fs::rename(&stale, trash.join("stale"))
        .with_context(|| format!("moving {} into {}", stale.display(), trash.display()))?;
    eprintln!("{name}: warming the cache");
    recorder_run(paths, &layout, dir, &warm_cache)?;
    eprintln!("{name}: importing it into containerd");
    let imported = containerd.import(&layout)?;
    let optimize_record = dir.join("optimize-record.json");
    let (mut tar, mut cold, mut warm, mut optimize) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("{name}: round {round}/{rounds}: tar, cold, warm, ctr-remote optimize");
        tar.push(tar_baseline(&blobs, &trash.join(format!("{round}-tar")))?);
        let cold_cache = trash.join(format!("{round}-cold"));
        cold.push(recorder_run(paths, &layout, dir, &cold_cache)?);
        warm.push(recorder_run(paths, &layout, dir, &warm_cache)?);
        optimize.push(containerd.optimize(
            &imported,
            &WORKLOAD[..1],
            &WORKLOAD[1..],
            &optimize_record,
        )?);
    }
    containerd.remove(&imported)?;
    eprintln!(
        "{name}: removing {}; a benchmark started in the next {} s waits for the file system \
         (ext4 without a journal)",
        trash.display(),
        SETTLE.as_secs()
    );
    remove(&trash)?;
    let stamp = dir.join(REMOVED_AT);
    fs::write(&stamp, unix_secs().to_string())
        .with_context(|| format!("writing {}", stamp.display()))?;
    let secs = |v: Vec<Duration>| median(v.iter().map(Duration::as_secs_f64).collect());
    Ok(Row {
        name: name.to_owned(),
        layers: image.layers.len(),
        entries: image.layers.iter().map(|l| l.entries).sum(),
        compressed: image.layers.iter().map(|l| l.compressed_bytes).sum(),
        tar: secs(tar),
        cold: secs(cold),
        warm: secs(warm),
        optimize: secs(optimize),
    })
}

/// How long ext4 without a journal skips freed inodes at the most (`recently_deleted`: 60 s,
/// plus 300 s while the inode's table block is dirty).
const SETTLE: Duration = Duration::from_secs(360);

/// Beside an image's dir: when its trash was last removed, in seconds since the epoch.
const REMOVED_AT: &str = "trash-removed-at";

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Waits until the last removal of `dir`'s trash is [`SETTLE`] old, so that no measurement
/// allocates inodes among the ones it freed.
fn settle(dir: &Path, name: &str) -> anyhow::Result<()> {
    let Ok(text) = fs::read_to_string(dir.join(REMOVED_AT)) else {
        return Ok(());
    };
    let removed: u64 = text.trim().parse().unwrap_or(0);
    let age = unix_secs().saturating_sub(removed);
    if let Some(left) = SETTLE.as_secs().checked_sub(age).filter(|&s| s > 0) {
        eprintln!(
            "{name}: the last run removed its trees {age} s ago; waiting {left} s so that inode \
             allocation no longer skips the inodes they freed (ext4 without a journal)"
        );
        std::thread::sleep(Duration::from_secs(left));
    }
    Ok(())
}

fn remove(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// `tar -xzf` of each blob into a fresh dir of its own (under `into`, which must not exist
/// yet), one after another.
fn tar_baseline(blobs: &[PathBuf], into: &Path) -> anyhow::Result<Duration> {
    ensure!(!into.exists(), "{} exists already", into.display());
    let dirs: Vec<PathBuf> = (0..blobs.len()).map(|i| into.join(i.to_string())).collect();
    for d in &dirs {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let start = Instant::now();
    for (blob, d) in blobs.iter().zip(&dirs) {
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(blob)
            .arg("-C")
            .arg(d)
            .status()
            .context("running tar")?;
        ensure!(status.success(), "tar -xzf {} failed", blob.display());
    }
    Ok(start.elapsed())
}

/// One `recorder run` of `/bin/sh -c :` with the layer cache in `cache`, start to exit.
fn recorder_run(
    paths: &DemoPaths,
    layout: &Path,
    dir: &Path,
    cache: &Path,
) -> anyhow::Result<Duration> {
    let (store, work) = (dir.join("store"), dir.join("work"));
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut command = Command::new(&paths.recorder);
    command
        .args(["--quiet", "run", "--allow-empty", "--image"])
        .arg(layout)
        .arg("--store")
        .arg(&store)
        .arg("--work-dir")
        .arg(&work)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--entrypoint")
        .arg(WORKLOAD[0])
        .arg("--")
        .args(&WORKLOAD[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    let took = start.elapsed();
    ensure!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

fn markdown(rows: &[Row], rounds: usize) -> String {
    let mut text = format!(
        "{DOCS_SECTION}\n\n\
         Wall time of `recorder run --entrypoint /bin/sh -- -c :` (start to exit, the release \
         build) with the layer cache cold (a fresh one each run: every layer unpacked into \
         it) and warm (every layer already cached), against `tar -xzf` of the same layer blobs \
         one after another into fresh dirs, and `ctr-remote image optimize --oci` (stargz-snapshotter \
         0.12's fanotify analyzer: it runs the same workload, then converts the image to eStargz) \
         of the same image, imported and unpacked beforehand in a private containerd. Medians of \
         {rounds} interleaved rounds, page cache warm; {}.\n\n\
         | image | layers | entries | compressed | `tar -xzf` (baseline) | cold run | cold / tar | warm run | `ctr-remote image optimize` |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        machine_description()
    );
    for r in rows {
        text.push_str(&format!(
            "| {} | {} | {} | {:.1} MB | {:.2} s | {:.2} s | {:.2}x | {:.2} s | {:.2} s |\n",
            r.name,
            r.layers,
            r.entries,
            r.compressed as f64 / 1e6,
            r.tar,
            r.cold,
            r.cold / r.tar,
            r.warm,
            r.optimize
        ));
    }
    text
}
