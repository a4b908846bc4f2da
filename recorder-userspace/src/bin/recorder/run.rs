//! `recorder run`: a self-contained profiling run. The image's layers are unpacked and
//! mounted as a read-only overlay in a private sandbox, the tracer is armed before the
//! workload's first instruction, and the record is committed when the workload exits or the
//! period ends.
//!
//! With `--containerd`, as `ctr-remote image optimize` does: the image is one in containerd,
//! its container is created there (snapshot, runtime spec from its config, runc task), the
//! filter is armed on the created task before Tasks.Start, and the record goes to
//! containerd's content store as with `recorder record --containerd`. The workload's output is
//! printed once it has exited.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use recorder::agent::workdir::{DEFAULT_UNPACKED_SHARE, free_space};
use recorder::agent::{
    Agent, AgentError, CommitOptions, ImageSource, Indexed, Outcome, StopConditions, StopReason,
    Stopped, Stops, Target, Tracing, Unpacked, WorkDir, WorkloadExit, unpack_layers,
};
use recorder::containerd::{ContainerRun, RunRequest};
use recorder::image::{BlobDigest, Platform};
use recorder::sandbox::{
    Confinement, DEFAULT_CACHE_DIR, DEFAULT_PIDS_LIMIT, ImageProcess, LayerCache, ProcessOverrides,
    Sandbox, UnpackBudget, parse_env_file,
};
use recorder::status::{State, StatusHandle};
use recorder::tracer::{Tracer, mount_namespace_of};
use tokio::task::JoinHandle;

use crate::record::{
    CommonArgs, ImageInput, commit_unless_empty, conclude_pushed, push_if_asked, runtime,
    start_status,
};
use crate::source::ContainerdSession;

/// `recorder run --image ... --store ... [-- CMD ARGS...]`.
#[derive(clap::Args, Debug)]
#[command(after_help = crate::EXIT_STATUS_HELP)]
pub struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    confine: ConfineArgs,
    /// Most bytes the image may take unpacked (e.g. 20G); default: half the space free where
    /// the work dir is. Holes in sparse files do not count.
    #[arg(long, value_name = "SIZE", value_parser = crate::record::parse_size)]
    max_unpacked: Option<u64>,
    #[command(flatten)]
    cache: RunCacheArgs,
    #[command(flatten)]
    process: ProcessArgs,
    /// Command to run instead of the image's Cmd (its Entrypoint is kept, as `docker run`);
    /// with --entrypoint, its arguments.
    #[arg(last = true)]
    cmd: Vec<String>,
}

/// Where unpacked layers are kept for later runs.
#[derive(clap::Args, Debug)]
pub struct CacheDirArg {
    /// The layer cache: each layer unpacked once, keyed by its diff id, and shared read-only
    /// by later runs (made root-owned 0700; an existing one must be).
    #[arg(long, value_name = "DIR", env = "RECORDER_CACHE_DIR", default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
}

/// The layer cache options of `run`.
#[derive(clap::Args, Debug)]
pub struct RunCacheArgs {
    #[command(flatten)]
    dir: CacheDirArg,
    /// Unpack the layers into the work dir, as if there were no cache (nothing is read from or
    /// written to it).
    #[arg(long, conflicts_with = "cache_max")]
    no_cache: bool,
    /// Most bytes the cache may hold (e.g. 10G; same syntax as --max-unpacked): after the
    /// layers are unpacked, the least recently used entries no running recorder uses are
    /// removed until it fits. Default: no limit (`recorder gc --cache` empties it).
    #[arg(long, value_name = "SIZE", value_parser = crate::record::parse_size)]
    cache_max: Option<u64>,
}

impl RunCacheArgs {
    /// Opens the cache (creating it), unless --no-cache: a usage error if it is unfit.
    fn open(&self) -> anyhow::Result<Option<LayerCache>> {
        if self.no_cache {
            return Ok(None);
        }
        LayerCache::open(&self.dir.cache_dir)
            .map(Some)
            .map_err(|e| anyhow::Error::from(crate::Usage(format!("--cache-dir: {e}"))))
    }
}

