//! `recorder record`: record which image files a running container reads, until a stop
//! condition, then commit the record. Also hosts what `recorder run` shares with it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use std::path::Path;

use anyhow::{Context, bail};
use recorder::agent::session::COMMIT_TIMEOUT;
use recorder::agent::{
    Agent, AgentError, Catching, CommitOptions, ContainerdSink, ImageSource, IndexFailure, Indexed,
    RecordSink, StopConditions, Stops, Summary, Target, procs::processes_in,
};
use recorder::containerd::ContainerdSource;
use recorder::containerd::{
    ArmTiming, ContainerPattern, ContainerdError, CreatedTask, RecordLabels, TaskTarget,
    TaskWatcher,
};
use recorder::image::{BlobDigest, Image, Platform};
use recorder::k8s::normalize_reference;
use recorder::status::{ServerHandle, StatusHandle, StopSignal, serve};
use recorder::tracer::{Tracer, TracerConfig, mount_namespace_of};

use crate::record_show;
use crate::registry::{PushOption, push_committed, push_failed, workload_annotations};
use crate::source::{ContainerdArgs, ContainerdSession, connect_containerd, open_containerd};

/// `recorder record --image ... --target ...`, or `recorder record show ...`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
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
        match &self.ctrd.containerd {
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
    let target = args.target.clone().context("--target is required")?;
    if target.needs_containerd() && args.common.ctrd.containerd.is_none() {
        bail!("--target {target} needs --containerd[=ADDRESS]");
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
        conclude_to(result, pushed, &status, server, &stops, &output).await
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
        .containerd
        .as_deref()
        .context("--target k8s: needs --containerd[=ADDRESS]")?;
    let image = common.image.as_deref().context("--image is required")?;
    let reference = normalize_reference(image);
    if reference != image {
        tracing::info!(image, %reference, "image reference normalized as the CRI names it");
    }
    let session = connect_containerd(address, &common.ctrd.namespace, &reference)?;
    let outcome = runtime()?.block_on(async {
        let (status, stops, server) = start_status(common)?;
        let result = record_pod(pod, &session, common, &status, &stops).await;
        let pushed = push_if_asked(&result, common, Some(&session), None).await;
        conclude_to(result, pushed, &status, server, &stops, output).await
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
    result: &Result<Summary, AgentError>,
    common: &CommonArgs,
    session: Option<&ContainerdSession>,
    command: Option<String>,
) -> PushOutcome {
    let Ok(summary) = result else {
        return PushOutcome::NotAsked;
    };
    let annotations = workload_annotations(common, command, summary);
    match push_committed(common, session, summary, annotations).await {
        Ok(Some(pushed)) => PushOutcome::Pushed(pushed.reference),
        Ok(None) => PushOutcome::NotAsked,
        Err(e) => PushOutcome::Failed(e.context(push_failed(common, summary))),
    }
}

/// As [`conclude`], after a `--push`: a failed push is printed after the summary and exits 1
/// (the record is committed).
pub async fn conclude_pushed(
    result: Result<Summary, AgentError>,
    pushed: PushOutcome,
    status: &StatusHandle,
    server: Option<ServerHandle>,
) -> anyhow::Result<ExitCode> {
    let outcome = conclude(result, status, server).await;
    match pushed {
        PushOutcome::Failed(e) => Err(e),
        PushOutcome::NotAsked | PushOutcome::Pushed(_) => outcome,
    }
}

/// As [`conclude`], and also: `record: <digest>` on stdout and the digest (or, after
/// `--push`, the artifact's reference; or the error) in the termination message file; with
/// --linger-until-signal, waits for SIGTERM/SIGINT (the status socket still answering `done`
/// or `failed`) before returning the same outcome.
async fn conclude_to(
    result: Result<Summary, AgentError>,
    pushed: PushOutcome,
    status: &StatusHandle,
    server: Option<ServerHandle>,
    stops: &Stops,
    output: &Output,
) -> anyhow::Result<ExitCode> {
    let Some(path) = &output.termination_message_path else {
        let outcome = conclude_pushed(result, pushed, status, server).await;
        if output.linger_until_signal {
            linger(stops).await;
        }
        return outcome;
    };
    let message = match (&result, &pushed) {
        (Ok(_), PushOutcome::Pushed(reference)) => reference.clone(),
        (Ok(_), PushOutcome::Failed(e)) => format!("recorder failed: {e:#}"),
        (Ok(summary), PushOutcome::NotAsked) => summary.committed.record.to_string(),
        (Err(error), _) => format!("recorder failed: {error}"),
    };
    // Written first, before lingering and before the log line that announces the result: the
    // kubelet reads it once the container has exited, whenever that is.
    if let Err(e) = std::fs::write(path, &message) {
        // Not fatal: the record is committed, and the log says where.
        tracing::error!(path = %path.display(), error = %e, "writing the termination message");
    }
    let outcome = match result {
        Ok(summary) => {
            eprintln!("{summary}");
            println!("record: {}", summary.committed.record);
            match pushed {
                PushOutcome::Failed(e) => Err(e),
                PushOutcome::NotAsked | PushOutcome::Pushed(_) => {
                    Ok(ExitCode::from(summary.exit_status()))
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
    if let Some(server) = server {
        server.shutdown().await;
    }
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
) -> Result<Summary, AgentError> {
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
    let commit = common.commit_options(session, indexed.image().manifest_digest())?;
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
            let pinned = Target::of_pid(mntns, mount_pid)
                .map_err(|e| target_err(format!("the target process vanished: {e}")))?;
            indexed.arm(tracer, pinned)?
        }
        Found::Watching(mut watcher) => {
            let mut catching =
                catching.ok_or_else(|| target_err("watched without catching namespaces".into()))?;
            tracing::info!(%target, "ready: waiting for a matching container to be created");
            let created = catching.created(&mut watcher, stops).await?;
            let task = &created.target;
            let exited = || ContainerdError::Exited {
                id: task.container_id.clone(),
                pid: task.pid,
            };
            let pinned = match Target::of_pid(task.mntns, task.pid) {
                Ok(pinned) => pinned,
                Err(_) if !Path::new(&format!("/proc/{}", task.pid)).exists() => {
                    return Err(exited().into());
                }
                Err(e) => return Err(e),
            };
            let caught = catching.identify(pinned)?;
            let in_time = caught.in_time();
            let mut tracing = indexed.arm_caught(caught);
            if let Some(warning) = late_arm(in_time, &created) {
                tracing.warn(warning);
            }
            tracing
        }
    };
    let conditions = StopConditions {
        period: common.period,
        until_exit: until_exit.then(|| tracing.namespaces()),
    };
    let stopped = tracing.run(conditions.wait(stops)).await?;
    stopped
        .begin_commit()
        .commit_off_runtime(&commit, COMMIT_TIMEOUT)
        .await
}

/// Records a pod's container: subscribe and load the tracer (then `tracing`: armed-ready),
/// arm as soon as the container's task is created, index the image meanwhile, trace, commit.
async fn record_pod(
    plan: PodPlan,
    session: &ContainerdSession,
    common: &CommonArgs,
    status: &StatusHandle,
    stops: &Stops,
) -> Result<Summary, AgentError> {
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
    let pinned = pin_created(task)?;
    let caught = catching.identify(pinned)?;
    let in_time = caught.in_time();
    let mut armed = ready.arm_caught(caught);
    if let Some(warning) = late_arm(in_time, &created) {
        armed.warn(warning);
    }
    // The container's image is the one actually run; --image names what is recorded against.
    if !created.image.is_empty() && created.image != session.reference {
        armed.warn(format!(
            "container {} runs image {}, not --image {}: the record is resolved against the \
             latter",
            task.container_id, created.image, session.reference
        ));
    }
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
    let commit = common.commit_options(Some(session), tracing.image().manifest_digest())?;
    let conditions = StopConditions {
        period: common.period,
        until_exit: until_exit.then(|| tracing.namespaces()),
    };
    let stopped = tracing.run(conditions.wait(stops)).await?;
    stopped
        .begin_commit()
        .commit_off_runtime(&commit, COMMIT_TIMEOUT)
        .await
}

/// Whether the filter was armed on `created` before its entrypoint ran: logged, or the
/// warning to put in the summary. Call it right after arming.
fn late_arm(caught_in_time: bool, created: &CreatedTask) -> Option<String> {
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
fn pin_created(task: &TaskTarget) -> Result<Target, AgentError> {
    match Target::of_pid(task.mntns, task.pid) {
        Ok(pinned) => Ok(pinned),
        Err(_) if !Path::new(&format!("/proc/{}", task.pid)).exists() => {
            Err(ContainerdError::Exited {
                id: task.container_id.clone(),
                pid: task.pid,
            }
            .into())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
