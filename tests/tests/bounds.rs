//! Every input is bounded (issue 11): unpacked size (`--max-unpacked`, holes not counted),
//! sparse and zero-filled files written sparse, trees unpacked in time linear in their depth,
//! documents read up to a cap, blobs that are not regular files refused at once, and a
//! SIGTERM during unpacking honoured promptly with everything cleaned up.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use recorder::sandbox::{UnpackBudget, UnpackError, unpack_layer_within};
use recorder::status::{State, client};
use recorder_tests::agent_fixtures::recorder_bin;
use recorder_tests::image_fixtures::{Comp, oci_layout_from_blobs};
use recorder_tests::root::require_root;

/// Appends an entry (long names through GNU long-name entries).
fn add(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    data: impl std::io::Read,
    size: u64,
) {
    let mut h = entry_header(kind, size);
    b.append_data(&mut h, name, data).unwrap();
}

fn entry_header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(0);
    h
}

/// A GNU sparse entry of `real` bytes whose only data is `tail` at its very end: what a
/// 113-byte compressed layer used to unpack into gigabytes of real zeros.
fn sparse_entry(builder: &mut tar::Builder<Vec<u8>>, name: &str, real: u64, tail: &[u8; 512]) {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(512);
    h.set_mode(0o644);
    h.set_mtime(0);
    let gnu = h.as_gnu_mut().unwrap();
    let octal = |field: &mut [u8; 12], v: u64| {
        let s = format!("{v:011o}\0");
        field.copy_from_slice(s.as_bytes());
    };
    octal(&mut gnu.sparse[0].offset, real - 512);
    octal(&mut gnu.sparse[0].numbytes, 512);
    octal(&mut gnu.realsize, real);
    h.set_cksum();
    builder.append(&h, &tail[..]).unwrap();
}

fn disk_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn sparse_and_zero_filled_files_take_no_disk_and_the_budget_counts_real_bytes() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let tail = [7u8; 512];
    sparse_entry(&mut b, "sparse", 256 << 20, &tail);
    add(
        &mut b,
        "zeros",
        tar::EntryType::Regular,
        std::io::repeat(0).take_bytes(8 << 20),
        8 << 20,
    );
    let tar = b.into_inner().unwrap();
    assert!(tar.len() < (9 << 20));

    let target = dir.path().join("ok");
    std::fs::create_dir(&target).unwrap();
    let mut budget = UnpackBudget::new(1 << 20);
    unpack_layer_within(tar.as_slice(), &target, &mut budget).unwrap();
    // Only the 64 KiB chunk holding the tail, and the entries' metadata, count.
    assert!(budget.used() <= (64 << 10) + 2048, "{}", budget.used());
    let sparse = target.join("sparse");
    assert_eq!(std::fs::metadata(&sparse).unwrap().len(), 256 << 20);
    assert!(disk_bytes(&sparse) <= 128 << 10, "{}", disk_bytes(&sparse));
    let data = std::fs::read(&sparse).unwrap();
    assert!(data[..data.len() - 512].iter().all(|b| *b == 0));
    assert_eq!(&data[data.len() - 512..], &tail[..]);
    let zeros = target.join("zeros");
    assert_eq!(std::fs::metadata(&zeros).unwrap().len(), 8 << 20);
    assert!(disk_bytes(&zeros) <= 64 << 10, "{}", disk_bytes(&zeros));

    // Real data past the limit is refused, naming the entry.
    let mut b = tar::Builder::new(Vec::new());
    add(
        &mut b,
        "big",
        tar::EntryType::Regular,
        std::io::repeat(1).take_bytes(2 << 20),
        2 << 20,
    );
    let tar = b.into_inner().unwrap();
    let target = dir.path().join("over");
    std::fs::create_dir(&target).unwrap();
    let err =
        unpack_layer_within(tar.as_slice(), &target, &mut UnpackBudget::new(1 << 20)).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("\"big\""), "{err}");
    assert!(disk_bytes(&target.join("big")) <= 2 << 20);
}

trait TakeBytes {
    fn take_bytes(self, n: u64) -> std::io::Take<std::io::Repeat>;
}

impl TakeBytes for std::io::Repeat {
    fn take_bytes(self, n: u64) -> std::io::Take<std::io::Repeat> {
        std::io::Read::take(self, n)
    }
}

