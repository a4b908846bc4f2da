//! skopeo as the tests run it.

use std::process::Command;

/// A `skopeo` command (its arguments to be added) that runs in a mount namespace of its own,
/// with a tmpfs on `/var/lib`. Run as root, skopeo keeps a blob info cache in
/// `/var/lib/containers/cache`, which a test must not touch (seen:
/// `/var/lib/containers/cache/blob-info-cache-v1.boltdb` on the host after a suite run); it has
/// no flag to put it elsewhere. Nothing else of `/var/lib` is used by the transports the tests
/// use (`oci:`, `docker-archive:`, `docker://`).
pub fn skopeo() -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount -t tmpfs tmpfs /var/lib && exec "$@""#)
        .args(["sh", "skopeo"]);
    command
}
