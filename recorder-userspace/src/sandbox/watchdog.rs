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
/// `forget` (the container is deleted); `done` (all cleaned up).
const SCRIPT: &str = r#"trap '' INT TERM HUP
runc= root= id=
while read -r word; do
  case $word in
    done) exit 0 ;;
    container) read -r runc; read -r root; read -r id ;;
    forget) id= ;;
  esac
done
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
