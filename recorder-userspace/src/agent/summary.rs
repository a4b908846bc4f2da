//! The end-of-run summary and the exit status it implies.

use std::collections::BTreeMap;
use std::fmt;

use super::commit::Committed;
use super::stop::StopReason;

/// Exit status: the record is committed and complete.
pub const EXIT_COMPLETE: u8 = 0;
/// Exit status: an error; the message says what, and where the record was kept if anywhere.
pub const EXIT_ERROR: u8 = 1;
/// Exit status: the record is committed but incomplete (the kernel dropped events).
pub const EXIT_INCOMPLETE: u8 = 3;

/// What a recording did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Why tracing stopped.
    pub stopped: StopReason,
    /// Events received.
    pub events: u64,
    /// Distinct paths recorded.
    pub recorded: u64,
    /// Failed opens and execs.
    pub failed: u64,
    /// Events not recorded, by reason.
    pub excluded: BTreeMap<String, u64>,
    /// Events lost before reaching the recorder (dropped by the kernel, or undecodable).
    pub lost: u64,
    /// What makes the record less trustworthy without failing it, e.g. a late arm.
    pub warnings: Vec<String>,
    /// Where the record went.
    pub committed: Committed,
}

impl Summary {
    /// Whether every event of the target reached the recorder.
    pub fn complete(&self) -> bool {
        self.lost == 0
    }

    /// [`EXIT_COMPLETE`] or [`EXIT_INCOMPLETE`].
    pub fn exit_status(&self) -> u8 {
        if self.complete() {
            EXIT_COMPLETE
        } else {
            EXIT_INCOMPLETE
        }
    }
}

impl Summary {
    /// The counters, one per line: what stopped tracing, events, paths, exclusions, drops,
    /// warnings.
    pub fn write_counts(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "stopped: {}", self.stopped)?;
        writeln!(f, "events: {}", self.events)?;
        writeln!(f, "recorded paths: {}", self.recorded)?;
        writeln!(f, "failed opens: {}", self.failed)?;
        let total: u64 = self.excluded.values().sum();
        write!(f, "excluded: {total}")?;
        for (reason, n) in &self.excluded {
            write!(f, " {reason}={n}")?;
        }
        writeln!(f)?;
        writeln!(f, "events lost: {}", self.lost)?;
        writeln!(f, "warnings: {}", self.warnings.len())?;
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }

    /// Where the record went: the `--record-out` file, the companion, the digest (last).
    pub fn write_where(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = &self.committed.record_out {
            writeln!(f, "record file: {}", path.display())?;
        }
        if let Some(companion) = &self.committed.companion {
            writeln!(f, "companion: {companion}")?;
        }
        write!(f, "record digest: {}", self.committed.record)
    }
}

/// As the [`Outcome`](super::outcome::Outcome) of a recording that knows nothing of its
/// workload or of a late arm.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        super::outcome::Outcome::from(self.clone()).fmt(f)
    }
}
