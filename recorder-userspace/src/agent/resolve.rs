//! Turning one traced event into a record decision: the image path and layer it read, or why
//! it is not image content.
//!
//! The path is walked component by component the way the kernel walks it, against the
//! container's real mounts and the image's merged view: a component that is a symlink in the
//! image is followed before a later `..` applies, a component that is a mount point leaves the
//! image (procfs, /dev, bind mounts), and `..` may climb back out of a mount.

use std::collections::HashMap;
use std::sync::Arc;

use crate::image::merged::MAX_LINKS;
use crate::image::{EntryKind, Found, MergedView, Reason, path};
use crate::tracer::Event;

use super::mounts::MountTable;

/// `O_PATH`: such opens only name a file and never read it.
const O_PATH: u64 = libc::O_PATH as u64;

/// Why an event adds nothing to the record. Each has a stable kebab-case label for counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// The call opened a directory (fanotify-based recorders skip them too).
    Directory,
    /// The path lies on a mount other than the image's root, labelled by type (`proc`,
    /// `tmpfs`, `bind`, ...).
    Mount(Arc<str>),
    /// No layer has it: created at runtime.
    NotInImage,
    /// A whiteout deleted it (or an ancestor); what was read was created at runtime.
    Whiteout,
    /// An opaque directory hid it; what was read was created at runtime.
    OpaqueDir,
    /// An ancestor is not a directory in the image.
    NotADirectory,
    /// Symlinks loop, or more than the kernel's limit.
    SymlinkLoop,
    /// The path cannot be a kernel path.
    InvalidPath,
    /// A relative path whose directory the kernel did not report.
    UnresolvedRelative,
    /// The kernel could not read the path argument.
    UnreadablePath,
    /// An `O_PATH` open, which reads nothing.
    OPath,
}

impl Exclusion {
    /// The counter label.
    pub fn label(&self) -> &str {
        match self {
            Exclusion::Directory => "directory",
            Exclusion::Mount(label) => label,
            Exclusion::NotInImage => "not-in-image",
            Exclusion::Whiteout => "whiteout",
            Exclusion::OpaqueDir => "opaque-dir",
            Exclusion::NotADirectory => "not-a-directory",
            Exclusion::SymlinkLoop => "symlink-loop",
            Exclusion::InvalidPath => "invalid-path",
            Exclusion::UnresolvedRelative => "unresolved-relative",
            Exclusion::UnreadablePath => "unreadable-path",
            Exclusion::OPath => "o-path",
        }
    }
}

impl From<Reason> for Exclusion {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::NotInImage => Exclusion::NotInImage,
            Reason::Whiteout { .. } => Exclusion::Whiteout,
            Reason::OpaqueDir { .. } => Exclusion::OpaqueDir,
            Reason::NotADirectory { .. } => Exclusion::NotADirectory,
            Reason::SymlinkLoop { .. } | Reason::TooManyLinks => Exclusion::SymlinkLoop,
            Reason::Invalid(_) => Exclusion::InvalidPath,
        }
    }
}

/// What to do with one successful event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record `path` (relative to the image root), provided by `layer`.
    Record {
        /// The file finally read, cleaned, relative to the image root.
        path: Vec<u8>,
        /// The topmost layer providing it.
        layer: usize,
    },
    /// Not image content.
    Exclude(Exclusion),
}

/// Decides events against one image and one container's mounts, caching by path.
///
/// The kernel filter only passes the target mount namespace and the mounts are those of that
/// namespace, so the absolute path alone keys the cache.
#[derive(Debug)]
pub struct Resolver {
    view: Arc<MergedView>,
    mounts: MountTable,
    cache: HashMap<Vec<u8>, Decision>,
}

impl Resolver {
    /// A resolver over `view` for a container with `mounts`.
    pub fn new(view: Arc<MergedView>, mounts: MountTable) -> Self {
        Self {
            view,
            mounts,
            cache: HashMap::new(),
        }
    }

