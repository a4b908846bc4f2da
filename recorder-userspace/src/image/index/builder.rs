//! Building a [`LayerIndex`]: entry by entry, or from a layer's tar stream, whiteouts and
//! opaque markers applied as the tar names them.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{
    EntryKind, IMPLICIT, LayerIndex, LayerStats, Node, NodeId, OPAQUE, ROOT, idx_hash, pack,
};
use crate::image::error::{ImageError, LayerFault, Result};
use crate::image::layer::LayerReader;
use crate::image::path::{self, OPAQUE_MARKER, WHITEOUT_PREFIX};

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
                .get_or_insert_with(|| (path::display(name), why.to_owned()));
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
        self,
        reader: &mut LayerReader,
        cancel: Option<&AtomicBool>,
    ) -> Result<LayerIndex> {
        let mut indexer = TarIndexer::new(self, reader.digest());
        let mut archive = tar::Archive::new(&mut *reader);
        let entries = archive.entries().map_err(|e| ImageError::BadLayer {
            digest: indexer.digest.clone(),
            source: LayerFault::Read(e),
        })?;
        // The previous entry's name, kept to point at where a corrupt header sits.
        let mut last: Vec<u8> = b"(start of archive)".to_vec();
        for (i, entry) in entries.enumerate() {
            let ordinal = i as u64 + 1;
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(ImageError::BadLayer {
                    digest: indexer.digest,
                    source: LayerFault::Cancelled,
                });
            }
            let entry = entry.map_err(|e| bad_tar(&indexer.digest, ordinal, &last, e))?;
            indexer.add(&entry)?;
            last.clear();
            last.extend_from_slice(&entry.path_bytes());
        }
        reader.finish()?;
        Ok(indexer.finish(reader.bytes_out()))
    }

    /// Notes that the entries came from a TOC, eStargz's or zstd:chunked's.
    pub(in crate::image) fn mark_from_toc(&mut self) {
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

/// Indexes a layer's tar entries as a walk over them meets them: [`LayerIndexBuilder::read_tar`]'s
/// walk, which only indexes, and `recorder run`'s unpacker, which indexes a layer in the same
/// pass that unpacks it (one decompression a layer, not two), so both make the same index.
pub struct TarIndexer {
    builder: LayerIndexBuilder,
    digest: String,
}

impl TarIndexer {
    /// Indexes into `builder` the tar stream of layer blob `digest` (named in errors).
    pub fn new(builder: LayerIndexBuilder, digest: &str) -> Self {
        Self {
            builder,
            digest: digest.to_owned(),
        }
    }

    /// Adds one tar entry (its header: nothing of its data is read). Entries of types a layer's
    /// index has no use for (PAX and GNU headers the reader left) are skipped.
    pub fn add<R: std::io::Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<()> {
        let digest = &self.digest;
        let header = entry.header();
        let name = entry.path_bytes();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                EntryKind::File
            }
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Char => EntryKind::CharDevice,
            tar::EntryType::Block => EntryKind::BlockDevice,
            tar::EntryType::Fifo => EntryKind::Fifo,
            other => {
                tracing::debug!(layer = %digest, ?other, "skipping tar entry of this type");
                return Ok(());
            }
        };
        let bad = |message: String| ImageError::BadEntry {
            digest: digest.clone(),
            entry: path::display(&name),
            message,
            source: None,
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
        self.builder
            .add(&name, kind, size, target.as_deref(), device)
            .map_err(bad)
    }

    /// The index, once the whole stream (`tar_bytes` uncompressed bytes) has been read and
    /// checked against the layer's digest.
    pub fn finish(mut self, tar_bytes: u64) -> LayerIndex {
        self.builder.index.stats.tar_bytes = tar_bytes;
        self.builder.finish()
    }
}

fn bad_tar(digest: &str, ordinal: u64, last: &[u8], e: std::io::Error) -> ImageError {
    if crate::image::digest::carries_image_error(&e) {
        return crate::image::digest::unwrap_io(e, |e| ImageError::BadLayer {
            digest: digest.to_owned(),
            source: LayerFault::Read(e),
        });
    }
    ImageError::BadEntry {
        digest: digest.to_owned(),
        entry: format!("#{ordinal} (after {:?})", path::display(last)),
        message: "corrupt tar".to_owned(),
        source: Some(e),
    }
}
