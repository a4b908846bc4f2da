//! Layer indexes kept on disk, so that a run of an image whose layers are cached does not read
//! and decompress them again just to index them.
//!
//! Why: with its layers in the layer cache, the second `recorder run` of an image of 60,000
//! small files still spent most of its 0.87 s decompressing and indexing that layer again
//! (docs/benchmarks.md, "Layer cache"); loading its stored index takes milliseconds.
//!
//! An index is keyed by the digest of the layer blob it was made from. That blob was checked
//! against that digest as it was read (or, indexed from its eStargz or zstd:chunked table of
//! contents, the TOC against the manifest's TOC digest or checksum), and the digest comes from a manifest checked against its own, so a
//! stored index is only ever used for the blob it describes. A file is written under a
//! temporary name and renamed into place, so it is whole or absent; one of another format
//! version, for another digest, cut short, or whose nodes do not hold together is ignored (and
//! replaced by the next run that indexes that layer), never trusted: nothing in it can make a
//! lookup index out of bounds.

use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::{EntryKind, LayerIndex, LayerStats, Node, NodeId, idx_hash};
use crate::content::BlobDigest;

/// Bumped whenever [`Node`], [`LayerStats`] or what the builder puts in them changes: a file
/// of another version is ignored.
const FORMAT: u32 = 1;

/// Why an index could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum IndexCacheError {
    /// A file system operation failed.
    #[error("index cache: {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The index could not be encoded.
    #[error("index cache: encoding the index of {blob}")]
    Encode {
        /// The layer blob.
        blob: String,
        /// The cause.
        #[source]
        source: postcard::Error,
    },
}

/// What is written: the index's arrays as they are, its children table left out (rebuilt on
/// load: it holds only node ids, and its hasher is seeded per process).
#[derive(serde::Serialize)]
struct StoredRef<'a> {
    format: u32,
    blob: &'a str,
    nodes: &'a [Node],
    names: &'a [u8],
    targets: &'a [u8],
    stats: &'a LayerStats,
}

/// What is read back.
#[derive(serde::Deserialize)]
struct Stored {
    format: u32,
    blob: String,
    nodes: Vec<Node>,
    names: Vec<u8>,
    targets: Vec<u8>,
    stats: LayerStats,
}

/// A directory of stored layer indexes, one file a layer blob, named by its digest's hex.
#[derive(Debug, Clone)]
pub struct IndexCache {
    dir: PathBuf,
}

impl IndexCache {
    /// The indexes in `dir` (made, mode 0700, when the first is stored).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, blob: &BlobDigest) -> PathBuf {
        self.dir.join(blob.hex())
    }

    /// The stored index of layer blob `blob`, if there is a valid one. A file that cannot be
    /// used is logged and left for [`IndexCache::store`] to replace.
    pub fn load(&self, blob: &BlobDigest) -> Option<LayerIndex> {
        let path = self.path(blob);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read a stored layer index");
                return None;
            }
        };
        match decode(&bytes, blob) {
            Ok(index) => {
                // Its last use, for LayerCache's eviction: an mtime, as the layers' markers.
                if let Err(error) = std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(SystemTime::now()))
                {
                    tracing::debug!(path = %path.display(), %error, "cannot mark a stored index used");
                }
                Some(index)
            }
            Err(why) => {
                tracing::warn!(path = %path.display(), why, "ignoring a stored layer index");
                None
            }
        }
    }

    /// Stores `index` as the index of layer blob `blob`, replacing any file there.
    pub fn store(&self, blob: &BlobDigest, index: &LayerIndex) -> Result<(), IndexCacheError> {
        let blob_name = blob.to_string();
        let bytes = postcard::to_stdvec(&StoredRef {
            format: FORMAT,
            blob: &blob_name,
            nodes: &index.nodes,
            names: &index.names,
            targets: &index.targets,
            stats: &index.stats,
        })
        .map_err(|source| IndexCacheError::Encode {
            blob: blob_name,
            source,
        })?;
        let io_err = |op, path: &Path| {
            let path = path.to_owned();
            move |source| IndexCacheError::Io { op, path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err("creating", &self.dir))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(io_err("creating a temporary file in", &self.dir))?;
        tmp.write_all(&bytes)
            .map_err(io_err("writing", tmp.path()))?;
        let path = self.path(blob);
        tmp.persist(&path)
            .map_err(|e| io_err("renaming a temporary file to", &path)(e.error))?;
        Ok(())
    }

    /// Removes the stored indexes last used before `before` (all of them with `None`), and
    /// returns how many. One being stored meanwhile is kept (or its writer fails and warns).
    pub fn remove_unused(&self, before: Option<SystemTime>) -> io::Result<usize> {
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            entries => entries?,
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let used = entry.metadata().and_then(|m| m.modified()).ok();
            if before.is_some_and(|before| used.is_some_and(|used| used >= before)) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                Err(_) => {}
                Ok(()) => removed += 1,
            }
        }
        Ok(removed)
    }
}

