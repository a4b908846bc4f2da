//! Running commands with clear errors.

use std::process::Command;

use anyhow::{Context, bail};

/// Runs a command with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command up to `tries` times, for steps that fail on passing conditions (locks, mirrors).
pub fn run_with_retry(cmd: &mut Command, tries: u32) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 1..=tries {
        match run(cmd) {
            Ok(()) => return Ok(()),
            Err(error) => {
                eprintln!("attempt {attempt}/{tries} failed: {error:#}");
                last = Some(error);
                std::thread::sleep(std::time::Duration::from_secs(5));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{cmd:?} was never run")))
}

/// Runs a command and returns its stdout; fails unless it exits 0.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}
