//! `recorder record`: record which image files a running container reads, until a stop
//! condition, then commit the record. Also hosts what `recorder run` shares with it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use std::path::Path;

use anyhow::Context;
use recorder::agent::session::COMMIT_TIMEOUT;
use recorder::agent::{
    Agent, AgentError, Catching, CommitOptions, ContainerdSink, ImageSource, IndexFailure, Indexed,
    Outcome, RecordSink, StopConditions, Stopped, Stops, Summary, Target, WorkloadExit,
    procs::processes_in,
};
use recorder::containerd::ContainerdSource;
use recorder::containerd::{
    ArmTiming, ContainerPattern, ContainerdError, CreatedTask, RecordLabels, TaskTarget,
    TaskWatcher,
};
use recorder::image::{BlobDigest, Image, Platform};
use recorder::k8s::normalize_reference;
use recorder::status::{ServerHandle, State, StatusHandle, StopSignal, serve};
use recorder::tracer::{Tracer, TracerConfig, mount_namespace_of};

use crate::record_show;
use crate::registry::{PushOption, push_committed, push_failed, workload_annotations};
use crate::source::{ContainerdArgs, ContainerdSession, connect_containerd, open_containerd};

/// `recorder record --image ... --target ...`, or `recorder record show ...`.
#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = crate::EXIT_STATUS_HELP
)]
pub struct Args {
    #[command(subcommand)]
    sub: Option<record_show::Sub>,
    /// What to trace: `pid:N` (that process's mount namespace), `mntns:N` (an inode); with
    /// --containerd also `container:ID` (a running container's task) or
    /// `container-name:PATTERN` (the next container created whose id or image name matches
    /// the glob, or whose label matches `KEY=GLOB`; armed before its task starts), or
    /// `k8s:POD_UID/CONTAINER` (the container of that name in that pod, by the CRI's labels;
    /// ready before the image exists: it is indexed once the container is created).
    #[arg(long, required = true)]
    target: Option<TargetArg>,
    /// Stop once every process of the target's mount namespace has exited.
    #[arg(long)]
    until_exit: bool,
    /// After committing, write `sha256:<hex>` (or the error) to this file, e.g. a pod's
    /// /dev/termination-log; stdout then says `record: sha256:<hex>`, a line to find in logs.
    #[arg(long, value_name = "PATH")]
    termination_message_path: Option<PathBuf>,
    /// After committing (or failing), wait for SIGTERM or SIGINT before exiting, with the same
    /// status: a Kubernetes sidecar that exits on its own is restarted and would record again.
    #[arg(long)]
    linger_until_signal: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// Options shared by `recorder record` and `recorder run`.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// The image: an OCI image layout directory, or STORE_DIR@sha256:HEX for a manifest in a
    /// containerd-style content store. With --containerd: an image reference in containerd
    /// (e.g. docker.io/library/alpine:3.19), and the record goes to containerd's content
    /// store, labelled with the manifest and the reference and kept from garbage collection.
    #[arg(long, required = true)]
    pub image: Option<String>,
    /// Manifest name (`org.opencontainers.image.ref.name`) in a layout with several.
    #[arg(long = "ref", conflicts_with = "containerd")]
    pub reference: Option<String>,
    /// Platform to pick from an image index, os/arch[/variant]; default: this machine's.
    #[arg(long)]
    pub platform: Option<String>,
    /// Content store the record is committed to (not with --containerd, which has its own).
    #[arg(
        long,
        required_unless_present = "containerd",
        conflicts_with = "containerd"
    )]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub ctrd: ContainerdArgs,
    /// Also write the record to this file; `-` is stdout (under `run`, the workload's stdout
    /// then goes to stderr). A symlink is written through; a regular file is replaced
    /// atomically; a device or FIFO is written in place.
    #[arg(long, value_name = "FILE")]
    pub record_out: Option<PathBuf>,
    /// Write the companion (time, pid, comm, kind of each entry) to this file, as
    /// --record-out; default: FILE.companion beside --record-out FILE.
    #[arg(long, value_name = "FILE")]
    pub companion_out: Option<PathBuf>,
    /// Serve status, metrics and stop requests on this Unix socket.
    #[arg(long)]
    pub status_socket: Option<PathBuf>,
    /// Stop after this long (e.g. `30s`, `500ms`, `2m`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub period: Option<Duration>,
    /// After the commit (or a failure), keep the status socket answering for this long (e.g.
    /// `10s`), so a poller sees the final state, the record digest and the outcome
    /// (`recorder status --wait done`).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, requires = "status_socket")]
    pub linger: Option<Duration>,
    /// Scratch space (default: the system temp dir); also where a record that cannot be
    /// committed is kept.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size; e.g. 8M).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = TracerConfig::default().ring_bytes,
        value_parser = parse_ring_bytes
    )]
    pub ring_bytes: u32,
    /// Commit the record even when nothing was recorded (otherwise an error, exit 1: an empty
    /// record usually means the wrong target or image).
    #[arg(long)]
    pub allow_empty: bool,
    /// Print the summary as one JSON object (camelCase keys: verdict, exitStatus, workload,
    /// counters, recordDigest...) as the last stdout line, instead of the digest.
    #[arg(long)]
    pub json: bool,
    /// After committing, write the record's digest (`sha256:...` and a newline) to FILE, for
    /// scripts; `-` is stdout.
    #[arg(long, value_name = "FILE")]
    pub digest_file: Option<PathBuf>,
    #[command(flatten)]
    pub push: PushOption,
}

