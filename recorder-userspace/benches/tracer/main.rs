//! Tracer overhead and throughput, as ratios against an untraced baseline measured in the same
//! run. Run with `cargo xtask bench tracer` (root: it loads the eBPF programs).
//!
//! The measured process is a child of this one (this same binary, re-executed as a producer) in a
//! mount namespace of its own, so that "traced-and-emitted" traces only it, and the machine's
//! other processes stay filtered out as they would in production.
//!
//! Per-call costs are medians over interleaved rounds: each round measures untraced (no program
//! attached), filtered-out (programs attached and armed on another namespace, the producer not a
//! target: what every other process on the machine pays while a recording runs) and emitted (the
//! producer is the target), one after another, so drift in the machine's speed hits all three
//! alike.
//!
//! The programs' own cost is read from the kernel's run-time accounting (`BPF_ENABLE_STATS`,
//! enabled through an fd for the measurement only: no sysctl changes), split into its pieces by
//! running the same call filtered out, emitted on a short and on a deep path (the difference is
//! the dentry walk), and emitted with the path argument read too (as `recorder trace` runs).

use measure::{median, per_call, program_costs, rate_step};
use producer::producer;

mod measure;
mod producer;

/// Components below the root of the deep path of the walk-cost measurement.
const DEEP: usize = 8;

const ROUNDS: usize = 9;
const CALLS_PER_SAMPLE: u64 = 200_000;
const RATE_STEP_SECS: f64 = 1.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("producer") {
        producer(&args[1..]);
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the tracer benchmark loads eBPF programs: run it as root");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let machine = machine();
    eprintln!("tracer benchmark on {machine}");
    let open = per_call("openat").await;
    let getpid = per_call("getppid").await;
    let costs = program_costs().await;

    let (ou, of, oe) = (
        median(open.untraced),
        median(open.filtered),
        median(open.emitted),
    );
    let (gu, gf, ge) = (
        median(getpid.untraced),
        median(getpid.filtered),
        median(getpid.emitted),
    );

    let mut rates = Vec::new();
    for threads in [1usize, 2] {
        for target in [
            200_000.0,
            400_000.0,
            600_000.0,
            800_000.0,
            1_000_000.0,
            1_500_000.0,
            2_000_000.0,
        ] {
            let r = rate_step(target, threads).await;
            eprintln!(
                "  rate {threads} producer(s): asked {:.0}/s got {:.0}/s received {} dropped {}",
                r.target, r.achieved, r.received, r.dropped
            );
            let saturated = r.achieved < r.target * 0.9;
            rates.push((threads, r));
            if saturated || rates.last().is_some_and(|(_, r)| r.lost > 0) {
                break;
            }
        }
    }

    println!("## Tracer (`cargo xtask bench tracer`)\n");
    println!(
        "Machine: {machine}. Medians of {ROUNDS} interleaved rounds of {CALLS_PER_SAMPLE} calls.\n"
    );
    println!("| call | untraced | filtered out (armed elsewhere) | traced and emitted |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| openat+close | {ou:.0} ns (1.00×) | {of:.0} ns ({:.2}×) | {oe:.0} ns ({:.2}×) |",
        of / ou,
        oe / ou
    );
    println!(
        "| getppid | {gu:.0} ns (1.00×) | {gf:.0} ns ({:.2}×) | {ge:.0} ns ({:.2}×) |",
        gf / gu,
        ge / gu
    );
    println!();
    let shallow = 2.0;
    let walk = (costs.emitted_deep - costs.emitted_short) / (DEEP as f64 - shallow);
    println!(
        "The openat exit program's own time per run (kernel run-time accounting, medians of \
         {ROUNDS} rounds; the accounting adds its own clock reads):\n"
    );
    println!("| piece | ns per run |");
    println!("| --- | --- |");
    println!("| filter only (not a target) | {:.0} |", costs.filtered);
    println!(
        "| emitted, /etc/hostname (2 components) | {:.0} |",
        costs.emitted_short
    );
    println!("| emitted, {DEEP} components | {:.0} |", costs.emitted_deep);
    println!("| dentry walk, per component | {walk:.0} |");
    println!(
        "| fd → file, identity, header and ring (emitted at 2 components less the filter and the walk) | {:.0} |",
        costs.emitted_short - costs.filtered - shallow * walk
    );
    println!(
        "| emitted with the path argument and its directory (recorder trace) | {:.0} |",
        costs.trace_mode
    );
    println!();
    println!("Sustained rate (failed openat, one event each, paced; 1 s per step):\n");
    println!("| producers | asked /s | achieved /s | received | dropped |");
    println!("| --- | --- | --- | --- | --- |");
    for (threads, r) in &rates {
        println!(
            "| {threads} | {:.0} | {:.0} | {} | {} |",
            r.target, r.achieved, r.received, r.dropped
        );
    }
    for threads in [1usize, 2] {
        let best = rates
            .iter()
            .filter(|(t, r)| *t == threads && r.lost == 0)
            .map(|(_, r)| r.achieved)
            .fold(0.0, f64::max);
        println!("\nHighest rate with zero drops, {threads} producer(s): {best:.0} events/s");
    }
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "{} cores ({cpu}), Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    )
}
