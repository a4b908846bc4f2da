//! Decoded tracer events.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use recorder_common::{
    DIR_OK, DIR_UNRESOLVED, EXEC_SCRIPT, EXEC_SCRIPT_FILE, EXEC_SCRIPT_NAMED, EventHeader,
    EventKind, FILE_FIXED_SLOT, FILE_OK, FILE_UNRESOLVED, HEADER_LEN, PATH_READ_FAILED,
};
use serde::{Serialize, Serializer};
use thiserror::Error;

pub use recorder_common::AT_FDCWD;

/// A ring record that could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header, or than the strings its header announces.
    #[error("record of {len} bytes is truncated")]
    Truncated {
        /// The record's length.
        len: usize,
    },
    /// A kind byte this build does not know.
    #[error("record has unknown kind {0}")]
    UnknownKind(u8),
}

/// One open or exec call of a traced task, as the kernel saw it. Serialized (`trace --json`)
/// with camelCase keys, as the stargz record and every other JSON of the recorder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Which syscall.
    #[serde(serialize_with = "kind_name")]
    pub kind: EventKind,
    /// Process id.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// Mount-namespace inode.
    pub mntns: u32,
    /// Directory fd argument ([`AT_FDCWD`] when none).
    pub dirfd: i32,
    /// Open flags (`open_how.flags` for openat2, `flags` for execveat).
    pub flags: u64,
    /// Return value: an fd, 0, or -errno.
    pub ret: i64,
    /// CLOCK_MONOTONIC nanoseconds at syscall entry.
    pub ts_ns: u64,
    /// The task's comm.
    pub comm: String,
    /// The path argument as the process passed it, byte for byte.
    #[serde(serialize_with = "path_lossy")]
    pub path: Vec<u8>,
    /// The kernel could not read the path argument (then `path` is empty).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_unreadable: bool,
    /// For a relative path of a successful call, the directory it started from (the working
    /// directory, or the dirfd's), as an absolute path inside the process's root, read by the
    /// kernel at the time of the call.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "dir_lossy")]
    pub dir: Option<Vec<u8>>,
    /// The path is relative but its directory could not be resolved whole.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dir_unresolved: bool,
    /// What the kernel opened or executed, for a call that succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<OpenedFile>,
    /// What became of the file of a successful call when `file` is `None`.
    #[serde(skip_serializing_if = "FileGap::is_none")]
    pub file_gap: FileGap,
    /// For a successful exec: it went through an interpreter (`#!`), so `file` is the
    /// interpreter and `path` the script.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub script: bool,
    /// This record names the script itself (`file`), found through the fd its name designates;
    /// the exec's own record follows.
    #[serde(rename = "scriptFile", skip_serializing_if = "std::ops::Not::not")]
    pub script_file: bool,
    /// The script of this exec was named by the record before it.
    #[serde(rename = "scriptNamed", skip_serializing_if = "std::ops::Not::not")]
    pub script_named: bool,
}

/// Why a successful call has no [`OpenedFile`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FileGap {
    /// There is a file, or the call failed.
    #[default]
    None,
    /// The kernel program could not read it (closed again at once, or deeper than the walk).
    Unresolved,
    /// An io_uring open into a fixed-file slot whose file the program could not read from the
    /// ring's table.
    FixedSlot,
}

impl FileGap {
    fn is_none(&self) -> bool {
        *self == FileGap::None
    }
}

/// The file a call produced, named by the kernel's own objects: which filesystem and inode, the
/// mount it was reached through, and its path from the root of that filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenedFile {
    /// The path from the root of its filesystem (not of the mount, nor of the process's root),
    /// starting with `/`, through the link it was opened by.
    #[serde(serialize_with = "path_lossy")]
    pub path: Vec<u8>,
    /// The filesystem's device, as `st_dev` encodes it (`makedev(major, minor)`).
    #[serde(serialize_with = "dev_string")]
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
    /// The id of the mount it was reached through (as in `/proc/PID/mountinfo`).
    pub mnt_id: u32,
    /// `st_mode`: type and permissions.
    pub mode: u32,
    /// The filesystem's superblock magic number; serialized as `fsType`, its name (or the
    /// number in hex for a type this build does not know).
    #[serde(rename = "fsType", serialize_with = "magic_name")]
    pub magic: u64,
}

impl OpenedFile {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// The filesystem type's name, from the magic number (`statfs(2)`'s list), or `None` for one
    /// this build does not know.
    pub fn fs_type(&self) -> Option<&'static str> {
        fs_type_name(self.magic)
    }
}

/// The name of a filesystem type by its superblock magic, for the ones a container meets.
pub fn fs_type_name(magic: u64) -> Option<&'static str> {
    Some(match magic {
        0x794c_7630 => "overlay",
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x0102_1994 => "tmpfs",
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x2724_3f3f | 0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x7472_6163 => "tracefs",
        0x6462_6720 => "debugfs",
        0x1980_0202 => "mqueue",
        0x6e73_6673 => "nsfs",
        0x5050_4950 => "pipefs",
        0x534f_434b => "sockfs",
        0x0958_458f => "hugetlbfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x7363_6673 => "securityfs",
        0xcafe_4a11 => "bpf",
        0x2fc1_2fc1 => "zfs",
        0xf15f => "ecryptfs",
        0x0000_9660 => "iso9660",
        0x7371_7368 => "squashfs",
        0xde5e_81e4 => "efivarfs",
        0x4244 => "hfs",
        0x0123_4567 => "anon_inodefs",
        _ => return None,
    })
}

fn dev_string<S: Serializer>(dev: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}:{}", libc::major(*dev), libc::minor(*dev)))
}

