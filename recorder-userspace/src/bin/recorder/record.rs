//! `recorder record`: record which image files a running container reads, until a stop
//! condition, then commit the record. Also hosts what `recorder run` shares with it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use recorder::agent::{
    Agent, AgentError, CommitOptions, ImageSource, StopConditions, Stops, Summary, Target,
    procs::processes_in,
};
use recorder::image::Platform;
use recorder::status::{ServerHandle, StatusHandle, StopSignal, serve};
use recorder::tracer::{Tracer, TracerConfig, mount_namespace_of};

use crate::record_show;

/// `recorder record --image ... --target ...`, or `recorder record show ...`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<record_show::Sub>,
    /// What to trace: `pid:N` (that process's mount namespace) or `mntns:N` (an inode).
    #[arg(long, required = true)]
    target: Option<TargetArg>,
    /// Stop once every process of the target's mount namespace has exited.
    #[arg(long)]
    until_exit: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options shared by `recorder record` and `recorder run`.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// The image: an OCI image layout directory, or STORE_DIR@sha256:HEX for a manifest in a
    /// containerd-style content store.
    #[arg(long, required = true)]
    pub image: Option<String>,
    /// Manifest name (`org.opencontainers.image.ref.name`) in a layout with several.
    #[arg(long = "ref")]
    pub reference: Option<String>,
    /// Platform to pick from an image index, os/arch[/variant]; default: this machine's.
    #[arg(long)]
    pub platform: Option<String>,
    /// Content store the record is committed to.
    #[arg(long, required = true)]
    pub store: Option<PathBuf>,
    /// Also write the record to this file.
    #[arg(long)]
    pub record_out: Option<PathBuf>,
    /// Serve status, metrics and stop requests on this Unix socket.
    #[arg(long)]
    pub status_socket: Option<PathBuf>,
    /// Stop after this long (e.g. `30s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, value_parser = parse_duration)]
    pub period: Option<Duration>,
    /// Scratch space (default: the system temp dir); also where a record that cannot be
    /// committed is kept.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    #[arg(long, value_name = "BYTES", default_value_t = TracerConfig::default().ring_bytes)]
    pub ring_bytes: u32,
}

impl CommonArgs {
    /// The image source, checked.
    pub fn source(&self) -> anyhow::Result<ImageSource> {
        let image = self.image.as_deref().context("--image is required")?;
        let source: ImageSource = image.parse().with_context(|| format!("--image {image}"))?;
        Ok(source.with_reference(self.reference.clone()))
    }

    /// The platform to pick.
    pub fn platform(&self) -> anyhow::Result<Platform> {
        match &self.platform {
            Some(p) => Platform::parse(p).with_context(|| format!("--platform {p}")),
            None => Ok(Platform::host()),
        }
    }

    /// The tracer's sizing.
    pub fn tracer_config(&self) -> TracerConfig {
        TracerConfig {
            ring_bytes: self.ring_bytes,
            ..TracerConfig::default()
        }
    }

    /// Where to scratch, and to keep a record the store refused.
    pub fn work_base(&self) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// Where the record goes.
    pub fn commit_options(&self) -> anyhow::Result<CommitOptions> {
        Ok(CommitOptions {
            store: self.store.clone().context("--store is required")?,
            record_out: self.record_out.clone(),
            fallback_dir: self.work_base(),
        })
    }
}

/// `pid:N` or `mntns:N`.
#[derive(Debug, Clone, Copy)]
pub enum TargetArg {
    /// A process.
    Pid(u32),
    /// A mount namespace inode.
    Mntns(u32),
}

impl FromStr for TargetArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected pid:N or mntns:N");
        let (kind, n) = s.split_once(':').ok_or_else(bad)?;
        let n: u32 = n.parse().map_err(|_| bad())?;
        match kind {
            "pid" => Ok(TargetArg::Pid(n)),
            "mntns" => Ok(TargetArg::Mntns(n)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for TargetArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetArg::Pid(n) => write!(f, "pid:{n}"),
            TargetArg::Mntns(n) => write!(f, "mntns:{n}"),
        }
    }
}

/// `30s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

/// Runs `recorder record`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(sub) = args.sub {
        record_show::run(sub)?;
        return Ok(ExitCode::SUCCESS);
    }
    let plan = Plan {
        source: args.common.source()?,
        platform: args.common.platform()?,
        commit: args.common.commit_options()?,
        target: args.target.context("--target is required")?,
        until_exit: args.until_exit,
    };
    runtime()?.block_on(async {
        let (status, stops, server) = start_status(&args.common)?;
        let result = record(plan, &args.common, &status, &stops).await;
        conclude(result, &status, server).await
    })
}

/// The checked arguments of `recorder record`.
struct Plan {
    source: ImageSource,
    platform: Platform,
    commit: CommitOptions,
    target: TargetArg,
    until_exit: bool,
}

/// The single-threaded runtime the agent runs on (indexing uses its own threads).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Catches signals and starts the status socket, before anything else can go wrong.
pub fn start_status(
    common: &CommonArgs,
) -> anyhow::Result<(StatusHandle, Stops, Option<ServerHandle>)> {
    let status = StatusHandle::new();
    let stop = StopSignal::new();
    let stops = Stops::install(stop.clone())?;
    let server = match &common.status_socket {
        Some(path) => Some(serve(path, status.clone(), stop)?),
        None => None,
    };
    Ok((status, stops, server))
}

/// Prints the summary (stderr) and the record digest (last stdout line), closes the socket,
/// and maps the outcome to the exit status.
pub async fn conclude(
    result: Result<Summary, AgentError>,
    status: &StatusHandle,
    server: Option<ServerHandle>,
) -> anyhow::Result<ExitCode> {
    let outcome = match result {
        Ok(summary) => {
            eprintln!("{summary}");
            println!("{}", summary.committed.record);
            Ok(ExitCode::from(summary.exit_status()))
        }
        Err(error) => {
            status.fail(&error);
            Err(error.into())
        }
    };
    if let Some(server) = server {
        server.shutdown().await;
    }
    outcome
}

async fn record(
    plan: Plan,
    common: &CommonArgs,
    status: &StatusHandle,
    stops: &Stops,
) -> Result<Summary, AgentError> {
    let target = plan.target;
    let target_err = |message: String| AgentError::Target {
        target: target.to_string(),
        message,
    };
    // Checked before indexing, so that a wrong target fails at once.
    let mntns = match target {
        TargetArg::Pid(pid) => mount_namespace_of(pid).map_err(|e| target_err(e.to_string()))?,
        TargetArg::Mntns(n) => n,
    };
    status.set_target(target.to_string());

    let indexed = Agent::new(status.clone())
        .index(plan.source, plan.platform)
        .await?;
    if let Some(reason) = stops.fired() {
        return Err(AgentError::StoppedEarly(reason));
    }
    let mount_pid = match target {
        TargetArg::Pid(pid) => pid,
        TargetArg::Mntns(n) => processes_in(n)
            .map_err(|e| target_err(format!("scanning /proc: {e}")))?
            .first()
            .copied()
            .ok_or_else(|| target_err("no process is in this mount namespace".into()))?,
    };
    let pinned = Target::of_pid(mntns, mount_pid)
        .map_err(|e| target_err(format!("the target process vanished: {e}")))?;
    let tracer = Tracer::load(&common.tracer_config())?;
    let tracing = indexed.arm(tracer, pinned)?;
    let conditions = StopConditions {
        period: common.period,
        until_exit: plan.until_exit.then_some(mntns),
    };
    let stopped = tracing.run(conditions.wait(stops)).await?;
    stopped.begin_commit().commit(&plan.commit)
}