/// Changes to the image's process, with `ctr-remote image optimize`'s names.
#[derive(clap::Args, Debug)]
pub struct ProcessArgs {
    /// Run PROGRAM instead of the image's Entrypoint; the image's Cmd is dropped and `-- ARGS`
    /// become its arguments (as `docker run --entrypoint`).
    #[arg(long, value_name = "PROGRAM")]
    entrypoint: Option<String>,
    /// Set an environment variable over the image's (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_entry)]
    env: Vec<String>,
    /// Read environment variables from FILE (KEY=VALUE lines, `#` comments; a bare KEY takes
    /// this environment's value); applied before --env (repeatable).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Run as USER (uid[:gid], or a name[:group] of the image's /etc/passwd) instead of the
    /// image's User.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Working directory instead of the image's WorkingDir.
    #[arg(long, value_name = "DIR")]
    cwd: Option<String>,
}

/// `KEY=VALUE` with a non-empty key.
fn parse_env_entry(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// How the workload is contained (see `docs/containment.md`).
#[derive(clap::Args, Debug)]
pub struct ConfineArgs {
    /// Run the workload unconfined: every capability, no seccomp filter, no masked or
    /// read-only paths, writable /sys, privileges may be gained. Only for trusted images.
    #[arg(long)]
    privileged: bool,
    /// Seccomp profile: `default` (the project's, see docs/containment.md) or `unconfined`.
    #[arg(long, value_name = "PROFILE", default_value = "default", value_parser = ["default", "unconfined"])]
    seccomp: String,
    /// Share the host's network namespace (default: a new one with only loopback).
    #[arg(long)]
    net_host: bool,
    /// Memory limit of the workload (e.g. 512M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = crate::record::parse_size)]
    memory: Option<u64>,
    /// Most processes and threads the workload may have; 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PIDS_LIMIT)]
    pids_limit: i64,
}

impl ConfineArgs {
    fn confinement(&self) -> anyhow::Result<Confinement> {
        if self.privileged {
            eprintln!(
                "WARNING: --privileged: the workload runs with every capability, no seccomp \
                 filter, writable /proc/sys and /sys, and may gain privileges; an untrusted \
                 image can take over this host"
            );
        }
        let memory_bytes = self
            .memory
            .map(|m| i64::try_from(m).context("--memory is too large"))
            .transpose()?;
        Ok(Confinement {
            privileged: self.privileged,
            seccomp: self.seccomp == "default",
            net_host: self.net_host,
            memory_bytes,
            pids_limit: (self.pids_limit > 0).then_some(self.pids_limit),
        })
    }
}

impl Args {
    /// The command given instead of the image's Cmd, for the pushed record's annotations.
    fn command(&self) -> Option<String> {
        let mut words: Vec<&str> = self.process.entrypoint.iter().map(String::as_str).collect();
        words.extend(self.cmd.iter().map(String::as_str));
        (!words.is_empty()).then(|| words.join(" "))
    }

    /// The overrides of the image's process, `--env-file`s read (a usage error if one cannot
    /// be: exit status 2, before anything ran).
    fn overrides(&self) -> anyhow::Result<ProcessOverrides> {
        let p = &self.process;
        let mut env = Vec::new();
        for file in &p.env_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                anyhow::Error::from(crate::Usage(format!("--env-file {}: {e}", file.display())))
            })?;
            env.extend(parse_env_file(&text).map_err(|(line, why)| {
                anyhow::Error::from(crate::Usage(format!(
                    "--env-file {}, line {line}: {why}",
                    file.display()
                )))
            })?);
        }
        env.extend(p.env.iter().cloned());
        Ok(ProcessOverrides {
            entrypoint: p.entrypoint.clone(),
            cmd: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
            env,
            user: p.user.clone(),
            cwd: p.cwd.clone(),
        })
    }
}

/// Runs `recorder run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    crate::source::require_privileges("recorder run", true)?;
    args.common.validate()?;
    let overrides = args.overrides()?;
    let confinement = args.confine.confinement()?;
    if args.common.ctrd.containerd.is_some() {
        return run_containerd(args, confinement, overrides);
    }
    let source = args.common.source()?;
    let platform = args.common.platform()?;
    let commit = args.common.commit_options(None, &BlobDigest::of(b""))?;
    let cache = args.cache.open()?;
    runtime()?.block_on(async {
        let (status, stops, server) = start_status(&args.common)?;
        let result = profile(
            &args,
            source,
            platform,
            &commit,
            (confinement, &overrides),
            cache.as_ref(),
            (&status, &stops),
        )
        .await;
        let pushed = push_if_asked(&result, &args.common, None, args.command()).await;
        conclude_pushed(result, pushed, &args.common, &status, server).await
    })
}