fn magic_name<S: Serializer>(magic: &u64, s: S) -> Result<S::Ok, S::Error> {
    match fs_type_name(*magic) {
        Some(name) => s.serialize_str(name),
        None => s.serialize_str(&format!("{magic:#x}")),
    }
}

fn dir_lossy<S: Serializer>(dir: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(dir.as_deref().unwrap_or_default()))
}

fn kind_name<S: Serializer>(kind: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

fn path_lossy<S: Serializer>(path: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(path))
}

impl Event {
    /// Decodes one ring record: a header followed by the path bytes.
    pub fn decode(record: &[u8]) -> Result<Self, DecodeError> {
        let truncated = DecodeError::Truncated { len: record.len() };
        if record.len() < HEADER_LEN {
            return Err(truncated);
        }
        // SAFETY: the length is checked above and EventHeader is plain old data, valid for any
        // bit pattern; read_unaligned because ring records are only 8-byte aligned by contract.
        let header: EventHeader =
            unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<EventHeader>()) };
        let path_end = HEADER_LEN + header.path_len as usize;
        let path = record.get(HEADER_LEN..path_end).ok_or(truncated)?;
        let dir_end = path_end + header.dir_len as usize;
        let dir = record
            .get(path_end..dir_end)
            .ok_or(DecodeError::Truncated { len: record.len() })?;
        let file_path = record
            .get(dir_end..dir_end + header.file_len as usize)
            .ok_or(DecodeError::Truncated { len: record.len() })?;
        let kind =
            EventKind::from_repr(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
        let comm_len = header.comm.iter().position(|&b| b == 0).unwrap_or(16);
        Ok(Event {
            kind,
            tgid: header.tgid,
            tid: header.tid,
            mntns: header.mntns,
            dirfd: header.dirfd,
            flags: header.flags,
            ret: header.ret,
            ts_ns: header.ts_ns,
            comm: String::from_utf8_lossy(&header.comm[..comm_len]).into_owned(),
            path: path.to_vec(),
            path_unreadable: header.path_status == PATH_READ_FAILED,
            dir: (header.dir_status == DIR_OK).then(|| dir.to_vec()),
            dir_unresolved: header.dir_status == DIR_UNRESOLVED,
            file: (header.file_status == FILE_OK).then(|| OpenedFile {
                path: file_path.to_vec(),
                dev: kernel_dev(header.dev),
                ino: header.ino,
                mnt_id: header.mnt_id,
                mode: u32::from(header.mode),
                magic: header.magic,
            }),
            file_gap: match header.file_status {
                FILE_UNRESOLVED => FileGap::Unresolved,
                FILE_FIXED_SLOT => FileGap::FixedSlot,
                _ => FileGap::None,
            },
            script: header.exec_flags & EXEC_SCRIPT != 0,
            script_file: header.exec_flags & EXEC_SCRIPT_FILE != 0,
            script_named: header.exec_flags & EXEC_SCRIPT_NAMED != 0,
        })
    }

    /// The path argument as a filesystem path.
    pub fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }

    /// The path the call named, absolute inside the process's root: the path itself when
    /// absolute, else the directory joined with it; `None` when that directory is unknown.
    /// `.`, `..` and symlinks are left for the image lookup to resolve.
    pub fn absolute_path(&self) -> Option<PathBuf> {
        if self.path.first() == Some(&b'/') {
            return Some(self.path().to_path_buf());
        }
        let dir = Path::new(OsStr::from_bytes(self.dir.as_deref()?));
        Some(dir.join(self.path()))
    }

    /// Whether the call succeeded.
    pub fn succeeded(&self) -> bool {
        self.ret >= 0
    }

    /// Whether this is an exec (a successful one, or a failed execve or execveat).
    pub fn is_exec(&self) -> bool {
        self.kind.is_exec()
    }
}

/// The kernel's internal `dev_t` (major << 20 | minor) as userspace's `st_dev`.
fn kernel_dev(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use recorder_common::PATH_OK;

    use super::*;

    fn record(kind: u8, path: &[u8], announced: u16) -> Vec<u8> {
        let mut comm = [0u8; 16];
        comm[..3].copy_from_slice(b"cat");
        let header = EventHeader {
            ts_ns: 7,
            ret: 3,
            flags: 0o100,
            tgid: 10,
            tid: 11,
            mntns: 4026531840,
            dirfd: AT_FDCWD,
            comm,
            kind,
            path_status: PATH_OK,
            path_len: announced,
            dir_len: 0,
            dir_status: 0,
            ino: 0,
            magic: 0,
            dev: 0,
            mnt_id: 0,
            file_status: 0,
            file_len: 0,
            mode: 0,
            exec_flags: 0,
            _pad: [0; 3],
        };
        // SAFETY: test-only view of a plain-old-data struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&header as *const EventHeader).cast::<u8>(), HEADER_LEN)
        };
        let mut out = bytes.to_vec();
        out.extend_from_slice(path);
        out
    }

    #[test]
    fn decodes_header_and_path() {
        let event = Event::decode(&record(2, b"/etc/passwd", 11)).unwrap();
        assert_eq!(event.kind, EventKind::Openat);
        assert_eq!(event.path(), Path::new("/etc/passwd"));
        assert_eq!((event.tgid, event.tid, event.ret), (10, 11, 3));
        assert_eq!(event.comm, "cat");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["kind"], "openat");
        assert_eq!(json["path"], "/etc/passwd");
        assert_eq!(json["dirfd"], -100);
    }

    #[test]
    fn rejects_truncated_and_unknown() {
        assert_eq!(
            Event::decode(&[0; 10]),
            Err(DecodeError::Truncated { len: 10 })
        );
        let short = record(2, b"/etc", 11);
        assert!(matches!(
            Event::decode(&short),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            Event::decode(&record(99, b"", 0)),
            Err(DecodeError::UnknownKind(99))
        );
    }
}