    /// The decision for a successful event (callers count failed ones separately).
    pub fn decide(&mut self, event: &Event) -> Decision {
        if event.path_unreadable {
            return Decision::Exclude(Exclusion::UnreadablePath);
        }
        if !event.is_exec() && event.flags & O_PATH != 0 {
            return Decision::Exclude(Exclusion::OPath);
        }
        let absolute;
        let path: &[u8] = if event.path.first() == Some(&b'/') {
            &event.path
        } else {
            match event.absolute_path() {
                Some(p) => {
                    absolute = p.into_os_string().into_encoded_bytes();
                    &absolute
                }
                None => return Decision::Exclude(Exclusion::UnresolvedRelative),
            }
        };
        self.decide_path(path).clone()
    }

    /// The decision for an absolute path inside the container's root.
    pub fn decide_path(&mut self, path: &[u8]) -> &Decision {
        if !self.cache.contains_key(path) {
            let decision = walk(&self.view, &self.mounts, path);
            self.cache.insert(path.to_vec(), decision);
        }
        // Inserted just above when absent.
        &self.cache[path]
    }

    /// Distinct paths decided so far.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// The deepest mount whose mount point is a prefix of `cur` (or `cur` itself).
fn innermost_mount(mounts: &MountTable, cur: &[Vec<u8>]) -> Option<(usize, Arc<str>)> {
    (1..=cur.len())
        .rev()
        .find_map(|n| mounts.at(&cur[..n].join(&b'/')).map(|l| (n, l.clone())))
}

/// Walks `path` from the container's root as the kernel would.
fn walk(view: &MergedView, mounts: &MountTable, path: &[u8]) -> Decision {
    if path::check(path).is_err() {
        return Decision::Exclude(Exclusion::InvalidPath);
    }
    // A stack of components still to walk, next on top.
    let mut pending: Vec<Vec<u8>> = split_rev(path);
    let mut cur: Vec<Vec<u8>> = Vec::new();
    // The mount the walk is inside, with the depth of its mount point.
    let mut mount: Option<(usize, Arc<str>)> = None;
    let mut links = 0;
    while let Some(component) = pending.pop() {
        match &component[..] {
            b"" | b"." => continue,
            b".." => {
                cur.pop();
                if mount.as_ref().is_some_and(|(depth, _)| cur.len() < *depth) {
                    mount = innermost_mount(mounts, &cur);
                }
                continue;
            }
            _ => cur.push(component),
        }
        let joined = cur.join(&b'/');
        if let Some(label) = mounts.at(&joined) {
            mount = Some((cur.len(), label.clone()));
            continue;
        }
        if mount.is_some() {
            // Inside another filesystem the image says nothing; only `..` can lead back.
            continue;
        }
        let last = pending.iter().all(|c| c.is_empty() || c == b".");
        match view.which(&joined).result {
            Ok(Found {
                layer,
                kind: EntryKind::Symlink,
            }) => {
                links += 1;
                if links > MAX_LINKS {
                    return Decision::Exclude(Exclusion::SymlinkLoop);
                }
                let target = view.layers()[layer]
                    .get(&joined)
                    .and_then(|info| info.target)
                    .unwrap_or_default();
                cur.pop();
                if target.first() == Some(&b'/') {
                    cur.clear();
                }
                pending.extend(split_rev(target));
            }
            Ok(Found {
                kind: EntryKind::Dir,
                ..
            }) => {
                if last {
                    return Decision::Exclude(Exclusion::Directory);
                }
            }
            Ok(Found { layer, .. }) if last => {
                return Decision::Record {
                    path: joined,
                    layer,
                };
            }
            Ok(Found { .. }) => return Decision::Exclude(Exclusion::NotADirectory),
            // An ancestor listed by no layer may still be an implicit directory (entries below
            // it, none of its own); the full path decides.
            Err(Reason::NotInImage) if !last => {}
            Err(reason) => return Decision::Exclude(reason.into()),
        }
    }
    match mount {
        Some((_, label)) => Decision::Exclude(Exclusion::Mount(label)),
        // Ended on the root, or on a `.`/`..` after a directory: a directory was opened.
        None => Decision::Exclude(Exclusion::Directory),
    }
}

fn split_rev(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::LayerIndexBuilder;

    fn layer(entries: &[(&str, EntryKind, Option<&str>)]) -> crate::image::LayerIndex {
        let mut b = LayerIndexBuilder::new();
        for (name, kind, link) in entries {
            b.add(name.as_bytes(), *kind, 0, link.map(str::as_bytes), None)
                .unwrap();
        }
        b.finish()
    }

    fn resolver() -> Resolver {
        use EntryKind::{Dir as D, File as F, Symlink as L};
        let bottom = layer(&[
            ("usr/", D, None),
            ("usr/lib/", D, None),
            ("usr/lib/libc.so", F, None),
            ("lib", L, Some("usr/lib")),
            ("etc/", D, None),
            ("etc/passwd", F, None),
            ("etc/gone", F, None),
            ("etc/mtab", L, Some("/proc/self/mounts")),
            ("etc/alt", L, Some("../usr/lib/libc.so")),
            ("app/", D, None),
            ("app/conf", L, Some("sub/deep")),
            ("app/sub/", D, None),
            ("app/sub/deep/", D, None),
            ("app/data", F, None),
            ("loop", L, Some("loop")),
        ]);
        let top = layer(&[("etc/passwd", F, None), ("etc/.wh.gone", F, None)]);
        let mounts = MountTable::parse(
            b"1 0 0:1 / / rw - overlay o rw\n2 1 0:2 / /proc rw - proc p rw\n\
              3 1 8:1 /h/hosts /etc/hosts rw - ext4 d rw\n4 1 0:3 / /tmp rw - tmpfs t rw\n",
        )
        .unwrap();
        Resolver::new(Arc::new(MergedView::new(vec![bottom, top])), mounts)
    }

    fn record(path: &str, layer: usize) -> Decision {
        Decision::Record {
            path: path.as_bytes().to_vec(),
            layer,
        }
    }

    fn excluded(label: &str) -> String {
        label.to_owned()
    }

    fn decide(r: &mut Resolver, path: &str) -> Result<Decision, String> {
        match r.decide_path(path.as_bytes()).clone() {
            Decision::Exclude(e) => Err(e.label().to_owned()),
            d => Ok(d),
        }
    }

    #[test]
    fn follows_symlinks_dots_and_mounts_like_the_kernel() {
        let mut r = resolver();
        let table = [
            ("/etc/passwd", Ok(record("etc/passwd", 1))),
            ("/lib/libc.so", Ok(record("usr/lib/libc.so", 0))),
            ("/etc/./../lib/./libc.so", Ok(record("usr/lib/libc.so", 0))),
            ("/etc/alt", Ok(record("usr/lib/libc.so", 0))),
            // `..` applies after following app/conf -> sub/deep, so it lands in app/sub.
            ("/app/conf/../../data", Ok(record("app/data", 0))),
            ("/app/conf/..", Err(excluded("directory"))),
            ("/usr/lib", Err(excluded("directory"))),
            ("/", Err(excluded("directory"))),
            ("/etc/gone", Err(excluded("whiteout"))),
            ("/etc/new", Err(excluded("not-in-image"))),
            ("/etc/mtab", Err(excluded("proc"))),
            ("/proc/self/status", Err(excluded("proc"))),
            ("/etc/hosts", Err(excluded("bind"))),
            ("/tmp/x", Err(excluded("tmpfs"))),
            // Climbing back out of a mount returns to the image.
            ("/tmp/../etc/passwd", Ok(record("etc/passwd", 1))),
            (
                "/proc/self/../../lib/libc.so",
                Ok(record("usr/lib/libc.so", 0)),
            ),
            ("/etc/passwd/x", Err(excluded("not-a-directory"))),
            ("/loop", Err(excluded("symlink-loop"))),
        ];
        for (path, want) in table {
            assert_eq!(decide(&mut r, path), want, "{path}");
        }
        let n = r.cached();
        assert_eq!(decide(&mut r, "/etc/passwd"), Ok(record("etc/passwd", 1)));
        assert_eq!(r.cached(), n, "a repeated path is answered from the cache");
    }
}
