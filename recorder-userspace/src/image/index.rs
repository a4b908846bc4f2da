//! The index of one layer: a tree of nodes, one per path component, in flat arrays.
//!
//! A million entries must stay small, so there is no per-path string: each node holds its
//! parent, an interned component name and a 64-bit payload (24 bytes), and children are found
//! through one hash table of node ids keyed by (parent, name).

use std::hash::BuildHasher;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;

use super::error::{ImageError, Result};
use super::layer::LayerReader;
use super::path::{self, OPAQUE_MARKER, WHITEOUT_PREFIX};

/// Id of a node within one layer index.
pub type NodeId = u32;

/// The root directory's node.
pub const ROOT: NodeId = 0;

/// What a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to another entry.
    Hardlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// `.wh.NAME`: deletes NAME of lower layers.
    Whiteout,
    /// `.wh..wh..opq`: hides the lower layers' content of its directory.
    Opaque,
}

impl EntryKind {
    const ALL: [EntryKind; 9] = [
        EntryKind::File,
        EntryKind::Dir,
        EntryKind::Symlink,
        EntryKind::Hardlink,
        EntryKind::CharDevice,
        EntryKind::BlockDevice,
        EntryKind::Fifo,
        EntryKind::Whiteout,
        EntryKind::Opaque,
    ];

    fn from_u8(b: u8) -> EntryKind {
        EntryKind::ALL
            .get(usize::from(b))
            .copied()
            .unwrap_or(EntryKind::File)
    }

    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::CharDevice => "char",
            EntryKind::BlockDevice => "block",
            EntryKind::Fifo => "fifo",
            EntryKind::Whiteout => "whiteout",
            EntryKind::Opaque => "opaque",
        }
    }
}

/// Node flag: the node only exists because entries below it do (no tar entry of its own).
const IMPLICIT: u8 = 1;
/// Node flag: this directory holds an opaque marker.
const OPAQUE: u8 = 2;

#[derive(Clone, Copy)]
struct Node {
    /// File size; link target length for links; `major << 32 | minor` for devices.
    payload: u64,
    parent: NodeId,
    name_off: u32,
    /// Offset of a link's target in `targets`.
    target_off: u32,
    name_len: u16,
    kind: u8,
    flags: u8,
}

/// One entry as the index holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryInfo<'a> {
    /// Its type.
    pub kind: EntryKind,
    /// Size in bytes for files, 0 otherwise.
    pub size: u64,
    /// Target of a symlink (as written) or hardlink (cleaned entry name).
    pub target: Option<&'a [u8]>,
    /// `(major, minor)` of a device.
    pub device: Option<(u32, u32)>,
    /// True for directories that have no tar entry of their own.
    pub implicit: bool,
}

/// Counts of one layer's entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries indexed (whiteouts and opaque markers included).
    pub entries: u64,
    /// `.wh.NAME` entries.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaques: u64,
    /// Uncompressed tar bytes read (0 for a layer indexed from its eStargz TOC, which is not
    /// decompressed).
    pub tar_bytes: u64,
    /// Entries `recorder run` refuses to unpack (absolute names, `..` components, in the name
    /// or a hardlink's target), which the index takes after cleaning, as the stargz seed does.
    pub refused_by_run: u64,
    /// The first of them, and why.
    pub first_refused: Option<(String, &'static str)>,
    /// Indexed from the layer's eStargz table of contents, not by decompressing it.
    pub from_toc: bool,
}

/// The index of one layer.
pub struct LayerIndex {
    nodes: Vec<Node>,
    names: Vec<u8>,
    targets: Vec<u8>,
    children: HashTable<NodeId>,
    hasher: DefaultHashBuilder,
    stats: LayerStats,
}

