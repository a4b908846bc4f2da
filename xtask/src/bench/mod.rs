//! `cargo xtask bench NAME`: benchmarks that report ratios against a baseline of the same run.

mod agent;
mod containerd;
mod estargz;
mod index;
mod run;
mod zstd_chunked;

use crate::cmd;

/// Which benchmark to run.
#[derive(clap::Subcommand)]
pub enum Which {
    /// Per-call cost of traced syscalls and the highest drop-free event rate.
    Tracer,
    /// Layer indexing against `gzip -dc | tar -t`.
    Index(index::Args),
    /// Exit-to-commit latency of `recorder run` and the agent's CPU per 100,000 events.
    Agent(agent::Args),
    /// `recorder run` with its layer cache cold and warm, against `tar -xzf` of the layers.
    Run(run::Args),
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.which {
        // A cargo bench target: it needs the library and its eBPF object, which xtask itself
        // must not depend on (xtask has to build on a machine that setup has not prepared yet).
        Which::Tracer => cmd::run(crate::cargo().args([
            "bench",
            "-p",
            "recorder-userspace",
            "--bench",
            "tracer",
        ])),
        Which::Index(args) => index::run(args),
        Which::Agent(args) => agent::run(args),
        Which::Run(args) => run::run(args),
    }
}
