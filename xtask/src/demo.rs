//! `cargo xtask demo`: the README's main command.

use std::{
    os::unix::fs::MetadataExt,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{cmd, env_cargo};

#[derive(clap::Args)]
pub struct Args {}

/// Traces a small workload started in its own mount namespace and prints every open and exec.
pub fn run(_args: Args) -> anyhow::Result<()> {
    cmd::run(Command::new(env_cargo()).args(["build", "--release", "--bin", "recorder"]))?;
    let own_ns = std::fs::metadata("/proc/self/ns/mnt")?.ino();
    // The workload waits a moment so the filter is armed before it reads anything.
    let mut workload = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "sleep 1; cat /etc/os-release >/dev/null; ls /usr/share/doc >/dev/null; exec /bin/true",
        )
        .spawn()
        .context("starting the demo workload with unshare")?;
    let pid = workload.id();
    let started = Instant::now();
    let mntns = loop {
        let ns = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))?.ino();
        if ns != own_ns {
            break ns;
        }
        if started.elapsed() > Duration::from_secs(5) {
            bail!("the demo workload never entered its own mount namespace");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut tracer = Command::new("target/release/recorder")
        .args(["trace", "--mntns", &mntns.to_string()])
        .stdout(Stdio::inherit())
        .spawn()
        .context("starting recorder trace")?;
    let status = workload.wait()?;
    // Let the last records reach the consumer's next poll before stopping it.
    thread::sleep(Duration::from_millis(200));
    nix_kill_int(tracer.id())?;
    let traced = tracer.wait()?;
    if !status.success() || !traced.success() {
        bail!("demo failed: workload {status}, recorder {traced}");
    }
    Ok(())
}

fn nix_kill_int(pid: u32) -> anyhow::Result<()> {
    cmd::run(Command::new("kill").args(["-INT", &pid.to_string()]))
}