impl std::fmt::Debug for LayerIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerIndex")
            .field("nodes", &self.nodes.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Interned names are packed as `offset << 16 | len` in the interning table.
fn pack(off: u32, len: u16) -> u64 {
    (u64::from(off) << 16) | u64::from(len)
}

/// Builds a [`LayerIndex`] entry by entry.
pub struct LayerIndexBuilder {
    index: LayerIndex,
    interned: HashTable<u64>,
}

impl Default for LayerIndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerIndexBuilder {
    /// An index holding only the (implicit) root directory.
    pub fn new() -> Self {
        let root = Node {
            payload: 0,
            parent: NodeId::MAX,
            name_off: 0,
            target_off: 0,
            name_len: 0,
            kind: EntryKind::Dir as u8,
            flags: IMPLICIT,
        };
        LayerIndexBuilder {
            index: LayerIndex {
                nodes: vec![root],
                names: Vec::new(),
                targets: Vec::new(),
                children: HashTable::new(),
                hasher: DefaultHashBuilder::default(),
                stats: LayerStats::default(),
            },
            interned: HashTable::new(),
        }
    }

    fn intern(&mut self, name: &[u8]) -> Result<(u32, u16), String> {
        let len = u16::try_from(name.len()).map_err(|_| "component too long".to_owned())?;
        let names = &mut self.index.names;
        let h = self.index.hasher.hash_one(name);
        let found = self.interned.find(h, |&p| {
            let (off, l) = ((p >> 16) as usize, (p & 0xffff) as usize);
            names.get(off..off + l) == Some(name)
        });
        if let Some(&p) = found {
            return Ok(((p >> 16) as u32, len));
        }
        let off = u32::try_from(names.len()).map_err(|_| "name arena over 4 GiB".to_owned())?;
        names.extend_from_slice(name);
        let hasher = &self.index.hasher;
        self.interned.insert_unique(h, pack(off, len), |&p| {
            let (o, l) = ((p >> 16) as usize, (p & 0xffff) as usize);
            hasher.hash_one(&names[o..o + l])
        });
        Ok((off, len))
    }

    fn child_or_insert(&mut self, parent: NodeId, name: &[u8]) -> Result<NodeId, String> {
        if let Some(id) = self.index.child(parent, name) {
            return Ok(id);
        }
        let (name_off, name_len) = self.intern(name)?;
        let id = NodeId::try_from(self.index.nodes.len())
            .map_err(|_| "more than 4 billion entries".to_owned())?;
        self.index.nodes.push(Node {
            payload: 0,
            parent,
            name_off,
            target_off: 0,
            name_len,
            kind: EntryKind::Dir as u8,
            flags: IMPLICIT,
        });
        let h = self.index.key_hash(parent, name);
        let LayerIndex {
            children,
            hasher,
            nodes,
            names,
            ..
        } = &mut self.index;
        children.insert_unique(h, id, |&n| idx_hash(hasher, nodes, names, n));
        Ok(id)
    }

    /// Adds one entry; `name` is the raw tar name, `target` a link's raw target.
    pub fn add(
        &mut self,
        name: &[u8],
        kind: EntryKind,
        size: u64,
        target: Option<&[u8]>,
        device: Option<(u32, u32)>,
    ) -> Result<(), String> {
        path::check(name).map_err(|e| e.to_string())?;
        let refused = path::refused_by_run(name).or_else(|| {
            (kind == EntryKind::Hardlink)
                .then_some(target)
                .flatten()
                .and_then(path::refused_by_run)
        });
        if let Some(why) = refused {
            let stats = &mut self.index.stats;
            stats.refused_by_run += 1;
            stats
                .first_refused
                .get_or_insert_with(|| (path::display(name), why));
        }
        let comps = path::clean_components(name);
        let mut kind = kind;
        if let Some(base) = comps.last() {
            if *base == OPAQUE_MARKER {
                kind = EntryKind::Opaque;
            } else if base.starts_with(WHITEOUT_PREFIX) {
                kind = EntryKind::Whiteout;
            }
        }
        let mut node = ROOT;
        for c in &comps {
            node = self.child_or_insert(node, c)?;
        }
        self.index.stats.entries += 1;
        match kind {
            EntryKind::Whiteout => self.index.stats.whiteouts += 1,
            EntryKind::Opaque => {
                self.index.stats.opaques += 1;
                let parent = self.index.nodes[node as usize].parent;
                if let Some(p) = self.index.nodes.get_mut(parent as usize) {
                    p.flags |= OPAQUE;
                }
            }
            _ => {}
        }
        if comps.is_empty() && kind != EntryKind::Dir {
            // Only a directory can be the root; a tar that says otherwise is ignored here.
            tracing::debug!(kind = kind.as_str(), "ignoring non-directory root entry");
            return Ok(());
        }
        let mut payload = size;
        let mut target_off = 0;
        if let Some(t) = target {
            if t.contains(&0) || t.len() >= path::PATH_MAX {
                return Err(format!(
                    "link target {:?} is not a valid path",
                    path::display(t)
                ));
            }
            let stored: Vec<u8>;
            let t = if kind == EntryKind::Hardlink {
                stored = path::clean(t);
                &stored[..]
            } else {
                t
            };
            target_off = u32::try_from(self.index.targets.len())
                .map_err(|_| "link target arena over 4 GiB".to_owned())?;
            self.index.targets.extend_from_slice(t);
            payload = t.len() as u64;
        }
        if let Some((major, minor)) = device {
            payload = (u64::from(major) << 32) | u64::from(minor);
        }
        let n = &mut self.index.nodes[node as usize];
        n.kind = kind as u8;
        n.payload = payload;
        n.target_off = target_off;
        n.flags &= !IMPLICIT;
        Ok(())
    }

    /// Indexes every entry of a tar stream, then reads the stream to its end.
    pub fn read_tar(
        mut self,
        reader: &mut LayerReader,
        cancel: Option<&AtomicBool>,
    ) -> Result<LayerIndex> {
        let digest = reader.digest().to_owned();
        let mut archive = tar::Archive::new(&mut *reader);
        let entries = archive.entries().map_err(|e| ImageError::BadLayer {
            digest: digest.clone(),
            message: e.to_string(),
        })?;
        // The previous entry's name, kept to point at where a corrupt header sits.
        let mut last: Vec<u8> = b"(start of archive)".to_vec();
        for (i, entry) in entries.enumerate() {
            let ordinal = i as u64 + 1;
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(ImageError::BadLayer {
                    digest,
                    message: super::build::CANCELLED.into(),
                });
            }
            let entry = entry.map_err(|e| bad_tar(&digest, ordinal, &last, e))?;
            let header = entry.header();
            let name = entry.path_bytes();
            let kind = match header.entry_type() {
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink,
                tar::EntryType::Link => EntryKind::Hardlink,
                tar::EntryType::Char => EntryKind::CharDevice,
                tar::EntryType::Block => EntryKind::BlockDevice,
                tar::EntryType::Fifo => EntryKind::Fifo,
                other => {
                    tracing::debug!(layer = %digest, ?other, "skipping tar entry of this type");
                    continue;
                }
            };
            let bad = |message: String| ImageError::BadEntry {
                digest: digest.clone(),
                entry: path::display(&name),
                message,
            };
            let size = if kind == EntryKind::File {
                entry.size()
            } else {
                0
            };
            let target = match kind {
                EntryKind::Symlink | EntryKind::Hardlink => Some(
                    entry
                        .link_name_bytes()
                        .ok_or_else(|| bad("link without a target".into()))?,
                ),
                _ => None,
            };
            let device = match kind {
                EntryKind::CharDevice | EntryKind::BlockDevice => {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    Some((major, minor))
                }
                _ => None,
            };
            self.add(&name, kind, size, target.as_deref(), device)
                .map_err(bad)?;
            last.clear();
            last.extend_from_slice(&name);
        }
        reader.finish()?;
        self.index.stats.tar_bytes = reader.bytes_out();
        Ok(self.finish())
    }

    /// Notes that the entries came from an eStargz TOC.
    pub(super) fn mark_from_toc(&mut self) {
        self.index.stats.from_toc = true;
    }

    /// The finished index, trimmed to size.
    pub fn finish(self) -> LayerIndex {
        let mut index = self.index;
        index.nodes.shrink_to_fit();
        index.names.shrink_to_fit();
        index.targets.shrink_to_fit();
        let LayerIndex {
            children,
            hasher,
            nodes,
            names,
            ..
        } = &mut index;
        children.shrink_to_fit(|&n| idx_hash(hasher, nodes, names, n));
        index
    }
}

