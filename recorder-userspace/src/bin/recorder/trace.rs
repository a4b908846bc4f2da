//! `recorder trace`: stream the open and exec calls of one or more mount namespaces.

use std::io::{self, Write};

use anyhow::{Context, bail};
use recorder::tracer::{Event, Tracer, TracerConfig, mount_namespace_of};
use tokio::signal::unix::{SignalKind, signal};

/// Arguments of `recorder trace`.
#[derive(clap::Args)]
pub struct Args {
    /// Trace the mount namespace with this inode (repeatable).
    #[arg(long = "mntns", value_name = "INODE", required_unless_present = "pids")]
    mntns: Vec<u32>,
    /// Trace the mount namespace of this process (repeatable).
    #[arg(long = "pid", value_name = "PID", id = "pids")]
    pids: Vec<u32>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = TracerConfig::default().ring_bytes)]
    ring_bytes: u32,
}

pub fn run(args: Args, rt: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let mut targets = args.mntns.clone();
    for pid in &args.pids {
        targets.push(mount_namespace_of(*pid)?);
    }
    if targets.is_empty() {
        bail!("nothing to trace: give --mntns or --pid");
    }
    rt.block_on(trace(args, targets))
}

async fn trace(args: Args, targets: Vec<u32>) -> anyhow::Result<()> {
    // Caught before anything is loaded: a Ctrl-C that comes after the prompt below always ends
    // the trace (one sent before the handlers were installed was lost when the shell had the
    // command ignore SIGINT, as a non-interactive shell does for `&`).
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let config = TracerConfig {
        ring_bytes: args.ring_bytes,
        arg_paths: true,
        // This process exits once the tracer is gone.
        detach_in_background: true,
        ..TracerConfig::default()
    };
    let mut tracer = Tracer::load(&config)?;
    let mut events = tracer
        .take_events()?
        .context("the tracer's event stream was already taken")?;
    for mntns in &targets {
        tracer.add_target(*mntns)?;
    }
    eprintln!("tracing mount namespace(s) {targets:?}; Ctrl-C to stop");
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if !args.json {
        writeln!(
            out,
            "{:<8} {:>7} {:>7} {:<16} {:>6} {:>5}  PATH",
            "KIND", "TGID", "TID", "COMM", "RET", "DIRFD"
        )?;
    }
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            result = events.next_batch(&mut batch) => { result?; }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        if write_batch(&mut out, &batch, args.json).is_err() {
            // The reader went away (for example `| head`): stop quietly.
            return Ok(());
        }
        batch.clear();
    }
    // Disarm first (nested namespaces too): a busy namespace would otherwise refill the ring as
    // fast as it is read, and the final drain would never end. Whatever reached the ring before
    // the signal is still printed.
    tracer.clear_targets()?;
    events.drain(&mut batch);
    let _ = write_batch(&mut out, &batch, args.json);
    drop(out);

    let counters = tracer.counters()?;
    eprintln!(
        "emitted {} dropped {} path_read_failed {} in_flight_full {} file_unresolved {} \
         nested_namespaces {} targets_full {} recursion_misses {} undecodable {}",
        counters.emitted,
        counters.dropped,
        counters.path_read_failed,
        counters.in_flight_full,
        counters.file_unresolved,
        counters.nested_namespaces,
        counters.targets_full,
        counters.recursion_misses,
        events.undecodable()
    );
    if counters.lost() > 0 {
        eprintln!(
            "warning: {} events were lost in the kernel",
            counters.lost()
        );
    }
    Ok(())
}

fn write_batch(out: &mut impl Write, batch: &[Event], json: bool) -> io::Result<()> {
    for event in batch {
        if json {
            serde_json::to_writer(&mut *out, event)?;
            out.write_all(b"\n")?;
        } else {
            // What was asked for, then what the kernel opened: `fstype:/path` from the root of
            // the file's filesystem.
            let opened = match &event.file {
                Some(file) => format!(
                    "  -> {}:{}",
                    file.fs_type().unwrap_or("?"),
                    String::from_utf8_lossy(&file.path)
                ),
                None => String::new(),
            };
            writeln!(
                out,
                "{:<8} {:>7} {:>7} {:<16} {:>6} {:>5}  {}{opened}",
                event.kind.name(),
                event.tgid,
                event.tid,
                event.comm,
                event.ret,
                event.dirfd,
                event
                    .absolute_path()
                    .unwrap_or_else(|| event.path().to_path_buf())
                    .display()
            )?;
        }
    }
    out.flush()
}
