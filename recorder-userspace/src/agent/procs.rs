//! Finding the processes of a mount namespace by scanning `/proc`.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, PoisonError};

/// The mount namespaces of one recording: the armed one and those its tasks made, which the
/// kernel adds to the filter as they are made. Shared between the tracing loop, which adds
/// them, and `--until-exit`, which waits for all of them to empty.
#[derive(Debug, Clone)]
pub struct Namespaces(Arc<Mutex<BTreeSet<u32>>>);

impl Namespaces {
    /// A set holding the armed namespace.
    pub fn new(mntns: u32) -> Self {
        Self(Arc::new(Mutex::new(BTreeSet::from([mntns]))))
    }

    /// Adds a namespace; whether it was new.
    pub fn insert(&self, mntns: u32) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(mntns)
    }

    /// The namespaces, in inode order.
    pub fn to_vec(&self) -> Vec<u32> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Pids (thread-group ids) in any of the namespaces, this process excepted.
    pub fn processes(&self) -> std::io::Result<Vec<u32>> {
        let set = self.to_vec();
        processes_where(|ino| set.iter().any(|&n| u64::from(n) == ino))
    }
}

/// Pids (thread-group ids) whose mount namespace has inode `mntns`, this process excepted.
///
/// Zombies have no namespaces left, so a process that has exited but is not yet reaped does
/// not count.
pub fn processes_in(mntns: u32) -> std::io::Result<Vec<u32>> {
    processes_where(|ino| ino == u64::from(mntns))
}

fn processes_where(wanted: impl Fn(u64) -> bool) -> std::io::Result<Vec<u32>> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes vanish during the scan; those simply do not count.
        if let Ok(meta) = std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
            && wanted(meta.ino())
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}
