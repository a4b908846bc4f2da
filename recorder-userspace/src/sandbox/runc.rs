//! runc itself: where it is, how it is called (its state under the run's scratch dir, its log
//! as JSON lines), what its log says went wrong, and the container ids it is given.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use super::watchdog::WatchedContainer;

/// Where runc is looked for first (Debian's package), before `PATH`.
pub(super) const RUNC_PATHS: &[&str] = &["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"];

/// runc's binary: a well-known path, else the first on `PATH`.
pub fn find_runc() -> Option<PathBuf> {
    let fixed = RUNC_PATHS.iter().map(PathBuf::from);
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("runc")).collect())
        .unwrap_or_default();
    fixed.chain(on_path).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

pub(super) fn runc_command(container: &WatchedContainer, log: &Path) -> Command {
    let mut cmd = Command::new(&container.runc);
    cmd.arg("--root")
        .arg(&container.root)
        .arg("--log")
        .arg(log)
        .arg("--log-format")
        .arg("json");
    cmd
}

/// The last error runc logged, or its exit status.
pub(super) fn runc_error(log: &Path, status: ExitStatus) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("runc {status}"))
}

/// Whether runc's message says the command itself is what is wrong.
pub(super) fn is_exec_error(message: &str) -> bool {
    message.contains("exec: ") || message.contains("executable file not found")
}

/// A container id no other run uses: `recorder-` and 64 random bits.
pub(super) fn container_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's randomness, per process and per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("recorder-{:016x}", h.finish())
}
