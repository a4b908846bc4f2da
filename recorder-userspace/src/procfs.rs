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

/// When process `pid` started, in clock ticks after boot (`/proc/PID/stat` field 22): with the
/// pid, it names one process, never a later one that reused the pid.
pub fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: no start time"),
        )
    })
}

/// Field 22 of a `/proc/PID/stat` line; the fields are counted after the last `)`, as the
/// command name (field 2) may hold spaces and parentheses.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// `/proc/PID/ns/mnt`.
pub fn mnt_ns_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/mnt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times() {
        let line = |comm: &str| {
            format!("42 ({comm}) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1 2 3\n")
        };
        for (stat, want) in [
            (line("sh"), Some(123456)),
            (line("a) b (c"), Some(123456)),
            (line("x y z"), Some(123456)),
            ("42 (sh) S 1".to_owned(), None),
            ("garbage".to_owned(), None),
        ] {
            assert_eq!(parse_start_time(&stat), want, "{stat}");
        }
        let me = std::process::id();
        assert_eq!(start_time(me).unwrap(), start_time(me).unwrap());
        assert!(start_time(me).unwrap() > 0);
    }

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
