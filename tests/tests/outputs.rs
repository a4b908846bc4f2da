//! Outputs (issue #10): `--record-out /dev/stdout`, as root, replaced the system's symlink with
//! a regular file; `-` was a file named `-`; a bad `--store`, `--record-out` or `--ring-bytes`
//! was found only after the workload ran. Now a symlink the user named is written through, `-`
//! is stdout (under `run` the workload's stdout then goes to stderr), a symlink planted by
//! someone else in a sticky world-writable directory is refused, and every output path and
//! option value is checked first (exit status 2). The `/dev/stdout` case uses a symlink of the
//! same kind (`-> /proc/self/fd/1`) in a temp dir, never the real one.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{recorder_bin, write_image};
use recorder_tests::deadline::output_within;
use recorder_tests::root::require_root;

fn recorder<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let child = Command::new(recorder_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    output_within(child, Duration::from_secs(180), "the recorder")
}

/// `recorder run` of the fixture image with `cmd`, `extra` options before `--`.
fn run(dir: &Path, extra: &[&std::ffi::OsStr], cmd: &[&str]) -> Output {
    let image = dir.join("image");
    if !image.exists() {
        write_image(&image);
    }
    let cache = dir.join("layer-cache");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "run".as_ref(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
        "--image".as_ref(),
        image.as_os_str(),
        "--store".as_ref(),
    ];
    let store = dir.join("store");
    args.push(store.as_os_str());
    args.extend_from_slice(extra);
    args.push("--".as_ref());
    args.extend(cmd.iter().map(|s| std::ffi::OsStr::new(*s)));
    recorder(&args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The record in `store` named by the summary's `record digest:` line.
fn committed_record(err: &str, store: &Path) -> Vec<u8> {
    let digest = err
        .lines()
        .find_map(|l| l.strip_prefix("record digest: "))
        .unwrap_or_else(|| panic!("no digest in:\n{err}"))
        .parse()
        .unwrap();
    ContentStore::open(store).unwrap().read(&digest).unwrap()
}

#[test]
fn record_out_through_a_stdout_symlink_writes_stdout_and_keeps_the_link() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    // What /dev/stdout is.
    let link = dir.path().join("stdout");
    symlink("/proc/self/fd/1", &link).unwrap();
    let out = run(
        dir.path(),
        &["--record-out".as_ref(), link.as_os_str()],
        &["/bin/cat", "/etc/shadowed"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/proc/self/fd/1")
    );
    let record = committed_record(&err, &dir.path().join("store"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(std::str::from_utf8(&record).unwrap()),
        "stdout:\n{stdout}"
    );
    // The workload's own output ("shadowed") is there too, before the record.
    assert!(!record.is_empty());
}

#[test]
fn record_out_through_a_symlink_to_a_file_replaces_the_target_not_the_link() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let target = elsewhere.join("record.json");
    std::fs::write(&target, b"old").unwrap();
    let link = dir.path().join("record.json");
    symlink(&target, &link).unwrap();
    let out = run(
        dir.path(),
        &["--record-out".as_ref(), link.as_os_str()],
        &["/bin/cat", "/etc/shadowed"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let record = committed_record(&err, &dir.path().join("store"));
    assert_eq!(std::fs::read(&target).unwrap(), record);
    // The companion went beside the link's name, as before.
    assert!(dir.path().join("record.json.companion").exists());
    // No temporary file left anywhere.
    let left: Vec<_> = std::fs::read_dir(&elsewhere)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["record.json"]);
}

#[test]
fn dash_is_stdout_and_the_workload_output_goes_to_stderr() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["--record-out".as_ref(), "-".as_ref()],
        &[
            "/bin/sh",
            "-c",
            "echo from-the-workload; cat /etc/shadowed >/dev/null",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!dir.path().join("-").exists(), "a file named - was written");
    let record = committed_record(&err, &dir.path().join("store"));
    // stdout is the record, byte for byte, and nothing else.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&record)
    );
    assert!(err.contains("from-the-workload\n"), "{err}");
}

#[test]
fn a_foreign_symlink_in_a_sticky_directory_is_refused_before_anything_runs() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let planted = shared.join("record.json");
    symlink(&victim, &planted).unwrap();
    // Planted by someone else (nobody), in a directory owned by root.
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &planted,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["--record-out".as_ref(), planted.as_os_str()],
        &["/bin/cat", "/etc/shadowed"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is a symlink owned by uid 65534 in the sticky world-writable directory"),
        "{err}"
    );
    assert!(!err.contains("image indexed"), "checked too late:\n{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn bad_paths_and_values_are_refused_before_indexing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let missing = dir.path().join("no/such/dir/record.json");
    let cases: [(&[&std::ffi::OsStr], String); 4] = [
        (
            &["--record-out".as_ref(), missing.as_os_str()],
            format!(
                "the directory {} does not exist",
                missing.parent().unwrap().display()
            ),
        ),
        (
            &["--record-out".as_ref(), dir.path().as_os_str()],
            format!("{} is a directory", dir.path().display()),
        ),
        (
            &["--work-dir".as_ref(), not_a_dir.as_os_str()],
            format!("--work-dir {}: not a directory", not_a_dir.display()),
        ),
        (
            &["--ring-bytes".as_ref(), "1000".as_ref()],
            "a power of two".to_owned(),
        ),
    ];
    for (extra, want) in cases {
        let out = run(dir.path(), extra, &["/bin/cat", "/etc/shadowed"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(&want), "{extra:?}: {want:?} not in:\n{err}");
        assert!(
            !err.contains("image indexed"),
            "{extra:?} checked too late:\n{err}"
        );
    }
    // A store that is a file.
    let out = recorder(&[
        "run".as_ref(),
        "--image".as_ref(),
        dir.path().join("image").as_os_str(),
        "--store".as_ref(),
        not_a_dir.as_os_str(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("--store {}: not a directory", not_a_dir.display())),
        "{err}"
    );
}
