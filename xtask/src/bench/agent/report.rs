//! Medians of the agent benchmark's runs, as the `## Agent` section of docs/benchmarks.md.

use std::fs;
use std::time::Duration;

use anyhow::{Context, ensure};

use super::measure::RecordedRun;
use crate::demo;

pub const DOCS_SECTION: &str = "## Agent";

/// What the report needs besides the runs.
pub struct Setup {
    pub loops: u64,
    pub opens_per_loop: u64,
    pub rounds: usize,
}

pub fn markdown(
    setup: &Setup,
    busy: &[RecordedRun],
    idle: &[RecordedRun],
    baseline: &[Duration],
) -> anyhow::Result<String> {
    let busy_events = median_of(busy, |r| r.events as f64);
    let idle_events = median_of(idle, |r| r.events as f64);
    ensure!(
        busy_events > idle_events,
        "the busy workload saw no more events ({busy_events}) than the idle one ({idle_events})"
    );
    let busy_cpu = median_of(busy, |r| ms(r.cpu));
    let idle_cpu = median_of(idle, |r| ms(r.cpu));
    let whole_run_per_100k = median_of(busy, |r| ms(r.cpu) / r.events.max(1) as f64 * 1e5);
    let marginal_per_100k = (busy_cpu - idle_cpu) / (busy_events - idle_events) * 1e5;
    let traced = median_of(busy, |r| ms(r.workload));
    let untraced = median(baseline.iter().map(|d| ms(*d)).collect());
    let lost: u64 = busy.iter().chain(idle).map(|r| r.lost).sum();
    let row = |name: &str, f: &dyn Fn(&RecordedRun) -> f64, unit: &str, precision: usize| {
        format!(
            "| {name} | {:.precision$}{unit} | {:.precision$}{unit} |\n",
            median_of(busy, f),
            median_of(idle, f)
        )
    };
    let opens = setup.loops * setup.opens_per_loop;
    let mut text = format!(
        "{DOCS_SECTION}\n\n\
`cargo xtask bench agent` builds the demo image with a workload that opens image files in a \
shell loop and runs `recorder run` (release build) on it: busy ({loops} loops of \
{per_loop} redirections, {opens} opens), idle (the same image with `-- 0`: no loop), and, for \
comparison, the busy workload without the recorder in a read-only overlay of the same layers \
(baseline). {rounds} interleaved rounds; medians. Machine: {machine}.\n\n\
| measure (median) | busy | idle |\n| --- | --- | --- |\n",
        loops = setup.loops,
        per_loop = setup.opens_per_loop,
        rounds = setup.rounds,
        machine = machine_description(),
    );
    text += &row("events seen by the agent", &|r| r.events as f64, "", 0);
    text += &row(
        "**`recorder run` started → workload started** (fixed cost before the workload)",
        &|r| ms(r.start_to_workload),
        " ms",
        1,
    );
    text += &row(
        "· started → image indexed (process start, flags, image opened and indexed)",
        &|r| ms(r.start_to_indexed),
        " ms",
        1,
    );
    text += &row(
        "· image indexed → layers unpacked",
        &|r| ms(r.indexed_to_unpacked),
        " ms",
        1,
    );
    text += &row(
        "· layers unpacked → filter armed (sandbox made; waits for the eBPF programs if still loading)",
        &|r| ms(r.unpacked_to_tracing),
        " ms",
        1,
    );
    text += &row(
        "· filter armed → workload started (runc's exec, the shell)",
        &|r| ms(r.tracing_to_workload),
        " ms",
        1,
    );
    text += &row(
        "· (alongside) started → eBPF programs loaded and attached",
        &|r| r.start_to_loaded.map_or(f64::NAN, ms),
        " ms",
        1,
    );
    text += &row(
        "**workload exit → digest line** (record committed)",
        &|r| ms(r.exit_to_digest),
        " ms",
        1,
    );
    text += &row(
        "· exit → tracing stopped (exit seen, ring drained)",
        &|r| ms(r.exit_to_stopped),
        " ms",
        1,
    );
    text += &row(
        "· tracing stopped → committing (filter disarmed; detach deferred past the commit)",
        &|r| ms(r.stopped_to_committing),
        " ms",
        1,
    );
    text += &row(
        "· committing → done (record in the store)",
        &|r| ms(r.committing_to_done),
        " ms",
        1,
    );
    text += &row(
        "· done → digest line (summary; the work dir is removed after it)",
        &|r| ms(r.done_to_digest),
        " ms",
        1,
    );
    text += &row(
        "workload exit → `recorder run` exited",
        &|r| ms(r.exit_to_process_exit),
        " ms",
        1,
    );
    text += &row(
        "agent CPU, user+system, whole run",
        &|r| ms(r.cpu),
        " ms",
        0,
    );
    text += &format!(
        "\n| measure (median) | value |\n| --- | --- |\n\
| **agent CPU per 100,000 events**, whole busy run | {whole_run_per_100k:.0} ms |\n\
| agent CPU per 100,000 events, marginal: (busy − idle CPU) / (busy − idle events) | {marginal_per_100k:.0} ms |\n\
| busy workload start → exit, traced | {traced:.0} ms |\n\
| busy workload start → exit, baseline (no recorder) | {untraced:.0} ms (traced: {ratio:.2}×) |\n\
| events lost, all runs | {lost} |\n",
        ratio = traced / untraced,
    );
    text += METHOD;
    Ok(text)
}

