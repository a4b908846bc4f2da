//! [`Stopped`]: the record complete in memory; [`Committing`]: written out, the summary made
//! of the core's counters.

use std::time::Duration;

use crate::record::RecordBuilder;
use crate::status::{Counters, State, StatusHandle};
use crate::tracer::{EventStream, Tracer};

use super::AgentError;
use super::commit::{CommitOptions, commit};
use super::stop::StopReason;
use super::summary::Summary;

/// Tracing has stopped; the record is complete in memory.
#[derive(Debug)]
pub struct Stopped {
    pub(super) status: StatusHandle,
    pub(super) record: RecordBuilder,
    pub(super) counters: Counters,
    pub(super) reason: StopReason,
    pub(super) warnings: Vec<String>,
    /// Disarmed but still attached, with its ring: detaching and unmapping wait for the kernel
    /// (about 260 ms measured), so they happen after the commit, off the critical path.
    pub(super) kernel: (Tracer, EventStream),
}

impl Stopped {
    /// The record so far.
    pub fn record(&self) -> &RecordBuilder {
        &self.record
    }

    /// What was counted while tracing.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Why tracing stopped.
    pub fn reason(&self) -> &StopReason {
        &self.reason
    }

    /// Starts writing out (state `committing`).
    pub fn begin_commit(self) -> Committing {
        self.status.set_state(State::Committing);
        Committing { inner: self }
    }
}

/// The record is being written out.
#[derive(Debug)]
pub struct Committing {
    inner: Stopped,
}

/// How long a commit may take before the record is saved to a fallback file instead: records
/// are megabytes at most, so only a store that stopped answering takes this long.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);

impl Committing {
    /// As [`Committing::commit`], on a blocking thread so that the runtime, and the status
    /// socket served on it, keep answering meanwhile. After `timeout` it stops waiting: the
    /// record is saved to a fallback file, and the commit is reported as timed out.
    pub async fn commit_off_runtime(
        self,
        opts: &CommitOptions,
        timeout: Duration,
    ) -> Result<Summary, AgentError> {
        let status = self.inner.status.clone();
        let bytes = self.inner.record.to_bytes();
        let owned = opts.clone();
        let task = tokio::task::spawn_blocking(move || self.commit(&owned));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(AgentError::Join(join)),
            Err(_) => {
                let kept = super::commit::keep_fallback(&opts.fallback_dir, &bytes);
                let error = super::CommitError::TimedOut {
                    after: timeout,
                    kept,
                };
                status.fail(crate::errors::Chain(&error));
                Err(error.into())
            }
        }
    }

    /// Writes the record (state `done` with its digest, or `failed` naming where it was kept).
    pub fn commit(self, opts: &CommitOptions) -> Result<Summary, AgentError> {
        let Stopped {
            status,
            record,
            counters,
            reason,
            warnings,
            kernel,
        } = self.inner;
        let committed = commit(&record, opts);
        if kernel.0.detaches_in_background() {
            // A few milliseconds (a fork): done here, so that it is done before the process
            // exits. On a thread of its own the process's exit won the race about one run in
            // two, and the exit then waited out the kernel's detach itself (0.5 s).
            drop(kernel);
        } else {
            // Nothing depends on the detach finishing; if the process exits first, the kernel
            // detaches as it closes the program fds.
            std::thread::spawn(move || drop(kernel));
        }
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                status.fail(crate::errors::Chain(&e));
                return Err(e.into());
            }
        };
        status.set_record_digest(committed.record.to_string());
        status.set_state(State::Done);
        Ok(Summary {
            stopped: reason,
            events: counters.events,
            recorded: counters.recorded_paths,
            failed: counters.failed_opens,
            excluded: counters.excluded,
            lost: counters.lost,
            warnings,
            committed,
        })
    }
}
