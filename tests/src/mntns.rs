//! A mount namespace of the calling process's own, for a test or a workload that mounts
//! without anyone else seeing it.

use nix::mount::{MsFlags, mount};

/// `unshare(CLONE_NEWNS)`, then every mount private (recursively), so that the mounts made
/// next propagate nowhere. Raw syscalls only, without allocating (nix passes paths this short
/// through a stack buffer): callable between fork and exec.
pub fn private_mount_namespace() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}
