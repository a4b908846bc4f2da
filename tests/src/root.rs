//! Tests that load eBPF programs or mount filesystems need root: they say so and fail.

/// Fails the calling test with a clear message unless it runs as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test loads eBPF programs and needs root (euid is {euid}); run the suite as root: \
         `sudo -E cargo xtask test`"
    );
}
