//! `recorder run` end to end, as root: the exact record of a workload that makes every kind of
//! access, a stop by SIGTERM that still commits, and no mount or scratch file left behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use recorder::image::BlobDigest;
use recorder::status::{State, client};
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{
    Expected, LocalRun, expected_record, record_entries, recorder_bin, write_image,
};
use recorder_tests::deadline::output_within;
use recorder_tests::root::require_root;
use recorder_tests::sandbox_fixtures::mounts_mentioning;

/// The digest on the last stdout line, and the record it names in `store`.
fn committed(stdout: &[u8], store: &Path) -> (BlobDigest, Vec<u8>) {
    let stdout = String::from_utf8_lossy(stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let digest: BlobDigest = last
        .parse()
        .unwrap_or_else(|e| panic!("last stdout line {last:?}: {e}"));
    let bytes = ContentStore::open(store).unwrap().read(&digest).unwrap();
    (digest, bytes)
}

/// The companion blob named in the summary: who read each entry, for failure messages.
fn companion(stderr: &str, store: &Path) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("companion: "))
        .and_then(|d| d.parse::<BlobDigest>().ok())
        .and_then(|d| ContentStore::open(store).ok()?.read(&d).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The companion the README promises: one line per record entry, in record order, with the
/// time offset (first-access order, so never decreasing), pid, comm and kind of access.
fn assert_companion(companion: &str, entries: &[(String, usize)]) {
    let lines: Vec<serde_json::Value> = companion
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(lines.len(), entries.len(), "companion:\n{companion}");
    let mut last_offset = 0;
    for (i, (line, (path, _))) in lines.iter().zip(entries).enumerate() {
        assert_eq!(line["index"], i, "{line}");
        assert_eq!(line["path"], path.as_str(), "{line}");
        let offset = line["offsetNs"]
            .as_u64()
            .unwrap_or_else(|| panic!("{line}"));
        assert!(offset >= last_offset, "offsets go back at {line}");
        last_offset = offset;
        assert!(line["pid"].as_u64().is_some_and(|p| p > 1), "{line}");
        let kind = match path.as_str() {
            "bin/sh" | "bin/cat" | "bin/grep" | "bin/ls" => "exec",
            p if p.contains("/ld-linux") => "interpreter",
            _ => "open",
        };
        assert_eq!(line["kind"], kind, "{line}");
        let comm = match path.as_str() {
            "bin/sh" | "app/run.sh" => Some("sh"),
            "bin/cat" | "etc/shadowed" | "app/rel.txt" => Some("cat"),
            "bin/grep" | "app/tree/deep/found.txt" => Some("grep"),
            "bin/ls" => Some("ls"),
            _ => None,
        };
        if let Some(comm) = comm {
            assert_eq!(line["comm"], comm, "{line}");
        } else {
            assert!(
                line["comm"].as_str().is_some_and(|c| !c.is_empty()),
                "{line}"
            );
        }
    }
}

fn assert_cleaned(work: &Path) {
    let left: Vec<_> = std::fs::read_dir(work).unwrap().collect();
    assert!(left.is_empty(), "work dir not emptied: {left:?}");
    assert_eq!(mounts_mentioning(work), Vec::<String>::new());
}

#[test]
fn run_records_exactly_the_image_files_the_workload_reads() {
    require_root();
    let LocalRun {
        dir,
        image,
        store,
        work,
        manifest,
    } = LocalRun::new();
    let record_out = dir.path().join("record.json");

    let out = Command::new(recorder_bin())
        .env("RECORDER_CACHE_DIR", dir.path().join("layer-cache"))
        .arg("run")
        .args(["--image".as_ref(), image.as_os_str()])
        .args(["--store".as_ref(), store.as_os_str()])
        .args(["--record-out".as_ref(), record_out.as_os_str()])
        .args(["--work-dir".as_ref(), work.as_os_str()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");

    let (_, bytes) = committed(&out.stdout, &store);
    assert_eq!(std::fs::read(&record_out).unwrap(), bytes);
    assert_eq!(
        record_entries(&bytes, &manifest),
        expected_record(true),
        "{}",
        companion(&stderr, &store)
    );

    assert_companion(
        &companion(&stderr, &store),
        &record_entries(&bytes, &manifest),
    );

    assert!(stderr.contains("record: complete"), "{stderr}");
    assert!(
        stderr.contains("workload exited (exit status 0)"),
        "{stderr}"
    );
    for reason in [
        "proc=",
        "tmpfs=",
        "not-in-image=",
        "whiteout=",
        "directory=",
    ] {
        assert!(
            stderr.contains(reason),
            "no {reason} exclusion in:\n{stderr}"
        );
    }
    assert_cleaned(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stopped_by_sigterm_commits_what_was_read() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (image, store, work, socket) = (
        dir.path().join("image"),
        dir.path().join("store"),
        dir.path().join("work"),
        dir.path().join("status.sock"),
    );
    std::fs::create_dir(&work).unwrap();
    let manifest = write_image(&image);
    let mut want = Expected::default();
    want.exec("sh")
        .exec("cat")
        .file("etc/shadowed", 1)
        .exec("sleep");

    let child = Command::new(recorder_bin())
        .env("RECORDER_CACHE_DIR", dir.path().join("layer-cache"))
        .arg("run")
        .args(["--image".as_ref(), image.as_os_str()])
        .args(["--store".as_ref(), store.as_os_str()])
        .args(["--work-dir".as_ref(), work.as_os_str()])
        .args(["--status-socket".as_ref(), socket.as_os_str()])
        .args(["--", "/bin/sh", "-c", "cat /etc/shadowed; exec sleep 1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the workload has read everything it will read before sleeping.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let report = client::wait_for(
            &socket,
            State::Tracing,
            Duration::from_secs(60),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        if report.counters.recorded_paths == want.0.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "60 s and {} of {} paths recorded",
            report.counters.recorded_paths,
            want.0.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = output_within(
        child,
        Duration::from_secs(120),
        "recorder run after SIGTERM",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("stopped: SIGTERM"), "{stderr}");
    let (_, bytes) = committed(&out.stdout, &store);
    assert_eq!(record_entries(&bytes, &manifest), want.0);
    assert_cleaned(&work);
    assert!(
        !socket.exists(),
        "the status socket is removed on the way out"
    );
}

/// `run --period` stops the sandboxed workload when the period ends: exit 0, the record of what
/// it read committed, nothing left behind.
#[test]
fn run_stopped_by_its_period_commits_what_was_read() {
    require_root();
    let LocalRun {
        dir,
        image,
        store,
        work,
        manifest,
    } = LocalRun::new();
    let out = Command::new(recorder_bin())
        .env("RECORDER_CACHE_DIR", dir.path().join("layer-cache"))
        .arg("run")
        .args(["--image".as_ref(), image.as_os_str()])
        .args(["--store".as_ref(), store.as_os_str()])
        .args(["--work-dir".as_ref(), work.as_os_str()])
        .args(["--period", "5s"])
        .args(["--", "/bin/sh", "-c", "cat /etc/shadowed; exec sleep 1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(out, Duration::from_secs(120), "recorder run --period 5s");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("stopped: period of 5s ended"), "{stderr}");
    assert!(stderr.contains("record: complete"), "{stderr}");
    let (_, bytes) = committed(&out.stdout, &store);
    let mut want = Expected::default();
    want.exec("sh")
        .exec("cat")
        .file("etc/shadowed", 1)
        .exec("sleep");
    assert_eq!(
        record_entries(&bytes, &manifest),
        want.0,
        "stderr:\n{stderr}"
    );
    assert_cleaned(&work);
}