/// The image to index: named on the command line, or already opened from containerd.
pub enum ImageInput {
    /// A layout or local store, opened while indexing.
    Source(ImageSource),
    /// An image read from containerd, and its reference.
    Containerd(Box<Image>, String),
}

impl ImageInput {
    /// Indexes the image, unless a stop comes first: then at once, leaving the indexing thread
    /// (which writes nothing) to end with the process.
    pub async fn index_or_stop(
        self,
        agent: Agent,
        platform: Platform,
        stops: &Stops,
    ) -> Result<Indexed, AgentError> {
        tokio::select! {
            biased;
            reason = stops.wait() => Err(AgentError::StoppedEarly(reason)),
            indexed = self.index(agent, platform) => indexed,
        }
    }

    /// Indexes the image.
    pub async fn index(self, agent: Agent, platform: Platform) -> Result<Indexed, AgentError> {
        match self {
            ImageInput::Source(source) => agent.index(source, platform).await,
            ImageInput::Containerd(image, reference) => {
                let described = format!("{reference} (containerd)");
                agent.index_opened(*image, described).await
            }
        }
    }
}

impl CommonArgs {
    /// The image source, checked; with --containerd, the image is opened, and its connection
    /// returned. Call this from plain, non-async code, and drop the connection there too: it
    /// owns a runtime.
    pub fn input(&self) -> anyhow::Result<(ImageInput, Option<ContainerdSession>)> {
        let image = self.image.as_deref().context("--image is required")?;
        match &self.ctrd.address() {
            None => Ok((ImageInput::Source(self.source()?), None)),
            Some(address) => {
                let (opened, session) =
                    open_containerd(address, &self.ctrd.namespace, image, &self.platform()?)?;
                let input = ImageInput::Containerd(Box::new(opened), session.reference.clone());
                Ok((input, Some(session)))
            }
        }
    }

    /// The image source of a layout or local store, checked.
    pub fn source(&self) -> anyhow::Result<ImageSource> {
        let image = self.image.as_deref().context("--image is required")?;
        let source: ImageSource = image.parse().with_context(|| format!("--image {image}"))?;
        let (ImageSource::Layout { dir, .. } | ImageSource::Store { dir, .. }) = &source;
        crate::source::check_exists("--image", image, dir)?;
        Ok(source.with_reference(self.reference.clone()))
    }

    /// The platform to pick.
    pub fn platform(&self) -> anyhow::Result<Platform> {
        match &self.platform {
            Some(p) => Platform::parse(p).with_context(|| format!("--platform {p}")),
            None => Ok(Platform::host()),
        }
    }

