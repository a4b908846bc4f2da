//! The workload's stdout and stderr under `recorder run --containerd`, relayed to ours while
//! it runs through two FIFOs, as `ctr run` does.
//!
//! Why not the shim's `file://` stdio: containerd 1.6's runc shim writes both streams into the
//! stdout file for that scheme (pkg/process/io.go: `pio.stdio.Stdout = filePath;
//! pio.stdio.Stderr = filePath`), so the workload's stderr reached our stdout, interleaved
//! with its stdout in no fixed order, and only once it had exited.
//!
//! How the shim uses a FIFO (pkg/process/io.go, `copyPipes`, containerd 1.6): during
//! Tasks.Create it opens the path `O_WRONLY` (blocking until a reader exists), then a read end
//! of its own that it never reads from, and copies the workload's pipe into it; once that pipe
//! ends (every process of the task is gone) it closes both. So:
//! - the read ends are opened before Tasks.Create, else the shim's open would block;
//! - they are opened `O_RDONLY|O_NONBLOCK`, and the copying starts only once Tasks.Create has
//!   returned, when the shim holds the write end: until a writer has opened it, a read of a
//!   FIFO returns 0, which would read as the end;
//! - the end of a stream is the shim closing its write end, which comes after it copied the
//!   last byte. Not "the task exited, so drain what is there": the shim reports the exit
//!   without waiting for its copying (`Init.setExited`), so the tail could still be on its way.
//!   That is also why the FIFOs are not opened read-write (which would never see the end).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::stat::Mode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// How long [`Forwarding::finish`] waits for a stream that makes no progress. Once the
/// workload has exited, what the shim has left to copy is at most a pipe's buffer (64 KiB by
/// default), a matter of milliseconds: this long without a byte means the shim is stuck.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the FIFOs of a task's stdio could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// Making a FIFO or opening its read end failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The FIFO.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// containerd's API takes stdio paths as strings.
    #[error("the FIFO path {} is not UTF-8, as containerd's API needs", .0.display())]
    NotUtf8(PathBuf),
}

/// One FIFO: its path, as given to containerd, and our read end.
struct Fifo {
    path: String,
    reader: pipe::Receiver,
}

impl Fifo {
    /// Makes the FIFO `dir/name` (0600: only the shim, as root, writes it) and opens its read
    /// end, non-blocking. Needs a tokio runtime (the read end is registered with its reactor).
    fn create(dir: &Path, name: &str) -> Result<Self, StdioError> {
        let path = dir.join(name);
        let io_error = |op, source| StdioError::Io {
            op,
            path: path.clone(),
            source,
        };
        nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(|errno| io_error("making the FIFO", io::Error::from(errno)))?;
        let reader = pipe::OpenOptions::new()
            .open_receiver(&path)
            .map_err(|source| io_error("opening the read end of the FIFO", source))?;
        let path = path
            .to_str()
            .ok_or_else(|| StdioError::NotUtf8(path.clone()))?
            .to_owned();
        Ok(Self { path, reader })
    }
}

/// The two FIFOs of a task's stdout and stderr, read ends open, not yet relayed.
pub struct TaskStdio {
    stdout: Fifo,
    stderr: Fifo,
}

impl TaskStdio {
    /// Makes the FIFOs `stdout` and `stderr` in `dir` (private to the run) and opens their
    /// read ends: to be done before Tasks.Create.
    pub fn create(dir: &Path) -> Result<Self, StdioError> {
        Ok(Self {
            stdout: Fifo::create(dir, "stdout")?,
            stderr: Fifo::create(dir, "stderr")?,
        })
    }

    /// The stdout FIFO's path, for CreateTaskRequest (a plain path: the shim's `fifo` scheme).
    pub fn stdout_path(&self) -> &str {
        &self.stdout.path
    }

    /// The stderr FIFO's path, for CreateTaskRequest.
    pub fn stderr_path(&self) -> &str {
        &self.stderr.path
    }

    /// Starts relaying the workload's stdout to ours (to our stderr if `stdout_to_stderr`: our
    /// stdout then carries the record) and its stderr to ours. Only once Tasks.Create has
    /// returned (see the module's doc).
    pub fn forward(self, stdout_to_stderr: bool) -> Forwarding {
        let stdout: Box<dyn AsyncWrite + Send + Unpin> = if stdout_to_stderr {
            Box::new(tokio::io::stderr())
        } else {
            Box::new(tokio::io::stdout())
        };
        Forwarding {
            relays: vec![
                Relay::spawn("stdout", self.stdout.reader, stdout),
                Relay::spawn("stderr", self.stderr.reader, Box::new(tokio::io::stderr())),
            ],
        }
    }
}

/// One stream being copied.
struct Relay {
    stream: &'static str,
    /// Reads and writes done so far: [`Forwarding::finish`] gives up on a relay only when this
    /// stands still.
    progress: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

impl Relay {
    fn spawn(
        stream: &'static str,
        from: impl AsyncRead + Send + Unpin + 'static,
        to: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> Self {
        let progress = Arc::new(AtomicU64::new(0));
        let handle = tokio::spawn(relay(stream, from, to, Arc::clone(&progress)));
        Self {
            stream,
            progress,
            handle,
        }
    }
}

/// The workload's output being relayed to ours.
pub struct Forwarding {
    relays: Vec<Relay>,
}

impl Forwarding {
    /// Nothing to relay.
    pub fn none() -> Self {
        Self { relays: Vec::new() }
    }

