//! The producer: this binary re-executed in a mount namespace of its own, making the measured
//! calls; and the driver side that starts it, lets it run and drains the events it causes.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use recorder::tracer::EventStream;

// ---- producer side (child process) ----

/// `producer MODE CALLS RATE THREADS [PATH]`: unshare the mount namespace, say `ready <inode>`,
/// wait for a line, make CALLS calls (paced to RATE per second when RATE > 0; `openat` on PATH,
/// /etc/hostname by default), then print the ns per call.
pub(crate) fn producer(args: &[String]) {
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

pub(crate) struct Producer {
    pub(crate) child: Child,
    pub(crate) stdout: BufReader<ChildStdout>,
    pub(crate) mntns: u32,
}

pub(crate) fn spawn_producer(mode: &str, calls: u64, rate: f64, threads: usize) -> Producer {
    spawn_producer_on(mode, calls, rate, threads, None)
}

pub(crate) fn spawn_producer_on(
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
    pub(crate) async fn run(mut self, stream: Option<&mut EventStream>) -> f64 {
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
pub(crate) async fn consume_until(
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
