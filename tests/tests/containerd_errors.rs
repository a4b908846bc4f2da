//! Connecting to something that is not a live containerd fails with a message naming the
//! socket and what is wrong with it.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;

use recorder::containerd::{Containerd, ContainerdError};

fn connect(path: &Path, namespace: &str) -> ContainerdError {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(Containerd::connect(path, namespace))
        .expect_err("connecting must fail")
}

fn assert_names(err: &ContainerdError, path: &Path, words: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains(words),
        "expected {words:?} and the path in: {msg}"
    );
}

#[test]
fn missing_socket_means_containerd_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("containerd.sock");
    let err = connect(&path, "default");
    assert!(matches!(err, ContainerdError::NotRunning { .. }), "{err:?}");
    assert_names(&err, &path, "containerd is not running at");
}

#[test]
fn stale_socket_with_no_listener_means_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    let err = connect(&path, "default");
    assert!(matches!(err, ContainerdError::NotRunning { .. }), "{err:?}");
    assert_names(&err, &path, "nothing listens");
}

#[test]
fn regular_file_or_directory_is_not_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"not a socket").unwrap();
    for path in [file.as_path(), dir.path()] {
        let err = connect(path, "default");
        assert!(matches!(err, ContainerdError::NotASocket { .. }), "{err:?}");
        assert_names(&err, path, "is not a unix socket");
    }
}

#[test]
fn a_socket_that_does_not_speak_grpc_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        // The probe and the gRPC connection: answer each with HTTP/1 and hang up.
        for stream in listener.incoming().take(2) {
            let mut s = stream.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let err = connect(&path, "default");
    assert!(matches!(err, ContainerdError::Protocol { .. }), "{err:?}");
    assert_names(&err, &path, "does not answer as containerd");
    server.join().unwrap();
}

#[test]
fn invalid_namespace_is_refused_before_connecting() {
    let err = connect(Path::new("/nonexistent.sock"), "bad namespace/");
    assert!(matches!(err, ContainerdError::BadNamespace(_)), "{err:?}");
    assert!(err.to_string().contains("bad namespace/"), "{err}");
}

#[test]
fn a_user_without_access_to_the_socket_is_told_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let daemon = recorder_tests::containerd::Daemon::start();
    // Let others reach the socket's directory; the socket itself stays root's (0660).
    std::fs::set_permissions(daemon.scratch(), std::fs::Permissions::from_mode(0o711)).unwrap();
    // The binary is copied to a directory anyone may traverse: the checkout may not be
    // (a clone in root's 0700 home), and that is not what this test is about.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_dir.path().join("recorder");
    std::fs::copy(recorder_tests::agent_fixtures::recorder_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["image", "inspect"])
        .arg(format!("--containerd={}", daemon.socket().display()))
        .arg("docker.io/x/y:1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied connecting to containerd at")
            && err.contains(&daemon.socket().display().to_string()),
        "{err}"
    );
}
