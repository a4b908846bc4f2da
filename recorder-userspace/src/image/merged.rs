//! The merged view of all layers: which layer provides a path, or why none does.

use std::collections::{HashSet, VecDeque};

use super::index::{EntryKind, LayerIndex, NodeId, ROOT};
use super::path::{self, NameError, WHITEOUT_PREFIX};

/// Most symlinks one resolution follows, as in the kernel (`MAXSYMLINKS`).
pub const MAX_LINKS: usize = 40;

/// Why no layer provides a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// No layer has an entry for it.
    #[error("not in the image")]
    NotInImage,
    /// `.wh.NAME` in `layer` deletes `path` (the looked-up path or one of its ancestors).
    #[error("deleted by a whiteout of {} in layer {layer}", path::display(.path))]
    Whiteout {
        /// The layer holding the whiteout.
        layer: usize,
        /// The deleted path.
        path: Vec<u8>,
    },
    /// An opaque marker in `dir` of `layer` hides the lower layers' content below it.
    #[error("hidden by opaque directory {} in layer {layer}", path::display(.dir))]
    OpaqueDir {
        /// The layer holding the marker.
        layer: usize,
        /// The opaque directory.
        dir: Vec<u8>,
    },
    /// An ancestor is not a directory in the topmost layer that has it.
    #[error("{} is not a directory (layer {layer})", path::display(.ancestor))]
    NotADirectory {
        /// The layer whose entry is not a directory.
        layer: usize,
        /// The ancestor.
        ancestor: Vec<u8>,
    },
    /// Symlink resolution came back to the same state.
    #[error("symlink loop at {}", path::display(.link))]
    SymlinkLoop {
        /// The symlink seen twice with the same remaining path.
        link: Vec<u8>,
    },
    /// More than [`MAX_LINKS`] symlinks on the way.
    #[error("more than {MAX_LINKS} symlinks")]
    TooManyLinks,
    /// The path itself is refused.
    #[error("invalid path: {0}")]
    Invalid(NameError),
}

/// The topmost layer that provides a path, with its entry's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Index of the layer, 0 = bottom.
    pub layer: usize,
    /// The entry's type in that layer.
    pub kind: EntryKind,
}

/// The answer of a literal lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The cleaned path looked up.
    pub path: Vec<u8>,
    /// Where it is, or why it is nowhere.
    pub result: Result<Found, Reason>,
}

/// One symlink met while resolving a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    /// The symlink's cleaned path.
    pub path: Vec<u8>,
    /// The layer that provides the symlink.
    pub layer: usize,
    /// Its target as written.
    pub target: Vec<u8>,
}

/// The answer of a symlink-following lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The cleaned path asked for.
    pub path: Vec<u8>,
    /// Each symlink followed, in order.
    pub chain: Vec<ChainLink>,
    /// The path finally reached (as far as resolution got).
    pub target: Vec<u8>,
    /// Where the final target is, or why resolution failed.
    pub result: Result<Found, Reason>,
}

enum Probe {
    Found {
        layer: usize,
        node: NodeId,
    },
    /// Present only as an implicit directory (entries below it, none of its own).
    ImplicitDir,
    Missing(Reason),
}

/// All layers of an image, bottom first, seen as one tree.
#[derive(Debug)]
pub struct MergedView {
    layers: Vec<LayerIndex>,
}

impl MergedView {
    /// A view of `layers`, bottom first.
    pub fn new(layers: Vec<LayerIndex>) -> Self {
        MergedView { layers }
    }

    /// The per-layer indexes, bottom first.
    pub fn layers(&self) -> &[LayerIndex] {
        &self.layers
    }

    /// Heap bytes of all layer indexes.
    pub fn heap_bytes(&self) -> usize {
        self.layers.iter().map(LayerIndex::heap_bytes).sum()
    }

    /// Entries of all layers.
    pub fn entry_count(&self) -> u64 {
        self.layers.iter().map(|l| l.stats().entries).sum()
    }

    /// Walks one layer along `comps`: `Ok(Some(node))` if it has the whole path,
    /// `Err(reason)` if it hides lower layers' copies, `Ok(None)` if it says nothing.
    fn probe_layer(
        &self,
        i: usize,
        comps: &[&[u8]],
        implicit: &mut bool,
    ) -> Result<Option<NodeId>, Reason> {
        let idx = &self.layers[i];
        let mut node = ROOT;
        let mut block: Option<Reason> = None;
        let mut wh = Vec::with_capacity(64);
        for (k, c) in comps.iter().enumerate() {
            if block.is_none() && idx.is_opaque(node) {
                block = Some(Reason::OpaqueDir {
                    layer: i,
                    dir: comps[..k].join(&b'/'),
                });
            }
            if block.is_none() {
                wh.clear();
                wh.extend_from_slice(WHITEOUT_PREFIX);
                wh.extend_from_slice(c);
                if let Some(w) = idx.child(node, &wh)
                    && idx.info(w).kind == EntryKind::Whiteout
                {
                    block = Some(Reason::Whiteout {
                        layer: i,
                        path: comps[..=k].join(&b'/'),
                    });
                }
            }
            let Some(next) = idx.child(node, c) else {
                return block.map_or(Ok(None), Err);
            };
            let info = idx.info(next);
            if k + 1 < comps.len() && info.kind != EntryKind::Dir {
                return Err(block.unwrap_or(Reason::NotADirectory {
                    layer: i,
                    ancestor: comps[..=k].join(&b'/'),
                }));
            }
            node = next;
        }
        let info = idx.info(node);
        if !info.implicit {
            return Ok(Some(node));
        }
        *implicit = true;
        block.map_or(Ok(None), Err)
    }

