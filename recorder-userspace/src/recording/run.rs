//! `recorder run`: the image's workload started under the armed filter, in a private sandbox
//! or through containerd, traced until it exits or a stop condition fires.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::task::JoinHandle;

use crate::agent::workdir::{DEFAULT_UNPACKED_SHARE, free_space};
use crate::agent::{
    Agent, AgentError, CommitOptions, Indexed, Opened, Outcome, StopConditions, StopReason,
    Stopped, Target, Tracing, UnpackTo, Unpacked, WorkDir, WorkloadExit,
};
use crate::containerd::{ContainerRun, RunRequest};
use crate::image::BlobDigest;
use crate::sandbox::{LayerCache, Sandbox, UnpackBudget};
use crate::status::State;
use crate::tracer::{Tracer, mount_namespace_of};

use super::Recording;
use super::input::{Connection, ImageInput, Input};
use super::options::{ImageSpec, Options, RunPlan};
use super::record::stop_conditions;

impl Recording {
    /// Runs the image's workload under the armed filter until it exits or a stop condition
    /// fires, and commits the record.
    pub async fn run(
        &self,
        options: &Options,
        input: Input,
        plan: &RunPlan,
    ) -> Result<Outcome, AgentError> {
        match (input.image, input.containerd.as_ref()) {
            (Some(image), Some(connection)) => {
                self.run_containerd(options, image, connection, plan).await
            }
            (Some(ImageInput::Source(_)) | None, None) | (None, Some(_)) => {
                self.run_sandboxed(options, plan).await
            }
            (Some(ImageInput::Containerd(..)), None) => Err(AgentError::Target {
                target: "containerd run".into(),
                message: "an image from containerd without its connection".into(),
            }),
        }
    }

    async fn run_containerd(
        &self,
        options: &Options,
        input: ImageInput,
        connection: &Connection,
        plan: &RunPlan,
    ) -> Result<Outcome, AgentError> {
        let status = &self.status;
        status.set_target(format!("run {} (containerd)", connection.reference));
        // As in a sandboxed run: the programs load while the image is indexed and its task
        // created; on a way out before the arm, the task ends on its own.
        let loading = load_tracer(options);
        let indexed = input
            .index_or_stop(Agent::new(status.clone()), options.platform(), &self.stops)
            .await?;
        self.stops.check()?;
        options.check_platform(indexed.image())?;
        let commit = options.commit_options(Some(connection), indexed.image().manifest_digest())?;
        // Holds the workload's stdout and stderr FIFOs; removed on every way out.
        let work = WorkDir::create(&options.work_dir)?;
        let watchdog = work.watchdog();
        let request = RunRequest {
            image: indexed.image(),
            reference: &connection.reference,
            overrides: &plan.overrides,
            io_dir: work.path(),
            confinement: plan.confinement,
            binds: &plan.binds,
            watchdog: Some(&watchdog),
        };
        // A recorder that was SIGKILLed left its task running and its container, snapshot and
        // lease behind: removed first.
        let reclaimed = connection.client.reclaim_dead_runs().await;
        if !reclaimed.is_empty() {
            tracing::warn!(
                runs = reclaimed.join(" "),
                "removed the leftovers of a dead recorder"
            );
        }
        let mut run = connection.client.create_run(&request).await?;
        let mut output = run.forward_output(options.stdout_taken);
        let result = self.trace_run(options, indexed, &run, loading).await;
        // All the output is out before the record's digest is printed. After an exit it ends
        // once the shim has copied the rest, which is waited for before Tasks.Delete (which
        // gives that copying only 2 s); without one, the task may still be there, and removing
        // it ends it.
        if matches!(result, Ok((_, Some(_)))) {
            output.finish().await;
        }
        // Whatever happened, the task, container, snapshot and lease go before the commit.
        run.remove().await;
        output.finish().await;
        drop(work);
        let (stopped, workload) = result?;
        let summary = self
            .commit(options, stopped, &commit, workload.as_ref())
            .await?;
        Ok(Outcome {
            summary,
            late_arm: None,
            workload,
        })
    }

