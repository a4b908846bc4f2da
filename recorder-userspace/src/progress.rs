//! Progress on a terminal, with `indicatif`, for the steps that take seconds on a large image
//! (indexing its layers, unpacking them, removing the work dir or the container): nothing at
//! all unless the binary [`enable`]d it, which it does only when stderr is a terminal and
//! `--quiet` is not given. Piped output, library users and tests never see a bar.
//!
//! Logs and bars share stderr: [`LogWriter`] writes each log line with the bars cleared and
//! redraws them after, so a line never lands in the middle of a bar.
//!
//! A step whose progress lives elsewhere (the indexer's byte counter, an `AtomicU64` shared
//! with its threads) is followed by a helper thread that copies the counter into the bar ten
//! times a second, only while a bar is shown: an `AtomicU64` add costs the workers nothing, and
//! the bar is drawn at most that often anyway.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether bars are shown; off until the binary turns them on.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// How often a bar is redrawn, and a counter copied into it.
const TICK: Duration = Duration::from_millis(100);

/// Shows progress bars on stderr from now on (`on`), or not. The binary calls it once, with
/// `on` only if stderr is a terminal and `--quiet` was not given.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether bars are shown.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The one set of bars on stderr, shared so that logs can clear them all.
fn bars() -> &'static MultiProgress {
    static BARS: OnceLock<MultiProgress> = OnceLock::new();
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// One step's progress: a bar (or a spinner when the total is unknown), hidden unless enabled;
/// cleared when finished or dropped.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    counter: Arc<AtomicU64>,
}

impl Progress {
    /// A bar of `total` bytes, labelled `message`.
    pub fn bytes(message: &str, total: u64) -> Self {
        Self::start(
            message,
            Some(total),
            "{msg} {bar:30} {decimal_bytes}/{decimal_total_bytes} ({decimal_bytes_per_sec}, {eta})",
        )
    }

    /// A spinner with the time elapsed, for a step of unknown length.
    pub fn spinner(message: &str) -> Self {
        Self::start(message, None, "{spinner} {msg} {elapsed}")
    }

    fn start(message: &str, total: Option<u64>, template: &str) -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        if !enabled() {
            return Self {
                bar: ProgressBar::hidden(),
                counter,
            };
        }
        let bar = bars().add(ProgressBar::with_draw_target(
            total,
            ProgressDrawTarget::hidden(),
        ));
        // The template is one of the constants above: a bad one is a bug here, shown as a
        // plain bar rather than a panic.
        match ProgressStyle::with_template(template) {
            Ok(style) => bar.set_style(style),
            Err(error) => tracing::debug!(%error, "progress template"),
        }
        bar.set_message(message.to_owned());
        // Drawn now, not at the first tick: a step that ends sooner is still shown once.
        bar.tick();
        bar.enable_steady_tick(TICK);
        let (follow, from) = (bar.downgrade(), counter.clone());
        let spawned = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while let Some(bar) = follow.upgrade() {
                    if bar.is_finished() {
                        break;
                    }
                    let done = from.load(Ordering::Relaxed);
                    if done > 0 {
                        bar.set_position(done);
                    }
                    drop(bar);
                    std::thread::sleep(TICK);
                }
            });
        if let Err(error) = spawned {
            tracing::debug!(%error, "starting the progress thread");
        }
        Self { bar, counter }
    }

    /// A counter to add done units to from any thread (e.g. the indexer's bytes read).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.counter.clone()
    }

    /// Adds `n` done units.
    pub fn inc(&self, n: u64) {
        self.counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// Whether a bar is shown.
    pub fn is_shown(&self) -> bool {
        !self.bar.is_hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
        bars().remove(&self.bar);
    }
}

/// A `tracing_subscriber` writer to stderr that clears the bars around each log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter writes each event with one write_all: one line, bars cleared once.
        if enabled() {
            bars().suspend(|| io::stderr().write(buf))
        } else {
            io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Off (the default, and under `--quiet` or a pipe), a step counts but shows nothing.
    #[test]
    fn disabled_progress_counts_and_shows_nothing() {
        for make in [
            (|| Progress::bytes("indexing", 10)) as fn() -> Progress,
            || Progress::spinner("removing"),
        ] {
            let p = make();
            assert!(!p.is_shown());
            p.inc(3);
            p.counter().fetch_add(4, Ordering::Relaxed);
            assert_eq!(p.done(), 7);
        }
    }
}