    /// Fails when `--platform` was given and `image` is not built for it.
    pub fn check_platform(&self, image: &Image) -> Result<(), AgentError> {
        let Some(_) = &self.platform else {
            return Ok(());
        };
        let platform = self.platform().map_err(|e| AgentError::Io {
            op: "--platform".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        platform
            .check_image(image)
            .map_err(|source| AgentError::Image {
                image: self.image.clone().unwrap_or_default(),
                source,
            })
    }

    /// Whether the record or its companion goes to stdout (`-`): then nothing else may.
    pub fn stdout_taken(&self) -> bool {
        [&self.record_out, &self.companion_out, &self.digest_file]
            .into_iter()
            .flatten()
            .any(|p| recorder::outputs::is_stdout(p))
    }

    /// Checks every output and store path, and what clap cannot, before any work: what is
    /// wrong is a usage error (exit status 2), found before indexing or starting a workload.
    pub fn validate(&self) -> anyhow::Result<()> {
        let usage = |m: String| anyhow::Error::from(crate::Usage(m));
        for (flag, path) in [
            ("--record-out", &self.record_out),
            ("--companion-out", &self.companion_out),
            ("--digest-file", &self.digest_file),
        ] {
            if let Some(path) = path {
                recorder::outputs::check(path).map_err(|e| usage(format!("{flag}: {e}")))?;
            }
        }
        if let (Some(a), Some(b)) = (&self.record_out, &self.companion_out)
            && a == b
        {
            return Err(usage(format!(
                "--record-out and --companion-out are both {}",
                a.display()
            )));
        }
        if let Some(store) = &self.store
            && store.exists()
            && !store.is_dir()
        {
            return Err(usage(format!(
                "--store {}: not a directory",
                store.display()
            )));
        }
        if let Some(work) = &self.work_dir {
            match std::fs::metadata(work) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(usage(format!(
                        "--work-dir {}: not a directory",
                        work.display()
                    )));
                }
                Err(e) => return Err(usage(format!("--work-dir {}: {e}", work.display()))),
            }
        }
        if let Some(socket) = &self.status_socket {
            let dir = match socket.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(usage(format!(
                    "--status-socket {}: the directory {} does not exist",
                    socket.display(),
                    dir.display()
                )));
            }
        }
        self.platform().map_err(|e| usage(format!("{e:#}")))?;
        Ok(())
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

    /// Where the record goes: containerd's store when the image came from there, else --store.
    pub fn commit_options(
        &self,
        containerd: Option<&ContainerdSession>,
        manifest: &BlobDigest,
    ) -> Result<CommitOptions, AgentError> {
        let store = match (containerd, &self.store) {
            (Some(session), _) => {
                let mut labels = RecordLabels::new(manifest.clone());
                labels.image = Some(session.reference.clone());
                RecordSink::Containerd(Box::new(ContainerdSink {
                    client: session.client.clone(),
                    runtime: session.handle(),
                    labels,
                }))
            }
            (None, Some(dir)) => RecordSink::Local(dir.clone()),
            // clap requires --store without --containerd; this is only a safety net.
            (None, None) => {
                return Err(AgentError::Io {
                    op: "committing".into(),
                    source: std::io::Error::other("--store is required"),
                });
            }
        };
        Ok(CommitOptions {
            store,
            record_out: self.record_out.clone(),
            companion_out: self.companion_out.clone(),
            fallback_dir: self.work_base(),
        })
    }
}

/// `pid:N`, `mntns:N`, `container:ID` or `container-name:PATTERN`.
#[derive(Debug, Clone)]
pub enum TargetArg {
    /// A process.
    Pid(u32),
    /// A mount namespace inode.
    Mntns(u32),
    /// A running container's task, by container id.
    Container(String),
    /// The next container created that matches.
    ContainerName(ContainerPattern),
    /// A pod's container, by pod uid and container name.
    K8s {
        /// The pod's `metadata.uid`.
        pod_uid: String,
        /// The container's name in the pod spec.
        container: String,
    },
}

impl TargetArg {
    fn needs_containerd(&self) -> bool {
        !matches!(self, TargetArg::Pid(_) | TargetArg::Mntns(_))
    }
}

impl FromStr for TargetArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected pid:N, mntns:N, container:ID, container-name:PATTERN or \
                     k8s:POD_UID/CONTAINER"
            )
        };
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let number = || rest.parse::<u32>().map_err(|_| bad());
        match kind {
            "pid" => Ok(TargetArg::Pid(number()?)),
            "mntns" => Ok(TargetArg::Mntns(number()?)),
            "container" if !rest.is_empty() => Ok(TargetArg::Container(rest.to_owned())),
            "container-name" => ContainerPattern::parse(rest)
                .map(TargetArg::ContainerName)
                .ok_or_else(bad),
            "k8s" => match rest.split_once('/') {
                Some((uid, name)) if !uid.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok(TargetArg::K8s {
                        pod_uid: uid.to_owned(),
                        container: name.to_owned(),
                    })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for TargetArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetArg::Pid(n) => write!(f, "pid:{n}"),
            TargetArg::Mntns(n) => write!(f, "mntns:{n}"),
            TargetArg::Container(id) => write!(f, "container:{id}"),
            TargetArg::ContainerName(p) => write!(f, "container-name:{p}"),
            TargetArg::K8s { pod_uid, container } => write!(f, "k8s:{pod_uid}/{container}"),
        }
    }
}

