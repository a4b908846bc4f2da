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

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use recorder::tracer::{EventStream, Tracer, TracerConfig};

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

// ---- producer side (child process) ----

/// `producer MODE CALLS RATE THREADS [PATH]`: unshare the mount namespace, say `ready <inode>`,
/// wait for a line, make CALLS calls (paced to RATE per second when RATE > 0; `openat` on PATH,
/// /etc/hostname by default), then print the ns per call.
fn producer(args: &[String]) {
    let mode = args[0].clone();
    let calls: u64 = args[1].parse().expect("calls");
    let rate: f64 = args[2].parse().expect("rate");
    let threads: usize = args.get(3).map_or(1, |t| t.parse().expect("threads"));
    let path =
        std::ffi::CString::new(args.get(4).map_or("/etc/hostname", String::as_str)).expect("path");
    // SAFETY: single-threaded at this point.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0, "unshare");
    let ino = std::fs::metadata("/proc/self/ns/mnt")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("mntns");
    println!("ready {ino}");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");

    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (mode, path) = (mode.clone(), path.clone());
            std::thread::spawn(move || run_calls(&mode, &path, calls, rate))
        })
        .collect();
    for h in handles {
        h.join().expect("producer thread");
    }
    let elapsed = started.elapsed();
    println!("{}", elapsed.as_nanos() as f64 / calls as f64);
}

fn run_calls(mode: &str, path: &std::ffi::CStr, calls: u64, rate: f64) {
    let missing = c"/nonexistent/bench";
    let started = Instant::now();
    for i in 0..calls {
        // SAFETY: plain syscalls with valid NUL-terminated paths; fds closed at once.
        unsafe {
            match mode {
                "openat" => {
                    let fd = libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY);
                    libc::close(fd);
                }
                "enoent" => {
                    libc::openat(libc::AT_FDCWD, missing.as_ptr(), libc::O_RDONLY);
                }
                "getppid" => {
                    libc::syscall(libc::SYS_getppid);
                }
                other => panic!("unknown mode {other}"),
            }
        }
        if rate > 0.0 && i % 64 == 0 {
            let due = Duration::from_secs_f64(i as f64 / rate);
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

// ---- driver side ----

struct Producer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    mntns: u32,
}

fn spawn_producer(mode: &str, calls: u64, rate: f64, threads: usize) -> Producer {
    spawn_producer_on(mode, calls, rate, threads, None)
}

fn spawn_producer_on(
    mode: &str,
    calls: u64,
    rate: f64,
    threads: usize,
    path: Option<&std::path::Path>,
) -> Producer {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "producer",
            mode,
            &calls.to_string(),
            &rate.to_string(),
            &threads.to_string(),
        ])
        .args(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn producer");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    let mntns = line
        .trim()
        .strip_prefix("ready ")
        .and_then(|n| n.parse().ok())
        .expect("producer says ready <mntns>");
    Producer {
        child,
        stdout,
        mntns,
    }
}

impl Producer {
    /// Lets the producer run and returns its ns per call.
    async fn run(mut self, stream: Option<&mut EventStream>) -> f64 {
        self.child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"go\n")
            .expect("go");
        let waiter = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            self.stdout.read_line(&mut line).expect("result line");
            self.child.wait().expect("wait");
            line.trim().parse::<f64>().expect("ns per call")
        });
        consume_until(waiter, stream).await.0
    }
}

/// Drains the stream (decoding every record, as the agent does) until the producer finishes.
async fn consume_until(
    mut waiter: tokio::task::JoinHandle<f64>,
    stream: Option<&mut EventStream>,
) -> (f64, u64) {
    let Some(stream) = stream else {
        return (waiter.await.expect("producer"), 0);
    };
    let mut batch = Vec::with_capacity(4096);
    let mut received = 0u64;
    let result = loop {
        tokio::select! {
            r = &mut waiter => break r.expect("producer"),
            r = stream.next_batch(&mut batch) => {
                received += r.expect("stream") as u64;
                batch.clear();
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    received += stream.drain(&mut batch) as u64;
    (result, received)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Samples {
    untraced: Vec<f64>,
    filtered: Vec<f64>,
    emitted: Vec<f64>,
}

async fn per_call(mode: &str) -> Samples {
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

struct RateResult {
    target: f64,
    achieved: f64,
    received: u64,
    dropped: u64,
    lost: u64,
}

async fn rate_step(target: f64, threads: usize) -> RateResult {
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
struct ProgramCosts {
    filtered: f64,
    emitted_short: f64,
    emitted_deep: f64,
    trace_mode: f64,
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

async fn program_costs() -> ProgramCosts {
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
