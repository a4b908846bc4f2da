//! A private containerd per test: its own config, root, state and socket under a temp dir,
//! the CRI plugin disabled, and its own namespace (so its cgroups and runc state are its
//! own too); or, with [`Daemon::start_cri`], the CRI plugin serving, with runc's root and the
//! pods' cgroup parent its own. Dropping it removes tasks, containers, the daemon, leftover mounts and the cgroup
//! dirs it made, so tests can run in parallel and leave nothing behind.

use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

mod commands;
mod images;

pub use commands::{
    ARMED_AT_CREATION, RUN_ID_PREFIX, assert_run_left_nothing, finish, recorder, recorder_run,
    wait_for_log,
};
pub use images::{AGENT_IMAGE, agent_daemon, runnable_image};

/// The name the runnable test image is imported under.
pub const IMAGE: &str = "docker.io/recorder/ctrd-test:1";

/// The file the test image's command reads first, from layer 1.
pub const HELLO: &str = "etc/hello";

/// Host programs in the test image's layer 0.
pub const PROGRAMS: &[&str] = &["sh", "cat", "sleep"];

/// How long the daemon may take to answer on its socket (it takes well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails the test loudly unless it runs as root and containerd, runc and ctr are installed.
pub fn require_containerd() {
    crate::root::require_root();
    for tool in ["containerd", "ctr", "runc", "containerd-shim-runc-v2"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .any(|d: PathBuf| d.join(tool).is_file());
        assert!(
            found,
            "{tool} is not installed; `cargo xtask setup` installs Debian's containerd and runc"
        );
    }
}

/// A running private containerd.
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    namespace: String,
    /// With the CRI plugin: runc's root is in `dir`, and the cgroup dirs to remove are under
    /// this parent rather than under the namespace.
    cri_cgroup_parent: Option<String>,
}

/// What a daemon with containerd's CRI plugin needs (see [`Daemon::start_cri`]).
pub struct CriOptions<'a> {
    /// The pause image's reference; it must be imported into `k8s.io` before a sandbox runs.
    pub sandbox_image: &'a str,
    /// The cgroup parent the test gives its pod sandboxes (as the kubelet gives
    /// `kubepods/.../pod<uid>`); it and everything under it go with the daemon.
    pub cgroup_parent: &'a str,
}

impl Daemon {
    /// Starts a daemon and waits until its socket answers.
    pub fn start() -> Daemon {
        Self::launch(None)
    }

    /// Starts a daemon with containerd's own CRI plugin serving on its socket, the way a
    /// Kubernetes node runs it, with everything it keeps (root, state, runc's root, opt, CNI
    /// dirs) in the temp dir. Its namespace is the CRI's, `k8s.io`, private to this daemon's
    /// root. Measured here with containerd 1.6.20: without `restrict_oom_score_adj` every
    /// sandbox fails (root lacks CAP_SYS_RESOURCE to lower the pause process's oom score); no
    /// CNI config is given, so sandboxes must use the node's network namespace.
    pub fn start_cri(options: CriOptions) -> Daemon {
        Self::launch(Some(options))
    }

