//! Stop conditions: a period, SIGINT/SIGTERM, every target process gone, or `POST /stop`.

use std::fmt;
use std::future::pending;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::AgentError;
use super::procs::Namespaces;
use crate::status::StopSignal;

/// How often `--until-exit` looks for the target's processes.
pub const EXIT_POLL: Duration = Duration::from_millis(100);

/// Why tracing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The period ended.
    Period(Duration),
    /// SIGINT or SIGTERM.
    Signal(&'static str),
    /// `POST /stop` on the status socket.
    Requested,
    /// No process of the target mount namespace is left.
    TargetExited,
    /// The workload of `recorder run` exited with this status.
    WorkloadExited(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Period(d) => write!(f, "period of {d:?} ended"),
            StopReason::Signal(name) => write!(f, "{name}"),
            StopReason::Requested => f.write_str("stop requested on the status socket"),
            StopReason::TargetExited => f.write_str("every target process exited"),
            StopReason::WorkloadExited(status) => write!(f, "workload exited ({status})"),
        }
    }
}

/// SIGINT/SIGTERM and `POST /stop`, funnelled into one [`StopSignal`] that remembers which
/// fired. Installed first thing so that a signal at any point ends in an orderly way.
#[derive(Clone, Debug)]
pub struct Stops {
    signal: StopSignal,
    by_signal: Arc<OnceLock<&'static str>>,
}

impl Stops {
    /// Catches SIGINT and SIGTERM from now on; `signal` is also the one the status socket fires.
    /// Must be called inside a tokio runtime.
    pub fn install(stop: StopSignal) -> Result<Self, AgentError> {
        let io = |source| AgentError::Io {
            op: "installing the SIGINT/SIGTERM handlers".into(),
            source,
        };
        let mut int = signal(SignalKind::interrupt()).map_err(io)?;
        let mut term = signal(SignalKind::terminate()).map_err(io)?;
        let by_signal = Arc::new(OnceLock::new());
        let stops = Self {
            signal: stop.clone(),
            by_signal: by_signal.clone(),
        };
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            let _ = by_signal.set(name);
            stop.trigger();
            // Keep the handlers installed: a second signal must not kill the agent mid-commit.
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
        });
        Ok(stops)
    }

    /// The signal the status socket's `POST /stop` fires.
    pub fn signal(&self) -> &StopSignal {
        &self.signal
    }

    /// Whether a signal or a stop request has arrived.
    pub fn fired(&self) -> Option<StopReason> {
        self.signal.is_triggered().then(|| self.reason())
    }

    /// Fails when a signal or a stop request has arrived: there is nothing to go on with.
    pub fn check(&self) -> Result<(), AgentError> {
        match self.fired() {
            Some(reason) => Err(AgentError::StoppedEarly(reason)),
            None => Ok(()),
        }
    }

    /// Completes on a signal or a stop request.
    pub async fn wait(&self) -> StopReason {
        self.signal.triggered().await;
        self.reason()
    }

    fn reason(&self) -> StopReason {
        match self.by_signal.get() {
            Some(name) => StopReason::Signal(name),
            None => StopReason::Requested,
        }
    }
}

/// The conditions beyond signals and stop requests.
#[derive(Debug, Clone, Default)]
pub struct StopConditions {
    /// Stop after this long.
    pub period: Option<Duration>,
    /// Stop once no process of these mount namespaces is left (see [`Tracing::namespaces`]).
    ///
    /// [`Tracing::namespaces`]: super::Tracing::namespaces
    pub until_exit: Option<Namespaces>,
}

impl StopConditions {
    /// Completes when the first condition, or `stops`, fires.
    pub async fn wait(&self, stops: &Stops) -> StopReason {
        let period = async {
            match self.period {
                Some(d) => {
                    tokio::time::sleep(d).await;
                    StopReason::Period(d)
                }
                None => pending().await,
            }
        };
        let exited = async {
            match &self.until_exit {
                Some(namespaces) => until_exit(namespaces).await,
                None => pending().await,
            }
        };
        tokio::select! {
            reason = stops.wait() => reason,
            reason = period => reason,
            reason = exited => reason,
        }
    }
}

/// How long an empty scan waits for the tracing loop to drain the ring.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// Completes once no process is left in any of the recording's mount namespaces (the armed
/// one, and those its tasks made).
pub async fn until_exit(namespaces: &Namespaces) -> StopReason {
    loop {
        match namespaces.processes() {
            // Believed only once the namespaces reported before the scan are known (see
            // Namespaces): then a second empty scan is the truth. A tracing loop that does not
            // answer within the limit has stopped anyway.
            Ok(pids) if pids.is_empty() => {
                namespaces.settle(SETTLE_LIMIT).await;
                if namespaces.processes().is_ok_and(|p| p.is_empty()) {
                    return StopReason::TargetExited;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %crate::errors::Chain(&error), "scanning /proc for the target's processes")
            }
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}
