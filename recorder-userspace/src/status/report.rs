//! The agent's live status: a cheap shared handle and the serializable snapshot of it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::state::{State, StateChange};
use super::time::rfc3339;
use crate::agent::OutcomeReport;

/// Counters of the tracing loop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Events received from the kernel.
    pub events: u64,
    /// Distinct paths written to the record.
    pub recorded_paths: u64,
    /// Opens that failed in the workload (not recorded).
    pub failed_opens: u64,
    /// Events not recorded, by reason.
    pub excluded: BTreeMap<String, u64>,
    /// Events lost before they could be recorded: dropped by the kernel (a full ring buffer,
    /// too many calls in flight, a full filter) or undecodable.
    pub lost: u64,
}

/// A point-in-time copy of the status, as `GET /status` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The current state.
    pub state: State,
    /// When the current state began.
    pub since: String,
    /// Every state entered so far, oldest first, with the time each began.
    pub states: Vec<StateChange>,
    /// What is being traced (container id or image reference), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The image manifest digest, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// The tracing counters.
    pub counters: Counters,
    /// The digest of the committed record, once committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_digest: Option<String>,
    /// Why the agent failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Once committed: the verdict, the exit status the recorder ends with, and how the
    /// workload ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeReport>,
}

impl StatusReport {
    /// Whether `state` has been entered at some point (now or earlier).
    pub fn has_reached(&self, state: State) -> bool {
        self.states.iter().any(|change| change.state == state)
    }

    /// Whether `state`, or a later one of a successful run, has been entered: a recording
    /// goes through only some of the states (`armed` only while waiting for a container,
    /// `unpacking` only under `run`), so one that is `tracing` has passed `armed`. `failed`
    /// passes nothing but itself.
    pub fn has_passed(&self, state: State) -> bool {
        self.has_reached(state)
            || (state != State::Failed
                && self
                    .states
                    .iter()
                    .any(|change| change.state != State::Failed && change.state > state))
    }
}

/// Rarely-changing fields, behind one lock.
#[derive(Debug)]
struct Slow {
    states: Vec<(State, SystemTime)>,
    target: Option<String>,
    manifest_digest: Option<String>,
    record_digest: Option<String>,
    error: Option<String>,
    outcome: Option<OutcomeReport>,
}

#[derive(Debug)]
struct Inner {
    slow: Mutex<Slow>,
    events: AtomicU64,
    recorded_paths: AtomicU64,
    failed_opens: AtomicU64,
    lost: AtomicU64,
    // Reasons are few and fixed early, so the write lock is taken a handful of times.
    excluded: RwLock<BTreeMap<String, AtomicU64>>,
}

/// The agent's shared, cheaply clonable status. Counter updates are lock-free atomics.
#[derive(Clone, Debug)]
pub struct StatusHandle {
    inner: Arc<Inner>,
}

