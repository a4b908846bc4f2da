//! The capabilities a container gets: containerd's default set, or when privileged every one
//! the recorder itself holds.

use oci_spec::runtime::{Capabilities, Capability};

/// The capabilities containerd grants a container by default.
pub(super) const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the recorder itself may hold (its bounding set): runc cannot grant one
/// outside it (root here lacks `CAP_SYS_RESOURCE`, for one).
pub(super) fn all_capabilities() -> Capabilities {
    every::ALL
        .into_iter()
        .enumerate()
        .filter(|(number, _)| {
            // SAFETY: PR_CAPBSET_READ only reads this thread's bounding set.
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, *number as libc::c_ulong, 0, 0, 0) == 1 }
        })
        .map(|(_, cap)| cap)
        .collect()
}

/// The capabilities in the kernel's numbering (index = `CAP_*` number), spelled out because
/// oci-spec exposes no iterator over them.
mod every {
    use oci_spec::runtime::Capability::{self, *};
    pub(super) const ALL: [Capability; 41] = [
        Chown,
        DacOverride,
        DacReadSearch,
        Fowner,
        Fsetid,
        Kill,
        Setgid,
        Setuid,
        Setpcap,
        LinuxImmutable,
        NetBindService,
        NetBroadcast,
        NetAdmin,
        NetRaw,
        IpcLock,
        IpcOwner,
        SysModule,
        SysRawio,
        SysChroot,
        SysPtrace,
        SysPacct,
        SysAdmin,
        SysBoot,
        SysNice,
        SysResource,
        SysTime,
        SysTtyConfig,
        Mknod,
        Lease,
        AuditWrite,
        AuditControl,
        Setfcap,
        MacOverride,
        MacAdmin,
        Syslog,
        WakeAlarm,
        BlockSuspend,
        AuditRead,
        Perfmon,
        Bpf,
        CheckpointRestore,
    ];
}
