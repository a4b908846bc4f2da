//! Errors that say what to do (issue #10): an image reference without `--containerd` said
//! "reading demo:latest/oci-layout: No such file or directory"; a typo in a layout path gave
//! that message three times; `run` as non-root failed late with `chown: Operation not
//! permitted`, and `record` said "tracefs is not mounted" when it was only root's.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use recorder_tests::agent_fixtures::recorder_bin;

fn recorder(args: &[&str]) -> Output {
    Command::new(recorder_bin()).args(args).output().unwrap()
}

fn as_nobody(args: &[&str]) -> Output {
    Command::new(recorder_bin())
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

#[test]
fn a_reference_without_containerd_says_to_add_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = recorder(&[
        "run",
        "--image",
        "demo:latest",
        "--store",
        store.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "--image demo:latest: no such OCI layout directory (demo:latest does not exist); \
             to use the image demo:latest in containerd, add --containerd"
        ),
        "{err}"
    );
    let out = recorder(&["image", "inspect", "docker.io/library/demo:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("add --containerd"), "{err}");
}

#[test]
fn a_missing_layout_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("layuot");
    let out = recorder(&["image", "inspect", typo.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches(&typo.display().to_string()).count(),
        2,
        "the path named once, as given and as missing:\n{err}"
    );
    assert!(!err.contains("add --containerd"), "{err}");
}

#[test]
fn without_privileges_the_commands_say_what_they_need_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = as_nobody(&[
        "run",
        "--image",
        "/nonexistent",
        "--store",
        store.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("recorder run must run as root"), "{err}");
    assert!(!err.contains("chown"), "{err}");
    let out = as_nobody(&[
        "record",
        "--image",
        "/nonexistent",
        "--store",
        store.to_str().unwrap(),
        "--target",
        "pid:1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs root, or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN"),
        "{err}"
    );
    assert!(!err.contains("tracefs is not mounted"), "{err}");
}
