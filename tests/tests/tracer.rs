//! The tracer against the real kernel: every kind of open and exec of a target mount namespace
//! arrives with the right fields, naming the file the kernel produced, and nothing of any other
//! namespace does.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::MetadataExt,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
};

use recorder::tracer::{Event, Tracer, TracerConfig, mount_namespace_of};
use recorder_common::{AT_FDCWD, EventKind};
use recorder_tests::root::require_root;
use std::os::unix::ffi::OsStrExt;

struct Workload {
    dir: tempfile::TempDir,
    long_relative: String,
}

/// Files the workload opens; the long path is over 256 bytes, under PATH_MAX.
fn workload_files() -> Workload {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for file in [
        "abs.txt",
        "rel.txt",
        "o2.txt",
        "handle.txt",
        "host-noise.txt",
    ] {
        std::fs::write(root.join(file), file).unwrap();
    }
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/viadirfd.txt"), "x").unwrap();
    let long_relative = format!("{}/{}/long.txt", "a".repeat(200), "b".repeat(200));
    std::fs::create_dir_all(root.join(Path::new(&long_relative).parent().unwrap())).unwrap();
    std::fs::write(root.join(&long_relative), "long").unwrap();
    Workload { dir, long_relative }
}

fn find<'a>(events: &'a [Event], pred: impl Fn(&Event) -> bool, what: &str) -> &'a Event {
    events.iter().find(|e| pred(e)).unwrap_or_else(|| {
        let seen: Vec<_> = events
            .iter()
            .map(|e| format!("{} {} {}", e.kind.name(), e.ret, e.path().display()))
            .collect();
        panic!("no event for {what}; saw:\n{}", seen.join("\n"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_open_and_exec_of_the_target_arrives_and_nothing_else() {
    require_root();
    let files = workload_files();
    let dir = files.dir.path().to_str().unwrap().to_owned();

    // As `recorder trace` runs it: with the path arguments too.
    let config = TracerConfig {
        arg_paths: true,
        ..TracerConfig::default()
    };
    let mut tracer = Tracer::load(&config).expect("load the eBPF programs");
    let mut stream = tracer.take_events().unwrap().expect("first take");
    assert!(
        tracer.take_events().unwrap().is_none(),
        "the stream is taken once"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_tracer-workload"))
        .args([&dir, &files.long_relative])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let mntns: u32 = line
        .strip_prefix("ready ")
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("workload said {line:?}"));
    assert_eq!(mount_namespace_of(child.id()).unwrap(), mntns);
    assert_ne!(mount_namespace_of(std::process::id()).unwrap(), mntns);
    tracer.add_target(mntns).unwrap();

    // The host namespace keeps opening a file all along; none of it may arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let noise_opens = Arc::new(AtomicU32::new(0));
    let noise = {
        let (stop, opens) = (stop.clone(), noise_opens.clone());
        let path = files.dir.path().join("host-noise.txt");
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                drop(std::fs::File::open(&path).unwrap());
                opens.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while noise_opens.load(Ordering::Relaxed) < 100 {
        std::thread::yield_now();
    }

    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut reported = std::collections::HashMap::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let (step, ret) = line.split_once(' ').unwrap();
        reported.insert(step.to_owned(), ret.parse::<i64>().unwrap());
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "workload: {status}");
    stop.store(true, Ordering::Relaxed);
    noise.join().unwrap();

    // Every record was written at syscall exit, before the workload could exit.
    let mut events = Vec::new();
    stream.drain(&mut events);

    assert!(
        events.iter().all(|e| e.mntns == mntns),
        "an event from another mount namespace arrived"
    );
    assert!(
        !events.iter().any(|e| e.path.ends_with(b"host-noise.txt")),
        "the host's opens leaked into the target's events"
    );

    let pid = status_pid(&events, "tracer-workload");
    let abs = find(
        &events,
        |e| e.kind == EventKind::Open && e.path() == Path::new(&format!("{dir}/abs.txt")),
        "open(2) by absolute path",
    );
    assert_eq!(abs.ret, reported["open"]);
    assert_eq!(abs.dirfd, AT_FDCWD);
    assert_eq!((abs.tgid, abs.tid), (pid, pid));
    assert_eq!(abs.comm, "tracer-workload");

    let rel = find(
        &events,
        |e| e.kind == EventKind::Openat && e.path() == Path::new("rel.txt"),
        "openat of a relative path",
    );
    assert_eq!(rel.dirfd, AT_FDCWD);
    assert_eq!(rel.ret, reported["openat-relative"]);
    assert_eq!(
        rel.dir.as_deref(),
        Some(dir.as_bytes()),
        "the cwd at the call"
    );
    assert_eq!(
        rel.absolute_path().unwrap(),
        Path::new(&format!("{dir}/rel.txt"))
    );
    assert_eq!(abs.dir, None, "an absolute path needs no directory");

    let dir_open = find(
        &events,
        |e| e.kind == EventKind::Openat && e.path() == Path::new("sub"),
        "openat of the directory",
    );
    assert_ne!(dir_open.flags & libc::O_DIRECTORY as u64, 0);
    let via_dirfd = find(
        &events,
        |e| e.kind == EventKind::Openat && e.path() == Path::new("viadirfd.txt"),
        "openat through a dirfd",
    );
    assert_eq!(i64::from(via_dirfd.dirfd), reported["dirfd-value"]);
    assert_eq!(via_dirfd.ret, reported["openat-dirfd"]);
    assert_eq!(
        via_dirfd.dir.as_deref(),
        Some(format!("{dir}/sub").as_bytes()),
        "the dirfd's directory"
    );

    let proc_status = find(
        &events,
        |e| e.path() == Path::new("status") && e.tgid == pid,
        "a relative open across a mount point",
    );
    assert_eq!(proc_status.ret, reported["openat-proc"]);
    assert_eq!(
        proc_status.dir.as_deref(),
        Some(format!("/proc/{pid}").as_bytes())
    );

    assert_eq!(reported["chroot-child"], 0, "the chrooted open succeeded");
    let chrooted = find(
        &events,
        |e| e.path() == Path::new("viadirfd.txt") && e.tgid != pid,
        "the open inside a chroot",
    );
    assert_eq!(
        chrooted.dir.as_deref(),
        Some(&b"/sub"[..]),
        "relative to the chroot"
    );
    assert!(
        !events.iter().any(|e| e.dir_unresolved),
        "a directory went unresolved"
    );

    let o2 = find(&events, |e| e.kind == EventKind::Openat2, "openat2");
    assert_eq!(o2.path(), Path::new(&format!("{dir}/o2.txt")));
    assert_ne!(
        o2.flags & libc::O_CLOEXEC as u64,
        0,
        "openat2 flags come from open_how"
    );
    assert_eq!(o2.ret, reported["openat2"]);

    let created = find(&events, |e| e.kind == EventKind::Creat, "creat");
    assert_eq!(created.path(), Path::new(&format!("{dir}/creat.txt")));
    assert_eq!(
        created.flags,
        (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64,
        "creat is open with O_CREAT | O_WRONLY | O_TRUNC"
    );
    assert_eq!(created.ret, reported["creat"]);

    assert_eq!(reported["name-to-handle"], 0, "name_to_handle_at succeeded");
    let by_handle = find(
        &events,
        |e| e.kind == EventKind::OpenByHandleAt,
        "open_by_handle_at",
    );
    assert!(by_handle.path.is_empty(), "a handle has no path argument");
    assert!(!by_handle.path_unreadable);
    assert_eq!(by_handle.ret, reported["open-by-handle"]);

    let missing = find(
        &events,
        |e| e.path.ends_with(b"missing.txt"),
        "the failed open",
    );
    assert_eq!(missing.ret, -i64::from(libc::ENOENT));
    assert_eq!(reported["openat-missing"], -i64::from(libc::ENOENT));

    let long = find(&events, |e| e.path.ends_with(b"long.txt"), "the long path");
    assert!(files.long_relative.len() > 256);
    assert_eq!(
        long.path(),
        Path::new(&files.long_relative),
        "the long path arrives whole"
    );
    assert!(long.ret >= 0);

    // A successful exec arrives once, from sched_process_exec: the kernel's copy of the name
    // and the file it runs (/bin/true through the /bin symlink, as stat follows it).
    let exec = find(&events, |e| e.kind == EventKind::Exec, "exec");
    assert_eq!(exec.path(), Path::new("/bin/true"));
    assert_eq!(exec.ret, 0);
    assert_eq!(exec.tgid, pid);
    assert!(!exec.script, "/bin/true is no script");
    assert_eq!(
        exec.comm, "true",
        "the exec has happened: comm is the new program's"
    );
    assert!(
        !events.iter().any(|e| e.kind == EventKind::Execve),
        "a successful execve is reported by sched_process_exec alone"
    );

    // Every successful call names the file the kernel produced: the same inode stat finds.
    let same_file = |event: &Event, path: &str| {
        let file = event
            .file
            .as_ref()
            .unwrap_or_else(|| panic!("no file for {path}: {event:?}"));
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!((file.dev, file.ino), (meta.dev(), meta.ino()), "{path}");
        assert_eq!(file.mode, meta.mode(), "{path}");
        assert!(
            meta.is_dir()
                || Path::new(path).ends_with(Path::new(std::ffi::OsStr::from_bytes(
                    &file.path[file.path.iter().rposition(|&b| b == b'/').unwrap() + 1..]
                ))),
            "{path} named {:?}",
            String::from_utf8_lossy(&file.path)
        );
    };
    same_file(abs, &format!("{dir}/abs.txt"));
    same_file(rel, &format!("{dir}/rel.txt"));
    same_file(dir_open, &format!("{dir}/sub"));
    assert!(dir_open.file.as_ref().unwrap().is_dir());
    same_file(via_dirfd, &format!("{dir}/sub/viadirfd.txt"));
    same_file(o2, &format!("{dir}/o2.txt"));
    same_file(created, &format!("{dir}/creat.txt"));
    same_file(by_handle, &format!("{dir}/handle.txt"));
    same_file(long, &format!("{dir}/{}", files.long_relative));
    same_file(exec, "/bin/true");
    assert_eq!(
        proc_status.file.as_ref().unwrap().fs_type(),
        Some("proc"),
        "procfs is named as such"
    );
    assert!(missing.file.is_none(), "a failed open names no file");
    // After the exec the new program's own opens (its loader's) are traced too.
    assert!(
        events.iter().any(|e| e.comm == "true" && e.tgid == pid),
        "no open of the exec'd program arrived"
    );

    // Order is the order of the calls.
    let order: Vec<u64> = [
        abs, rel, dir_open, via_dirfd, o2, created, by_handle, missing, long, exec,
    ]
    .iter()
    .map(|e| e.ts_ns)
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "events out of order: {order:?}"
    );
    let positions: Vec<usize> = [
        abs, rel, dir_open, via_dirfd, o2, created, by_handle, missing, long, exec,
    ]
    .iter()
    .map(|e| events.iter().position(|x| std::ptr::eq(x, *e)).unwrap())
    .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "ring order differs: {positions:?}"
    );

    let counters = tracer.counters().unwrap();
    assert_eq!(counters.dropped, 0);
    assert_eq!(counters.in_flight_full, 0);
    assert_eq!(counters.recursion_misses, 0);
    assert_eq!(counters.path_read_failed, 0);
    assert_eq!(counters.file_unresolved, 0);
    assert_eq!(
        counters.emitted,
        events.len() as u64,
        "every emitted record was received"
    );
    assert_eq!(stream.undecodable(), 0);
}

/// The workload's pid, from its own first traced call.
fn status_pid(events: &[Event], comm: &str) -> u32 {
    find(events, |e| e.comm == comm, comm).tgid
}

#[tokio::test]
async fn nothing_arrives_before_a_target_is_armed_or_after_it_is_removed() {
    require_root();
    let mut tracer = Tracer::load(&TracerConfig::default()).expect("load the eBPF programs");
    let mut stream = tracer.take_events().unwrap().unwrap();
    let own = mount_namespace_of(std::process::id()).unwrap();

    std::fs::read("/etc/hostname").unwrap();
    let mut events = Vec::new();
    stream.drain(&mut events);
    assert!(events.is_empty(), "an unarmed tracer emitted {events:?}");

    tracer.add_target(own).unwrap();
    std::fs::read("/etc/hostname").unwrap();
    stream.drain(&mut events);
    let hostname = std::fs::metadata("/etc/hostname").unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.tid == nix_gettid()
                && e.file.as_ref().is_some_and(|f| f.ino == hostname.ino())),
        "the armed namespace's open did not arrive"
    );
    assert!(
        events.iter().all(|e| e.path.is_empty()),
        "without arg_paths the path arguments are not read"
    );

    tracer.remove_target(own).unwrap();
    events.clear();
    // Let calls that were in flight while the filter changed finish.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stream.drain(&mut events);
    events.clear();
    std::fs::read("/etc/hostname").unwrap();
    stream.drain(&mut events);
    assert!(
        !events.iter().any(|e| e.tid == nix_gettid()),
        "a removed target still emitted"
    );
}

fn nix_gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

#[test]
fn a_vanished_pid_is_a_clear_error() {
    let err = mount_namespace_of(u32::MAX - 1).unwrap_err().to_string();
    assert!(err.contains("pid 4294967294"), "{err}");
}
