//! `recorder status`: query a running agent's status socket.

use std::path::PathBuf;
use std::time::Duration;

use recorder::status::{State, StatusReport, client};

use crate::parse::PositiveDuration;

/// Arguments of `recorder status`.
#[derive(clap::Args)]
pub struct Args {
    /// The agent's status socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Print the raw JSON report instead of a summary.
    #[arg(long)]
    json: bool,
    /// Poll until the agent has entered STATE or a later one (`armed` is passed once it is
    /// `buffering` or `tracing`); fail if it fails, finishes without it, or its socket goes
    /// away.
    #[arg(long, value_name = "STATE")]
    wait: Option<State>,
    /// How long --wait may take (e.g. `5s`, `10m`; a bare number is seconds).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "300s",
        requires = "wait"
    )]
    timeout: PositiveDuration,
    /// How often --wait polls (e.g. `200ms`; a bare number is seconds).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "200ms",
        requires = "wait"
    )]
    interval: PositiveDuration,
}

pub fn run(args: Args, rt: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let report = rt.block_on(async {
        match args.wait {
            None => client::status(&args.socket)
                .await
                .map_err(anyhow::Error::from),
            Some(wanted) => client::wait_for(
                &args.socket,
                wanted,
                args.timeout.0,
                args.interval.0.max(Duration::from_millis(10)),
            )
            .await
            .map_err(anyhow::Error::from),
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
        "events:   {} ({} paths recorded, {} failed opens, {} lost)",
        c.events, c.recorded_paths, c.failed_opens, c.lost
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