/// A duration, one syntax everywhere: humantime's (`500ms`, `30s`, `2m`, `1h30m`), or a bare
/// number of seconds (`5`, `0.3`), so `--timeout 5` in existing manifests keeps working.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(seconds) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(t).map_err(|e| {
        format!(
            "{s:?}: {e}; expected a duration such as 500ms, 30s or 1h30m (a bare number is seconds)"
        )
    })
}

/// As [`parse_duration`], zero refused: where a duration of nothing makes no sense (a period,
/// a linger, a timeout, a poll interval).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be more than zero"));
    }
    Ok(d)
}

/// `--ring-bytes`: a size (as [`parse_size`]) that the kernel takes for a ring buffer.
pub fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let bytes = parse_size(s)?;
    // SAFETY: sysconf only reads a system constant.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    if !bytes.is_power_of_two() || bytes % page != 0 {
        return Err(format!(
            "{s:?}: must be a power of two and a multiple of the page size ({page}), e.g. 8M"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("{s:?}: at most 2G"))
}

/// A size in bytes: a bare number, or with a binary suffix `K`, `M`, `G`, `T` (`KiB`... too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a size such as 512M or 2G"))?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// Runs `recorder record`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(sub) = args.sub {
        record_show::run(sub)?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::source::require_privileges("recorder record", false)?;
    args.common.validate()?;
    if let Some(path) = &args.termination_message_path {
        recorder::outputs::check(path).map_err(|e| {
            anyhow::Error::from(crate::Usage(format!("--termination-message-path: {e}")))
        })?;
    }
    let target = args.target.clone().context("--target is required")?;
    if target.needs_containerd() && args.common.ctrd.containerd.is_none() {
        return Err(crate::Usage(format!(
            "--target {target} needs --containerd (and -a ADDRESS for another socket than the \
             default)"
        ))
        .into());
    }
    let output = Output {
        termination_message_path: args.termination_message_path.clone(),
        linger_until_signal: args.linger_until_signal,
    };
    if let TargetArg::K8s { pod_uid, container } = &target {
        let pod = PodPlan {
            pattern: ContainerPattern::kubernetes(pod_uid, container),
            platform: args.common.platform()?,
            target: target.clone(),
            until_exit: args.until_exit,
        };
        return run_pod(pod, &args.common, &output);
    }
    let (input, session) = args.common.input()?;
    let plan = Plan {
        input,
        platform: args.common.platform()?,
        target,
        until_exit: args.until_exit,
    };
    let outcome = runtime()?.block_on(async {
        let (status, stops, server) = start_status(&args.common)?;
        let result = record(plan, session.as_ref(), &args.common, &status, &stops).await;
        let pushed = push_if_asked(&result, &args.common, session.as_ref(), None).await;
        conclude_to(
            result,
            pushed,
            &args.common,
            &status,
            server,
            &stops,
            &output,
        )
        .await
    });
    // Out of the async context: the connection's runtime cannot be dropped inside one.
    drop(session);
    outcome
}

/// `recorder record --target k8s:…`: connected to containerd, but the image is opened only
/// once the pod's container exists (the kubelet pulls it after the sidecar is ready).
fn run_pod(pod: PodPlan, common: &CommonArgs, output: &Output) -> anyhow::Result<ExitCode> {
    let address = common
        .ctrd
        .address()
        .context("--target k8s: needs --containerd")?;
    let image = common.image.as_deref().context("--image is required")?;
    let reference = normalize_reference(image);
    if reference != image {
        tracing::info!(image, %reference, "image reference normalized as the CRI names it");
    }
    let session = connect_containerd(&address, &common.ctrd.namespace, &reference)?;
    let outcome = runtime()?.block_on(async {
        let (status, stops, server) = start_status(common)?;
        let result = record_pod(pod, &session, common, &status, &stops).await;
        let pushed = push_if_asked(&result, common, Some(&session), None).await;
        conclude_to(result, pushed, common, &status, server, &stops, output).await
    });
    // Out of the async context: the connection's runtime cannot be dropped inside one.
    drop(session);
    outcome
}

/// The checked arguments of `recorder record --target k8s:…`.
struct PodPlan {
    pattern: ContainerPattern,
    platform: Platform,
    target: TargetArg,
    until_exit: bool,
}

/// Where the outcome goes besides the summary, and whether to wait for a signal after it.
#[derive(Debug, Default)]
struct Output {
    termination_message_path: Option<PathBuf>,
    linger_until_signal: bool,
}

