//! Tests that load eBPF programs or mount filesystems need root: they say so and fail.

/// Fails the calling test with a clear message unless it runs as root.
pub fn require_root() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "this test needs root (it loads eBPF programs, or mounts, makes device nodes and \
         chowns); running as uid {euid}. Run the suite as root: `sudo -E cargo xtask test`"
    );
}
