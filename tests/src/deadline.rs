//! Waiting for a child process with a deadline: a recorder that never stops fails the test
//! (and is killed) instead of hanging the suite.

use std::process::{Child, Output};
use std::time::Duration;

/// The child's output once it exits; if it is still running after `limit`, kills it (SIGKILL,
/// it is this test's own child) and fails the test naming `what`.
pub fn output_within(child: Child, limit: Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for the child"),
        Err(_) => {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child's.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let out = rx
                .recv_timeout(Duration::from_secs(10))
                .ok()
                .and_then(Result::ok);
            let stderr = out
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!("{what} still running after {limit:?}; killed. stderr:\n{stderr}");
        }
    }
}