const METHOD: &str = "
How it is measured. The workload's last act is `exec date +%s%N`, so the exit stamp comes from \
the process whose exit ends the run; the digest line, which `recorder run` prints after the \
record is in the content store, is stamped when it reaches the benchmark through a pipe \
(CLOCK_REALTIME on both sides, as in the agent's log timestamps, which split the time into \
phases; the agent runs with `RECORDER_LOG=info,recorder::status::report=debug` for those). The \
agent's CPU is `utime + stime` of the `recorder` process from `/proc/PID/stat`, read after it \
has exited and before it is reaped (`waitid(WNOWAIT)`), so all its threads count and the \
workload, a child it reaped, does not; the resolution is one clock tick (10 ms). The whole-run \
figure includes the fixed cost of a run (indexing the image, unpacking its layers, loading the \
eBPF programs, committing); the marginal one is the cost of the events alone. The fixed cost \
before the workload runs from the moment the benchmark spawns `recorder run` to the workload's \
first stamp, split by the agent's log lines `image indexed`, `layers unpacked`, `eBPF programs \
loaded` (the programs load on a thread of their own from the start, alongside indexing and \
unpacking) and `tracing` (the filter armed on the created sandbox). After the digest line, \
what remains to the process's exit is removing the work dir and detaching the programs: \
closing a tracepoint's perf event waits for the kernel's grace periods. The machine is \
shared with other builds, so single rounds vary widely; the table quotes medians.
";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn median_of<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

/// "2 cores (model), Linux RELEASE".
pub fn machine_description() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{cores} cores ({model}), Linux {release}")
}

/// Replaces the `## Agent` section of docs/benchmarks.md (up to the next `## ` heading), or
/// appends it; the other sections stay as they are.
pub fn write_docs_section(section: &str) -> anyhow::Result<()> {
    write_section(DOCS_SECTION, section)
}

/// Replaces the section headed `heading` of docs/benchmarks.md (up to the next `## `
/// heading) with `section`, or appends it.
pub fn write_section(heading: &str, section: &str) -> anyhow::Result<()> {
    let path = demo::workspace_root().join("docs").join("benchmarks.md");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let updated = replace_section_headed(heading, &text, section);
    fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote the {heading} section of {}", path.display());
    Ok(())
}

#[cfg(test)]
fn replace_section(text: &str, section: &str) -> String {
    replace_section_headed(DOCS_SECTION, text, section)
}

fn replace_section_headed(docs_section: &str, text: &str, section: &str) -> String {
    let section = section.trim_end_matches('\n');
    let heading = format!("\n{docs_section}\n");
    match text.find(&heading) {
        Some(at) => {
            let start = at + 1;
            let body = start + docs_section.len();
            let end = text[body..]
                .find("\n## ")
                .map_or(text.len(), |i| body + i + 1);
            let rest = &text[end..];
            let gap = if rest.is_empty() { "\n" } else { "\n\n" };
            format!("{}{section}{gap}{rest}", &text[..start])
        }
        None => format!("{}\n\n{section}\n", text.trim_end_matches('\n')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn the_section_is_appended_then_replaced_in_place() {
        let doc = "# Benchmarks\n\n## Tracer\n\nfast\n";
        let once = replace_section(doc, "## Agent\n\nold\n");
        assert_eq!(
            once,
            "# Benchmarks\n\n## Tracer\n\nfast\n\n## Agent\n\nold\n"
        );
        let twice = replace_section(&once, "## Agent\n\nnew\n");
        assert_eq!(
            twice,
            "# Benchmarks\n\n## Tracer\n\nfast\n\n## Agent\n\nnew\n"
        );
        let middle = "# B\n\n## Agent\n\nold\n\n## Tracer\n\nfast\n";
        assert_eq!(
            replace_section(middle, "## Agent\n\nnew"),
            "# B\n\n## Agent\n\nnew\n\n## Tracer\n\nfast\n"
        );
    }
}
