//! `recorder trace --json` end to end (as root): the real binary, the real kernel.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn mntns(pid: u32) -> u64 {
    recorder::procfs::MntNs::of_pid(pid)
        .expect("reading a mount namespace")
        .inode()
}

#[test]
fn json_lines_have_the_documented_keys_and_sigint_prints_counters() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test loads eBPF programs and needs root");

    let mut workload = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("read go; cat /etc/hostname >/dev/null; exec /bin/true")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = workload.id();
    let own = mntns(std::process::id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while mntns(pid) == own {
        assert!(Instant::now() < deadline, "workload never unshared");
        std::thread::sleep(Duration::from_millis(5));
    }
    let target = mntns(pid);

    let mut recorder = Command::new(env!("CARGO_BIN_EXE_recorder"))
        .args(["trace", "--json", "--pid", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(recorder.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            stderr.read_line(&mut line).unwrap(),
            0,
            "recorder exited early"
        );
        if line.starts_with("tracing mount namespace") {
            break;
        }
    }
    workload.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(workload.wait().unwrap().success());
    // The consumer polls every 5 ms; give it a few polls before the signal.
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    let output = recorder.wait_with_output().unwrap();
    assert!(output.status.success(), "exit status {}", output.status);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(
        rest.contains("emitted ") && rest.contains("dropped 0"),
        "{rest}"
    );

    let stdout = String::from_utf8(output.stdout).unwrap();
    let keys = [
        "kind", "tgid", "tid", "mntns", "dirfd", "flags", "ret", "tsNs", "comm", "path",
    ];
    let mut events = Vec::new();
    for line in stdout.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut got: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        got.sort_unstable();
        let mut want = keys.to_vec();
        // A call that succeeded also names the file the kernel produced.
        if event["ret"].as_i64().is_some_and(|r| r >= 0) {
            want.push("file");
        }
        want.sort_unstable();
        assert_eq!(got, want, "keys of {line}");
        // And in the documented order.
        let at: Vec<usize> = keys
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "key order of {line}");
        events.push(event);
    }
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "openat" && e["path"] == "/etc/hostname" && e["comm"] == "cat"),
        "no openat of /etc/hostname by cat in {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "exec" && e["path"] == "/bin/true" && e["ret"] == 0),
        "no exec of /bin/true"
    );
    // What was asked, and what the kernel opened: the same inode as stat finds.
    let hostname = std::fs::metadata("/etc/hostname").unwrap();
    let opened = events
        .iter()
        .find(|e| e["kind"] == "openat" && e["path"] == "/etc/hostname")
        .unwrap();
    assert_eq!(
        opened["file"]["ino"],
        std::os::unix::fs::MetadataExt::ino(&hostname)
    );
    for key in ["path", "dev", "ino", "mntId", "mode", "fsType"] {
        assert!(
            opened["file"].get(key).is_some(),
            "no file.{key} in {opened}"
        );
    }
    assert!(events.iter().all(|e| e["mntns"] == target));
}
