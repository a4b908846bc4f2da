//! The wire format between the recorder's eBPF programs and userspace.
//!
//! Each ring-buffer record is an [`EventHeader`] followed by `path_len` bytes of path (no NUL).
//! Records are variable-length so that a short path costs a short record while a path of up to
//! [`PATH_MAX`] bytes still arrives whole.
#![no_std]

/// Longest path the kernel accepts, including its NUL terminator.
pub const PATH_MAX: usize = 4096;

/// Most filter targets (mount namespaces) armed at once.
pub const MAX_TARGETS: u32 = 1024;

/// Execs in flight at once (between enter and exit) across all traced tasks.
pub const MAX_IN_FLIGHT: u32 = 4096;

/// Which syscall produced an event.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `open(2)`.
    Open = 1,
    /// `openat(2)`.
    Openat = 2,
    /// `openat2(2)`.
    Openat2 = 3,
    /// `execve(2)`.
    Execve = 4,
    /// `execveat(2)`.
    Execveat = 5,
}

impl EventKind {
    /// Decodes the kind byte of an [`EventHeader`].
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Open,
            2 => Self::Openat,
            3 => Self::Openat2,
            4 => Self::Execve,
            5 => Self::Execveat,
            _ => return None,
        })
    }

    /// The syscall's name, as used in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Openat => "openat",
            Self::Openat2 => "openat2",
            Self::Execve => "execve",
            Self::Execveat => "execveat",
        }
    }
}

/// `AT_FDCWD`: the dirfd value meaning "relative to the working directory".
pub const AT_FDCWD: i32 = -100;

/// The path was read whole.
pub const PATH_OK: u8 = 0;
/// Reading the path from user memory failed; `path_len` is 0.
pub const PATH_READ_FAILED: u8 = 1;

/// No directory follows the path: it is absolute, or the call failed.
pub const DIR_NONE: u8 = 0;
/// The directory a relative path starts from follows the path, whole.
pub const DIR_OK: u8 = 1;
/// The directory could not be resolved whole (deeper than the walk goes, or a bad dirfd).
pub const DIR_UNRESOLVED: u8 = 2;

/// Fixed part of every ring-buffer record.
///
/// A record is this header, then `path_len` bytes of path, then `dir_len` bytes of directory.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()` at syscall entry (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The syscall's return value (fd, 0, or -errno).
    pub ret: i64,
    /// Open flags (`open_how.flags` for openat2, `flags` for execveat, 0 for execve).
    pub flags: u64,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Inode number of the task's mount namespace.
    pub mntns: u32,
    /// Directory fd argument; [`AT_FDCWD`] for open and execve.
    pub dirfd: i32,
    /// The task's comm, NUL-padded.
    pub comm: [u8; 16],
    /// An [`EventKind`] as u8.
    pub kind: u8,
    /// [`PATH_OK`] or [`PATH_READ_FAILED`].
    pub path_status: u8,
    /// Bytes of path that follow the header.
    pub path_len: u16,
    /// For a relative path of a successful call: bytes of the directory it was resolved from
    /// (the working directory, or the dirfd's), absolute inside the task's root, after the path.
    pub dir_len: u16,
    /// [`DIR_NONE`], [`DIR_OK`] or [`DIR_UNRESOLVED`].
    pub dir_status: u8,
    pub _pad: u8,
}

/// Size of [`EventHeader`] on the wire.
pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

/// A whole record as the kernel side assembles it before output: the path, then the directory.
#[repr(C)]
pub struct EventBuf {
    pub header: EventHeader,
    pub strings: [u8; 2 * PATH_MAX],
}

/// Index of each counter in the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records written to the ring buffer.
    Emitted = 0,
    /// Records lost because the ring buffer was full.
    Dropped = 1,
    /// Path reads that failed (the record is still emitted, with [`PATH_READ_FAILED`]).
    PathReadFailed = 2,
    /// Execs lost because the in-flight table was full at entry.
    InFlightFull = 3,
}

/// Number of counters in the `COUNTERS` array.
pub const COUNTER_COUNT: u32 = 4;

/// Indices into the `WALK_OFFSETS` global: the kernel struct offsets the directory walk uses.
pub mod walk {
    /// `task_struct.fs`.
    pub const TASK_FS: usize = 0;
    /// `task_struct.files`.
    pub const TASK_FILES: usize = 1;
    /// `fs_struct.root`.
    pub const FS_ROOT: usize = 2;
    /// `fs_struct.pwd`.
    pub const FS_PWD: usize = 3;
    /// `path.mnt`.
    pub const PATH_MNT: usize = 4;
    /// `path.dentry`.
    pub const PATH_DENTRY: usize = 5;
    /// `files_struct.fdt`.
    pub const FILES_FDT: usize = 6;
    /// `fdtable.fd`.
    pub const FDT_FD: usize = 7;
    /// `fdtable.max_fds`.
    pub const FDT_MAX_FDS: usize = 8;
    /// `file.f_path`.
    pub const FILE_PATH: usize = 9;
    /// `dentry.d_parent`.
    pub const DENTRY_PARENT: usize = 10;
    /// `dentry.d_name.len`.
    pub const DENTRY_NAME_LEN: usize = 11;
    /// `dentry.d_name.name`.
    pub const DENTRY_NAME: usize = 12;
    /// `vfsmount.mnt_root`.
    pub const VFSMOUNT_ROOT: usize = 13;
    /// `mount.mnt` (the vfsmount embedded in a mount).
    pub const MOUNT_MNT: usize = 14;
    /// `mount.mnt_parent`.
    pub const MOUNT_PARENT: usize = 15;
    /// `mount.mnt_mountpoint`.
    pub const MOUNT_MOUNTPOINT: usize = 16;
    /// Number of offsets.
    pub const COUNT: usize = 17;
    /// Most path components (and mount crossings) the walk follows before giving up.
    pub const MAX_DEPTH: usize = 64;
}

/// Offsets into kernel structs, computed from BTF in userspace and patched into the programs.
pub mod globals {
    /// The `[u64; walk::COUNT]` array of directory-walk offsets.
    pub const WALK_OFFSETS: &str = "WALK_OFFSETS";
    /// `offsetof(struct task_struct, nsproxy)`.
    pub const TASK_NSPROXY: &str = "TASK_NSPROXY_OFFSET";
    /// `offsetof(struct nsproxy, mnt_ns)`.
    pub const NSPROXY_MNT_NS: &str = "NSPROXY_MNT_NS_OFFSET";
    /// `offsetof(struct mnt_namespace, ns) + offsetof(struct ns_common, inum)`.
    pub const MNT_NS_INUM: &str = "MNT_NS_INUM_OFFSET";
    /// `offsetof(struct pt_regs, di)`: first syscall argument on x86-64.
    pub const PT_REGS_DI: &str = "PT_REGS_DI_OFFSET";
    /// `offsetof(struct pt_regs, si)`: second syscall argument on x86-64.
    pub const PT_REGS_SI: &str = "PT_REGS_SI_OFFSET";
    /// `offsetof(struct pt_regs, dx)`: third syscall argument on x86-64.
    pub const PT_REGS_DX: &str = "PT_REGS_DX_OFFSET";
    /// `offsetof(struct task_struct, comm)`.
    pub const TASK_COMM: &str = "TASK_COMM_OFFSET";
    /// Ring fill level (bytes) above which a record forces a wakeup of the consumer.
    pub const WAKEUP_THRESHOLD: &str = "WAKEUP_THRESHOLD";
}