/// `recorder run --containerd`: the container is created and started through containerd.
fn run_containerd(
    args: Args,
    confinement: Confinement,
    overrides: ProcessOverrides,
) -> anyhow::Result<ExitCode> {
    let (input, session) = args.common.input()?;
    let session = session.context("--containerd gave no containerd connection")?;
    let platform = args.common.platform()?;
    let outcome = runtime()?.block_on(async {
        let (status, stops, server) = start_status(&args.common)?;
        let result = profile_containerd(
            &args,
            input,
            platform,
            &session,
            (confinement, &overrides),
            &status,
            &stops,
        )
        .await;
        let pushed = push_if_asked(&result, &args.common, Some(&session), args.command()).await;
        conclude_pushed(result, pushed, &args.common, &status, server).await
    });
    // Out of the async context: the connection's runtime cannot be dropped inside one.
    drop(session);
    outcome
}

async fn profile_containerd(
    args: &Args,
    input: ImageInput,
    platform: Platform,
    session: &ContainerdSession,
    (confinement, overrides): (Confinement, &ProcessOverrides),
    status: &StatusHandle,
    stops: &Stops,
) -> Result<Outcome, AgentError> {
    status.set_target(format!("run {} (containerd)", session.reference));
    let indexed = input
        .index_or_stop(Agent::new(status.clone()), platform, stops)
        .await?;
    if let Some(reason) = stops.fired() {
        return Err(AgentError::StoppedEarly(reason));
    }
    args.common.check_platform(indexed.image())?;
    let commit = args
        .common
        .commit_options(Some(session), indexed.image().manifest_digest())?;
    // Holds the workload's stdout and stderr files; removed on every way out.
    let work = WorkDir::create(&args.common.work_base())?;
    let request = RunRequest {
        image: indexed.image(),
        reference: &session.reference,
        overrides,
        io_dir: work.path(),
        confinement,
    };
    // A recorder that was SIGKILLed left its task running and its container, snapshot and
    // lease behind: removed first.
    let reclaimed = session.client.reclaim_dead_runs().await;
    if !reclaimed.is_empty() {
        tracing::warn!(
            runs = reclaimed.join(" "),
            "removed the leftovers of a dead recorder"
        );
    }
    let run = session.client.create_run(&request).await?;
    let result = trace_run(args, indexed, &run, stops).await;
    run.forward_output(args.common.stdout_taken());
    // Whatever happened, the task, container, snapshot and lease go before the commit.
    run.remove().await;
    drop(work);
    let (stopped, workload) = result?;
    let summary =
        commit_unless_empty(stopped, &args.common, &commit, status, workload.as_ref()).await?;
    Ok(Outcome {
        summary,
        late_arm: None,
        workload,
    })
}

/// Arms the filter on the created task, starts it, and traces until it exits or a stop
/// condition fires (then kills it and waits for it).
async fn trace_run(
    args: &Args,
    indexed: Indexed,
    run: &ContainerRun,
    stops: &Stops,
) -> Result<(Stopped, Option<WorkloadExit>), AgentError> {
    if let Some(reason) = stops.fired() {
        return Err(AgentError::StoppedEarly(reason));
    }
    let pid = run.pid();
    let target_err = |message: String| AgentError::Target {
        target: format!("container:{}", run.id()),
        message,
    };
    let mntns = mount_namespace_of(pid).map_err(|e| target_err(e.to_string()))?;
    let tracer = Tracer::load(&args.common.tracer_config())?;
    let tracing = indexed.arm(tracer, Target::of_pid(mntns, pid)?)?;
    // The filter is armed: only now may runc execute the workload.
    run.start().await?;
    let waiter = tokio::spawn(run.wait());
    let stop_workload = || async {
        if let Err(error) = run.kill().await {
            tracing::warn!(%error, "killing the workload");
        }
    };
    let conditions = StopConditions {
        period: args.common.period,
        until_exit: None,
    };
    // containerd reports a task killed by signal N as exit status 128 + N, as a shell does.
    trace_until_exit(tracing, waiter, conditions, stops, stop_workload, |code| {
        WorkloadExit::code(i32::try_from(*code).unwrap_or(i32::MAX))
    })
    .await
}

