//! Nothing outlives a recorder that is SIGKILLed: a watchdog process that cleans up after it.
//!
//! runc has no parent-death signal (and Linux ties `PR_SET_PDEATHSIG` to the forking *thread*,
//! which in a tokio process is a pool thread that may exit while all is well). Instead a small
//! `sh` holds the read end of a pipe whose only write end is the recorder's (close-on-exec, so
//! no other child inherits it). The kernel closes that end however the recorder dies; the
//! watchdog then reads EOF and runs `runc delete --force` (which kills the container's
//! processes and removes its cgroup) and removes the run's directory. On a normal exit the
//! recorder has cleaned up itself and writes `done`, and the watchdog exits doing nothing.
//!
//! It runs in a session of its own and ignores SIGINT, SIGTERM and SIGHUP, so a Ctrl-C to the
//! recorder's process group or the terminal going away does not take it down first.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

/// The watchdog's script: `$1 $2 $3` the runc binary, its root and the container id (all
/// empty when there is no container), `$4` the directory to remove.
const SCRIPT: &str = r#"trap '' INT TERM HUP
read -r word
[ "$word" = done ] && exit 0
[ -n "$3" ] && "$1" --root "$2" delete --force "$3" >/dev/null 2>&1
rm -rf --one-file-system -- "$4"
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

/// A running watchdog; dropping it (or [`Watchdog::dismiss`]) tells it all is cleaned up.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
    tell: Option<File>,
}

impl Watchdog {
    /// Starts a watchdog that, should this process die without dismissing it, deletes
    /// `container` and removes `dir`.
    pub fn spawn(container: Option<&WatchedContainer>, dir: &Path) -> io::Result<Self> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(SCRIPT).arg("recorder-watchdog");
        match container {
            Some(c) => cmd.arg(&c.runc).arg(&c.root).arg(&c.id),
            None => cmd.args(["", "", ""]),
        };
        cmd.arg(dir)
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
            child,
            tell: Some(File::from(write)),
        })
    }

    /// Tells the watchdog everything is cleaned up, and reaps it.
    pub fn dismiss(mut self) {
        self.dismiss_inner();
    }

    fn dismiss_inner(&mut self) {
        if let Some(mut tell) = self.tell.take() {
            if let Err(error) = tell.write_all(b"done\n") {
                tracing::warn!(%error, "dismissing the watchdog");
            }
            drop(tell);
            if let Err(error) = self.child.wait() {
                tracing::warn!(%error, "reaping the watchdog");
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.dismiss_inner();
    }
}