#[test]
fn a_deep_tree_unpacks() {
    require_root();
    // 1000 directories deep, 10,000 files at the bottom: quadratic walks took 18.4 s here.
    let mut b = tar::Builder::new(Vec::new());
    let mut path = String::new();
    for i in 0..1000 {
        if i > 0 {
            path.push('/');
        }
        path.push('d');
        add(&mut b, &path, tar::EntryType::Directory, &[][..], 0);
    }
    for i in 0..10_000 {
        let name = format!("{path}/f{i}");
        add(&mut b, &name, tar::EntryType::Regular, &b"x"[..], 1);
    }
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    unpack_layer_within(tar.as_slice(), dir.path(), &mut UnpackBudget::unlimited()).unwrap();
    eprintln!(
        "11,000 entries 1000 deep unpacked in {:?}",
        started.elapsed()
    );
    // The deepest file, read through a directory fd walk (the path exceeds PATH_MAX).
    let mut fd = std::fs::File::open(dir.path()).unwrap();
    for _ in 0..1000 {
        fd = nix::fcntl::openat(
            &fd,
            "d",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .map(std::fs::File::from)
        .unwrap();
    }
    let names = std::fs::read_dir(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .unwrap()
    .count();
    assert_eq!(names, 10_000);
}

/// Runs `cmd`, failing the test if it takes longer than `deadline` (it is then killed).
fn output_within(mut cmd: Command, deadline: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + deadline;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{cmd:?} still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn small_layout(root: &Path) -> String {
    let mut b = tar::Builder::new(Vec::new());
    add(
        &mut b,
        "etc/hosts",
        tar::EntryType::Regular,
        &b"hi\n"[..],
        3,
    );
    let tar = b.into_inner().unwrap();
    oci_layout_from_blobs(root, "small", &[(Comp::Tar.media_type().into(), tar)]);
    recorder_tests::image_fixtures::digest(&{
        let mut b = tar::Builder::new(Vec::new());
        add(
            &mut b,
            "etc/hosts",
            tar::EntryType::Regular,
            &b"hi\n"[..],
            3,
        );
        b.into_inner().unwrap()
    })
}

#[test]
fn files_that_are_not_regular_or_too_large_are_refused_at_once() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let inspect = |layout: &Path| {
        let mut c = Command::new(recorder_bin());
        c.args(["image", "inspect"]).arg(layout);
        output_within(c, Duration::from_secs(30))
    };

    // A layer blob that is a FIFO: no writer ever comes, and nothing may wait for one.
    let layout = dir.path().join("fifo");
    let layer = small_layout(&layout);
    let blob = layout
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    std::fs::remove_file(&blob).unwrap();
    nix::unistd::mkfifo(&blob, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let out = inspect(&layout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a regular file (a fifo)"), "{stderr}");

    // index.json that is /dev/zero, or merely huge.
    let layout = dir.path().join("zero");
    small_layout(&layout);
    std::fs::remove_file(layout.join("index.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", layout.join("index.json")).unwrap();
    let out = inspect(&layout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not a regular file (a character device)"),
        "{stderr}"
    );
    let layout = dir.path().join("huge");
    small_layout(&layout);
    std::fs::write(layout.join("index.json"), vec![b' '; (16 << 20) + 1]).unwrap();
    let out = inspect(&layout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("larger than the 16777216-byte limit"),
        "{stderr}"
    );

    // A record that is /dev/zero.
    let mut c = Command::new(recorder_bin());
    c.args(["record", "show", "/dev/zero"]);
    let out = output_within(c, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

/// Starts `recorder run` of an image of 300,000 empty files (minutes to unpack, a second or
/// two to index) with a status socket; returns the child, the work dir and the socket.
fn run_many_files(dir: &Path) -> (std::process::Child, PathBuf, PathBuf) {
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "f", tar::EntryType::Directory, &[][..], 0);
    for i in 0..300_000 {
        add(
            &mut b,
            &format!("f/{i}"),
            tar::EntryType::Regular,
            &[][..],
            0,
        );
    }
    let tar = b.into_inner().unwrap();
    let image = dir.join("image");
    oci_layout_from_blobs(
        &image,
        "many",
        &[(Comp::Zstd.media_type().into(), Comp::Zstd.compress(&tar))],
    );
    let (work, socket) = (dir.join("work"), dir.join("status.sock"));
    std::fs::create_dir(&work).unwrap();
    let child = Command::new(recorder_bin())
        .env("RECORDER_CACHE_DIR", dir.join("layer-cache"))
        .arg("run")
        .arg("--image")
        .arg(&image)
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--work-dir")
        .arg(&work)
        .arg("--status-socket")
        .arg(&socket)
        .args(["--", "/bin/true"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, work, socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_recorder_leaves_no_unpacked_layers() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, work, socket) = run_many_files(dir.path());
    if let Err(e) = client::wait_for(
        &socket,
        State::Unpacking,
        Duration::from_secs(120),
        Duration::from_millis(20),
    )
    .await
    {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(std::fs::read_dir(&work).unwrap().next().is_some());
    // SIGKILL: nothing of the recorder runs any more; its watchdog removes the work dir.
    child.kill().unwrap();
    child.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&work).unwrap().next().is_some() {
        assert!(Instant::now() < end, "the work dir was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_unpacking_stops_promptly_and_cleans_up() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, work, socket) = run_many_files(dir.path());
    let pid = child.id();
    let report = match client::wait_for(
        &socket,
        State::Unpacking,
        Duration::from_secs(120),
        Duration::from_millis(20),
    )
    .await
    {
        Ok(report) => report,
        Err(e) => {
            // Our own child: kill it before failing, so nothing of the test outlives it.
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        }
    };
    assert!(report.has_reached(State::Indexing));
    // Let it get well into the layer.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Some(run_dir) = std::fs::read_dir(&work).unwrap().next() else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("no run dir: {}", String::from_utf8_lossy(&out.stderr));
    };
    drop(run_dir);
    // The layer is being unpacked into a temp dir of the layer cache.
    let cache = dir.path().join("layer-cache");
    let making: Vec<_> = std::fs::read_dir(cache.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(making.len(), 1, "{making:?}");
    let unpacked_before = std::fs::read_dir(making[0].join("root/f")).unwrap().count();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let sent = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let took = sent.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("exited {took:?} after SIGTERM, {unpacked_before} of 300000 files unpacked then");
    // Far short of the 300,000 files: it stopped, rather than finishing first.
    assert!(unpacked_before < 300_000);
    assert!(took < Duration::from_secs(10), "{took:?}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped (SIGTERM) before tracing started"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(left.is_empty(), "work dir not emptied: {left:?}");
    // The half-made cache entry is removed, and none was put in place.
    for sub in ["tmp", "layers"] {
        let left: Vec<_> = std::fs::read_dir(cache.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "cache {sub}/ not emptied: {left:?}");
    }
}
