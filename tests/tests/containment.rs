//! `recorder run` contains the workload like a container runtime (issue 11), asserted from
//! inside it by a probe binary (`src/bin/containment-probe.rs`): capabilities, no_new_privs,
//! seccomp, namespaces, read-only `/proc/sys` and `/sys`, the host's 127.0.0.1 out of reach;
//! each opt-out changes what it names; and a SIGKILLed recorder leaves no workload, cgroup or
//! work dir behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recorder_tests::agent_fixtures::recorder_bin;
use recorder_tests::image_fixtures::oci_layout_with_config;
use recorder_tests::root::require_root;
use recorder_tests::sandbox_fixtures::{LayerBuilder, ldd};

/// containerd's default capability set (Docker's too), as `/proc/self/status` prints it.
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

/// An image whose only program is the probe, at `/bin/probe`, named `name`.
fn probe_image(root: &Path, name: &str) {
    let probe = PathBuf::from(env!("CARGO_BIN_EXE_containment-probe"));
    let mut layer = LayerBuilder::new();
    layer
        .dir("etc", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\n")
        .dir("bin", 0o755)
        .file("bin/probe", 0o755, &std::fs::read(&probe).unwrap());
    let mut dirs = std::collections::BTreeSet::new();
    let libs = ldd(&probe);
    for lib in &libs {
        let mut p = lib.parent();
        while let Some(dir) = p.filter(|d| d != &Path::new("/")) {
            dirs.insert(dir.to_owned());
            p = dir.parent();
        }
    }
    for dir in dirs {
        layer.dir(dir.to_str().unwrap().trim_start_matches('/'), 0o755);
    }
    for lib in libs {
        let name = lib.to_str().unwrap().trim_start_matches('/');
        layer.file(name, 0o755, &std::fs::read(&lib).unwrap());
    }
    let tar = layer.finish();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/probe"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [recorder_tests::image_fixtures::digest(&tar)]}
    }))
    .unwrap();
    oci_layout_with_config(
        root,
        name,
        &config,
        &[("application/vnd.oci.image.layer.v1.tar".into(), tar)],
    );
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        probe_image(&dir.path().join("image"), "probe");
        std::fs::create_dir(dir.path().join("work")).unwrap();
        Self { dir }
    }

    fn command(&self, flags: &[&str], cmd: &[&str]) -> Command {
        let p = self.dir.path();
        let mut c = Command::new(recorder_bin());
        c.env("RECORDER_CACHE_DIR", p.join("layer-cache"))
            .arg("run")
            .arg("--image")
            .arg(p.join("image"))
            .arg("--store")
            .arg(p.join("store"))
            .arg("--work-dir")
            .arg(p.join("work"))
            .args(flags)
            .arg("--")
            .args(cmd);
        c
    }

    /// Runs the probe with `flags`, a listener on the host's 127.0.0.1 given as its port;
    /// returns what it reported, and the recorder's stderr.
    fn probe(&self, flags: &[&str]) -> (HashMap<String, String>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let out = self
            .command(flags, &["/bin/probe", &port])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
        let report: HashMap<String, String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("probe "))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert!(
            report.contains_key("end"),
            "probe did not finish:\n{stdout}\n{stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("work"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "work dir not emptied: {left:?}");
        (report, String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The probe's `probe KEY VALUE` lines, once the recorder exited 0 and the probe finished.
fn parse_report(out: &std::process::Output) -> HashMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: HashMap<String, String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("probe "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        report.contains_key("end"),
        "probe did not finish:\n{stdout}\n{stderr}"
    );
    report
}

fn host_ns(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn the_workload_is_confined_by_default() {
    let fx = Fixture::new();
    let (r, _) = fx.probe(&[]);
    assert_eq!(r["CapEff"], DEFAULT_CAP_EFF, "{r:?}");
    assert_eq!(r["CapBnd"], DEFAULT_CAP_EFF, "{r:?}");
    assert_eq!(r["NoNewPrivs"], "1", "{r:?}");
    assert_eq!(r["Seccomp"], "2", "{r:?}");
    for ns in ["mnt", "pid", "uts", "ipc", "net"] {
        assert_ne!(r[&format!("ns-{ns}")], host_ns(ns), "{ns} namespace shared");
    }
    // Read-only: access(2) says EROFS (30) even to root, and the mounts say so.
    assert_eq!(r["proc-sys-writable"], "err30", "{r:?}");
    assert_eq!(r["proc-sys-readonly"], "true", "{r:?}");
    // ENOENT where this kernel has no sysrq.
    assert!(
        ["err30", "err2"].contains(&r["sysrq-writable"].as_str()),
        "{r:?}"
    );
    assert_eq!(r["sys-readonly"], "true", "{r:?}");
    assert_eq!(r["sys-writable"], "err30", "{r:?}");
    // The host's listener is out of reach (ECONNREFUSED: nothing listens in the new netns),
    // while the container's own loopback is up.
    assert_eq!(r["host-port"], "err111", "{r:?}");
    assert_eq!(r["loopback"], "ok", "{r:?}");
    // The seccomp profile: EPERM for namespaces, and for io_uring.
    assert_eq!(r["unshare-user"], "err1", "{r:?}");
    assert_eq!(r["io-uring"], "err1", "{r:?}");
    // Its own root keeps setuid semantics (no_new_privs is what stops escalation).
    assert_eq!(r["root-nosuid"], "false", "{r:?}");
}

/// The same spec builder serves `run --containerd`: the same containment through containerd.
#[test]
fn run_through_containerd_is_confined_the_same_way() {
    use recorder_tests::containerd::{Daemon, assert_run_left_nothing, recorder_run};
    const REF: &str = "docker.io/recorder/probe:1";
    let daemon = Daemon::start();
    let layout = daemon.scratch().join("probe-layout");
    probe_image(&layout, REF);
    daemon.import_layout(&layout);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let out = recorder_run(&daemon, &["--image", REF, "--", "/bin/probe", &port])
        .output()
        .unwrap();
    let r = parse_report(&out);
    assert_eq!(r["CapEff"], DEFAULT_CAP_EFF, "{r:?}");
    assert_eq!(r["NoNewPrivs"], "1", "{r:?}");
    assert_eq!(r["Seccomp"], "2", "{r:?}");
    for ns in ["mnt", "pid", "uts", "ipc", "net"] {
        assert_ne!(r[&format!("ns-{ns}")], host_ns(ns), "{ns} namespace shared");
    }
    assert_eq!(r["proc-sys-writable"], "err30", "{r:?}");
    assert_eq!(r["sys-readonly"], "true", "{r:?}");
    assert_eq!(r["host-port"], "err111", "{r:?}");
    assert_eq!(r["unshare-user"], "err1", "{r:?}");
    assert_eq!(r["io-uring"], "err1", "{r:?}");
    assert_run_left_nothing(&daemon);
}

#[test]
fn net_host_shares_only_the_network() {
    let fx = Fixture::new();
    let (r, _) = fx.probe(&["--net-host"]);
    assert_eq!(r["ns-net"], host_ns("net"));
    assert_eq!(r["host-port"], "ok", "{r:?}");
    assert_ne!(r["ns-mnt"], host_ns("mnt"));
    assert_eq!(r["CapEff"], DEFAULT_CAP_EFF);
    assert_eq!(r["Seccomp"], "2");
}

#[test]
fn seccomp_unconfined_drops_only_the_filter() {
    let fx = Fixture::new();
    let (r, _) = fx.probe(&["--seccomp", "unconfined"]);
    assert_eq!(r["Seccomp"], "0", "{r:?}");
    assert_eq!(r["NoNewPrivs"], "1");
    assert_eq!(r["CapEff"], DEFAULT_CAP_EFF);
    assert_eq!(r["proc-sys-writable"], "err30");
    assert_eq!(r["host-port"], "err111");
    // io_uring is no longer refused by the filter.
    assert_ne!(r["io-uring"], "err1", "{r:?}");
}

#[test]
fn privileged_opts_out_of_everything_loudly() {
    let fx = Fixture::new();
    let (r, stderr) = fx.probe(&["--privileged"]);
    assert!(stderr.contains("WARNING: --privileged"), "{stderr}");
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert_eq!(r["CapEff"], bounding, "{r:?}");
    assert_eq!(r["NoNewPrivs"], "0");
    assert_eq!(r["Seccomp"], "0");
    // Checked with access(2) only: nothing is written.
    assert_eq!(r["proc-sys-writable"], "ok", "{r:?}");
    assert_eq!(r["sys-readonly"], "false", "{r:?}");
    // Still in namespaces of its own, as `docker run --privileged`.
    assert_ne!(r["ns-net"], host_ns("net"));
    assert_eq!(r["host-port"], "err111");
}

fn ppid_and_comm(pid: u32) -> Option<(u32, String, char)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
    };
    let state = field("State:")?.chars().next()?;
    Some((field("PPid:")?.parse().ok()?, field("Name:")?, state))
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sigkilled_recorder_leaves_no_workload_cgroup_or_work_dir() {
    let fx = Fixture::new();
    let mut child = fx
        .command(&["--memory", "64M"], &["/bin/probe", "sleep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let recorder = child.id();
    // Should an assertion fail before the SIGKILL, the recorder still goes (and cleans up).
    // Disarmed before the SIGKILL: once reaped, the pid may be someone else's.
    struct Term(Option<u32>);
    impl Drop for Term {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
    let mut term = Term(Some(recorder));
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap_or_default());
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the workload never said it was ready");
        if line == "probe ready 1" {
            break;
        }
    }
    // The container's init is the recorder's child (it is a subreaper).
    let workload = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            ppid_and_comm(*pid).is_some_and(|(ppid, comm, _)| ppid == recorder && comm == "probe")
        })
        .expect("no workload process under the recorder");
    let work = fx.dir.path().join("work");
    let run_dir = std::fs::read_dir(&work)
        .unwrap()
        .next()
        .expect("no run dir")
        .unwrap()
        .path();
    // Nobody but root may enter it.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&run_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // An unprivileged user cannot reach the image's files (setuid ones included).
    let nobody = Command::new("/bin/ls")
        .arg(run_dir.join("layers/0/bin"))
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!nobody.status.success(), "uid 65534 listed the layers");
    assert!(
        String::from_utf8_lossy(&nobody.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );
    let id = std::fs::read_dir(run_dir.join("sandbox/runc"))
        .unwrap()
        .next()
        .expect("no runc state")
        .unwrap()
        .file_name();
    let cgroup = Path::new("/sys/fs/cgroup/pids").join(&id);
    assert!(cgroup.is_dir(), "no pids cgroup {}", cgroup.display());
    // The default pids limit and the asked-for memory limit are the container's.
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap().trim().to_owned();
    assert_eq!(read(cgroup.join("pids.max")), "4096");
    let memory = Path::new("/sys/fs/cgroup/memory").join(&id);
    assert_eq!(
        read(memory.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );

    term.0 = None;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(recorder as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    wait_until("the workload is gone", Duration::from_secs(20), || {
        ppid_and_comm(workload).is_none_or(|(_, comm, state)| comm != "probe" || state == 'Z')
    });
    wait_until("the cgroup is removed", Duration::from_secs(20), || {
        !cgroup.exists()
    });
    wait_until("the work dir is emptied", Duration::from_secs(20), || {
        std::fs::read_dir(&work).unwrap().next().is_none()
    });
}
