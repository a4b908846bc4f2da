//! The mounts of a target container, read from `/proc/PID/mountinfo`: every mount point other
//! than the root is content the image does not provide (procfs, sysfs, /dev, bind-mounted
//! files such as /etc/hosts, volumes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::image::path;

/// Why a target's mounts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    /// The mountinfo file could not be read (usually: the process is gone).
    #[error("reading {path} failed")]
    Read {
        /// The mountinfo file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line does not have the mountinfo shape.
    #[error("{path} line {line}: malformed mountinfo line")]
    Malformed {
        /// The mountinfo file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// Mount points of a container (relative to its root, cleaned) and the label each is
/// excluded under: the filesystem type, or `bind` for a bind mount of part of a filesystem.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    points: HashMap<Vec<u8>, Arc<str>>,
    by_id: HashMap<u32, Arc<str>>,
    root: Option<RootMount>,
}

/// The filesystem the container's root is on: the image's files are the ones on this device
/// below `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    /// The device (`st_dev` encoding).
    pub dev: u64,
    /// Where the container's root lies inside that filesystem, relative, cleaned (empty for
    /// the filesystem's own root, as for an overlay).
    pub root: Vec<u8>,
    /// The mount's id.
    pub mnt_id: u32,
}

impl MountTable {
    /// The mounts seen by process `pid`, relative to its root.
    pub fn of_pid(pid: u32) -> Result<Self, MountsError> {
        let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
        let text = std::fs::read(&path).map_err(|source| MountsError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|line| MountsError::Malformed { path, line })
    }

    /// Parses mountinfo text; `Err(line)` names the first malformed line (1-based).
    pub fn parse(text: &[u8]) -> Result<Self, usize> {
        let mut points = HashMap::new();
        let mut by_id = HashMap::new();
        let mut root_mount = None;
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            // id parent major:minor root mount-point options [optional...] - fstype source super
            let sep = fields
                .iter()
                .skip(6)
                .position(|f| *f == b"-")
                .map(|p| p + 6)
                .ok_or(i + 1)?;
            let fstype = fields.get(sep + 1).ok_or(i + 1)?;
            let (root, point) = (unescape(fields[3]), unescape(fields[4]));
            let point = path::clean(&point);
            let id = parse_num::<u32>(fields[0]).ok_or(i + 1)?;
            let dev = device(fields[2]).ok_or(i + 1)?;
            if point.is_empty() {
                // Later lines are later mounts: the topmost one at the root wins.
                root_mount = Some(RootMount {
                    dev,
                    root: path::clean(&root),
                    mnt_id: id,
                });
                by_id.remove(&id);
                continue;
            }
            let label: Arc<str> = if root == b"/" {
                String::from_utf8_lossy(&unescape(fstype)).into()
            } else {
                // Part of a filesystem mounted elsewhere: a bind mount (a file such as
                // /etc/hosts, or a volume directory).
                "bind".into()
            };
            // Later lines are later mounts: the topmost one at a point wins.
            by_id.insert(id, label.clone());
            points.insert(point, label);
        }
        Ok(Self {
            points,
            by_id,
            root: root_mount,
        })
    }

    /// The filesystem of the container's root, if a mount sits at `/`.
    pub fn root(&self) -> Option<&RootMount> {
        self.root.as_ref()
    }

    /// The label of the mount with this id, other than the root's.
    pub fn label_of(&self, mnt_id: u32) -> Option<&Arc<str>> {
        self.by_id.get(&mnt_id)
    }

    /// The label of the mount whose mount point is exactly `cleaned` (relative, no `/`).
    pub fn at(&self, cleaned: &[u8]) -> Option<&Arc<str>> {
        self.points.get(cleaned)
    }

    /// Number of mount points other than the root.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether there is no mount besides the root.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

impl crate::image::MountPoints for MountTable {
    fn mount_at(&self, cleaned: &[u8]) -> Option<&str> {
        self.points.get(cleaned).map(|l| &**l)
    }
}

fn parse_num<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// `MAJOR:MINOR` as `st_dev` encodes it.
fn device(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let (major, minor) = text.split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(oct) = field.get(i + 1..i + 4)
            && oct.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = oct.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
1410 1409 0:120 / / rw,relatime - overlay overlay rw,lowerdir=/l0,upperdir=/u,workdir=/w
1411 1410 0:121 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1412 1410 0:122 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1413 1412 0:123 / /dev/pts rw,nosuid,noexec - devpts devpts rw,mode=620
1414 1410 0:124 / /sys ro,nosuid - sysfs sysfs ro
1415 1410 8:1 /var/lib/docker/containers/abc/hosts /etc/hosts rw shared:1 master:2 - ext4 /dev/sda1 rw
1416 1410 8:1 /srv/vol\\040one /data/my\\040vol rw - ext4 /dev/sda1 rw
";

    #[test]
    fn labels_mounts_by_type_and_binds() {
        let table = MountTable::parse(SAMPLE.as_bytes()).unwrap();
        let label = |p: &str| table.at(p.as_bytes()).map(|l| l.to_string());
        assert_eq!(label("proc").as_deref(), Some("proc"));
        assert_eq!(label("dev").as_deref(), Some("tmpfs"));
        assert_eq!(label("dev/pts").as_deref(), Some("devpts"));
        assert_eq!(label("sys").as_deref(), Some("sysfs"));
        assert_eq!(label("etc/hosts").as_deref(), Some("bind"));
        assert_eq!(label("data/my vol").as_deref(), Some("bind"));
        assert_eq!(label(""), None, "the root is the image, not an exclusion");
        assert_eq!(table.len(), 6);
        let root = table.root().unwrap();
        assert_eq!(
            (root.dev, root.root.as_slice(), root.mnt_id),
            (libc::makedev(0, 120), &b""[..], 1410)
        );
        assert_eq!(table.label_of(1415).map(|l| &**l), Some("bind"));
        assert_eq!(table.label_of(1411).map(|l| &**l), Some("proc"));
        assert_eq!(table.label_of(1410), None, "the root is not an exclusion");
    }

    #[test]
    fn rejects_malformed_lines() {
        assert_eq!(MountTable::parse(b"1 2 3 / /x rw\n").unwrap_err(), 1);
        assert_eq!(
            MountTable::parse(b"1 0 0:1 / / rw - ext4 x rw\ngarbage\n").unwrap_err(),
            2
        );
    }
}
