//! Turning one traced event into a record decision: the image path and layer it read, or why
//! it is not image content.
//!
//! The kernel names every file a call produced by its identity: the device of its filesystem,
//! the mount it was reached through and its path from the root of that filesystem. A file on
//! the container root's filesystem, below the container's root, is the image file at that path,
//! whatever route reached it (symlinks, `..`, magic links, `/proc/self/root`, bind mounts, a
//! copy of the mount in a nested namespace); anything else is another filesystem, excluded
//! under its mount's label. Only names the kernel gives as strings (a script run through its
//! `#!` interpreter, the interpreters themselves) are walked through the image, with the one
//! walker of [`MergedView::resolve_in`].

use std::collections::HashMap;
use std::sync::Arc;

use crate::image::{EntryKind, Found, MergedView, Reason};
use crate::tracer::Event;
use crate::tracer::event::{FileGap, OpenedFile, fs_type_name};

use super::mounts::MountTable;

/// `O_PATH`: such opens only name a file and never read it.
const O_PATH: u64 = libc::O_PATH as u64;

/// Why an event adds nothing to the record. Each has a stable kebab-case label for counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// The call opened a directory (fanotify-based recorders skip them too).
    Directory,
    /// The file lies on a filesystem other than the image's root, labelled by its mount: the
    /// type (`proc`, `tmpfs`, ...) or `bind` for part of a filesystem mounted elsewhere.
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
    /// The kernel program could not read the file of a successful call.
    UnresolvedFile,
    /// An io_uring open into a fixed-file slot whose file could not be read from the ring.
    FixedSlot,
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
            Exclusion::UnresolvedFile => "unresolved-file",
            Exclusion::FixedSlot => "io-uring-fixed-slot",
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
            Reason::Mounted { label, .. } => Exclusion::Mount(label.into()),
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

/// Decides events against one image and one container's mounts, caching by file and by path.
#[derive(Debug)]
pub struct Resolver {
    view: Arc<MergedView>,
    mounts: MountTable,
    /// By path string, for names the kernel gives as strings.
    paths: HashMap<Vec<u8>, Decision>,
    /// By device, then path from the filesystem's root, for files the kernel named: looked up
    /// by the event's own bytes, with no allocation per event.
    files: HashMap<u64, HashMap<Vec<u8>, Decision>>,
}

impl Resolver {
    /// A resolver over `view` for a container with `mounts`.
    pub fn new(view: Arc<MergedView>, mounts: MountTable) -> Self {
        Self {
            view,
            mounts,
            paths: HashMap::new(),
            files: HashMap::new(),
        }
    }

    /// The decision for a successful event (callers count failed ones separately): the file
    /// it produced, whatever path it was asked by.
    pub fn decide(&mut self, event: &Event) -> Decision {
        if !event.is_exec() && event.flags & O_PATH != 0 {
            return Decision::Exclude(Exclusion::OPath);
        }
        match (&event.file, event.file_gap) {
            (Some(file), _) => self.decide_file(file).clone(),
            (None, FileGap::FixedSlot) => Decision::Exclude(Exclusion::FixedSlot),
            (None, _) => Decision::Exclude(Exclusion::UnresolvedFile),
        }
    }

    /// For an exec through an interpreter (`event.script`): the script, named only by the
    /// kernel's copy of the name it was run by, walked through the image from the directory the
    /// kernel reported for a relative name.
    pub fn decide_script(&mut self, event: &Event) -> Decision {
        if event.path_unreadable {
            return Decision::Exclude(Exclusion::UnreadablePath);
        }
        match event.absolute_path() {
            Some(path) => self
                .decide_path(&path.into_os_string().into_encoded_bytes())
                .clone(),
            None => Decision::Exclude(Exclusion::UnresolvedRelative),
        }
    }

    /// The decision for a file the kernel named.
    pub fn decide_file(&mut self, file: &OpenedFile) -> &Decision {
        let known = self
            .files
            .get(&file.dev)
            .is_some_and(|paths| paths.contains_key(file.path.as_slice()));
        if !known {
            let decision = self.file_decision(file);
            self.files
                .entry(file.dev)
                .or_default()
                .insert(file.path.clone(), decision);
        }
        // Inserted just above when absent.
        &self.files[&file.dev][file.path.as_slice()]
    }

    fn file_decision(&self, file: &OpenedFile) -> Decision {
        if file.is_dir() {
            return Decision::Exclude(Exclusion::Directory);
        }
        if let Some(root) = self.mounts.root()
            && root.dev == file.dev
            && let Some(inside) = below(&file.path, &root.root)
        {
            return match self.view.which(inside).result {
                Ok(Found {
                    kind: EntryKind::Dir,
                    ..
                }) => Decision::Exclude(Exclusion::Directory),
                Ok(Found { layer, .. }) => Decision::Record {
                    path: inside.to_vec(),
                    layer,
                },
                Err(reason) => Decision::Exclude(reason.into()),
            };
        }
        // Another filesystem, or the root's filesystem outside the container's root (a bind
        // mount of a host directory on the same disk): labelled by the mount it was reached
        // through, or, in a namespace of its own, by its filesystem's type.
        let label = match self.mounts.label_of(file.mnt_id) {
            Some(label) => label.clone(),
            None => fs_type_name(file.magic)
                .unwrap_or("other-filesystem")
                .into(),
        };
        Decision::Exclude(Exclusion::Mount(label))
    }

