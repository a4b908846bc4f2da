//! One `recorder run`, measured from outside: the workload's stamps, the agent's log phases,
//! the digest line's arrival, and the agent's own CPU time.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};

use crate::demo::DemoPaths;

/// Info logs plus the status state changes, whose timestamps split the exit-to-commit time
/// into phases; nothing chattier, so logging does not inflate the CPU time.
const RECORDER_LOG: &str = "info,recorder::status::report=debug";

/// What one run took.
pub struct RecordedRun {
    /// `recorder run` spawned to the workload's start stamp: the fixed cost before the workload.
    pub start_to_workload: Duration,
    /// Spawned to the "image indexed" log line.
    pub start_to_indexed: Duration,
    /// "image indexed" to "layers unpacked".
    pub indexed_to_unpacked: Duration,
    /// Spawned to "eBPF programs loaded" (loaded while the image is indexed and unpacked);
    /// `None` for a recorder that does not log it (one that loads them after unpacking).
    pub start_to_loaded: Option<Duration>,
    /// "layers unpacked" to the filter armed on the sandbox ("tracing mntns=").
    pub unpacked_to_tracing: Duration,
    /// Filter armed to the workload's start stamp (runc's exec, the shell's start).
    pub tracing_to_workload: Duration,
    /// Workload exit stamp to the agent's "tracing stopped" log line (ring drained).
    pub exit_to_stopped: Duration,
    /// "tracing stopped" to the state change to `committing`.
    pub stopped_to_committing: Duration,
    /// `committing` to `done` (record and companion written to the store).
    pub committing_to_done: Duration,
    /// `done` to the digest line reaching us.
    pub done_to_digest: Duration,
    /// Workload exit stamp to the digest line.
    pub exit_to_digest: Duration,
    /// Workload exit stamp to the recorder process's exit.
    pub exit_to_process_exit: Duration,
    /// Workload start stamp to exit stamp.
    pub workload: Duration,
    /// The recorder's own user+system CPU time.
    pub cpu: Duration,
    pub events: u64,
    pub lost: u64,
}

/// Runs `recorder run` once with a fresh store and measures it; `cmd` replaces the image's Cmd
/// when not empty.
pub fn record(paths: &DemoPaths, cmd: &[&str]) -> anyhow::Result<RecordedRun> {
    recreate_dir(&paths.store)?;
    let mut command = paths.recorder_run();
    if !cmd.is_empty() {
        command.arg("--").args(cmd);
    }
    command
        // The layer cache beside the image, not the system's.
        .env("RECORDER_CACHE_DIR", paths.image.with_file_name("cache"))
        .env("RECORDER_LOG", RECORDER_LOG)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned_at = SystemTime::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let stderr = child.stderr.take().context("recorder run's stderr")?;
    let stderr_reader = std::thread::spawn(move || read_stamped_lines(stderr));
    let stdout = child.stdout.take().context("recorder run's stdout")?;
    let stdout_lines = read_stamped_lines(stdout)?;
    let stderr_lines = stderr_reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stderr reader panicked"))??;
    let (exited_at, cpu) = exit_and_cpu(&mut child)?;
    let status = child.wait().context("reaping recorder run")?;
    let output = Output {
        stdout: stdout_lines,
        stderr: stderr_lines,
    };
    if !status.success() {
        bail!("{command:?} failed: {status}\n{}", output.text());
    }
    output.measure(spawned_at, exited_at, cpu)
}

/// Lines of both streams, each with the wall-clock time it reached us.
struct Output {
    stdout: Vec<(SystemTime, String)>,
    stderr: Vec<(SystemTime, String)>,
}

impl Output {
    fn measure(
        &self,
        spawned_at: SystemTime,
        exited_at: SystemTime,
        cpu: Duration,
    ) -> anyhow::Result<RecordedRun> {
        let started = self.stamp("workload-start-ns=")?;
        let indexed = self.logged_at("image indexed")?;
        let unpacked = self.logged_at("layers unpacked")?;
        let loaded = self.logged_at("eBPF programs loaded").ok();
        let armed = self.logged_at("tracing mntns=")?;
        let workload_exit = self.stamp("workload-exit-ns=")?;
        let stopped = self.logged_at("tracing stopped")?;
        let committing = self.logged_at("to=committing")?;
        let done = self.logged_at("to=done")?;
        let digest_at = self
            .stdout
            .iter()
            .rev()
            .find(|(_, l)| l.starts_with("sha256:"))
            .map(|(at, _)| *at)
            .with_context(|| format!("recorder run printed no digest line\n{}", self.text()))?;
        Ok(RecordedRun {
            start_to_workload: since(spawned_at, started)?,
            start_to_indexed: since(spawned_at, indexed)?,
            indexed_to_unpacked: since(indexed, unpacked)?,
            start_to_loaded: loaded.map(|l| since(spawned_at, l)).transpose()?,
            unpacked_to_tracing: since(unpacked, armed)?,
            tracing_to_workload: since(armed, started)?,
            exit_to_stopped: since(workload_exit, stopped)?,
            stopped_to_committing: since(stopped, committing)?,
            committing_to_done: since(committing, done)?,
            done_to_digest: since(done, digest_at)?,
            exit_to_digest: since(workload_exit, digest_at)?,
            exit_to_process_exit: since(workload_exit, exited_at)?,
            workload: since(started, workload_exit)?,
            cpu,
            events: self.counter("events:")?,
            lost: self.counter("events lost:")?,
        })
    }