/// The checked arguments of `recorder record`.
struct Plan {
    input: ImageInput,
    platform: Platform,
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

/// Closes the status socket, after `--linger`: until then it answers with the final state
/// (`done` with the record digest and outcome, or `failed` with the error).
pub async fn close(server: Option<ServerHandle>, common: &CommonArgs) {
    let Some(server) = server else {
        return;
    };
    if let Some(linger) = common.linger {
        tracing::info!(
            socket = %server.path().display(),
            "finished; the status socket answers for {}",
            humantime::format_duration(linger)
        );
        // A SIGINT or SIGTERM from now on ends the wait (earlier ones stopped the recording).
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                () = tokio::time::sleep(linger) => {}
                _ = int.recv() => {}
                _ = term.recv() => {}
            },
            _ => tokio::time::sleep(linger).await,
        }
    }
    server.shutdown().await;
}

/// Prints the summary (stderr) and the record digest (last stdout line; with `--json` the
/// summary as JSON), and maps the outcome to the exit status; the socket stays open.
fn conclude_now(
    result: Result<Outcome, AgentError>,
    common: &CommonArgs,
    status: &StatusHandle,
) -> anyhow::Result<ExitCode> {
    match result {
        Ok(outcome) => {
            report_outcome(&outcome, common, status);
            if common.stdout_taken() {
                // stdout carries the record: the digest is in the summary on stderr.
            } else if common.json {
                println!("{}", json_line(&outcome));
            } else {
                println!("{}", outcome.summary.committed.record);
            }
            Ok(ExitCode::from(outcome.exit_status()))
        }
        Err(error) => {
            status.fail(&error);
            Err(error.into())
        }
    }
}

/// Puts the outcome on the status socket, the summary on stderr (unless --quiet) and the
/// digest in --digest-file.
fn report_outcome(outcome: &Outcome, common: &CommonArgs, status: &StatusHandle) {
    status.set_outcome(outcome.report());
    if !crate::QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{outcome}");
    }
    if let Some(path) = &common.digest_file {
        let line = format!("{}\n", outcome.summary.committed.record);
        if let Err(error) = recorder::outputs::write(path, line.as_bytes()) {
            // The record is committed; the summary names it.
            tracing::error!(%error, "writing --digest-file");
        }
    }
}

/// The `--json` summary: one line.
fn json_line(outcome: &Outcome) -> String {
    // Serialising plain strings, numbers and maps cannot fail.
    serde_json::to_string(&outcome.report()).unwrap_or_default()
}

/// Commits `stopped`, unless nothing was recorded and `--allow-empty` was not given: an empty
/// record is an error that says what was seen instead, and nothing is committed.
pub async fn commit_unless_empty(
    stopped: Stopped,
    common: &CommonArgs,
    commit: &CommitOptions,
    status: &StatusHandle,
    workload: Option<&WorkloadExit>,
) -> Result<Summary, AgentError> {
    if stopped.record().is_empty() && !common.allow_empty {
        let c = status.counters();
        let mut detail = format!(
            "{}; {} events, {} failed opens",
            stopped.reason(),
            c.events,
            c.failed_opens
        );
        if !c.excluded.is_empty() {
            let reasons: Vec<String> = c.excluded.iter().map(|(r, n)| format!("{r}={n}")).collect();
            detail.push_str(&format!(", excluded {}", reasons.join(" ")));
        }
        if let Some(workload) = workload {
            detail.push_str(&format!("; the workload ended with {workload}"));
        }
        return Err(AgentError::EmptyRecord { detail });
    }
    stopped
        .begin_commit()
        .commit_off_runtime(commit, COMMIT_TIMEOUT)
        .await
}

/// What `--push` did: nothing asked, the artifact's reference, or why it failed.
pub enum PushOutcome {
    /// No --push, or nothing committed to push.
    NotAsked,
    /// Pushed: `HOST/REPOSITORY@DIGEST` of the artifact.
    Pushed(String),
    /// The push failed; the record is committed (the message says where).
    Failed(anyhow::Error),
}

/// Pushes the committed record when `--push` asks; `command` is the workload's, when known.
pub async fn push_if_asked(
    result: &Result<Outcome, AgentError>,
    common: &CommonArgs,
    session: Option<&ContainerdSession>,
    command: Option<String>,
) -> PushOutcome {
    let Ok(Outcome { summary, .. }) = result else {
        return PushOutcome::NotAsked;
    };
    let annotations = workload_annotations(common, command, summary);
    match push_committed(common, session, summary, annotations).await {
        Ok(Some(pushed)) => PushOutcome::Pushed(pushed.reference),
        Ok(None) => PushOutcome::NotAsked,
        Err(e) => PushOutcome::Failed(e.context(push_failed(common, summary))),
    }
}