fn bad_tar(digest: &str, ordinal: u64, last: &[u8], e: std::io::Error) -> ImageError {
    if super::digest::carries_image_error(&e) {
        return super::digest::unwrap_io(e, |_| ImageError::BadLayer {
            digest: digest.to_owned(),
            message: String::new(),
        });
    }
    ImageError::BadEntry {
        digest: digest.to_owned(),
        entry: format!("#{ordinal} (after {:?})", path::display(last)),
        message: format!("corrupt tar: {e}"),
    }
}

fn idx_hash(hasher: &DefaultHashBuilder, nodes: &[Node], names: &[u8], id: NodeId) -> u64 {
    let n = &nodes[id as usize];
    let off = n.name_off as usize;
    hasher.hash_one((n.parent, &names[off..off + usize::from(n.name_len)]))
}

impl LayerIndex {
    fn key_hash(&self, parent: NodeId, name: &[u8]) -> u64 {
        self.hasher.hash_one((parent, name))
    }

    /// Reads a whole layer into an index.
    pub fn from_reader(reader: &mut LayerReader) -> Result<LayerIndex> {
        LayerIndexBuilder::new().read_tar(reader, None)
    }

    /// The child `name` of directory node `parent`.
    pub fn child(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let h = self.key_hash(parent, name);
        self.children
            .find(h, |&id| {
                let n = &self.nodes[id as usize];
                n.parent == parent && self.name_of(n) == name
            })
            .copied()
    }

