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
    /// The walk left the image for another filesystem mounted in the container.
    #[error("on the {label} mount at /{}", path::display(.point))]
    Mounted {
        /// The mount point, relative to the root.
        point: Vec<u8>,
        /// The mount's label (its filesystem type, or `bind`).
        label: String,
    },
}

/// The mount points of a container, for a walk that must leave the image where they are.
pub trait MountPoints {
    /// The label of the mount whose mount point is exactly `cleaned` (relative, no leading `/`).
    fn mount_at(&self, cleaned: &[u8]) -> Option<&str>;
}

/// No mounts: the image alone, as `recorder image which --follow` sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMounts;

impl MountPoints for NoMounts {
    fn mount_at(&self, _cleaned: &[u8]) -> Option<&str> {
        None
    }
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
        // overlayfs never shows a `.wh.*` name (whiteouts and opaque markers are consumed by
        // the layer merge), so a file by that name seen at runtime was created at runtime: it is
        // not image content, whatever a layer's tar holds under that name.
        if comps.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
            return Probe::Missing(Reason::NotInImage);
        }
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
        self.resolve_in(path, &NoMounts)
    }

    /// The one path walk of the project: resolves `path` as the kernel walks it inside a
    /// container whose root is this image and whose other filesystems are `mounts`.
    ///
    /// Components stay unresolved until reached, so a `..` after a symlink applies to where the
    /// symlink led; absolute targets restart at the root and `..` stops there; a component that
    /// is a mount point leaves the image (a later `..` may climb back into it); more than
    /// [`MAX_LINKS`] links fail as the kernel's `ELOOP` does, and a link met again with the same
    /// remaining path is reported as the loop it is.
    pub fn resolve_in(&self, path: &[u8], mounts: &dyn MountPoints) -> Resolution {
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
        let mut pending: VecDeque<Vec<u8>> = split(path).collect();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut seen: HashSet<(Vec<u8>, Vec<Vec<u8>>)> = HashSet::new();
        // The mount the walk is inside, with the depth of its mount point.
        let mut mount: Option<(usize, Vec<u8>, String)> = None;
        while let Some(c) = pending.pop_front() {
            match &c[..] {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    if mount.as_ref().is_some_and(|(depth, ..)| cur.len() < *depth) {
                        mount = innermost_mount(mounts, &cur);
                    }
                    continue;
                }
                _ => cur.push(c),
            }
            let comps: Vec<&[u8]> = cur.iter().map(Vec::as_slice).collect();
            res.target = comps.join(&b'/');
            if let Some(label) = mounts.mount_at(&res.target) {
                mount = Some((cur.len(), res.target.clone(), label.to_owned()));
                continue;
            }
            if mount.is_some() {
                // Inside another filesystem the image says nothing; only `..` can lead back.
                continue;
            }
            let last = pending.iter().all(|p| p.is_empty() || p == b".");
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
                        mount = None;
                    }
                    for t in split(&target).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(t);
                    }
                }
                EntryKind::Dir if last => {
                    res.result = Ok(Found {
                        layer,
                        kind: EntryKind::Dir,
                    });
                    return res;
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
        }
        res.target = cur.join(&b'/');
        if let Some((_, point, label)) = mount {
            res.result = Err(Reason::Mounted { point, label });
            return res;
        }
        // Everything resolved away (e.g. "/", "a/.."): the answer is that directory.
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

/// The deepest mount whose mount point is `cur` or one of its ancestors.
fn innermost_mount(mounts: &dyn MountPoints, cur: &[Vec<u8>]) -> Option<(usize, Vec<u8>, String)> {
    (1..=cur.len()).rev().find_map(|n| {
        let point = cur[..n].join(&b'/');
        let label = mounts.mount_at(&point)?.to_owned();
        Some((n, point, label))
    })
}

fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/').map(<[u8]>::to_vec)
}