    /// Arms the filter on the created task, starts it, and traces until it exits or a stop
    /// condition fires (then kills it and waits for it).
    async fn trace_run(
        &self,
        options: &Options,
        indexed: Indexed,
        run: &ContainerRun,
        loading: JoinHandle<Result<Tracer, crate::tracer::TracerError>>,
    ) -> Result<(Stopped, Option<WorkloadExit>), AgentError> {
        self.stops.check()?;
        let pid = run.pid();
        let mntns = mount_namespace_of(pid).map_err(|e| AgentError::TargetUnreadable {
            target: format!("container:{}", run.id()),
            op: "reading its mount namespace",
            source: Box::new(e),
        })?;
        let tracer = loading.await.map_err(AgentError::Join)??;
        let tracing = indexed.arm(tracer, Target::of_pid(mntns, pid)?)?;
        // The filter is armed: only now may runc execute the workload.
        run.start().await?;
        let waiter = tokio::spawn(run.wait());
        let stop_workload = || async {
            if let Err(error) = run.kill().await {
                tracing::warn!(error = %crate::errors::Chain(&error), "killing the workload");
            }
        };
        // containerd reports a task killed by signal N as exit status 128 + N, as a shell does.
        self.trace_until_exit(
            tracing,
            waiter,
            stop_conditions(options, None),
            stop_workload,
            |code| WorkloadExit::code(i32::try_from(*code).unwrap_or(i32::MAX)),
        )
        .await
    }

    async fn run_sandboxed(
        &self,
        options: &Options,
        plan: &RunPlan,
    ) -> Result<Outcome, AgentError> {
        let ImageSpec::Local(source) = &options.image else {
            return Err(AgentError::Target {
                target: "run".into(),
                message: "a sandboxed run needs a local image".into(),
            });
        };
        let commit = options.commit_options(None, &BlobDigest::of(b""))?;
        let status = &self.status;
        status.set_target(format!("run {source}"));
        // The programs load while the image is indexed and unpacked (see load_tracer). On a
        // way out before the arm, the task ends on its own and its tracer detaches as it drops.
        let loading = load_tracer(options);
        // A stop while indexing is acted on at once: the indexing thread is left to the
        // runtime's shutdown (it writes nothing but whole stored indexes).
        let opened = tokio::select! {
            biased;
            reason = self.stops.wait() => return Err(AgentError::StoppedEarly(reason)),
            opened = Agent::new(status.clone())
                .index_cache(plan.cache.as_ref().map(LayerCache::indexes))
                .open_for_run(source.clone(), options.platform()) => opened?,
        };
        options.check_platform(opened.image())?;
        // Removes the layers when dropped: on a way out of this function, after the sandbox,
        // or once the outcome is printed (see Recording::keep).
        let work = WorkDir::create(&options.work_dir)?;
        let result = self
            .sandboxed(options, plan, opened, &work, &commit, loading)
            .await;
        if result.is_ok() {
            // The digest goes out first: removing the unpacked layers takes as long as the
            // image has files.
            self.keep(work);
            if let Some(cache) = &plan.cache {
                self.sweep_after(cache.clone());
            }
        }
        result
    }