async fn profile(
    args: &Args,
    source: ImageSource,
    platform: Platform,
    commit: &CommitOptions,
    (confinement, overrides): (Confinement, &ProcessOverrides),
    cache: Option<&LayerCache>,
    (status, stops): (&StatusHandle, &Stops),
) -> Result<Outcome, AgentError> {
    status.set_target(format!("run {source}"));
    // A stop while indexing is acted on at once: the indexing thread is left to the runtime's
    // shutdown (it writes nothing).
    let indexed = tokio::select! {
        biased;
        reason = stops.wait() => return Err(AgentError::StoppedEarly(reason)),
        indexed = Agent::new(status.clone()).index(source, platform) => indexed?,
    };
    args.common.check_platform(indexed.image())?;
    // Dropped on every way out of this function, after the sandbox: removes the layers.
    let work = WorkDir::create(&args.common.work_base())?;
    // Dropped after the work dir: holds the cache entries the overlay is made of.
    let unpacked = unpack(args, &indexed, &work, cache, (status, stops)).await?;
    let lowerdirs = unpacked.dirs.clone();
    if let Some(reason) = stops.fired() {
        return Err(AgentError::StoppedEarly(reason));
    }
    let config = indexed.image().run_config();
    let mut process = ImageProcess {
        entrypoint: config.entrypoint,
        cmd: config.cmd,
        env: config.env,
        working_dir: config.working_dir,
        user: config.user,
    };
    let cmd = overrides.apply(&mut process);
    let spec = process.to_spec(cmd.as_deref(), &lowerdirs)?;
    // Loaded before the workload exists, so it is held before exec as briefly as possible.
    let tracer = Tracer::load(&args.common.tracer_config())?;
    let mut sandbox = Sandbox::new(lowerdirs, work.scratch(), spec);
    if args.common.stdout_taken() {
        // stdout carries the record: the workload's output goes to stderr.
        let stderr = std::os::fd::AsFd::as_fd(&std::io::stderr())
            .try_clone_to_owned()
            .map_err(|source| AgentError::Io {
                op: "duplicating stderr for the workload".into(),
                source,
            })?;
        sandbox = sandbox.stdout(stderr);
    }
    let pending = sandbox
        .confinement(confinement)
        .watchdog(work.watchdog())
        .start()?;
    let mntns = u32::try_from(pending.mntns_inode()).map_err(|_| AgentError::Target {
        target: format!("pid:{}", pending.pid()),
        message: "mount namespace inode does not fit in 32 bits".into(),
    })?;
    let target = Target::of_pid(mntns, pending.pid())?;
    let tracing = indexed.arm(tracer, target)?;
    // The filter is armed: only now may the workload exec.
    let running = pending.release()?;
    let pid = Pid::from_raw(running.pid() as i32);
    let waiter = tokio::spawn(running.wait());
    // The workload is PID 1 of its namespace: SIGKILL takes the whole namespace, and its
    // mounts, down. It is not reaped before the waiter returns, so the pid is still its.
    let stop_workload = || async move {
        if let Err(error) = kill(pid, Signal::SIGKILL) {
            tracing::warn!(%error, "killing the workload");
        }
    };
    let conditions = StopConditions {
        period: args.common.period,
        until_exit: None,
    };
    let stopped = trace_until_exit(
        tracing,
        waiter,
        conditions,
        stops,
        stop_workload,
        WorkloadExit::of_status,
    )
    .await;
    let summary = match stopped {
        Ok((stopped, workload)) => {
            commit_unless_empty(stopped, &args.common, commit, status, workload.as_ref())
                .await
                .map(|summary| Outcome {
                    summary,
                    late_arm: None,
                    workload,
                })
        }
        Err(e) => Err(e),
    };
    drop(work);
    drop(unpacked);
    summary
}

