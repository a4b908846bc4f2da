//! The seccomp profile of a confined workload, modelled on containerd's default
//! (`contrib/seccomp`): what containerd denies to a container without `CAP_SYS_ADMIN` and
//! friends is denied here too, with `EPERM`.
//!
//! containerd's profile is an allow-list (deny by default); this one is a deny-list (allow by
//! default) of the same dangerous groups, because a syscall name runc's libseccomp does not
//! know is silently dropped from an allow-list (the workload then fails obscurely), while
//! the capability set already stops most of what the allow-list also stops. What it denies:
//!
//! | group | syscalls | why |
//! |---|---|---|
//! | new namespaces | `unshare`, `setns`; `clone` with any `CLONE_NEW*` flag; `clone3` (`ENOSYS`, so libcs fall back to `clone`, whose flags a filter can see) | user namespaces give the workload a full capability set over new kernel attack surface |
//! | mounts | `mount`, `umount2`, `pivot_root`, `open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `mount_setattr` | |
//! | kernel code and state | `init_module`, `finit_module`, `delete_module`, `kexec_load`, `kexec_file_load`, `reboot`, `swapon`, `swapoff`, `acct`, `syslog`, `iopl`, `ioperm`, `quotactl`, `quotactl_fd`, `lookup_dcookie`, `vhangup`, `uselib`, `ustat`, `sysfs`, `_sysctl`, `nfsservctl` | |
//! | clocks | `settimeofday`, `clock_settime`, `clock_adjtime`, `adjtimex` | host-global |
//! | keyrings | `add_key`, `request_key`, `keyctl` | not namespaced |
//! | kernel introspection | `bpf`, `perf_event_open`, `userfaultfd`, `open_by_handle_at`, `name_to_handle_at` | `open_by_handle_at` is the classic container escape |
//! | `io_uring` | `io_uring_setup`, `io_uring_enter`, `io_uring_register` | a large kernel attack surface that recent Docker and containerd defaults deny as well; the recorder does trace io_uring opens (their completions), so `--seccomp unconfined` or `--privileged` workloads that use it are recorded exactly |
//!
//! Allowed, as containerd allows them: `ptrace` (within the container's PID namespace),
//! `process_vm_readv`/`writev`, `personality`, NUMA calls. Only the native ABI is allowed
//! (32-bit and x32 syscalls are refused by the architecture check), as a deny-list must.

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Denied with `EPERM` whatever their arguments.
pub const DENIED: &[&str] = &[
    // New namespaces and joining others.
    "unshare",
    "setns",
    // Mounts.
    "mount",
    "umount2",
    "pivot_root",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    // Kernel code and host-global state.
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "syslog",
    "iopl",
    "ioperm",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "vhangup",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "nfsservctl",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    // Keyrings are not namespaced.
    "add_key",
    "request_key",
    "keyctl",
    // Kernel introspection and file handles.
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    // Invisible to the tracer.
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// The `CLONE_NEW*` flags `clone` may not carry.
const CLONE_NEW_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The native architecture of this build.
fn native_arch() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// The profile, for `linux.seccomp`.
pub fn default_profile() -> Result<LinuxSeccomp, OciSpecError> {
    let errno = |names: Vec<String>, errno: i32| {
        LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno as u32)
    };
    let mut syscalls: Vec<LinuxSyscall> = vec![
        errno(DENIED.iter().map(|s| s.to_string()).collect(), libc::EPERM).build()?,
        errno(vec!["clone3".into()], libc::ENOSYS).build()?,
    ];
    // One rule per flag: the arguments of one rule are ANDed, and any one flag is enough.
    for flag in CLONE_NEW_FLAGS {
        syscalls.push(
            errno(vec!["clone".into()], libc::EPERM)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(flag)
                        .value_two(flag)
                        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                        .build()?,
                ])
                .build()?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(native_arch())
        .syscalls(syscalls)
        .build()
}
