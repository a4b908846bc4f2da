//! Renders the status in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

use super::report::StatusHandle;
use super::state::State;
use super::time::unix_seconds;

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric, with HELP and TYPE lines.
pub(crate) fn render(status: &StatusHandle) -> String {
    let counters = status.counters();
    let (state, since) = status.state_since();
    let mut out = String::with_capacity(1024);

    let simple = [
        (
            "recorder_events_total",
            "Events received from the kernel.",
            counters.events,
        ),
        (
            "recorder_recorded_paths_total",
            "Paths written to the record.",
            counters.recorded_paths,
        ),
        (
            "recorder_failed_opens_total",
            "Opens that failed in the workload.",
            counters.failed_opens,
        ),
        (
            "recorder_events_lost_total",
            "Events lost before they could be recorded (dropped by the kernel, or undecodable).",
            counters.lost,
        ),
    ];
    for (name, help, value) in simple {
        header(&mut out, name, help, "counter");
        let _ = writeln!(out, "{name} {value}");
    }

    header(
        &mut out,
        "recorder_excluded_total",
        "Events not recorded, by reason.",
        "counter",
    );
    for (reason, value) in &counters.excluded {
        let _ = writeln!(
            out,
            "recorder_excluded_total{{reason=\"{}\"}} {value}",
            escape_label(reason)
        );
    }

    header(
        &mut out,
        "recorder_state",
        "The agent's current state (1 for the current one, 0 for the others).",
        "gauge",
    );
    for s in State::ALL {
        let _ = writeln!(
            out,
            "recorder_state{{state=\"{s}\"}} {}",
            u8::from(s == state)
        );
    }

    header(
        &mut out,
        "recorder_state_start_time_seconds",
        "When the current state began, in seconds since the Unix epoch.",
        "gauge",
    );
    let _ = writeln!(
        out,
        "recorder_state_start_time_seconds {:.3}",
        unix_seconds(since)
    );
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the exposition format requires.
fn escape_label(value: &str) -> String {
    crate::escape::escape(value, crate::escape::PROMETHEUS_LABEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_state_set() {
        let status = StatusHandle::new();
        status.set_state(State::Tracing);
        status.add_events(42);
        status.add_excluded("odd\"reason\\\n", 2);
        let text = render(&status);
        assert!(text.contains("# TYPE recorder_events_total counter\nrecorder_events_total 42\n"));
        assert!(text.contains("recorder_excluded_total{reason=\"odd\\\"reason\\\\\\n\"} 2\n"));
        assert!(text.contains("recorder_state{state=\"tracing\"} 1\n"));
        assert!(text.contains("recorder_state{state=\"starting\"} 0\n"));
        for line in text.lines() {
            assert!(
                line.starts_with("# ") || line.starts_with("recorder_"),
                "{line}"
            );
        }
    }
}