    fn launch(cri: Option<CriOptions>) -> Daemon {
        require_containerd();
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir_in("/tmp")
            .unwrap();
        let namespace = match cri {
            Some(_) => "k8s.io".to_owned(),
            None => format!(
                "rt-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let d = dir.path().display();
        let plugins = match &cri {
            None => xtask::NO_CRI.to_owned(),
            Some(cri) => format!(
                r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf""#,
                sandbox = cri.sandbox_image
            ),
        };
        let config = xtask::containerd_config(dir.path(), &plugins);
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It stops the
        // daemon if the test dies without running Drop (killed, or aborted).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            })
        };
        let child = cmd.spawn().expect("starting containerd");
        let mut daemon = Daemon {
            dir,
            child,
            namespace,
            cri_cgroup_parent: cri.map(|c| c.cgroup_parent.to_owned()),
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("containerd exited ({status}) at start:\n{}", self.log());
            }
            if UnixStream::connect(self.socket()).is_ok() && self.ctr(&["version"]).status.success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// The namespace the tests use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A scratch dir that goes away with the daemon.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// `ctr -a SOCKET -n NAMESPACE ARGS...`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// As [`Daemon::ctr`], failing the test unless it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Imports an OCI layout (tarred into an OCI archive) with `ctr images import`, which also
    /// unpacks it for the overlayfs snapshotter.
    pub fn import_layout(&self, layout: &Path) {
        let archive = self.dir.path().join(format!(
            "import-{}.tar",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        b.append_dir_all(".", layout).unwrap();
        b.into_inner().unwrap();
        self.ctr_ok(&["images", "import", archive.to_str().unwrap()]);
    }

    /// Starts `image` as container `id` in the background (`ctr run -d`).
    pub fn run_detached(&self, image: &str, id: &str, command: &[&str]) {
        let mut args = vec!["run", "-d", "--null-io", image, id];
        args.extend_from_slice(command);
        self.ctr_ok(&args);
    }

    /// The pid `ctr task ls` shows for a container's task.
    pub fn task_pid(&self, id: &str) -> u32 {
        let out = String::from_utf8(self.ctr_ok(&["tasks", "ls"])).unwrap();
        out.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no task {id} in:\n{out}"))
    }

    /// Waits until a container's task has exited (`ctr tasks ls` says STOPPED).
    pub fn wait_stopped(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = String::from_utf8(self.ctr_ok(&["tasks", "ls"])).unwrap();
            let stopped = out.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&id) && f.get(2) == Some(&"STOPPED")
            });
            if stopped {
                return;
            }
            assert!(Instant::now() < deadline, "task {id} did not stop:\n{out}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn cleanup_tasks(&self) {
        let ids = |what: &str| -> Vec<String> {
            let out = self.ctr(&[what, "ls", "-q"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        };
        for id in ids("tasks") {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
            let _ = self.ctr(&["tasks", "delete", "-f", &id]);
        }
        for id in ids("containers") {
            let _ = self.ctr(&["containers", "rm", &id]);
        }
    }

    /// Processes (shims) started for this daemon, found by its address on their command line.
    pub fn shims(&self) -> Vec<i32> {
        let needle = self.socket().display().to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                (pid != self.child.id() as i32
                    && cmd.contains("containerd-shim")
                    && cmd.contains(&needle))
                .then_some(pid)
            })
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cleanup_tasks();
        for pid in self.shims() {
            // SAFETY: kill has no memory preconditions; the pid is a shim of this daemon.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // SAFETY: as above, for the daemon this harness started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_under(self.dir.path());
        match &self.cri_cgroup_parent {
            // runc's root is in the temp dir; `k8s.io` under the host's runc root is not ours.
            Some(parent) => {
                if let Some(top) = parent.trim_start_matches('/').split('/').next() {
                    remove_cgroups(top);
                }
            }
            None => {
                remove_cgroups(&self.namespace);
                let _ = std::fs::remove_dir_all(
                    Path::new("/run/containerd/runc").join(&self.namespace),
                );
            }
        }
    }
}

/// The mount points under `dir` (in this mount namespace).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let mut points = mounts_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Removes `<hierarchy>/<namespace>` and its children from every cgroup hierarchy (runc puts
/// `ctr` containers in `/<namespace>/<id>`).
fn remove_cgroups(namespace: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut candidates: Vec<PathBuf> = vec![Path::new("/sys/fs/cgroup").join(namespace)];
    candidates.extend(hierarchies.flatten().map(|h| h.path().join(namespace)));
    for dir in candidates.into_iter().filter(|d| d.is_dir()) {
        let mut dirs = vec![dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            i += 1;
        }
        // Cgroup dirs are removed with rmdir, children first; their files cannot be deleted.
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