/// As [`conclude_now`], then closes the socket (after `--linger`); after a `--push`: a failed push is printed after the summary and exits 1
/// (the record is committed).
pub async fn conclude_pushed(
    result: Result<Outcome, AgentError>,
    pushed: PushOutcome,
    common: &CommonArgs,
    status: &StatusHandle,
    server: Option<ServerHandle>,
) -> anyhow::Result<ExitCode> {
    let outcome = conclude_pushed_now(result, pushed, common, status);
    close(server, common).await;
    outcome
}

/// As [`conclude_pushed`], leaving the socket open.
pub fn conclude_pushed_now(
    result: Result<Outcome, AgentError>,
    pushed: PushOutcome,
    common: &CommonArgs,
    status: &StatusHandle,
) -> anyhow::Result<ExitCode> {
    let outcome = conclude_now(result, common, status);
    match pushed {
        PushOutcome::Failed(e) => Err(e),
        PushOutcome::NotAsked | PushOutcome::Pushed(_) => outcome,
    }
}

/// As [`conclude_pushed`], and also: `record: <digest>` on stdout and the digest (or, after
/// `--push`, the artifact's reference; or the error) in the termination message file; with
/// --linger-until-signal, waits for SIGTERM/SIGINT (the status socket still answering `done`
/// or `failed`) before returning the same outcome.
async fn conclude_to(
    result: Result<Outcome, AgentError>,
    pushed: PushOutcome,
    common: &CommonArgs,
    status: &StatusHandle,
    server: Option<ServerHandle>,
    stops: &Stops,
    output: &Output,
) -> anyhow::Result<ExitCode> {
    let Some(path) = &output.termination_message_path else {
        let outcome = conclude_pushed_now(result, pushed, common, status);
        if output.linger_until_signal {
            linger(stops).await;
        }
        close(server, common).await;
        return outcome;
    };
    let message = match (&result, &pushed) {
        (Ok(_), PushOutcome::Pushed(reference)) => reference.clone(),
        (Ok(_), PushOutcome::Failed(e)) => format!("recorder failed: {e:#}"),
        (Ok(outcome), PushOutcome::NotAsked) => outcome.summary.committed.record.to_string(),
        (Err(error), _) => format!("recorder failed: {error}"),
    };
    // Written first, before lingering and before the log line that announces the result: the
    // kubelet reads it once the container has exited, whenever that is.
    if let Err(e) = std::fs::write(path, &message) {
        // Not fatal: the record is committed, and the log says where.
        tracing::error!(path = %path.display(), error = %e, "writing the termination message");
    }
    let outcome = match result {
        Ok(outcome) => {
            report_outcome(&outcome, common, status);
            if common.json {
                println!("{}", json_line(&outcome));
            } else {
                println!("record: {}", outcome.summary.committed.record);
            }
            match pushed {
                PushOutcome::Failed(e) => Err(e),
                PushOutcome::NotAsked | PushOutcome::Pushed(_) => {
                    Ok(ExitCode::from(outcome.exit_status()))
                }
            }
        }
        Err(error) => {
            status.fail(&error);
            Err(anyhow::Error::from(error))
        }
    };
    if output.linger_until_signal {
        linger(stops).await;
    }
    close(server, common).await;
    outcome
}

/// Waits for SIGTERM, SIGINT or `POST /stop`; at once if one already stopped the recording.
async fn linger(stops: &Stops) {
    if stops.fired().is_none() {
        tracing::info!("finished; waiting for SIGTERM to exit");
    }
    let reason = stops.wait().await;
    tracing::info!(%reason, "exiting");
}

/// The target, found before indexing so that a wrong one fails at once.
enum Found {
    /// A process and its mount namespace.
    Process { pid: Option<u32>, mntns: u32 },
    /// A subscription waiting for the container's task.
    Watching(Box<TaskWatcher>),
}

async fn find(
    target: &TargetArg,
    containerd: Option<&ContainerdSession>,
) -> Result<Found, AgentError> {
    let target_err = |message: String| AgentError::Target {
        target: target.to_string(),
        message,
    };
    let client = || {
        containerd
            .map(|s| &s.client)
            .ok_or_else(|| target_err("needs --containerd".into()))
    };
    Ok(match target {
        TargetArg::Pid(pid) => Found::Process {
            pid: Some(*pid),
            mntns: mount_namespace_of(*pid).map_err(|e| target_err(e.to_string()))?,
        },
        TargetArg::Mntns(n) => Found::Process {
            pid: None,
            mntns: *n,
        },
        TargetArg::Container(id) => {
            let task = client()?.container_task(id).await?;
            Found::Process {
                pid: Some(task.pid),
                mntns: task.mntns,
            }
        }
        // Subscribed before indexing: a container started meanwhile is not missed.
        TargetArg::ContainerName(pattern) => {
            Found::Watching(Box::new(client()?.watch_tasks(pattern.clone()).await?))
        }
        // run() takes k8s targets to run_pod; only a programming error lands here.
        TargetArg::K8s { .. } => {
            return Err(target_err("a k8s: target is recorded by record_pod".into()));
        }
    })
}

