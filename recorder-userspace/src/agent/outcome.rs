//! What a recording's result means, for a person (the summary), a poller (the status socket),
//! a script (`--json`) and the shell (the exit status).
//!
//! | exit | meaning |
//! | --- | --- |
//! | 0 | the record is committed and complete |
//! | 1 | an error (an empty record without `--allow-empty` is one) |
//! | 2 | a usage error: bad options, found before anything ran |
//! | 3 | committed but incomplete: the kernel dropped events, or the filter was armed after the workload had started |
//! | 4 | committed, but the workload failed: its exit status is in the summary and the JSON |
//!
//! A failed workload wins over an incomplete record: both are reported, and 4 says the profile
//! itself is suspect, whatever the kernel delivered.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::summary::{EXIT_COMPLETE, EXIT_INCOMPLETE, Summary};

/// Exit status: bad usage (an option value or path refused before anything ran); clap uses
/// the same for the errors it finds.
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the record is committed, but the workload exited with a failure.
pub const EXIT_WORKLOAD_FAILED: u8 = 4;

/// How the workload of `recorder run` ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadExit {
    /// Its exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Whether the recorder ended it (a period, a signal or `POST /stop`): then how it died says
    /// nothing about the workload.
    pub stopped_by_recorder: bool,
}

impl WorkloadExit {
    /// An exit by code.
    pub fn code(code: i32) -> Self {
        Self {
            code: Some(code),
            signal: None,
            stopped_by_recorder: false,
        }
    }

    /// From a wait status of a child process.
    pub fn of_status(status: &std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Self {
            code: status.code(),
            signal: status.signal(),
            stopped_by_recorder: false,
        }
    }

    /// Whether the workload failed on its own: a non-zero code, or a signal the recorder did
    /// not send.
    pub fn failed(&self) -> bool {
        !self.stopped_by_recorder && self.code != Some(0)
    }
}

impl fmt::Display for WorkloadExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit status {code}")?,
            (None, Some(signal)) => write!(f, "killed by signal {signal}")?,
            (None, None) => f.write_str("ended, status unknown")?,
        }
        if self.stopped_by_recorder {
            f.write_str(", stopped by the recorder")?;
        }
        Ok(())
    }
}

/// The verdict on a committed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Exit 0.
    Complete,
    /// Exit 3.
    Incomplete,
    /// Exit 4.
    WorkloadFailed,
}

/// A committed record and what it is worth.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Counters and where the record went.
    pub summary: Summary,
    /// Set when the filter was armed after the workload had started: its first reads may be
    /// missing. Says which container.
    pub late_arm: Option<String>,
    /// How the workload ended, when the recorder started it.
    pub workload: Option<WorkloadExit>,
}

impl From<Summary> for Outcome {
    fn from(summary: Summary) -> Self {
        Self {
            summary,
            late_arm: None,
            workload: None,
        }
    }
}

impl Outcome {
    /// Why the record is incomplete; empty when it is not.
    pub fn incomplete_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.summary.lost > 0 {
            reasons.push(format!("{} events lost", self.summary.lost));
        }
        if let Some(late) = &self.late_arm {
            reasons.push(format!("armed after the workload started ({late})"));
        }
        reasons
    }

    /// Complete, incomplete, or the workload failed.
    pub fn verdict(&self) -> Verdict {
        if self.workload.as_ref().is_some_and(WorkloadExit::failed) {
            Verdict::WorkloadFailed
        } else if self.incomplete_reasons().is_empty() {
            Verdict::Complete
        } else {
            Verdict::Incomplete
        }
    }

    /// The process exit status this outcome implies (see the module's table).
    pub fn exit_status(&self) -> u8 {
        match self.verdict() {
            Verdict::Complete => EXIT_COMPLETE,
            Verdict::Incomplete => EXIT_INCOMPLETE,
            Verdict::WorkloadFailed => EXIT_WORKLOAD_FAILED,
        }
    }

    /// The serializable form, for the status socket and `--json`.
    pub fn report(&self) -> OutcomeReport {
        let s = &self.summary;
        OutcomeReport {
            verdict: self.verdict(),
            exit_status: self.exit_status(),
            incomplete: self.incomplete_reasons(),
            workload: self.workload.clone(),
            stopped: s.stopped.to_string(),
            events: s.events,
            recorded_paths: s.recorded,
            failed_opens: s.failed,
            excluded: s.excluded.clone(),
            events_lost: s.lost,
            warnings: s.warnings.clone(),
            record_digest: s.committed.record.to_string(),
            companion_digest: s.committed.companion.as_ref().map(ToString::to_string),
            record_file: s
                .committed
                .record_out
                .as_ref()
                .map(|p| p.display().to_string()),
        }
    }
}