    async fn sandboxed(
        &self,
        options: &Options,
        plan: &RunPlan,
        opened: Opened,
        work: &WorkDir,
        commit: &CommitOptions,
        loading: JoinHandle<Result<Tracer, crate::tracer::TracerError>>,
    ) -> Result<Outcome, AgentError> {
        // `unpacked` is held to the end of the run: its shared locks keep the cache entries
        // the overlay is made of from eviction by other runs.
        let (indexed, unpacked) = self.unpack(plan, opened, work).await?;
        let lowerdirs = unpacked.dirs.clone();
        self.stops.check()?;
        let spec = plan.overrides.spec(indexed.image(), &lowerdirs)?;
        // Awaited before the workload exists, so it is held before exec as briefly as possible.
        let tracer = loading.await.map_err(AgentError::Join)??;
        let mut sandbox = Sandbox::new(lowerdirs, work.scratch(), spec);
        if options.stdout_taken {
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
            .confinement(plan.confinement)
            .binds(plan.binds.clone())
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
                tracing::warn!(error = %crate::errors::Chain(&error), "killing the workload");
            }
        };
        let (stopped, workload) = self
            .trace_until_exit(
                tracing,
                waiter,
                stop_conditions(options, None),
                stop_workload,
                WorkloadExit::of_status,
            )
            .await?;
        let summary = self
            .commit(options, stopped, commit, workload.as_ref())
            .await?;
        drop(unpacked);
        Ok(Outcome {
            summary,
            late_arm: None,
            workload,
        })
    }

    /// Unpacks the image's layers into `work` or the cache (state `unpacking`) within the
    /// budget, indexing those not indexed yet in the same pass; a stop cancels it within one
    /// 64 KiB chunk.
    async fn unpack(
        &self,
        plan: &RunPlan,
        opened: Opened,
        work: &WorkDir,
    ) -> Result<(Indexed, Unpacked), AgentError> {
        self.status.set_state(State::Unpacking);
        let limit = match plan.max_unpacked {
            Some(limit) => limit,
            None => (free_space(work.path())? as f64 * DEFAULT_UNPACKED_SHARE) as u64,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        // The layers' bytes as stored, read once each (a cached layer counts as read): the
        // bar's total. What they unpack to is not known before a layer not indexed yet is read.
        let total = opened.image().layers().iter().map(|l| l.size).sum();
        let progress = crate::progress::Progress::bytes("unpacking", total);
        let mut budget = UnpackBudget::new(limit).cancel_on(cancel.clone());
        let to = UnpackTo {
            work: work.path().to_owned(),
            limit: Some(limit),
            cache: None,
            progress: Some(progress.counter()),
        };
        let cache = plan.cache.clone();
        let cache_max = plan.cache_max;
        let mut task = tokio::task::spawn_blocking(move || {
            let to = UnpackTo {
                cache: cache.as_ref(),
                ..to
            };
            let (indexed, unpacked) = opened.unpack(&to, &mut budget)?;
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
            Ok::<_, AgentError>((indexed, unpacked))
        });
        tokio::select! {
            result = &mut task => result.map_err(AgentError::Join)?,
            reason = self.stops.wait() => {
                cancel.store(true, Ordering::Relaxed);
                // Prompt: the unpacker checks the flag between chunks of 64 KiB.
                let _ = task.await;
                Err(AgentError::StoppedEarly(reason))
            }
        }
    }

    /// Traces until the workload exits or a stop condition fires. On a stop the workload is
    /// killed and waited for, so nothing of it outlives the run; either way its exit is
    /// logged, and returned (unknown when waiting for it failed).
    async fn trace_until_exit<T, E, K, F>(
        &self,
        tracing: Tracing,
        mut waiter: JoinHandle<Result<T, E>>,
        conditions: StopConditions,
        kill: K,
        classify: impl Fn(&T) -> WorkloadExit,
    ) -> Result<(Stopped, Option<WorkloadExit>), AgentError>
    where
        E: std::error::Error,
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
                            // The reason is shown on one line: the error with its causes.
                            Ok(Err(e)) => crate::errors::Chain(&e).to_string(),
                            Err(e) => crate::errors::Chain(&e).to_string(),
                        })
                    }
                    reason = conditions.wait(&self.stops) => reason,
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
                Ok(Err(error)) => {
                    tracing::warn!(error = %crate::errors::Chain(&error), "waiting for the workload")
                }
                Err(error) => {
                    tracing::warn!(error = %crate::errors::Chain(&error), "waiting for the workload")
                }
            }
        }
        Ok((stopped?, exit))
    }
}

/// Brings the cache down to `max` bytes (`--cache-max`), least recently used first; logs
/// what it removed, and warns when the entries in use alone exceed it.
/// Loads and attaches the eBPF programs on a blocking thread, started now: the verifier and
/// the attach are the largest fixed cost of a run (0.28 s on a quiet machine, 0.7 s on a loaded
/// one, against 0.2 s for indexing and unpacking the demo image; docs/benchmarks.md), so they
/// overlap the image's indexing and unpacking (or its task's creation). Nothing is traced until
/// the filter is armed.
fn load_tracer(options: &Options) -> JoinHandle<Result<Tracer, crate::tracer::TracerError>> {
    let config = options.tracer.clone();
    tokio::task::spawn_blocking(move || {
        let start = std::time::Instant::now();
        let tracer = Tracer::load(&config);
        if tracer.is_ok() {
            tracing::info!(
                took_ms = start.elapsed().as_millis() as u64,
                "eBPF programs loaded"
            );
        }
        tracer
    })
}

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
        Err(error) => {
            tracing::warn!(error = %crate::errors::Chain(&error), "evicting from the layer cache")
        }
    }
}