    fn name_of(&self, n: &Node) -> &[u8] {
        let off = n.name_off as usize;
        self.names
            .get(off..off + usize::from(n.name_len))
            .unwrap_or(&[])
    }

    /// The node of a cleaned component path, if this layer has one (implicit or not).
    pub fn lookup<C: AsRef<[u8]>>(&self, comps: &[C]) -> Option<NodeId> {
        comps
            .iter()
            .try_fold(ROOT, |node, c| self.child(node, c.as_ref()))
    }

    /// The node of a path, cleaned first.
    pub fn get(&self, path: &[u8]) -> Option<EntryInfo<'_>> {
        self.lookup(&path::clean_components(path))
            .map(|n| self.info(n))
    }

    /// What the index holds for a node.
    pub fn info(&self, id: NodeId) -> EntryInfo<'_> {
        let n = &self.nodes[id as usize];
        let kind = EntryKind::from_u8(n.kind);
        let (size, target, device) = match kind {
            EntryKind::File => (n.payload, None, None),
            EntryKind::Symlink | EntryKind::Hardlink => {
                let off = n.target_off as usize;
                let t = self.targets.get(off..off + n.payload as usize);
                (0, t, None)
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                (0, None, Some(((n.payload >> 32) as u32, n.payload as u32)))
            }
            _ => (0, None, None),
        };
        EntryInfo {
            kind,
            size,
            target,
            device,
            implicit: n.flags & IMPLICIT != 0,
        }
    }

    /// Whether directory node `id` holds an opaque marker.
    pub fn is_opaque(&self, id: NodeId) -> bool {
        self.nodes[id as usize].flags & OPAQUE != 0
    }

    /// The full cleaned path of a node.
    pub fn path_of(&self, id: NodeId) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            let Some(n) = self.nodes.get(cur as usize) else {
                break;
            };
            parts.push(self.name_of(n));
            cur = n.parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// Every node with a tar entry of its own, in insertion order, with its path.
    pub fn entries(&self) -> impl Iterator<Item = (Vec<u8>, EntryInfo<'_>)> + '_ {
        (0..self.nodes.len() as NodeId)
            .filter(|&id| self.nodes[id as usize].flags & IMPLICIT == 0)
            .map(|id| (self.path_of(id), self.info(id)))
    }

    /// Counts of this layer's entries.
    pub fn stats(&self) -> &LayerStats {
        &self.stats
    }

    /// Number of nodes, implicit directories included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Heap bytes the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.names.capacity()
            + self.targets.capacity()
            + self.children.allocation_size()
    }
}

/// Reads the whole of `r` and indexes it (a convenience for plain tar streams in tests).
pub fn index_plain_tar<R: Read + Send + 'static>(
    r: R,
    digest: super::digest::BlobDigest,
) -> Result<LayerIndex> {
    let blob: Box<dyn Read + Send> = Box::new(r);
    let mut reader = LayerReader::new(
        super::digest::VerifyingReader::new(blob, digest, None),
        super::media::Compression::None,
        None,
    )?;
    LayerIndex::from_reader(&mut reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 24);
    }

    #[test]
    fn builds_tree_with_implicit_parents() {
        let mut b = LayerIndexBuilder::new();
        b.add(b"./a/b/c", EntryKind::File, 5, None, None).unwrap();
        b.add(b"a/l", EntryKind::Symlink, 0, Some(b"../x"), None)
            .unwrap();
        b.add(b"a/.wh.gone", EntryKind::File, 0, None, None)
            .unwrap();
        b.add(b"a/b/.wh..wh..opq", EntryKind::File, 0, None, None)
            .unwrap();
        let idx = b.finish();
        let c = idx.get(b"/a/b/c").unwrap();
        assert_eq!((c.kind, c.size, c.implicit), (EntryKind::File, 5, false));
        assert!(idx.get(b"a").unwrap().implicit);
        assert_eq!(idx.get(b"a/l").unwrap().target, Some(&b"../x"[..]));
        assert_eq!(idx.get(b"a/.wh.gone").unwrap().kind, EntryKind::Whiteout);
        assert!(idx.is_opaque(idx.lookup(&[b"a", b"b"]).unwrap()));
        assert_eq!(idx.stats().whiteouts, 1);
        assert_eq!(idx.stats().opaques, 1);
        let names: Vec<Vec<u8>> = idx.entries().map(|(p, _)| p).collect();
        assert_eq!(names[0], b"a/b/c");
        assert!(idx.get(b"a/nope").is_none());
    }
}