/// Unpacks the image's layers into `work` (state `unpacking`) within `--max-unpacked`; a stop
/// cancels it within one 64 KiB chunk.
async fn unpack(
    args: &Args,
    indexed: &Indexed,
    work: &WorkDir,
    cache: Option<&LayerCache>,
    (status, stops): (&StatusHandle, &Stops),
) -> Result<Unpacked, AgentError> {
    status.set_state(State::Unpacking);
    let limit = match args.max_unpacked {
        Some(limit) => limit,
        None => (free_space(work.path())? as f64 * DEFAULT_UNPACKED_SHARE) as u64,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let mut budget = UnpackBudget::new(limit).cancel_on(cancel.clone());
    let image = indexed.image().clone();
    let dir = work.path().to_owned();
    let cache = cache.cloned();
    let cache_max = args.cache.cache_max;
    let mut task = tokio::task::spawn_blocking(move || {
        let unpacked = unpack_layers(&image, &dir, Some(limit), &mut budget, cache.as_ref())?;
        tracing::info!(
            bytes = budget.used(),
            limit,
            cached = unpacked.hits,
            layers = unpacked.dirs.len(),
            "layers unpacked"
        );
        if let (Some(cache), Some(max)) = (&cache, cache_max) {
            evict(cache, max);
        }
        Ok(unpacked)
    });
    let join = |e: tokio::task::JoinError| AgentError::Join(e.to_string());
    tokio::select! {
        result = &mut task => result.map_err(join)?,
        reason = stops.wait() => {
            cancel.store(true, Ordering::Relaxed);
            // Prompt: the unpacker checks the flag between chunks of 64 KiB.
            let _ = task.await;
            Err(AgentError::StoppedEarly(reason))
        }
    }
}

/// Brings the cache down to `max` bytes (`--cache-max`), least recently used first; logs
/// what it removed, and warns when the entries in use alone exceed it.
fn evict(cache: &LayerCache, max: u64) {
    match cache.evict_to(max) {
        Ok(removal) => {
            for entry in &removal.removed {
                tracing::info!(
                    diff_id = entry.diff_id,
                    bytes = entry.bytes,
                    "evicted from the layer cache (--cache-max)"
                );
            }
            let busy: u64 = removal.busy.iter().map(|e| e.bytes).sum();
            if busy > max {
                tracing::warn!(
                    in_use = busy,
                    max,
                    "the layer cache holds more than --cache-max: its entries in use by \
                     running recorders (this one's included) take that much"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "evicting from the layer cache"),
    }
}

/// Traces until the workload exits or a stop condition fires. On a stop the workload is killed
/// and waited for, so nothing of it outlives the run; either way its exit is logged, and
/// returned (unknown when waiting for it failed).
async fn trace_until_exit<T, E, K, F>(
    tracing: Tracing,
    mut waiter: JoinHandle<Result<T, E>>,
    conditions: StopConditions,
    stops: &Stops,
    kill: K,
    classify: impl Fn(&T) -> WorkloadExit,
) -> Result<(Stopped, Option<WorkloadExit>), AgentError>
where
    E: Display,
    K: FnOnce() -> F,
    F: Future<Output = ()>,
{
    let mut exit = None;
    let mut exited = false;
    let stopped = tracing
        .run(async {
            tokio::select! {
                result = &mut waiter => {
                    exited = true;
                    StopReason::WorkloadExited(match result {
                        Ok(Ok(status)) => {
                            let status = classify(&status);
                            let shown = status.to_string();
                            exit = Some(status);
                            shown
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    })
                }
                reason = conditions.wait(stops) => reason,
            }
        })
        .await;
    if !exited {
        // A workload that ended on its own as the stop came is not the recorder's doing.
        let killed = !waiter.is_finished();
        if killed {
            kill().await;
        }
        match waiter.await {
            Ok(Ok(status)) => {
                let mut status = classify(&status);
                status.stopped_by_recorder = killed;
                tracing::info!(status = %status, "workload stopped");
                exit = Some(status);
            }
            Ok(Err(error)) => tracing::warn!(%error, "waiting for the workload"),
            Err(error) => tracing::warn!(%error, "waiting for the workload"),
        }
    }
    Ok((stopped?, exit))
}