    fn probe(&self, comps: &[&[u8]]) -> Probe {
        let mut implicit = false;
        for i in (0..self.layers.len()).rev() {
            match self.probe_layer(i, comps, &mut implicit) {
                Ok(Some(node)) => return Probe::Found { layer: i, node },
                Ok(None) => {}
                Err(_) if implicit => return Probe::ImplicitDir,
                Err(reason) => return Probe::Missing(reason),
            }
        }
        if implicit {
            Probe::ImplicitDir
        } else {
            Probe::Missing(Reason::NotInImage)
        }
    }

    /// The topmost layer providing `path` taken literally (no symlinks followed), as the
    /// seed's `Record(name)` does, but checking whiteouts and opaque markers on every ancestor.
    pub fn which(&self, path: &[u8]) -> Lookup {
        let cleaned = path::clean(path);
        if let Err(e) = path::check(path) {
            return Lookup {
                path: cleaned,
                result: Err(Reason::Invalid(e)),
            };
        }
        let comps = path::clean_components(path);
        let result = match self.probe(&comps) {
            Probe::Found { layer, node } => Ok(Found {
                layer,
                kind: self.layers[layer].info(node).kind,
            }),
            Probe::ImplicitDir => Err(Reason::NotInImage),
            Probe::Missing(r) => Err(r),
        };
        Lookup {
            path: cleaned,
            result,
        }
    }

    /// Resolves `path` through symlinks inside the image root: absolute targets restart at
    /// the image root, `..` stops there, at most [`MAX_LINKS`] links, loops reported.
    pub fn which_follow(&self, path: &[u8]) -> Resolution {
        let cleaned = path::clean(path);
        let mut res = Resolution {
            path: cleaned.clone(),
            chain: Vec::new(),
            target: cleaned,
            result: Err(Reason::NotInImage),
        };
        if let Err(e) = path::check(path) {
            res.result = Err(Reason::Invalid(e));
            return res;
        }
        // Components stay unresolved until reached: `..` after a symlink applies to where the
        // symlink led, not lexically.
        let mut pending: VecDeque<Vec<u8>> = split(path).collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut seen: HashSet<(Vec<u8>, Vec<Vec<u8>>)> = HashSet::new();
        while let Some(c) = pending.pop_front() {
            match &c[..] {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => cur.push(c),
            }
            let last = pending.iter().all(|p| p.is_empty() || p == b".");
            let comps: Vec<&[u8]> = cur.iter().map(Vec::as_slice).collect();
            res.target = comps.join(&b'/');
            let (layer, node) = match self.probe(&comps) {
                Probe::Found { layer, node } => (layer, node),
                Probe::ImplicitDir if !last => continue,
                Probe::ImplicitDir => {
                    res.result = Err(Reason::NotInImage);
                    return res;
                }
                Probe::Missing(r) => {
                    res.result = Err(r);
                    return res;
                }
            };
            let info = self.layers[layer].info(node);
            match info.kind {
                EntryKind::Symlink => {
                    let target = info.target.unwrap_or_default().to_vec();
                    let link = res.target.clone();
                    if !seen.insert((link.clone(), pending.iter().cloned().collect())) {
                        res.result = Err(Reason::SymlinkLoop { link });
                        return res;
                    }
                    res.chain.push(ChainLink {
                        path: link,
                        layer,
                        target: target.clone(),
                    });
                    if res.chain.len() > MAX_LINKS {
                        res.result = Err(Reason::TooManyLinks);
                        return res;
                    }
                    cur.pop();
                    if target.starts_with(b"/") {
                        cur.clear();
                    }
                    for t in split(&target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(t);
                    }
                }
                EntryKind::Dir => {}
                kind if last => {
                    res.result = Ok(Found { layer, kind });
                    return res;
                }
                _ => {
                    res.result = Err(Reason::NotADirectory {
                        layer,
                        ancestor: res.target.clone(),
                    });
                    return res;
                }
            }
            if last && info.kind == EntryKind::Dir {
                res.result = Ok(Found {
                    layer,
                    kind: EntryKind::Dir,
                });
                return res;
            }
        }
        // Everything resolved away (e.g. "/", "a/.."): the answer is the root directory.
        res.target = cur.join(&b'/');
        let comps: Vec<&[u8]> = cur.iter().map(Vec::as_slice).collect();
        res.result = match self.probe(&comps) {
            Probe::Found { layer, node } => Ok(Found {
                layer,
                kind: self.layers[layer].info(node).kind,
            }),
            Probe::ImplicitDir => Err(Reason::NotInImage),
            Probe::Missing(r) => Err(r),
        };
        res
    }
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/').map(<[u8]>::to_vec)
}
