//! `cargo xtask bench agent`: how long `recorder run` takes from the workload's exit to the
//! committed record, and the agent's CPU time per 100,000 events.
//!
//! The workload (`agent/workload.sh`, the image's `/app/run.sh`) opens image files in a shell
//! loop, one openat per redirection, and prints a wall-clock stamp as its very last act
//! (`exec date`, so the stamp comes from the process whose exit ends the run). Per round:
//!
//! - busy: `recorder run` on the image, whose Cmd is `--loops` (10 opens each);
//! - idle: the same with `-- 0`, for the agent's fixed cost (indexing, unpacking, loading the
//!   eBPF programs, committing);
//! - baseline: the busy workload without the recorder (see [`baseline`]).
//!
//! Exit-to-commit is the time from the exit stamp to the moment the digest line, printed after
//! the commit, reaches us; the agent's log timestamps split it into phases. The agent's CPU is
//! the recorder process's own user+system time, read from `/proc/PID/stat` while it is an
//! unreaped zombie (all its threads counted, its reaped child the workload not), divided by the
//! events its summary reports.

mod baseline;
mod measure;
pub mod report;

use anyhow::ensure;

use crate::demo::{self, DemoPaths};
use crate::demo_image::{self, Workload};

const WORKLOAD_SCRIPT: &str = include_str!("agent/workload.sh");
/// Redirections per loop of the workload script.
const OPENS_PER_LOOP: u64 = 10;

#[derive(clap::Args)]
pub struct Args {
    /// Loops of the busy workload (10 opens each).
    #[arg(long, default_value_t = 30_000)]
    loops: u64,
    /// Interleaved rounds; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Also write the results into docs/benchmarks.md (section "## Agent").
    #[arg(long)]
    write_docs: bool,
    /// Use the release `recorder` already built instead of building it first.
    #[arg(long)]
    no_build: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let paths = DemoPaths::under("bench-agent", demo::Profile::Release);
    demo::ensure_recorder(&paths, args.no_build)?;
    eprintln!("building the benchmark image in {}", paths.image.display());
    let image = demo_image::build(
        &paths.image,
        &Workload {
            ref_name: "bench-agent:latest",
            script: WORKLOAD_SCRIPT,
            args: vec![args.loops.to_string()],
        },
    )?;
    let layers = baseline::unpack(&image, &paths.image)?;

    let (mut busy, mut idle, mut untraced) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}: baseline, idle, busy", args.rounds);
        untraced.push(baseline::run(&layers, args.loops)?);
        idle.push(measure::record(&paths, &["0"])?);
        busy.push(measure::record(&paths, &[])?);
    }
    let setup = report::Setup {
        loops: args.loops,
        opens_per_loop: OPENS_PER_LOOP,
        rounds: args.rounds,
    };
    let text = report::markdown(&setup, &busy, &idle, &untraced)?;
    println!("{text}");
    if args.write_docs {
        report::write_docs_section(&text)?;
    }
    Ok(())
}
