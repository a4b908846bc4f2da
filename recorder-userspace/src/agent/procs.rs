//! Finding the processes of a mount namespace by scanning `/proc`.

use std::os::unix::fs::MetadataExt;

/// Pids (thread-group ids) whose mount namespace has inode `mntns`, this process excepted.
///
/// Zombies have no namespaces left, so a process that has exited but is not yet reaped does
/// not count.
pub fn processes_in(mntns: u32) -> std::io::Result<Vec<u32>> {
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
            && meta.ino() == u64::from(mntns)
        {
            pids.push(pid);
        }
    }
    Ok(pids)
}
