//! Finding the processes of a mount namespace by scanning `/proc`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The mount namespaces of one recording: the armed one and those its tasks made, which the
/// kernel adds to the filter as they are made and reports through the ring. Shared between the
/// tracing loop, which adds them, and `--until-exit`, which waits for all of them to empty.
///
/// A task may move into a namespace of its own between the kernel's report and the tracing
/// loop's reading of it; a scan of `/proc` in that window finds no process in any known
/// namespace. So an empty scan is only believed after the loop has drained the ring once more
/// ([`Namespaces::settle`]): whatever namespace was made before the scan is known by then.
#[derive(Debug, Clone)]
pub struct Namespaces(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    set: Mutex<BTreeSet<u32>>,
    /// Drains completed on request.
    drained: AtomicU64,
    /// Asks the tracing loop to drain the ring.
    drain: Notify,
}

impl Namespaces {
    /// A set holding the armed namespace.
    pub fn new(mntns: u32) -> Self {
        Self(Arc::new(Shared {
            set: Mutex::new(BTreeSet::from([mntns])),
            drained: AtomicU64::new(0),
            drain: Notify::new(),
        }))
    }

    /// Adds a namespace; whether it was new.
    pub fn insert(&self, mntns: u32) -> bool {
        self.0
            .set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(mntns)
    }

    /// The namespaces, in inode order.
    pub fn to_vec(&self) -> Vec<u32> {
        self.0
            .set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    /// Completes when someone asks for a drain (the tracing loop waits on this).
    pub async fn drain_requested(&self) {
        self.0.drain.notified().await;
    }

    /// The tracing loop has drained the ring (and added the namespaces it reported) since the
    /// last request.
    pub fn drained(&self) {
        self.0.drained.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits until the tracing loop has drained the ring after this call (at most `limit`):
    /// every namespace made before the call is then in the set. Whether it did.
    pub async fn settle(&self, limit: std::time::Duration) -> bool {
        // Two drains: one already under way (a request left over from before) may have read the
        // ring before this call; the second began after it.
        let wanted = self.0.drained.load(Ordering::Acquire) + 2;
        let deadline = tokio::time::Instant::now() + limit;
        while self.0.drained.load(Ordering::Acquire) < wanted {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.0.drain.notify_one();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        true
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
        if let Ok(ns) = crate::procfs::MntNs::of_pid(pid)
            && wanted(ns.inode())
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}
