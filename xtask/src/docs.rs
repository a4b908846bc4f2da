//! `cargo xtask docs`: shell completions and the man page, generated from the recorder's own
//! clap definitions (`recorder completions SHELL`, `recorder man`, hidden commands backed by
//! `clap_complete` and `clap_mangen`), so they can never disagree with `--help`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::cmd;
use crate::demo::{target_dir, workspace_root};

/// Arguments of `cargo xtask docs`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write `completions/` and `man/` (default: target/docs).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Each shell, and the file its completions go to (the names the shells look for).
const SHELLS: &[(&str, &str)] = &[
    ("bash", "recorder.bash"),
    ("zsh", "_recorder"),
    ("fish", "recorder.fish"),
    ("elvish", "recorder.elv"),
    ("powershell", "_recorder.ps1"),
];

/// Builds the recorder and writes its completions and man page.
pub fn run(args: Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let out = args.out.unwrap_or_else(|| target_dir().join("docs"));
    cmd::run(crate::cargo().current_dir(&root).args([
        "build",
        "-p",
        "recorder-userspace",
        "--bin",
        "recorder",
    ]))?;
    let recorder = target_dir().join("debug/recorder");
    let completions = out.join("completions");
    let man = out.join("man");
    for dir in [&completions, &man] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (shell, file) in SHELLS {
        let text = cmd::output(Command::new(&recorder).args(["completions", shell]))?;
        let path = completions.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    let page = cmd::output(Command::new(&recorder).arg("man"))?;
    let path = man.join("recorder.1");
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}
