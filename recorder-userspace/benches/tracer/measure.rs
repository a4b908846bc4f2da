//! The measurements: per-call cost in each configuration, event rates, the programs' own cost.

use std::{
    io::{BufRead, Write},
    time::Instant,
};

use recorder::tracer::{Tracer, TracerConfig};

use crate::producer::{consume_until, spawn_producer, spawn_producer_on};
use crate::{CALLS_PER_SAMPLE, DEEP, RATE_STEP_SECS, ROUNDS};

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub(crate) struct Samples {
    pub(crate) untraced: Vec<f64>,
    pub(crate) filtered: Vec<f64>,
    pub(crate) emitted: Vec<f64>,
}

pub(crate) async fn per_call(mode: &str) -> Samples {
    let mut s = Samples {
        untraced: Vec::new(),
        filtered: Vec::new(),
        emitted: Vec::new(),
    };
    for round in 0..ROUNDS {
        let p = spawn_producer(mode, CALLS_PER_SAMPLE, 0.0, 1);
        s.untraced.push(p.run(None).await);

        let mut tracer = Tracer::load(&TracerConfig::default()).expect("load tracer");
        let mut stream = tracer.take_events().expect("stream").expect("first take");
        // Armed, on another namespace: a recording is going on, the producer is not its target.
        let elsewhere = spawn_producer(mode, 1, 0.0, 1);
        tracer.add_target(elsewhere.mntns).expect("arm elsewhere");
        let p = spawn_producer(mode, CALLS_PER_SAMPLE, 0.0, 1);
        s.filtered.push(p.run(Some(&mut stream)).await);
        tracer.remove_target(elsewhere.mntns).expect("disarm");
        elsewhere.run(None).await;

        let p = spawn_producer(mode, CALLS_PER_SAMPLE, 0.0, 1);
        tracer.add_target(p.mntns).expect("arm");
        s.emitted.push(p.run(Some(&mut stream)).await);
        let counters = tracer.counters().expect("counters");
        eprintln!(
            "  {mode} round {}/{ROUNDS}: untraced {:.0} ns, filtered {:.0} ns, emitted {:.0} ns (dropped {})",
            round + 1,
            s.untraced[round],
            s.filtered[round],
            s.emitted[round],
            counters.dropped
        );
    }
    s
}

pub(crate) struct RateResult {
    pub(crate) target: f64,
    pub(crate) achieved: f64,
    pub(crate) received: u64,
    pub(crate) dropped: u64,
    pub(crate) lost: u64,
}

pub(crate) async fn rate_step(target: f64, threads: usize) -> RateResult {
    let per_thread = target / threads as f64;
    let calls = (per_thread * RATE_STEP_SECS) as u64;
    let mut tracer = Tracer::load(&TracerConfig::default()).expect("load tracer");
    let mut stream = tracer.take_events().expect("stream").expect("first take");
    let mut p = spawn_producer("enoent", calls, per_thread, threads);
    tracer.add_target(p.mntns).expect("arm");
    p.child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let started = Instant::now();
    let waiter = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        p.stdout.read_line(&mut line).expect("result line");
        p.child.wait().expect("wait");
        0.0
    });
    let (_, received) = consume_until(waiter, Some(&mut stream)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let counters = tracer.counters().expect("counters");
    RateResult {
        target,
        achieved: (calls * threads as u64) as f64 / elapsed,
        received,
        dropped: counters.dropped,
        lost: counters.lost(),
    }
}

/// The openat exit program's median ns per run in each configuration.
pub(crate) struct ProgramCosts {
    pub(crate) filtered: f64,
    pub(crate) emitted_short: f64,
    pub(crate) emitted_deep: f64,
    pub(crate) trace_mode: f64,
}

/// ns per run of `sys_exit_openat` while a producer makes openat calls, from the kernel's
/// run-time accounting.
async fn program_ns(arg_paths: bool, target: bool, path: &std::path::Path) -> f64 {
    let config = TracerConfig {
        arg_paths,
        ..TracerConfig::default()
    };
    let mut tracer = Tracer::load(&config).expect("load tracer");
    let mut stream = tracer.take_events().expect("stream").expect("first take");
    let elsewhere = spawn_producer("openat", 1, 0.0, 1);
    tracer.add_target(elsewhere.mntns).expect("arm elsewhere");
    let p = spawn_producer_on("openat", CALLS_PER_SAMPLE, 0.0, 1, Some(path));
    if target {
        tracer.add_target(p.mntns).expect("arm");
    }
    let openat = |t: &Tracer| {
        t.program_stats()
            .into_iter()
            .find(|s| s.name == "sys_exit_openat")
            .expect("sys_exit_openat stats")
    };
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let before = openat(&tracer);
    p.run(Some(&mut stream)).await;
    let after = openat(&tracer);
    drop(stats);
    elsewhere.run(None).await;
    let runs = after.runs - before.runs;
    (after.run_time - before.run_time).as_nanos() as f64 / runs.max(1) as f64
}

pub(crate) async fn program_costs() -> ProgramCosts {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut deep = dir.path().to_path_buf();
    for i in 0..DEEP - 1 {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).expect("deep dirs");
    deep.push("file");
    std::fs::write(&deep, b"x").expect("deep file");
    let short = std::path::Path::new("/etc/hostname");
    let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        c.0.push(program_ns(false, false, short).await);
        c.1.push(program_ns(false, true, short).await);
        c.2.push(program_ns(false, true, &deep).await);
        c.3.push(program_ns(true, true, short).await);
        eprintln!(
            "  program round {}/{ROUNDS}: filtered {:.0} ns, emitted {:.0} ns, deep {:.0} ns, trace mode {:.0} ns",
            round + 1,
            c.0[round],
            c.1[round],
            c.2[round],
            c.3[round]
        );
    }
    ProgramCosts {
        filtered: median(c.0),
        emitted_short: median(c.1),
        emitted_deep: median(c.2),
        trace_mode: median(c.3),
    }
}