impl Default for StatusHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusHandle {
    /// A status in state `starting`, begun now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                slow: Mutex::new(Slow {
                    states: vec![(State::Starting, SystemTime::now())],
                    target: None,
                    manifest_digest: None,
                    record_digest: None,
                    error: None,
                    outcome: None,
                }),
                events: AtomicU64::new(0),
                recorded_paths: AtomicU64::new(0),
                failed_opens: AtomicU64::new(0),
                lost: AtomicU64::new(0),
                excluded: RwLock::new(BTreeMap::new()),
            }),
        }
    }

    fn slow(&self) -> MutexGuard<'_, Slow> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.inner.slow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to `state`, stamping the time. Ignored (with a warning) once `done` or `failed`,
    /// and when `state` is already the current one.
    pub fn set_state(&self, state: State) {
        let mut slow = self.slow();
        let current = slow.states.last().map_or(State::Starting, |(s, _)| *s);
        if current == state {
            return;
        }
        if current.is_terminal() {
            tracing::warn!(%current, requested = %state, "ignoring state change after a terminal state");
            return;
        }
        tracing::debug!(from = %current, to = %state, "status state change");
        slow.states.push((state, SystemTime::now()));
    }

    /// Moves to `failed` and records why. The first failure wins.
    pub fn fail(&self, error: impl fmt::Display) {
        let mut slow = self.slow();
        let current = slow.states.last().map_or(State::Starting, |(s, _)| *s);
        if current.is_terminal() {
            tracing::warn!(%current, %error, "ignoring failure after a terminal state");
            return;
        }
        slow.error = Some(error.to_string());
        slow.states.push((State::Failed, SystemTime::now()));
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.slow()
            .states
            .last()
            .map_or(State::Starting, |(s, _)| *s)
    }

    /// Sets what is being traced.
    pub fn set_target(&self, target: impl Into<String>) {
        self.slow().target = Some(target.into());
    }

    /// Sets the image manifest digest.
    pub fn set_manifest_digest(&self, digest: impl Into<String>) {
        self.slow().manifest_digest = Some(digest.into());
    }

    /// Sets the digest of the committed record.
    pub fn set_record_digest(&self, digest: impl Into<String>) {
        self.slow().record_digest = Some(digest.into());
    }

    /// Sets what the committed record is worth (see [`crate::agent::outcome`]).
    pub fn set_outcome(&self, outcome: OutcomeReport) {
        self.slow().outcome = Some(outcome);
    }

    /// Counts `n` events received from the kernel.
    pub fn add_events(&self, n: u64) {
        self.inner.events.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` newly recorded paths.
    pub fn add_recorded_paths(&self, n: u64) {
        self.inner.recorded_paths.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` failed opens.
    pub fn add_failed_opens(&self, n: u64) {
        self.inner.failed_opens.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the count of lost events to `total` (the kernel keeps the running total).
    pub fn set_lost(&self, total: u64) {
        self.inner.lost.store(total, Ordering::Relaxed);
    }

    /// Counts `n` events excluded for `reason` (a short kebab-case word, e.g. `not-in-image`).
    pub fn add_excluded(&self, reason: &str, n: u64) {
        {
            let map = self
                .inner
                .excluded
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(counter) = map.get(reason) {
                counter.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self
            .inner
            .excluded
            .write()
            .unwrap_or_else(|e| e.into_inner());
        map.entry(reason.to_owned())
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The counters as they are now.
    pub fn counters(&self) -> Counters {
        let excluded = self
            .inner
            .excluded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(reason, n)| (reason.clone(), n.load(Ordering::Relaxed)))
            .collect();
        Counters {
            events: self.inner.events.load(Ordering::Relaxed),
            recorded_paths: self.inner.recorded_paths.load(Ordering::Relaxed),
            failed_opens: self.inner.failed_opens.load(Ordering::Relaxed),
            excluded,
            lost: self.inner.lost.load(Ordering::Relaxed),
        }
    }

    /// The current state's start time, for metrics.
    pub(crate) fn state_since(&self) -> (State, SystemTime) {
        self.slow()
            .states
            .last()
            .copied()
            .unwrap_or((State::Starting, SystemTime::UNIX_EPOCH))
    }

    /// A consistent copy of everything, for `GET /status`.
    pub fn snapshot(&self) -> StatusReport {
        let counters = self.counters();
        let slow = self.slow();
        let states: Vec<StateChange> = slow
            .states
            .iter()
            .map(|(state, at)| StateChange {
                state: *state,
                since: rfc3339(*at),
            })
            .collect();
        let (state, since) = states
            .last()
            .map(|c| (c.state, c.since.clone()))
            .unwrap_or((State::Starting, String::new()));
        StatusReport {
            state,
            since,
            states,
            target: slow.target.clone(),
            manifest_digest: slow.manifest_digest.clone(),
            counters,
            record_digest: slow.record_digest.clone(),
            error: slow.error.clone(),
            outcome: slow.outcome.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which states a history has passed: `armed` and `buffering` are passed by a recording
    /// that went on without them; `failed` passes nothing else.
    #[test]
    fn passed_states() {
        use State::*;
        let cases: &[(&[State], &[State], &[State])] = &[
            // A pod's sidecar: armed, then its target caught before the image is indexed.
            (
                &[Starting, Armed, Buffering],
                &[Starting, Indexing, Armed, Buffering],
                &[Tracing, Committing, Done, Failed],
            ),
            (
                &[Starting, Armed, Buffering, Tracing],
                &[Armed, Buffering, Tracing],
                &[Committing, Done],
            ),
            // A running container's: indexed, then traced at once.
            (
                &[Starting, Indexing, Tracing],
                &[Indexing, Armed, Buffering, Tracing],
                &[Committing],
            ),
            (
                &[Starting, Armed, Failed],
                &[Armed, Failed],
                &[Buffering, Tracing],
            ),
        ];
        for (history, passed, not) in cases {
            let status = StatusHandle::new();
            for state in *history {
                match state {
                    Failed => status.fail("boom"),
                    state => status.set_state(*state),
                }
            }
            let report = status.snapshot();
            for state in *passed {
                assert!(report.has_passed(*state), "{history:?} {state}");
            }
            for state in *not {
                assert!(!report.has_passed(*state), "{history:?} {state}");
            }
        }
    }

    #[test]
    fn terminal_states_stick() {
        let status = StatusHandle::new();
        status.set_state(State::Tracing);
        status.fail("boom");
        status.set_state(State::Done);
        status.fail("second");
        let report = status.snapshot();
        assert_eq!(report.state, State::Failed);
        assert_eq!(report.error.as_deref(), Some("boom"));
        let seen: Vec<State> = report.states.iter().map(|c| c.state).collect();
        assert_eq!(seen, [State::Starting, State::Tracing, State::Failed]);
        assert!(report.has_reached(State::Tracing));
        assert!(!report.has_reached(State::Indexing));
        assert!(report.has_passed(State::Armed));
        assert!(report.has_passed(State::Tracing));
        assert!(!report.has_passed(State::Committing));
        assert!(!report.has_passed(State::Done));
    }

    #[test]
    fn counters_accumulate() {
        let status = StatusHandle::new();
        status.add_events(3);
        status.add_events(2);
        status.add_recorded_paths(1);
        status.add_failed_opens(4);
        status.add_excluded("not-in-image", 2);
        status.add_excluded("not-in-image", 1);
        status.add_excluded("pseudo-fs", 1);
        status.set_lost(7);
        let c = status.counters();
        assert_eq!(
            (c.events, c.recorded_paths, c.failed_opens, c.lost),
            (5, 1, 4, 7)
        );
        assert_eq!(c.excluded["not-in-image"], 3);
        assert_eq!(c.excluded["pseudo-fs"], 1);
    }
}