/// Decodes and checks a stored index; `Err` says why it cannot be used.
fn decode(bytes: &[u8], blob: &BlobDigest) -> Result<LayerIndex, &'static str> {
    let stored: Stored = postcard::from_bytes(bytes).map_err(|_| "not a stored index")?;
    if stored.format != FORMAT {
        return Err("another format version");
    }
    if stored.blob != blob.to_string() {
        return Err("the index of another blob");
    }
    let Stored {
        nodes,
        names,
        targets,
        stats,
        ..
    } = stored;
    check_nodes(&nodes, &names, &targets)?;
    let hasher = DefaultHashBuilder::default();
    let mut children: HashTable<NodeId> = HashTable::with_capacity(nodes.len());
    for (id, node) in nodes.iter().enumerate().skip(1) {
        let id = NodeId::try_from(id).map_err(|_| "too many nodes")?;
        let off = node.name_off as usize;
        let name = &names[off..off + usize::from(node.name_len)];
        let hash = hasher.hash_one((node.parent, name));
        let taken = children.find(hash, |&other| {
            let o = &nodes[other as usize];
            let o_off = o.name_off as usize;
            o.parent == node.parent && &names[o_off..o_off + usize::from(o.name_len)] == name
        });
        if taken.is_some() {
            return Err("two nodes of one name in one directory");
        }
        children.insert_unique(hash, id, |&n| idx_hash(&hasher, &nodes, &names, n));
    }
    Ok(LayerIndex {
        nodes,
        names,
        targets,
        children,
        hasher,
        stats: LayerStats {
            from_cache: true,
            ..stats
        },
    })
}