    /// Waits for both streams to end: the shim closes them once every process of the task is
    /// gone and it has copied the rest. A stream that makes no progress for [`IDLE_TIMEOUT`] is
    /// given up, with a warning. Calling it again returns at once.
    pub async fn finish(&mut self) {
        for mut relay in self.relays.drain(..) {
            let mut seen = relay.progress.load(Ordering::Relaxed);
            loop {
                match tokio::time::timeout(IDLE_TIMEOUT, &mut relay.handle).await {
                    Ok(Ok(())) => break,
                    Ok(Err(error)) => {
                        warn!(error = %crate::errors::Chain(&error), stream = relay.stream, "relaying the workload's output");
                        break;
                    }
                    Err(_) => {
                        let now = relay.progress.load(Ordering::Relaxed);
                        if now == seen {
                            warn!(
                                stream = relay.stream,
                                "the workload's {} did not end within {IDLE_TIMEOUT:?} \
                                 without progress; the rest of it is dropped",
                                relay.stream
                            );
                            relay.handle.abort();
                            break;
                        }
                        seen = now;
                    }
                }
            }
        }
    }
}

/// Copies `from` to `to` until `from` ends, flushing each chunk so that the output shows as
/// it comes, and is all out before whatever we print next. By hand rather than
/// `tokio::io::copy`: a failed write (our stdout a closed pipe) must not stop the reading, or
/// the workload would block on a full pipe; the rest is then read and dropped.
async fn relay(
    stream: &'static str,
    mut from: impl AsyncRead + Unpin,
    mut to: Box<dyn AsyncWrite + Send + Unpin>,
    progress: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut writable = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                warn!(error = %crate::errors::Chain(&error), stream, "reading the workload's output");
                break;
            }
        };
        progress.fetch_add(1, Ordering::Relaxed);
        if writable {
            let written = async {
                to.write_all(&buf[..n]).await?;
                to.flush().await
            };
            if let Err(error) = written.await {
                warn!(error = %crate::errors::Chain(&error), stream, "writing the workload's output; the rest is dropped");
                writable = false;
            }
            progress.fetch_add(1, Ordering::Relaxed);
        }
    }
    debug!(stream, "the workload's output ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay copies everything up to the end of its input; the FIFOs are real, written as
    /// the shim does (a writer that appears after the read end was opened, then closes).
    #[tokio::test]
    async fn a_fifo_is_relayed_until_its_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let stdio = TaskStdio::create(dir.path()).unwrap();
        assert_eq!(
            stdio.stdout_path(),
            dir.path().join("stdout").to_str().unwrap()
        );
        let path = stdio.stdout_path().to_owned();
        let Fifo { reader, .. } = stdio.stdout;
        let (mut ours, theirs) = tokio::io::duplex(16);
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut fifo = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            for chunk in ["one\n", "two\n", "three\n"] {
                fifo.write_all(chunk.as_bytes()).unwrap();
            }
        });
        writer.join().unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let copied = tokio::spawn(relay("stdout", reader, Box::new(theirs), progress));
        let mut got = String::new();
        ours.read_to_string(&mut got).await.unwrap();
        copied.await.unwrap();
        assert_eq!(got, "one\ntwo\nthree\n");
    }

    /// Our output gone (a closed pipe) does not stop the reading: the workload, writing more
    /// than a FIFO holds, would otherwise block forever.
    #[tokio::test]
    async fn a_failed_write_drops_the_rest_but_drains_the_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let stdio = TaskStdio::create(dir.path()).unwrap();
        let path = stdio.stderr_path().to_owned();
        let Fifo { reader, .. } = stdio.stderr;
        // Opened before the relay reads, as the shim's is during Tasks.Create: a read before any
        // writer opened would be the end.
        let mut fifo = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            // Four times a pipe's default capacity.
            fifo.write_all(&[b'x'; 256 * 1024])
        });
        let (ours, theirs) = tokio::io::duplex(16);
        drop(ours);
        let progress = Arc::new(AtomicU64::new(0));
        let copied = relay("stderr", reader, Box::new(theirs), Arc::clone(&progress));
        tokio::time::timeout(Duration::from_secs(60), copied)
            .await
            .expect("the relay stopped draining");
        writer.join().unwrap().unwrap();
        // At least the four reads of the four pipe-fulls, and only one write (that failed).
        assert!(progress.load(Ordering::Relaxed) >= 5);
    }

    #[test]
    fn a_fifo_that_exists_already_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stdout"), "").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let Err(error) = TaskStdio::create(dir.path()) else {
            panic!("created over an existing file")
        };
        assert_eq!(
            error.to_string(),
            format!("making the FIFO {}", dir.path().join("stdout").display())
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
