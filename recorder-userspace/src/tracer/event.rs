//! Decoded tracer events.

use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use recorder_common::{
    DIR_OK, DIR_UNRESOLVED, EventHeader, EventKind, HEADER_LEN, PATH_READ_FAILED,
};
use serde::{Serialize, Serializer};
use thiserror::Error;

pub use recorder_common::AT_FDCWD;

/// A ring record that could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its header, or than the path its header announces.
    #[error("record of {len} bytes is truncated")]
    Truncated {
        /// The record's length.
        len: usize,
    },
    /// A kind byte this build does not know.
    #[error("record has unknown kind {0}")]
    UnknownKind(u8),
}

/// One open or exec call of a traced task, as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
        let dir = record
            .get(path_end..path_end + header.dir_len as usize)
            .ok_or(DecodeError::Truncated { len: record.len() })?;
        let kind = EventKind::from_u8(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
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

    /// Whether this is an exec (execve or execveat).
    pub fn is_exec(&self) -> bool {
        matches!(self.kind, EventKind::Execve | EventKind::Execveat)
    }
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
            _pad: 0,
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
