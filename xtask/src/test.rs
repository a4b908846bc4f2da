//! `cargo xtask test`: the whole suite, with one closing total.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
};

use anyhow::{Context, bail};

/// Runs `cargo test` over the workspace, echoing its output, and closes with the total of every
/// test binary's `test result:` line (cargo's own last line is that of the doc-tests alone).
pub fn run(cargo_args: &[String]) -> anyhow::Result<()> {
    let mut child = crate::cargo()
        .args(["test", "--no-fail-fast"])
        .args(cargo_args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            passed += count(result, " passed");
            failed += count(result, " failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("cargo test failed: {status}");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The number before `label` in a `test result:` line such as `ok. 3 passed; 0 failed; …`.
fn count(result: &str, label: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| part.trim_end().strip_suffix(label))
        .and_then(|n| n.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
