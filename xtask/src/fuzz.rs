//! `cargo xtask fuzz [--time 60s] [TARGET...]`: runs each cargo-fuzz target (nightly, address
//! sanitizer) for a bounded time from the seed corpus in `fuzz/corpus/TARGET`, installing
//! cargo-fuzz first if it is missing. A crash fails the command; libFuzzer leaves the input in
//! `fuzz/artifacts/TARGET/`, to become a regression test.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::cmd::{output, run};
use crate::demo::workspace_root;

/// Every target, in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["record_parse", "layer_index", "unpack_layer", "image_docs"];

/// The pinned cargo-fuzz release.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(clap::Args)]
pub struct Args {
    /// How long each target runs, in seconds (a trailing `s` is accepted).
    #[arg(long, default_value = "60s")]
    time: String,
    /// Targets to run (default: all).
    targets: Vec<String>,
}

pub fn run_fuzz(args: Args) -> anyhow::Result<()> {
    let seconds: u64 = args
        .time
        .trim_end_matches('s')
        .parse()
        .with_context(|| format!("--time {:?}: expected seconds, e.g. 60s", args.time))?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    for t in &targets {
        if !TARGETS.contains(t) {
            bail!("unknown fuzz target {t:?} (known: {})", TARGETS.join(", "));
        }
    }
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace_root().join("fuzz");
    for target in targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        // libFuzzer adds what it finds to the first corpus directory: a scratch copy, so the
        // repository keeps only its small seeds.
        let scratch = scratch_corpus(&fuzz_dir, target)?;
        eprintln!("fuzz: {target} for {seconds}s");
        run(Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&scratch)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=4096"))
        .with_context(|| {
            format!("fuzz target {target} (crash inputs in fuzz/artifacts/{target}/)")
        })?;
    }
    Ok(())
}

fn scratch_corpus(fuzz_dir: &Path, target: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = fuzz_dir.join("target").join("corpus-scratch").join(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if output(Command::new("cargo").args(["fuzz", "--version"])).is_ok() {
        return Ok(());
    }
    eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(Command::new("cargo").args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}