/// An outcome as JSON (camelCase keys): on the status socket once committed, and the
/// `--json` summary of `record` and `run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeReport {
    /// Complete, incomplete or workloadFailed.
    pub verdict: Verdict,
    /// The exit status the recorder ends with.
    pub exit_status: u8,
    /// Why the record is incomplete, if it is.
    pub incomplete: Vec<String>,
    /// How the workload ended, when the recorder started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadExit>,
    /// What stopped tracing.
    pub stopped: String,
    /// Events received.
    pub events: u64,
    /// Distinct paths recorded.
    pub recorded_paths: u64,
    /// Failed opens and execs.
    pub failed_opens: u64,
    /// Events not recorded, by reason.
    pub excluded: std::collections::BTreeMap<String, u64>,
    /// Events lost before reaching the recorder.
    pub events_lost: u64,
    /// What makes the record less trustworthy without failing it.
    pub warnings: Vec<String>,
    /// The committed record.
    pub record_digest: String,
    /// Its companion, when there were extras.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companion_digest: Option<String>,
    /// The `--record-out` file, when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_file: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.summary.write_counts(f)?;
        if let Some(workload) = &self.workload {
            writeln!(f, "workload: {workload}")?;
        }
        let incomplete = self.incomplete_reasons();
        match self.verdict() {
            Verdict::Complete => writeln!(f, "record: complete")?,
            Verdict::Incomplete => writeln!(
                f,
                "record: INCOMPLETE ({}; exit status {EXIT_INCOMPLETE})",
                incomplete.join("; ")
            )?,
            Verdict::WorkloadFailed => {
                let also = if incomplete.is_empty() {
                    String::new()
                } else {
                    format!(", and INCOMPLETE: {}", incomplete.join("; "))
                };
                writeln!(
                    f,
                    "record: committed, but the WORKLOAD FAILED ({}{also}; exit status \
                     {EXIT_WORKLOAD_FAILED})",
                    self.workload
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )?
            }
        }
        self.summary.write_where(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Committed, StopReason};
    use crate::image::BlobDigest;

    fn summary(lost: u64) -> Summary {
        Summary {
            stopped: StopReason::Requested,
            events: 1,
            recorded: 1,
            failed: 0,
            excluded: Default::default(),
            lost,
            warnings: Vec::new(),
            committed: Committed {
                record: BlobDigest::of(b"x"),
                companion: None,
                record_out: None,
            },
        }
    }

    #[test]
    fn exit_statuses() {
        let killed = WorkloadExit {
            code: None,
            signal: Some(9),
            stopped_by_recorder: true,
        };
        let crashed = WorkloadExit {
            code: None,
            signal: Some(11),
            stopped_by_recorder: false,
        };
        // (events lost, late arm, workload, exit status, text in the summary)
        type Case<'a> = (u64, Option<&'a str>, Option<WorkloadExit>, u8, &'a str);
        let cases: [Case; 8] = [
            (0, None, None, 0, "record: complete"),
            (
                2,
                None,
                None,
                3,
                "record: INCOMPLETE (2 events lost; exit status 3)",
            ),
            (
                0,
                Some("c"),
                None,
                3,
                "INCOMPLETE (armed after the workload started (c)",
            ),
            (
                0,
                None,
                Some(WorkloadExit::code(0)),
                0,
                "workload: exit status 0",
            ),
            (
                0,
                None,
                Some(WorkloadExit::code(127)),
                4,
                "WORKLOAD FAILED (exit status 127;",
            ),
            (
                0,
                None,
                Some(killed),
                0,
                "killed by signal 9, stopped by the recorder",
            ),
            (
                0,
                None,
                Some(crashed),
                4,
                "killed by signal 11; exit status 4",
            ),
            (
                1,
                None,
                Some(WorkloadExit::code(1)),
                4,
                "and INCOMPLETE: 1 events lost",
            ),
        ];
        for (lost, late, workload, want, text) in cases {
            let outcome = Outcome {
                summary: summary(lost),
                late_arm: late.map(str::to_owned),
                workload,
            };
            assert_eq!(outcome.exit_status(), want, "{outcome}");
            assert_eq!(outcome.report().exit_status, want);
            let shown = outcome.to_string();
            assert!(shown.contains(text), "{text:?} not in:\n{shown}");
            assert!(shown.ends_with(&format!("record digest: {}", BlobDigest::of(b"x"))));
        }
    }

    #[test]
    fn report_keys_are_camel_case() {
        let outcome = Outcome {
            summary: summary(0),
            late_arm: None,
            workload: Some(WorkloadExit::code(3)),
        };
        let json = serde_json::to_value(outcome.report()).unwrap();
        assert_eq!(json["verdict"], "workloadFailed");
        assert_eq!(json["exitStatus"], 4);
        assert_eq!(json["workload"]["code"], 3);
        assert_eq!(json["workload"]["stoppedByRecorder"], false);
        assert_eq!(json["recordedPaths"], 1);
        assert_eq!(json["eventsLost"], 0);
    }
}