    fn lines(&self) -> impl Iterator<Item = &str> {
        self.stdout
            .iter()
            .chain(&self.stderr)
            .map(|(_, l)| l.as_str())
    }

    fn text(&self) -> String {
        self.lines().collect::<Vec<_>>().join("\n")
    }

    /// A `KEY=NANOSECONDS` stamp the workload printed.
    fn stamp(&self, key: &str) -> anyhow::Result<SystemTime> {
        let ns: u64 = self
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("the workload printed no {key}\n{}", self.text()))?
            .trim()
            .parse()
            .with_context(|| format!("reading {key}"))?;
        Ok(UNIX_EPOCH + Duration::from_nanos(ns))
    }

    /// The timestamp the agent's log gives the first line containing `marker`.
    fn logged_at(&self, marker: &str) -> anyhow::Result<SystemTime> {
        let line = self
            .stderr
            .iter()
            .map(|(_, l)| l.as_str())
            .find(|l| l.contains(marker))
            .with_context(|| format!("recorder run logged no {marker:?}\n{}", self.text()))?;
        let stamp = line.split_whitespace().next().unwrap_or_default();
        parse_utc_timestamp(stamp)
            .with_context(|| format!("no RFC 3339 timestamp at the start of {line:?}"))
    }

    /// A `KEY N` line of the agent's summary.
    fn counter(&self, key: &str) -> anyhow::Result<u64> {
        self.lines()
            .filter_map(|l| l.strip_prefix(key))
            .last()
            .with_context(|| format!("recorder run's summary has no {key:?}\n{}", self.text()))?
            .trim()
            .parse()
            .with_context(|| format!("reading {key:?} of the summary"))
    }
}

fn read_stamped_lines(stream: impl Read) -> anyhow::Result<Vec<(SystemTime, String)>> {
    let mut lines = Vec::new();
    for line in BufReader::new(stream).lines() {
        lines.push((
            SystemTime::now(),
            line.context("reading recorder run's output")?,
        ));
    }
    Ok(lines)
}

/// Waits for `child` to exit without reaping it, then reads its own CPU time: a zombie's
/// `/proc/PID/stat` still sums all its threads, and leaves out its reaped children.
fn exit_and_cpu(child: &mut Child) -> anyhow::Result<(SystemTime, Duration)> {
    let pid = child.id();
    loop {
        // SAFETY: an all-zero siginfo_t is valid; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` outlives the call.
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).with_context(|| format!("waiting for recorder run (pid {pid})"));
        }
    }
    let exited_at = SystemTime::now();
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok((exited_at, own_cpu_time(&stat)?))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line.
fn own_cpu_time(stat: &str) -> anyhow::Result<Duration> {
    // The command name may hold spaces and parentheses; the fields after the last ')' don't.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("a /proc/PID/stat line without a command name")?;
    // After the name come state (field 3), ppid (4), ...: field N is at index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("/proc/PID/stat has no field {n}"))?
            .parse()
            .with_context(|| format!("/proc/PID/stat field {n}"))
    };
    let ticks = field(14)? + field(15)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ensure!(per_second > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z`, as tracing-subscriber prints it.
fn parse_utc_timestamp(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (
        date_parts.next()??,
        date_parts.next()??,
        date_parts.next()??,
    );
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time_parts = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (
        time_parts.next()??,
        time_parts.next()??,
        time_parts.next()??,
    );
    let nanos: u64 = if fraction.is_empty() {
        0
    } else {
        let digits = &fraction[..fraction.len().min(9)];
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn since(earlier: SystemTime, later: SystemTime) -> anyhow::Result<Duration> {
    later.duration_since(earlier).with_context(|| {
        format!("a moment lies before the one it should follow ({earlier:?}, {later:?})")
    })
}

fn recreate_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_survive_a_name_with_spaces() -> anyhow::Result<()> {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 1 0 1 0 0";
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(
            own_cpu_time(stat)?,
            Duration::from_secs_f64(300.0 / per_second)
        );
        Ok(())
    }

    #[test]
    fn log_timestamps_parse_to_unix_time() {
        let expected =
            UNIX_EPOCH + Duration::from_secs(1_795_817_953) + Duration::from_micros(901_066);
        assert_eq!(
            parse_utc_timestamp("2026-11-27T22:19:13.901066Z"),
            Some(expected)
        );
        assert_eq!(
            parse_utc_timestamp("1970-01-01T00:00:00Z"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(parse_utc_timestamp("INFO"), None);
    }
}
