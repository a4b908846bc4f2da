//! What the recorder reads of `/proc`: one place that names its files.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// A mount namespace, by the inode of its `nsfs` file (what `/proc/PID/ns/mnt` links to as
/// `mnt:[INODE]`, and the key the kernel-side filter is armed with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MntNs(u64);

impl MntNs {
    /// The namespace with this inode.
    pub fn from_inode(inode: u64) -> Self {
        MntNs(inode)
    }

    /// Its inode.
    pub fn inode(self) -> u64 {
        self.0
    }

    /// The mount namespace process `pid` is in.
    pub fn of_pid(pid: u32) -> io::Result<MntNs> {
        Ok(MntNs(std::fs::metadata(mnt_ns_path(pid))?.ino()))
    }

    /// The mount namespace process `pid` is in, and an open file of it, which keeps the
    /// namespace (and so its inode number) alive for as long as it is open.
    pub fn pin(pid: u32) -> io::Result<(MntNs, File)> {
        let file = File::open(mnt_ns_path(pid))?;
        let ns = MntNs(file.metadata()?.ino());
        Ok((ns, file))
    }
}

impl fmt::Display for MntNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mnt:[{}]", self.0)
    }
}

/// `/proc/PID/ns/mnt`.
pub fn mnt_ns_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/mnt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_namespace_reads_and_pins_alike() {
        let me = std::process::id();
        let ns = MntNs::of_pid(me).unwrap();
        let (pinned, _file) = MntNs::pin(me).unwrap();
        assert_eq!(ns, pinned);
        let link = std::fs::read_link(mnt_ns_path(me)).unwrap();
        assert_eq!(link.to_str(), Some(ns.to_string().as_str()));
        assert!(MntNs::of_pid(u32::MAX).is_err());
    }
}