/// What the index's lookups rely on: the root first, every parent before its children, and
/// every name and link target within its arena.
fn check_nodes(nodes: &[Node], names: &[u8], targets: &[u8]) -> Result<(), &'static str> {
    let root = nodes.first().ok_or("no root")?;
    if root.parent != NodeId::MAX || root.kind != EntryKind::Dir as u8 {
        return Err("a root that is not a directory");
    }
    for (id, node) in nodes.iter().enumerate().skip(1) {
        if node.parent as usize >= id {
            return Err("a parent after its child");
        }
        let name_end = node.name_off as usize + usize::from(node.name_len);
        if name_end > names.len() {
            return Err("a name outside the names");
        }
        let kind = EntryKind::ALL
            .get(usize::from(node.kind))
            .ok_or("an unknown entry kind")?;
        if matches!(kind, EntryKind::Symlink | EntryKind::Hardlink) {
            let end = (node.target_off as usize).checked_add(node.payload as usize);
            if end.is_none_or(|end| end > targets.len()) {
                return Err("a link target outside the targets");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::index::LayerIndexBuilder;

    fn digest(n: u8) -> BlobDigest {
        BlobDigest::of(&[n])
    }

    /// Breaks one invariant of a node array.
    type Breaker = fn(&mut Vec<Node>);

    type Entry = (&'static [u8], EntryKind, u64, Option<&'static [u8]>);

    fn sample() -> LayerIndex {
        let mut b = LayerIndexBuilder::new();
        let entries: [Entry; 6] = [
            (b"usr/", EntryKind::Dir, 0, None),
            (b"usr/bin/sh", EntryKind::File, 1234, None),
            (b"usr/bin/bash", EntryKind::Symlink, 0, Some(b"sh")),
            (b"etc/.wh.motd", EntryKind::File, 0, None),
            (b"/abs/name", EntryKind::File, 7, None),
            (b"etc/hosts", EntryKind::Hardlink, 0, Some(b"usr/bin/sh")),
        ];
        for (name, kind, size, target) in entries {
            b.add(name, kind, size, target, None).unwrap();
        }
        b.finish()
    }

    #[test]
    fn a_stored_index_loads_back_entry_for_entry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::new(dir.path().join("index"));
        let index = sample();
        assert!(cache.load(&digest(1)).is_none(), "nothing stored yet");
        cache.store(&digest(1), &index).unwrap();
        let loaded = cache.load(&digest(1)).expect("stored");
        assert_eq!(
            loaded.entries().collect::<Vec<_>>(),
            index.entries().collect::<Vec<_>>()
        );
        assert!(loaded.stats().from_cache && !index.stats().from_cache);
        let stats = LayerStats {
            from_cache: false,
            ..loaded.stats().clone()
        };
        assert_eq!(&stats, index.stats());
        assert_eq!(
            loaded.stats().first_refused.as_ref().unwrap().0,
            "/abs/name"
        );
        for path in [&b"usr/bin/bash"[..], b"usr/bin", b"etc/.wh.motd", b"nope"] {
            assert_eq!(loaded.get(path), index.get(path), "{path:?}");
        }
        let mode = std::fs::metadata(cache.dir()).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn unusable_files_are_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::new(dir.path());
        let index = sample();
        cache.store(&digest(1), &index).unwrap();
        let good = std::fs::read(cache.path(&digest(1))).unwrap();
        // Stored under another blob's name: the file says which blob it describes.
        std::fs::write(cache.path(&digest(2)), &good).unwrap();
        let cases: [(&str, Vec<u8>); 4] = [
            ("empty", Vec::new()),
            ("cut short", good[..good.len() / 2].to_vec()),
            ("another format", {
                let mut b = good.clone();
                b[0] = b[0].wrapping_add(1);
                b
            }),
            ("garbage", vec![0xff; 64]),
        ];
        assert!(cache.load(&digest(2)).is_none(), "another blob's index");
        for (what, bytes) in cases {
            std::fs::write(cache.path(&digest(3)), &bytes).unwrap();
            assert!(cache.load(&digest(3)).is_none(), "{what}");
        }
        cache.store(&digest(3), &index).unwrap();
        assert!(cache.load(&digest(3)).is_some(), "replaced");
    }

    #[test]
    fn indexes_unused_since_a_time_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = IndexCache::new(dir.path().join("index"));
        assert_eq!(cache.remove_unused(None).unwrap(), 0, "no dir yet");
        let index = sample();
        cache.store(&digest(1), &index).unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(cache.path(&digest(1)))
            .unwrap()
            .set_modified(old)
            .unwrap();
        cache.store(&digest(2), &index).unwrap();
        let cut = old + std::time::Duration::from_secs(60);
        assert_eq!(cache.remove_unused(Some(cut)).unwrap(), 1);
        assert!(
            cache.load(&digest(1)).is_none(),
            "unused since before the cut"
        );
        assert!(cache.load(&digest(2)).is_some(), "used since");
        // Loading marks it used: a cut between its store and its load keeps it.
        assert_eq!(
            cache
                .remove_unused(Some(SystemTime::now() - std::time::Duration::from_secs(5)))
                .unwrap(),
            0
        );
        assert_eq!(cache.remove_unused(None).unwrap(), 1);
        assert!(cache.load(&digest(2)).is_none());
    }

    #[test]
    fn nodes_that_do_not_hold_together_are_refused() {
        let index = sample();
        let nodes = index.nodes.clone();
        let cases: [(&str, Breaker); 5] = [
            ("no root", |n: &mut Vec<Node>| n.clear()),
            ("parent after child", |n: &mut Vec<Node>| n[1].parent = 5),
            ("name out of range", |n: &mut Vec<Node>| {
                n[1].name_off = 1 << 30
            }),
            ("unknown kind", |n: &mut Vec<Node>| n[1].kind = 200),
            ("link target out of range", |n: &mut Vec<Node>| {
                for node in n.iter_mut() {
                    if node.kind == EntryKind::Symlink as u8 {
                        node.payload = u64::MAX;
                    }
                }
            }),
        ];
        assert!(check_nodes(&nodes, &index.names, &index.targets).is_ok());
        for (what, break_it) in cases {
            let mut broken = nodes.clone();
            break_it(&mut broken);
            assert!(
                check_nodes(&broken, &index.names, &index.targets).is_err(),
                "{what}"
            );
        }
    }
}