async fn record(
    plan: Plan,
    session: Option<&ContainerdSession>,
    common: &CommonArgs,
    status: &StatusHandle,
    stops: &Stops,
) -> Result<Outcome, AgentError> {
    let Plan {
        input,
        platform,
        target,
        until_exit,
    } = plan;
    let target_err = |message: String| AgentError::Target {
        target: target.to_string(),
        message,
    };
    // A container not created yet: the namespaces runc makes are caught from before the
    // subscription on, so the one the watcher reports is traced from its creation.
    let mut catching = match &target {
        TargetArg::ContainerName(_) => {
            Some(Catching::start(Tracer::load(&common.tracer_config())?)?)
        }
        _ => None,
    };
    let found = find(&target, session).await?;
    status.set_target(target.to_string());

    let index = input.index_or_stop(Agent::new(status.clone()), platform, stops);
    let indexed = match &mut catching {
        Some(catching) => catching.while_waiting(index).await??,
        None => index.await?,
    };
    if let Some(reason) = stops.fired() {
        return Err(AgentError::StoppedEarly(reason));
    }
    common.check_platform(indexed.image())?;
    if let (TargetArg::Container(id), Some(session)) = (&target, session) {
        let (image, _) = session.client.container(id).await?;
        check_container_image(session, id, &image).await?;
    }
    let commit = common.commit_options(session, indexed.image().manifest_digest())?;
    let mut late_arm = None;
    let tracing = match found {
        Found::Process { pid, mntns } => {
            let tracer = Tracer::load(&common.tracer_config())?;
            let mount_pid = match pid {
                Some(pid) => pid,
                None => processes_in(mntns)
                    .map_err(|e| target_err(format!("scanning /proc: {e}")))?
                    .first()
                    .copied()
                    .ok_or_else(|| target_err("no process is in this mount namespace".into()))?,
            };
            // Its error names the target already: wrapping it would say so twice.
            let pinned = Target::of_pid(mntns, mount_pid)?;
            indexed.arm(tracer, pinned)?
        }
        Found::Watching(mut watcher) => {
            status.set_state(State::Armed);
            let mut catching =
                catching.ok_or_else(|| target_err("watched without catching namespaces".into()))?;
            tracing::info!(%target, "ready: waiting for a matching container to be created");
            let created = catching.created(&mut watcher, stops).await?;
            let task = &created.target;
            // Pinned first: its mounts and root can only be read while it lives, and the image
            // check's two containerd round trips took long enough under load for a short
            // workload to exit before the pin (seen once in a suite run at load 10).
            let pinned = pin_created(task, &mut catching)?;
            if let Some(session) = session {
                check_container_image(session, &task.container_id, &created.image).await?;
            }
            let caught = catching.identify(pinned)?;
            let in_time = caught.in_time();
            let mut tracing = indexed.arm_caught(caught);
            if let Some(warning) = late_arm_warning(in_time, &created) {
                tracing.warn(warning);
                late_arm = Some(format!("container {}", task.container_id));
            }
            tracing
        }
    };
    let conditions = StopConditions {
        period: common.period,
        until_exit: until_exit.then(|| tracing.namespaces()),
    };
    let stopped = tracing.run(conditions.wait(stops)).await?;
    let summary = commit_unless_empty(stopped, common, &commit, status, None).await?;
    Ok(Outcome {
        summary,
        late_arm,
        workload: None,
    })
}

/// Fails when container `id` runs another image than `--image`: the record would name files
/// of the wrong image. Equal names, or names of the same manifest or index, pass; a container
/// without an image name cannot be checked.
async fn check_container_image(
    session: &ContainerdSession,
    id: &str,
    image: &str,
) -> Result<(), AgentError> {
    if image.is_empty() || image == session.reference {
        return Ok(());
    }
    let wanted = session.client.resolve_image(&session.reference).await?;
    let runs = session.client.resolve_image(image).await;
    if runs.as_ref().is_ok_and(|runs| runs.digest == wanted.digest) {
        return Ok(());
    }
    let runs_digest = runs.map(|r| format!(" ({})", r.digest)).unwrap_or_default();
    Err(AgentError::Target {
        target: format!("container:{id}"),
        message: format!(
            "it runs image {image}{runs_digest}, not --image {} ({}): the record would name \
             files of the wrong image; give --image {image}",
            session.reference, wanted.digest
        ),
    })
}

