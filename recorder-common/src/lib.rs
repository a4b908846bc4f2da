//! The wire format between the recorder's eBPF programs and userspace.
//!
//! Each ring-buffer record is an [`EventHeader`] followed by its strings, none NUL-terminated:
//! `path_len` bytes of the path argument, `dir_len` bytes of the directory a relative path
//! started from, then `file_len` bytes naming the file the kernel produced, from the root of its
//! filesystem. Records are variable-length so that a short path costs a short record while a
//! path of up to [`PATH_MAX`] bytes still arrives whole.
#![no_std]

/// Longest path the kernel accepts, including its NUL terminator.
pub const PATH_MAX: usize = 4096;

/// Most filter targets (mount namespaces) armed at once.
pub const MAX_TARGETS: u32 = 1024;

/// `unshare` calls in flight at once (between enter and exit) across all traced tasks.
pub const MAX_IN_FLIGHT: u32 = 4096;

/// Declares a `#[repr]` enum of the wire format with its table: every variant with its value
/// and its name, from which [`from_repr`](EventKind::from_repr), `ALL` and `name` are made, so a
/// variant added to the enum cannot be missing from its decoding or its names.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident: $repr:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $value:literal => $name:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $enum {
            $($(#[$variant_meta])* $variant = $value,)+
        }

        impl $enum {
            /// Every variant, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            /// Decodes a value as the kernel side writes it.
            pub fn from_repr(value: $repr) -> Option<Self> {
                match value {
                    $($value => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// The variant's name, as used in the JSON output and logs.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }
    };
}

wire_enum! {
    /// Which syscall produced an event.
    pub enum EventKind: u8 {
        /// `open(2)`.
        Open = 1 => "open",
        /// `openat(2)`.
        Openat = 2 => "openat",
        /// `openat2(2)`.
        Openat2 = 3 => "openat2",
        /// `execve(2)`.
        Execve = 4 => "execve",
        /// `execveat(2)`.
        Execveat = 5 => "execveat",
        /// A successful exec, from `sched_process_exec`: the path is the kernel's copy of the
        /// name (`bprm->filename`) and the file is the one the kernel runs (`bprm->file`).
        Exec = 6 => "exec",
        /// An `IORING_OP_OPENAT` completion.
        UringOpenat = 7 => "io_uring_openat",
        /// An `IORING_OP_OPENAT2` completion.
        UringOpenat2 = 8 => "io_uring_openat2",
        /// A traced task made a mount namespace (`unshare`, or `clone` with `CLONE_NEWNS`),
        /// which joined the filter: `mntns` is the new namespace, `ret` the one it came from,
        /// `tgid` and `tid` a task inside it. `flags` is [`MNTNS_CAUGHT`] for one runc made
        /// while the filter waited for a container.
        MntNs = 9 => "mntns",
        /// `creat(2)`: `open` with `O_CREAT | O_WRONLY | O_TRUNC`.
        Creat = 10 => "creat",
        /// `open_by_handle_at(2)`: the file is named by a handle, so there is no path argument.
        OpenByHandleAt = 11 => "open_by_handle_at",
    }
}

impl EventKind {
    /// Whether the event is an exec (a successful one, or an execve/execveat that failed).
    pub fn is_exec(self) -> bool {
        matches!(self, Self::Execve | Self::Execveat | Self::Exec)
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

/// No file follows: the call failed, or the event is not about a file.
pub const FILE_NONE: u8 = 0;
/// The file's identity and its path from the root of its filesystem follow, whole.
pub const FILE_OK: u8 = 1;
/// The call succeeded but its file could not be read whole (the fd was closed again before the
/// program ran, or the path is deeper than the walk goes).
pub const FILE_UNRESOLVED: u8 = 2;
/// An io_uring open into a fixed-file slot whose file could not be read from the ring's table.
pub const FILE_FIXED_SLOT: u8 = 3;

/// [`EventHeader::exec_flags`]: the exec went through an interpreter (`#!`, binfmt_misc), so the
/// file is the interpreter and the path names the script.
pub const EXEC_SCRIPT: u8 = 1;
/// [`EventHeader::exec_flags`]: this record names the script itself, found through the fd its
/// name (`/dev/fd/N`, `/proc/self/fd/N`) designates; the exec's own record follows.
pub const EXEC_SCRIPT_FILE: u8 = 2;
/// [`EventHeader::exec_flags`]: the script of this exec was named by the record before it.
pub const EXEC_SCRIPT_NAMED: u8 = 4;

/// [`EventHeader::flags`] of an [`EventKind::MntNs`]: the namespace was made by runc while
/// userspace waits for a container (the `CATCH_RUNC` map is set), not by a traced task; it may
/// reuse the inode number of a namespace reported before, which is then gone.
pub const MNTNS_CAUGHT: u64 = 1;

/// Fixed part of every ring-buffer record.
///
/// A record is this header, then `path_len` bytes of path, then `dir_len` bytes of directory,
/// then `file_len` bytes of the file's path from the root of its filesystem.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()` when the program ran (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The syscall's return value (fd, 0, or -errno).
    pub ret: i64,
    /// Open flags (`open_how.flags` for openat2, `flags` for execveat, 0 for execve).
    pub flags: u64,
    /// The file's inode number (with [`FILE_OK`]).
    pub ino: u64,
    /// The magic number of the file's filesystem (`super_block.s_magic`, with [`FILE_OK`]).
    pub magic: u64,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Inode number of the task's mount namespace.
    pub mntns: u32,
    /// Directory fd argument; [`AT_FDCWD`] for open and execve.
    pub dirfd: i32,
    /// The file's device (`super_block.s_dev`, the kernel's encoding: major << 20 | minor).
    pub dev: u32,
    /// The id of the mount the file was reached through (`mount.mnt_id`, as in mountinfo).
    pub mnt_id: u32,
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
    /// [`FILE_NONE`], [`FILE_OK`], [`FILE_UNRESOLVED`] or [`FILE_FIXED_SLOT`].
    pub file_status: u8,
    /// Bytes of the file's path (from its filesystem's root, starting with `/`) after the
    /// directory.
    pub file_len: u16,
    /// The file's `i_mode` (type and permission bits).
    pub mode: u16,
    /// [`EXEC_SCRIPT`] bits for an [`EventKind::Exec`].
    pub exec_flags: u8,
    /// Zero: pads the header to a multiple of its alignment.
    pub _pad: [u8; 3],
}

/// Size of [`EventHeader`] on the wire.
pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

// The programs write `comm` as two words and copy the header as words.
const _: () = assert!(
    core::mem::offset_of!(EventHeader, comm).is_multiple_of(8) && HEADER_LEN.is_multiple_of(8)
);

/// A whole record as the kernel side assembles it before output: the path, the directory, the
/// file.
#[repr(C)]
pub struct EventBuf {
    /// The fixed-size part.
    pub header: EventHeader,
    /// The path, the directory and the file's path, back to back, as the header's lengths say.
    pub strings: [u8; 3 * PATH_MAX],
}

wire_enum! {
    /// Index of each counter in the per-CPU `COUNTERS` array.
    pub enum Counter: u32 {
        /// Records written to the ring buffer.
        Emitted = 0 => "emitted",
        /// Records lost because the ring buffer was full.
        Dropped = 1 => "dropped",
        /// Path reads that failed (the record is still emitted, with [`PATH_READ_FAILED`]).
        PathReadFailed = 2 => "path_read_failed",
        /// `unshare` calls not followed because the in-flight table was full at entry.
        InFlightFull = 3 => "in_flight_full",
        /// Successful opens and execs whose file could not be read (the record is still
        /// emitted, with [`FILE_UNRESOLVED`]).
        FileUnresolved = 4 => "file_unresolved",
        /// Mount namespaces made by traced tasks that joined the filter.
        NestedNamespaces = 5 => "nested_namespaces",
        /// Nested mount namespaces that could not join the filter because it was full.
        TargetsFull = 6 => "targets_full",
    }
}

/// Number of counters in the `COUNTERS` array: one per [`Counter`], from its table.
pub const COUNTER_COUNT: u32 = Counter::ALL.len() as u32;

/// Indices into the `WALK_OFFSETS` global: every kernel struct offset the programs use (the
/// filter's, the saved syscall registers', and the walks over files, dentries and mounts).
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
    /// `mount.mnt_id`.
    pub const MOUNT_ID: usize = 17;
    /// `file.f_inode`.
    pub const FILE_INODE: usize = 18;
    /// `file.f_flags`.
    pub const FILE_FLAGS: usize = 19;
    /// `inode.i_mode`.
    pub const INODE_MODE: usize = 20;
    /// `inode.i_ino`.
    pub const INODE_INO: usize = 21;
    /// `inode.i_sb`.
    pub const INODE_SB: usize = 22;
    /// `super_block.s_dev`.
    pub const SB_DEV: usize = 23;
    /// `super_block.s_magic`.
    pub const SB_MAGIC: usize = 24;
    /// `linux_binprm.file`.
    pub const BPRM_FILE: usize = 25;
    /// `linux_binprm.filename`.
    pub const BPRM_FILENAME: usize = 26;
    /// `linux_binprm.interp`.
    pub const BPRM_INTERP: usize = 27;
    /// `io_kiocb.opcode`.
    pub const KIOCB_OPCODE: usize = 28;
    /// `io_kiocb.cmd` + `io_open.file_slot`: where an io_uring open keeps its fixed-file slot.
    pub const KIOCB_OPEN_FILE_SLOT: usize = 29;
    /// `task_struct.tgid`.
    pub const TASK_TGID: usize = 30;
    /// `task_struct.pid`.
    pub const TASK_PID: usize = 31;
    /// `io_ring_ctx.file_table.data.nr`: the size of a ring's fixed-file table.
    pub const RING_FILES_NR: usize = 32;
    /// `io_ring_ctx.file_table.data.nodes`: its slots (`io_rsrc_node *`).
    pub const RING_FILES_NODES: usize = 33;
    /// `io_rsrc_node.file_ptr`: a slot's file, flags in its two low bits.
    pub const RSRC_NODE_FILE_PTR: usize = 34;
    /// `dentry.d_inode` (read with `d_parent` and `d_name` in one go).
    pub const DENTRY_INODE: usize = 35;
    /// `super_block.s_root`: where a file's dentry walk stops without reading the root.
    pub const SB_ROOT: usize = 36;
    /// `dentry.d_shortname` (`d_iname` before 6.14): where a short name is stored inline, read
    /// with the rest of a walk step. `u64::MAX` when it does not follow `d_inode`: every name is
    /// then copied from where `d_name.name` points.
    pub const DENTRY_SHORTNAME: usize = 37;
    /// `task_struct.nsproxy` (the filter's first step).
    pub const TASK_NSPROXY: usize = 38;
    /// `nsproxy.mnt_ns`.
    pub const NSPROXY_MNT_NS: usize = 39;
    /// `mnt_namespace.ns.inum`: a mount namespace's inode, the filter's key.
    pub const MNT_NS_INUM: usize = 40;
    /// `pt_regs.di`: the first syscall argument on x86-64.
    pub const PT_REGS_DI: usize = 41;
    /// `pt_regs.si`: the second.
    pub const PT_REGS_SI: usize = 42;
    /// `pt_regs.dx`: the third.
    pub const PT_REGS_DX: usize = 43;
    /// `pt_regs.r8`: the fifth.
    pub const PT_REGS_R8: usize = 44;
    /// `task_struct.comm`.
    pub const TASK_COMM: usize = 45;
    /// Number of offsets.
    pub const COUNT: usize = 46;
    /// Most path components (and mount crossings) the walk follows before giving up.
    pub const MAX_DEPTH: usize = 64;
}

/// Kernel types the programs view kernel memory as, by `bpf_rdonly_cast` (kernel 6.2+): indexes
/// of the `BTF_TYPE_IDS` global, which userspace fills with their ids in the kernel's BTF.
///
/// A pointer the verifier knows the type of is read with plain loads it makes fault-tolerant,
/// about 1 ns each, where `bpf_probe_read_kernel` costs about 50 ns a call on the machines this
/// is measured on. The fd table's slots and the programs' own maps hold untyped words, so what
/// is read from them is cast first; the cast itself costs nothing (the verifier turns the call
/// into a register move).
pub mod btf_type {
    /// `struct file`.
    pub const FILE: usize = 0;
    /// `struct dentry`.
    pub const DENTRY: usize = 1;
    /// `struct inode`.
    pub const INODE: usize = 2;
    /// `struct mount` (found from its embedded `vfsmount`).
    pub const MOUNT: usize = 3;
    /// Number of types.
    pub const COUNT: usize = 4;
    /// The kernel's names of the types, indexed as above.
    pub const NAMES: [&str; COUNT] = ["file", "dentry", "inode", "mount"];
}

/// Calls of kernel functions (kfuncs) the programs make, which aya 0.14 cannot link: each is
/// compiled as a call of a helper number no kernel has, which userspace rewrites before load
/// into a kfunc call of the function's id in the running kernel's BTF.
pub mod kfunc {
    /// The placeholder call of `bpf_rdonly_cast(void *obj, u32 btf_id)`.
    pub const RDONLY_CAST: i32 = 0x7ead_0001;
    /// Kfuncs by placeholder and kernel name.
    pub const ALL: [(i32, &str); 1] = [(RDONLY_CAST, "bpf_rdonly_cast")];
}

/// The programs' read-only globals, set by userspace before load: kernel offsets and type ids
/// from BTF, and the configuration.
pub mod globals {
    /// The `[u64; walk::COUNT]` array of kernel struct offsets.
    pub const WALK_OFFSETS: &str = "WALK_OFFSETS";
    /// The `[u64; btf_type::COUNT]` array of kernel BTF type ids.
    pub const BTF_TYPE_IDS: &str = "BTF_TYPE_IDS";
    /// Ring fill level (bytes) above which a record forces a wakeup of the consumer.
    pub const WAKEUP_THRESHOLD: &str = "WAKEUP_THRESHOLD";
    /// Non-zero: also read each call's path argument (and a relative path's directory), for
    /// `recorder trace`. Recording names files by what the kernel opened and skips both.
    pub const ARG_PATHS: &str = "ARG_PATHS";
}

/// io_uring opcodes the programs follow (`include/uapi/linux/io_uring.h`).
pub mod uring {
    /// `IORING_FILE_INDEX_ALLOC`: the kernel picks the slot and returns it as the result.
    pub const FILE_INDEX_ALLOC: u32 = u32::MAX;
    /// The low bits of `io_rsrc_node.file_ptr` that are flags (`FFS_NOWAIT | FFS_ISREG`).
    pub const FILE_PTR_FLAGS: u64 = 0x3;
    /// `IORING_OP_OPENAT`.
    pub const OP_OPENAT: u8 = 18;
    /// `IORING_OP_OPENAT2`.
    pub const OP_OPENAT2: u8 = 28;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_enums_decode_what_they_encode() {
        for &kind in EventKind::ALL {
            assert_eq!(
                EventKind::from_repr(kind as u8),
                Some(kind),
                "{}",
                kind.name()
            );
        }
        for &counter in Counter::ALL {
            assert_eq!(
                Counter::from_repr(counter as u32),
                Some(counter),
                "{}",
                counter.name()
            );
        }
        for (kind, name) in [
            (EventKind::Open, "open"),
            (EventKind::UringOpenat2, "io_uring_openat2"),
            (EventKind::MntNs, "mntns"),
            (EventKind::Creat, "creat"),
            (EventKind::OpenByHandleAt, "open_by_handle_at"),
        ] {
            assert_eq!(kind.name(), name);
        }
        assert_eq!(EventKind::from_repr(0), None);
        assert_eq!(EventKind::from_repr(12), None);
    }

    #[test]
    fn counters_index_the_whole_array() {
        // The kernel side indexes a COUNTER_COUNT-long array with them.
        for (i, &counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter as usize, i, "{}", counter.name());
        }
        assert_eq!(Counter::from_repr(COUNTER_COUNT), None);
    }
}
