//! Nothing outlives a recorder that is SIGKILLed: a watchdog process that cleans up after it.
//!
//! runc has no parent-death signal (and Linux ties `PR_SET_PDEATHSIG` to the forking *thread*,
//! which in a tokio process is a pool thread that may exit while all is well). Instead a small
//! `sh` holds the read end of a pipe whose only write end is the recorder's (close-on-exec, so
//! no other child inherits it). The kernel closes that end however the recorder dies; the
//! watchdog then reads EOF, runs `runc delete --force` on the container it was told about
//! (which kills the container's processes and removes its cgroup), and removes the run's
//! directory. On a normal exit the recorder has cleaned up itself and says `done`, and the
//! watchdog exits doing nothing.
//!
//! For `recorder run --containerd` the container's task is the containerd shim's child, not
//! runc's in a state directory of ours: the watchdog is told the task's init (pid and start
//! time, so a pid reused since is never hit) and SIGKILLs it. The init is PID 1 of the
//! container's pid namespace, so the kernel kills every other process of the workload with it;
//! the shim reports the exit and the task stops at once. What is left in containerd (the
//! stopped task, container, snapshot, lease, all labelled with the dead recorder's pid) is
//! removed by the next `recorder run --containerd`, and the lease expires on its own. Chosen
//! over `PR_SET_PDEATHSIG` (tied to the forking thread, see above) and over a watchdog that
//! speaks gRPC to containerd (a second client in a helper process, for a cleanup the next run
//! does anyway): killing is what must be prompt.
//!
//! It runs in a session of its own and ignores SIGINT, SIGTERM and SIGHUP, so a Ctrl-C to the
//! recorder's process group or the terminal going away does not take it down first.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

/// The watchdog's script; `$1` is the directory to remove. Messages on stdin, one word a line:
/// `container` then the runc binary, its root and the container id on the next three lines;
/// `forget` (the container is deleted); `process` then a pid and its start time (field 22 of
/// `/proc/PID/stat`) on the next two lines; `done` (all cleaned up).
///
/// The process is killed only if `/proc/PID/stat` still gives that start time: the fields are
/// counted after the last `)`, the end of the command name, which may hold spaces.
const SCRIPT: &str = r#"trap '' INT TERM HUP
runc= root= id= pid= start=
while read -r word; do
  case $word in
    done) exit 0 ;;
    container) read -r runc; read -r root; read -r id ;;
    forget) id= ;;
    process) read -r pid; read -r start ;;
  esac
done
if [ -n "$pid" ] && stat=$(cat "/proc/$pid/stat" 2>/dev/null); then
  set -- "$1" ${stat##*)}
  [ "${21}" = "$start" ] && kill -KILL "$pid" 2>/dev/null
fi
[ -n "$id" ] && "$runc" --root "$root" delete --force "$id" >/dev/null 2>&1
rm -rf --one-file-system -- "$1"
"#;

/// A runc container the watchdog deletes.
#[derive(Clone, Debug)]
pub struct WatchedContainer {
    /// The runc binary.
    pub runc: PathBuf,
    /// runc's `--root` (state directory).
    pub root: PathBuf,
    /// The container id.
    pub id: String,
}

#[derive(Debug)]
struct Inner {
    child: Child,
    tell: Option<File>,
}

/// A running watchdog, shared by the work dir and the sandbox in it. The last clone dropped
/// (or [`Watchdog::dismiss`]) tells it all is cleaned up.
#[derive(Clone, Debug)]
pub struct Watchdog {
    inner: Arc<Mutex<Inner>>,
}

impl Watchdog {
    /// Starts a watchdog that, should this process die without dismissing it, removes `dir`
    /// (after deleting the container it was told about, if any).
    pub fn spawn(dir: &Path) -> io::Result<Self> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("recorder-watchdog")
            .arg(dir)
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                child,
                tell: Some(File::from(write)),
            })),
        })
    }

    /// The watchdog's pid.
    pub fn pid(&self) -> u32 {
        self.inner.lock().map_or(0, |i| i.child.id())
    }

    fn say(&self, message: &[u8]) -> io::Result<()> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| io::Error::other("watchdog lock poisoned"))?;
        match inner.tell.as_mut() {
            // One write under PIPE_BUF: atomic, never interleaved.
            Some(tell) => tell.write_all(message),
            None => Ok(()),
        }
    }

    /// Has the watchdog delete `container` if this process dies before [`Watchdog::forget`].
    pub fn watch(&self, container: &WatchedContainer) -> io::Result<()> {
        let mut message = b"container\n".to_vec();
        for part in [container.runc.as_os_str(), container.root.as_os_str()] {
            if part.as_bytes().contains(&b'\n') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("path {part:?} has a newline"),
                ));
            }
            message.extend_from_slice(part.as_bytes());
            message.push(b'\n');
        }
        message.extend_from_slice(container.id.as_bytes());
        message.push(b'\n');
        self.say(&message)
    }

    /// Has the watchdog SIGKILL process `pid` (if it is still the process that had that pid
    /// now) should this process die: a containerd task's init, whose death takes its pid
    /// namespace down.
    pub fn watch_process(&self, pid: u32) -> io::Result<()> {
        let start = crate::procfs::start_time(pid)?;
        self.say(format!("process\n{pid}\n{start}\n").as_bytes())
    }

    /// The container is deleted: nothing to do about it any more.
    pub fn forget(&self) {
        if let Err(error) = self.say(b"forget\n") {
            tracing::warn!(%error, "telling the watchdog");
        }
    }

    /// Tells the watchdog everything is cleaned up, and reaps it.
    pub fn dismiss(&self) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(mut tell) = inner.tell.take() {
            if let Err(error) = tell.write_all(b"done\n") {
                tracing::warn!(%error, "dismissing the watchdog");
            }
            drop(tell);
            if let Err(error) = inner.child.wait() {
                tracing::warn!(%error, "reaping the watchdog");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(mut tell) = self.tell.take() {
            let _ = tell.write_all(b"done\n");
            drop(tell);
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A watchdog whose recorder "dies" (its pipe closes without `done`) kills the process it
    /// was told about and removes its directory; told a start time that is not the process's
    /// (its pid reused since), it leaves the process alone.
    #[test]
    fn a_dead_recorders_process_is_killed_only_if_still_the_same() {
        for right_start in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let work = dir.path().join("work");
            std::fs::create_dir(&work).unwrap();
            let mut child = Command::new("sleep").arg("30").spawn().unwrap();
            let watchdog = Watchdog::spawn(&work).unwrap();
            if right_start {
                watchdog.watch_process(child.id()).unwrap();
            } else {
                watchdog
                    .say(format!("process\n{}\n1\n", child.id()).as_bytes())
                    .unwrap();
            }
            // The recorder's death, as the watchdog sees it: EOF without `done`.
            let mut inner = watchdog.inner.lock().unwrap();
            drop(inner.tell.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while work.exists() {
                assert!(Instant::now() < deadline, "the watchdog did not clean up");
                std::thread::sleep(Duration::from_millis(20));
            }
            inner.child.wait().unwrap();
            let exited = child.try_wait().unwrap();
            if right_start {
                use std::os::unix::process::ExitStatusExt;
                let status = exited.or_else(|| child.wait().ok()).unwrap();
                assert_eq!(status.signal(), Some(libc::SIGKILL));
            } else {
                assert!(
                    exited.is_none(),
                    "a process of another start time was killed"
                );
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
    }
}
