//! The index of one layer: a tree of nodes, one per path component, in flat arrays.
//!
//! A million entries must stay small, so there is no per-path string: each node holds its
//! parent, an interned component name and a 64-bit payload (24 bytes), and children are found
//! through one hash table of node ids keyed by (parent, name).

use std::hash::BuildHasher;
use std::io::Read;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;

use super::error::Result;
use super::layer::LayerReader;
use super::path;

mod builder;
mod stored;

pub use builder::{LayerIndexBuilder, TarIndexer};
pub use stored::{IndexCache, IndexCacheError};

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

#[derive(Clone, Copy, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerStats {
    /// Tar entries indexed (whiteouts and opaque markers included).
    pub entries: u64,
    /// `.wh.NAME` entries.
    pub whiteouts: u64,
    /// `.wh..wh..opq` entries.
    pub opaques: u64,
    /// Uncompressed tar bytes read (0 for a layer indexed from its TOC, which is not
    /// decompressed).
    pub tar_bytes: u64,
    /// Entries `recorder run` refuses to unpack (absolute names, `..` components, in the name
    /// or a hardlink's target), which the index takes after cleaning, as the stargz seed does.
    pub refused_by_run: u64,
    /// The first of them, and why.
    pub first_refused: Option<(String, String)>,
    /// Indexed from the layer's eStargz or zstd:chunked table of contents, not by
    /// decompressing it.
    pub from_toc: bool,
    /// Loaded from the index cache (an [`IndexCache`]), not made from the layer by this run.
    #[serde(skip)]
    pub from_cache: bool,
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