/// Records a pod's container: subscribe and load the tracer (then `armed`),
/// arm as soon as the container's task is created, index the image meanwhile, trace, commit.
async fn record_pod(
    plan: PodPlan,
    session: &ContainerdSession,
    common: &CommonArgs,
    status: &StatusHandle,
    stops: &Stops,
) -> Result<Outcome, AgentError> {
    let PodPlan {
        pattern,
        platform,
        target,
        until_exit,
    } = plan;
    status.set_target(target.to_string());
    let tracer = Tracer::load(&common.tracer_config())?;
    // Caught from before the subscription on: see record().
    let mut catching = Catching::start(tracer)?;
    let mut watcher = session.client.watch_tasks(pattern).await?;
    let ready = Agent::new(status.clone()).ready();
    tracing::info!(%target, "ready: waiting for a matching container to be created");
    let created = catching.created(&mut watcher, stops).await?;
    let task = &created.target;
    let pinned = pin_created(task, &mut catching)?;
    let caught = catching.identify(pinned)?;
    let in_time = caught.in_time();
    let mut armed = ready.arm_caught(caught);
    let mut late_arm = None;
    if let Some(warning) = late_arm_warning(in_time, &created) {
        armed.warn(warning);
        late_arm = Some(format!("container {}", task.container_id));
    }
    // The container's image is the one actually run: a record resolved against another
    // image's layers would be wrong.
    check_container_image(session, &task.container_id, &created.image).await?;
    // The kubelet pulled the image before creating the container: it is there now.
    let resolved = session.client.resolve_image(&session.reference).await?;
    let source = ContainerdSource::new(session.client.clone(), session.handle());
    let described = format!("{} (containerd)", session.reference);
    let tracing = armed
        .index(described, move || {
            source
                .open_image(&resolved, &platform)
                .map_err(|e| IndexFailure::Agent(e.into()))
        })
        .await?;
    common.check_platform(tracing.image())?;
    let commit = common.commit_options(Some(session), tracing.image().manifest_digest())?;
    let conditions = StopConditions {
        period: common.period,
        until_exit: until_exit.then(|| tracing.namespaces()),
    };
    let stopped = tracing.run(conditions.wait(stops)).await?;
    let summary = commit_unless_empty(stopped, common, &commit, status, None).await?;
    Ok(Outcome {
        summary,
        late_arm,
        workload: None,
    })
}

/// Whether the filter was armed on `created` before its entrypoint ran: logged, or the
/// warning to put in the summary. Call it right after arming.
fn late_arm_warning(caught_in_time: bool, created: &CreatedTask) -> Option<String> {
    let task = &created.target;
    if caught_in_time {
        tracing::info!(
            container = task.container_id,
            pid = task.pid,
            "armed before the container started: traced since runc made its mount namespace"
        );
        return None;
    }
    match created.arm_timing() {
        ArmTiming::BeforeStart => {
            tracing::info!(
                container = task.container_id,
                pid = task.pid,
                "armed before the container started"
            );
            None
        }
        ArmTiming::AfterStart => Some(format!(
            "container {} had started before the filter was armed: its first reads may be \
             missing from the record",
            task.container_id
        )),
    }
}

/// The created task's mount namespace, pinned, or why it is gone.
/// The created task's target, pinned; for a task whose process has exited already, its caught
/// namespace's.
fn pin_created(task: &TaskTarget, catching: &mut Catching) -> Result<Target, AgentError> {
    match Target::of_pid(task.mntns, task.pid) {
        Ok(pinned) => Ok(pinned),
        Err(_) if !Path::new(&format!("/proc/{}", task.pid)).exists() => {
            catching.exited_target(task).ok_or_else(|| {
                ContainerdError::Exited {
                    id: task.container_id.clone(),
                    pid: task.pid,
                }
                .into()
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (input, want) in [
            ("5", Duration::from_secs(5)),
            ("0.3", Duration::from_millis(300)),
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
        for bad in ["", "s", "5x", "-1", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn sizes() {
        for (input, want) in [
            ("0", 0),
            ("512", 512),
            ("4K", 4 << 10),
            ("64M", 64 << 20),
            ("2G", 2 << 30),
            ("2GiB", 2 << 30),
            ("1t", 1 << 40),
        ] {
            assert_eq!(parse_size(input), Ok(want), "{input}");
        }
        for bad in ["", "M", "1.5G", "12X", "-1", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