    /// The decision for an absolute path inside the container's root, walked as the kernel
    /// walks it.
    pub fn decide_path(&mut self, path: &[u8]) -> &Decision {
        if !self.paths.contains_key(path) {
            let resolved = self.view.resolve_in(path, &self.mounts);
            let decision = match resolved.result {
                Ok(Found {
                    kind: EntryKind::Dir,
                    ..
                }) => Decision::Exclude(Exclusion::Directory),
                Ok(Found { layer, .. }) => Decision::Record {
                    path: resolved.target,
                    layer,
                },
                // The walk ended on the image's root.
                Err(Reason::NotInImage) if resolved.target.is_empty() => {
                    Decision::Exclude(Exclusion::Directory)
                }
                Err(reason) => Decision::Exclude(reason.into()),
            };
            self.paths.insert(path.to_vec(), decision);
        }
        // Inserted just above when absent.
        &self.paths[path]
    }

    /// Distinct paths and files decided so far.
    pub fn cached(&self) -> usize {
        self.paths.len() + self.files.values().map(HashMap::len).sum::<usize>()
    }
}

/// `path` (from a filesystem's root, starting with `/`) relative to `root` (relative, cleaned,
/// empty for the filesystem's root), if it lies below it.
fn below<'a>(path: &'a [u8], root: &[u8]) -> Option<&'a [u8]> {
    let path = path.strip_prefix(b"/").unwrap_or(path);
    if root.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(root)?;
    rest.strip_prefix(b"/")
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

    fn file(dev: (u32, u32), mnt_id: u32, mode: u32, magic: u64, path: &str) -> OpenedFile {
        OpenedFile {
            path: path.as_bytes().to_vec(),
            dev: libc::makedev(dev.0, dev.1),
            ino: 1,
            mnt_id,
            mode,
            magic,
        }
    }

    #[test]
    fn names_files_by_their_filesystem_and_place_in_it() {
        const REG: u32 = libc::S_IFREG | 0o644;
        const DIR: u32 = libc::S_IFDIR | 0o755;
        const OVERLAY: u64 = 0x794c_7630;
        let mut r = resolver();
        let table = [
            // The root's filesystem: the image, by the path from its root.
            (
                file((0, 1), 1, REG, OVERLAY, "/etc/passwd"),
                Ok(record("etc/passwd", 1)),
            ),
            (
                file((0, 1), 1, REG, OVERLAY, "/usr/lib/libc.so"),
                Ok(record("usr/lib/libc.so", 0)),
            ),
            // Reached through another mount of the same filesystem (a bind mount inside the
            // container, or a nested namespace's copy): still the image file.
            (
                file((0, 1), 77, REG, OVERLAY, "/usr/lib/libc.so"),
                Ok(record("usr/lib/libc.so", 0)),
            ),
            (
                file((0, 1), 1, REG, OVERLAY, "/etc/gone"),
                Err(excluded("whiteout")),
            ),
            (
                file((0, 1), 1, REG, OVERLAY, "/etc/new"),
                Err(excluded("not-in-image")),
            ),
            (
                file((0, 1), 1, DIR, OVERLAY, "/usr/lib"),
                Err(excluded("directory")),
            ),
            (
                file((0, 1), 1, DIR, OVERLAY, "/"),
                Err(excluded("directory")),
            ),
            // Other filesystems, by the mount they were reached through.
            (
                file((0, 2), 2, REG, 0x9fa0, "/self/status"),
                Err(excluded("proc")),
            ),
            (
                file((8, 1), 3, REG, 0xef53, "/h/hosts"),
                Err(excluded("bind")),
            ),
            (
                file((0, 3), 4, REG, 0x0102_1994, "/x"),
                Err(excluded("tmpfs")),
            ),
            // A mount of a nested namespace, unknown here: by its filesystem's type.
            (
                file((0, 9), 500, REG, 0x9fa0, "/1/maps"),
                Err(excluded("proc")),
            ),
            (
                file((0, 9), 500, REG, 0x1234, "/x"),
                Err(excluded("other-filesystem")),
            ),
        ];
        for (f, want) in table {
            let got = match r.decide_file(&f).clone() {
                Decision::Exclude(e) => Err(e.label().to_owned()),
                d => Ok(d),
            };
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&f.path));
        }
    }

    #[test]
    fn a_root_inside_a_filesystem_is_stripped() {
        let table = [
            ("/srv/c1/usr/bin/x", "srv/c1", Some("usr/bin/x")),
            ("/srv/c1", "srv/c1", None),
            ("/srv/c10/x", "srv/c1", None),
            ("/usr/bin/x", "", Some("usr/bin/x")),
            ("/", "", Some("")),
        ];
        for (path, root, want) in table {
            assert_eq!(
                below(path.as_bytes(), root.as_bytes()),
                want.map(str::as_bytes),
                "{path} below {root}"
            );
        }
    }
}
