//! `recorder status`: query a running agent's status socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use recorder::status::{State, StatusReport, client};

/// Arguments of `recorder status`.
#[derive(clap::Args)]
pub struct Args {
    /// The agent's status socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Print the raw JSON report instead of a summary.
    #[arg(long)]
    json: bool,
    /// Poll until the agent has entered STATE; fail if it fails or finishes without it.
    #[arg(long, value_name = "STATE")]
    wait: Option<State>,
    /// How long --wait may take, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0, requires = "wait")]
    timeout: f64,
    /// How often --wait polls, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200, requires = "wait")]
    interval: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(async {
        match args.wait {
            None => client::status(&args.socket)
                .await
                .map_err(anyhow::Error::from),
            Some(wanted) => {
                let timeout = Duration::try_from_secs_f64(args.timeout)
                    .context("--timeout must be a non-negative number of seconds")?;
                client::wait_for(
                    &args.socket,
                    wanted,
                    timeout,
                    Duration::from_millis(args.interval.max(10)),
                )
                .await
                .map_err(anyhow::Error::from)
            }
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}

/// A few readable lines for a person at a terminal.
fn summary(report: &StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "state:    {} (since {})", report.state, report.since);
    if let Some(target) = &report.target {
        let _ = writeln!(out, "target:   {target}");
    }
    if let Some(digest) = &report.manifest_digest {
        let _ = writeln!(out, "manifest: {digest}");
    }
    let c = &report.counters;
    let _ = writeln!(
        out,
        "events:   {} ({} paths recorded, {} failed opens, {} kernel drops)",
        c.events, c.recorded_paths, c.failed_opens, c.drops
    );
    if !c.excluded.is_empty() {
        let reasons: Vec<String> = c.excluded.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(out, "excluded: {}", reasons.join(", "));
    }
    if let Some(digest) = &report.record_digest {
        let _ = writeln!(out, "record:   {digest}");
    }
    if report.state == State::Failed {
        let _ = writeln!(
            out,
            "error:    {}",
            report.error.as_deref().unwrap_or("(none given)")
        );
    }
    out
}
