//! A recording from the command line's options to its outcome, as `recorder record` and
//! `recorder run` make it; the binary parses flags into [`Options`], calls [`Recording`], and
//! prints the [`Outcome`](crate::agent::Outcome).
//!
//! - [`options`]: the one options value, and what only `record` ([`RecordPlan`]) or `run`
//!   ([`RunPlan`]) have.
//! - [`target`]: what `--target` names.
//! - [`input`]: the image and, with containerd, the connection it is read through.
//! - `record`: find the target, index, arm (late-arm warning), trace, commit.
//! - `run`: the same around a workload started under the armed filter, in the sandbox or
//!   through containerd.
//! - [`Recording`]: the status socket, the signals, and lingering after the outcome.

pub mod input;
pub mod options;
mod record;
mod run;
pub mod target;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::agent::{
    AgentError, CommitOptions, Outcome, Stopped, Stops, Summary, WorkDir, WorkloadExit,
};
use crate::sandbox::LayerCache;
use crate::status::{ServerHandle, StatusHandle, StopSignal, serve};

pub use input::{Connection, ImageInput, Input};
pub use options::{ImageSpec, Options, RecordPlan, RunPlan};
pub use target::TargetSpec;

use crate::agent::COMMIT_TIMEOUT;

/// The status socket's options.
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// Serve status, metrics and stop requests on this Unix socket.
    pub socket: Option<PathBuf>,
    /// After the outcome, keep the socket answering for this long.
    pub linger: Option<Duration>,
}

/// One recording's status, its stop signals and its status socket.
pub struct Recording {
    status: StatusHandle,
    stops: Stops,
    server: Option<ServerHandle>,
    linger: Option<Duration>,
    /// Kept until the outcome is printed (a run's unpacked layers), then removed.
    kept: Mutex<Option<WorkDir>>,
    /// A layer cache to rid of dead runs' half-made entries once the outcome is printed.
    sweep: Mutex<Option<LayerCache>>,
}

impl Recording {
    /// Catches SIGINT and SIGTERM and starts the status socket, before anything else can go
    /// wrong. Call it inside the runtime.
    pub fn start(options: &StatusOptions) -> Result<Self, AgentError> {
        let status = StatusHandle::new();
        let stop = StopSignal::new();
        let stops = Stops::install(stop.clone())?;
        let server = match &options.socket {
            Some(path) => Some(serve(path, status.clone(), stop)?),
            None => None,
        };
        Ok(Recording {
            status,
            stops,
            server,
            linger: options.linger,
            kept: Mutex::new(None),
            sweep: Mutex::new(None),
        })
    }

    /// The status the socket serves.
    pub fn status(&self) -> &StatusHandle {
        &self.status
    }

    /// The signals and stop requests.
    pub fn stops(&self) -> &Stops {
        &self.stops
    }

    /// Puts the outcome (or the error) on the status socket.
    pub fn conclude(&self, result: &Result<Outcome, AgentError>) {
        match result {
            Ok(outcome) => self.status.set_outcome(outcome.report()),
            Err(error) => self.status.fail(crate::errors::Chain(error)),
        }
    }

    /// Keeps `work` until [`Recording::printed`].
    fn keep(&self, work: WorkDir) {
        if let Ok(mut kept) = self.kept.lock() {
            *kept = Some(work);
        }
    }

    /// Sweeps `cache` of dead runs' half-made entries after [`Recording::printed`].
    fn sweep_after(&self, cache: LayerCache) {
        if let Ok(mut sweep) = self.sweep.lock() {
            *sweep = Some(cache);
        }
    }

    /// The outcome is out: what was kept for after it (a run's unpacked layers) is removed now,
    /// before any linger, and the layer cache rid of the half-made entries of runs killed while
    /// unpacking (which the next run of their layer would otherwise remove; removing one can
    /// take as long as unpacking it, so not before the workload runs).
    pub fn printed(&self) {
        let kept = self.kept.lock().ok().and_then(|mut kept| kept.take());
        drop(kept);
        let sweep = self.sweep.lock().ok().and_then(|mut sweep| sweep.take());
        if let Some(cache) = sweep {
            match cache.sweep_dead_makers() {
                Ok(removal) => {
                    for entry in &removal.removed {
                        tracing::info!(
                            path = %entry.path.display(),
                            "removed a half-made layer cache entry of a dead run"
                        );
                    }
                }
                Err(error) => tracing::warn!(
                    error = %crate::errors::Chain(&error),
                    "sweeping the layer cache"
                ),
            }
        }
    }

    /// Waits for SIGTERM, SIGINT or `POST /stop`; at once if one already stopped the
    /// recording (`--linger-until-signal`).
    pub async fn linger_until_signal(&self) {
        if self.stops.fired().is_none() {
            tracing::info!("finished; waiting for SIGTERM to exit");
        }
        let reason = self.stops.wait().await;
        tracing::info!(%reason, "exiting");
    }

    /// Closes the status socket, after the linger: until then it answers with the final state
    /// (`done` with the record digest and outcome, or `failed` with the error).
    pub async fn close(self) {
        let Some(server) = self.server else {
            return;
        };
        if let Some(linger) = self.linger {
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

    /// Commits `stopped`, unless nothing was recorded and empty records are not allowed: an
    /// empty record is an error that says what was seen instead, and nothing is committed.
    async fn commit(
        &self,
        options: &Options,
        stopped: Stopped,
        commit: &CommitOptions,
        workload: Option<&WorkloadExit>,
    ) -> Result<Summary, AgentError> {
        if stopped.record().is_empty() && !options.allow_empty {
            return Err(AgentError::EmptyRecord {
                detail: empty_detail(&stopped, workload),
            });
        }
        stopped
            .begin_commit()
            .commit_off_runtime(commit, COMMIT_TIMEOUT)
            .await
    }
}

/// What an empty recording saw instead: why it stopped, its events and exclusions, and how
/// the workload ended.
fn empty_detail(stopped: &Stopped, workload: Option<&WorkloadExit>) -> String {
    let c = stopped.counters();
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
    detail
}
