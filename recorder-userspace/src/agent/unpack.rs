//! `recorder run`'s layers unpacked into the layer cache (or the work dir), each decompressed
//! once: a layer whose index is not known yet (no stored index, no TOC) is indexed in the pass
//! that unpacks it, and that index is stored in the index cache for the next run.
//!
//! Why one pass: a cold run of an image of 60,000 small files took 1.97x `tar -xzf` of its
//! layers when it decompressed each layer once to index it and again to unpack it
//! (docs/benchmarks.md, "Layer cache").

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::content::BlobDigest;
use crate::image::{
    Image, ImageError, LayerIndex, LayerIndexBuilder, TarIndexer, index::IndexCache, store_index,
};
use crate::sandbox::{
    CachedLayer, LayerCache, Lookup, UnpackBudget, UnpackError, UnpackStats, unpack_layer_indexed,
};

use super::AgentError;
use super::workdir::free_space;

/// The lower dirs of a run, bottom first, with the cache entries they are in held (shared
/// locks) until dropped: drop it after the workload has ended.
#[derive(Debug, Default)]
pub struct Unpacked {
    /// The lower dirs, bottom first.
    pub dirs: Vec<PathBuf>,
    /// How many layers came from the cache as they were.
    pub hits: usize,
    /// How many layers were indexed in the pass that unpacked them.
    pub indexed_while_unpacking: usize,
    /// How many layers were read only to index them: found in the cache, their index not.
    pub read_to_index: usize,
    held: Vec<CachedLayer>,
}

/// Where and how [`unpack_layers`] unpacks.
#[derive(Debug, Default)]
pub struct UnpackTo<'a> {
    /// The work dir: the layers go to `<work>/layers/<i>` without a cache.
    pub work: PathBuf,
    /// At most this many bytes written (`--max-unpacked`), checked first against the layers'
    /// stored size too.
    pub limit: Option<u64>,
    /// The layer cache, if any; its index cache gets the indexes made here.
    pub cache: Option<&'a LayerCache>,
    /// Accumulates the compressed bytes read (a cached layer counts as read), for a progress
    /// bar whose total is the layers' stored size.
    pub progress: Option<Arc<AtomicU64>>,
}

/// Unpacks every layer of `image` within `budget`, returning the lower dirs and every layer's
/// index: `indexes` (one a layer) holds those known already (stored, or from a TOC); the others
/// are made while their layer is unpacked, or, for a layer found in the cache, by reading it
/// (its index went, its unpacked copy stayed). With a cache, layers go into (or come from) it,
/// keyed by their diff id; without, into `<work>/layers/<i>`.
///
/// Checked before anything is written: the layers as stored (compressed, a floor of what they
/// unpack to) must fit the budget's limit and the free space. Checked during: every byte; and
/// every layer's uncompressed stream against its diff id (a cache entry is keyed by it) and
/// its blob against its digest, before its index is kept.
pub fn unpack_layers(
    image: &Image,
    indexes: Vec<Option<LayerIndex>>,
    to: &UnpackTo<'_>,
    budget: &mut UnpackBudget,
) -> Result<(Unpacked, Vec<LayerIndex>), AgentError> {
    let count = image.layers().len();
    if indexes.len() != count {
        return Err(AgentError::Io {
            op: "unpacking the image".into(),
            source: std::io::Error::other(format!(
                "{} layer indexes for {count} layers",
                indexes.len()
            )),
        });
    }
    check_space(image, to)?;
    let diff_ids = image.config().rootfs().diff_ids();
    let diff_ids: Option<Vec<BlobDigest>> = (diff_ids.len() == count)
        .then(|| diff_ids.iter().map(|d| d.parse().ok()).collect())
        .flatten();
    let cache = match (to.cache, &diff_ids) {
        (Some(cache), Some(ids)) => Some((cache, ids)),
        (Some(_), None) => {
            tracing::warn!(
                "the image config's diff ids do not match its layers (count, or not sha256): \
                 its layers are unpacked without the cache"
            );
            None
        }
        (None, _) => None,
    };
    let index_cache = to.cache.map(LayerCache::indexes);
    let job = Job {
        image,
        to,
        cache,
        diff_ids: diff_ids.as_ref(),
        index_cache: index_cache.as_ref(),
    };
    // Layers are independent until the overlay is mounted: unpacked in parallel, one thread
    // per core at most. The budget's clones share one count.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let known: Vec<Mutex<Option<LayerIndex>>> = indexes.into_iter().map(Mutex::new).collect();
    let results: Vec<Mutex<Option<Result<Layer, AgentError>>>> =
        (0..count).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let mut budget = budget.clone();
            let (next, failed, results, known, job) = (&next, &failed, &results, &known, &job);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    // After a failure the run is over: no more layers started.
                    if i >= count || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let index = known[i].lock().ok().and_then(|mut k| k.take());
                    let result = job.layer(i, index, &mut budget);
                    failed.fetch_or(result.is_err(), Ordering::Relaxed);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    let mut out = Unpacked::default();
    let mut indexes = Vec::with_capacity(count);
    let mut first_error = None;
    for (i, slot) in results.into_iter().enumerate() {
        let result = slot.into_inner().ok().flatten().unwrap_or_else(|| {
            Err(AgentError::Io {
                op: format!("unpacking layer {i}"),
                source: std::io::Error::other("its worker ended without a result"),
            })
        });
        match result {
            Ok(layer) => {
                out.hits += usize::from(layer.hit);
                out.indexed_while_unpacking += usize::from(layer.made && !layer.hit);
                out.read_to_index += usize::from(layer.made && layer.hit);
                out.dirs.push(layer.dir);
                out.held.extend(layer.held);
                indexes.push(layer.index);
            }
            // The first layer's error in image order, not a "not unpacked" of a later one.
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok((out, indexes)),
    }
}

/// The layers as stored (compressed, a floor of what they unpack to) must fit the limit and
/// the free space where they go.
fn check_space(image: &Image, to: &UnpackTo<'_>) -> Result<(), AgentError> {
    let stored: u64 = image.layers().iter().map(|l| l.size).sum();
    let into = to.cache.map_or(to.work.as_path(), LayerCache::dir);
    let free = free_space(into)?;
    if let Some(limit) = to.limit.filter(|l| stored > *l) {
        return Err(AgentError::Unpack {
            layer: 0,
            source: UnpackError::TooLarge {
                entry: format!("(the layers are {stored} bytes as stored, before unpacking)"),
                limit,
            },
        });
    }
    if stored > free {
        return Err(AgentError::Io {
            op: format!(
                "unpacking the image into {}: its layers are {stored} bytes as stored, and only \
                 {free} are free there",
                into.display()
            ),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
    }
    Ok(())
}

/// One unpacked layer, and its index.
struct Layer {
    dir: PathBuf,
    hit: bool,
    /// Its index was made here (not known before).
    made: bool,
    held: Option<CachedLayer>,
    index: LayerIndex,
}

/// What every layer's unpacking shares.
struct Job<'a> {
    image: &'a Image,
    to: &'a UnpackTo<'a>,
    cache: Option<(&'a LayerCache, &'a Vec<BlobDigest>)>,
    diff_ids: Option<&'a Vec<BlobDigest>>,
    index_cache: Option<&'a IndexCache>,
}

impl Job<'_> {
    /// Layer `i`, into (or from) the cache when there is one, else into `<work>/layers/<i>`;
    /// indexed as it is unpacked unless `known`.
    fn layer(
        &self,
        i: usize,
        known: Option<LayerIndex>,
        budget: &mut UnpackBudget,
    ) -> Result<Layer, AgentError> {
        let made = known.is_none();
        let digest = self.image.layers()[i].digest.clone();
        let indexer =
            || made.then(|| TarIndexer::new(LayerIndexBuilder::new(), &digest.to_string()));
        let (dir, hit, held, index) = match self.cache {
            Some((cache, ids)) => match cache.acquire(&ids[i])? {
                Lookup::Hit(held) => {
                    tracing::debug!(layer = i, diff_id = %ids[i], "layer cached");
                    let index = match known {
                        Some(index) => {
                            self.count_as_read(i);
                            index
                        }
                        // Read to index it only: its unpacked copy outlived its stored index.
                        None => self.read_index(i, budget)?,
                    };
                    (held.root().to_owned(), true, Some(held), index)
                }
                Lookup::Miss(making) => {
                    let (stats, index) =
                        self.unpack_verified(i, &making.root(), budget, indexer())?;
                    let held = making.commit(stats.bytes)?;
                    let index = known.or(index).ok_or_else(|| missing_index(i))?;
                    (held.root().to_owned(), false, Some(held), index)
                }
            },
            None => {
                let dir = self.to.work.join("layers").join(i.to_string());
                std::fs::create_dir_all(&dir).map_err(|source| AgentError::Io {
                    op: format!("creating {}", dir.display()),
                    source,
                })?;
                let (_, index) = self.unpack_verified(i, &dir, budget, indexer())?;
                let index = known.or(index).ok_or_else(|| missing_index(i))?;
                (dir, false, None, index)
            }
        };
        if made && let Some(cache) = self.index_cache {
            store_index(cache, &digest, i, &index);
        }
        Ok(Layer {
            dir,
            hit,
            made,
            held,
            index,
        })
    }

    fn count_as_read(&self, i: usize) {
        if let Some(p) = &self.to.progress {
            p.fetch_add(self.image.layers()[i].size, Ordering::Relaxed);
        }
    }

    /// Indexes layer `i` by reading it (checked against its digest), for a layer found in the
    /// cache without its index.
    fn read_index(&self, i: usize, budget: &UnpackBudget) -> Result<LayerIndex, AgentError> {
        let layer_err = |source| AgentError::Image {
            image: format!("layer {i}"),
            source,
        };
        let mut reader = self
            .image
            .open_layer_counted(i, self.to.progress.clone())
            .map_err(layer_err)?;
        LayerIndexBuilder::new()
            .read_tar(&mut reader, budget.cancel_flag())
            .map_err(layer_err)
    }

    /// Unpacks layer `i` into `dir`, giving its entries to `indexer` if there is one (then
    /// returns the index it made); checks its blob against its digest and, when the image has them,
    /// its uncompressed stream against its diff id.
    fn unpack_verified(
        &self,
        i: usize,
        dir: &Path,
        budget: &mut UnpackBudget,
        mut indexer: Option<TarIndexer>,
    ) -> Result<(UnpackStats, Option<LayerIndex>), AgentError> {
        let image = self.image;
        let layer_err = |source| AgentError::Image {
            image: format!("layer {i}"),
            source,
        };
        let mut reader = image
            .open_layer_counted(i, self.to.progress.clone())
            .map_err(layer_err)?;
        let mut hashing = Hashing {
            inner: &mut reader,
            hasher: Sha256::new(),
        };
        let stats = unpack_layer_indexed(&mut hashing, dir, budget, indexer.as_mut())
            .map_err(|source| AgentError::Unpack { layer: i, source })?;
        // The tar reader stops at the end-of-archive blocks: the rest counts towards both digests.
        let rest = std::io::copy(&mut hashing, &mut std::io::sink());
        let actual = BlobDigest::from_hasher(hashing.hasher);
        // The reader checks the layer's digest at EOF.
        rest.map_err(|e| reader.error(e)).map_err(layer_err)?;
        reader.finish().map_err(layer_err)?;
        let diff_id = self.diff_ids.map(|ids| &ids[i]);
        if let Some(expected) = diff_id.filter(|d| **d != actual) {
            return Err(layer_err(ImageError::DiffIdMismatch {
                digest: image.layers()[i].digest.to_string(),
                actual: actual.to_string(),
                expected: expected.to_string(),
            }));
        }
        // Only now, with the whole stream checked, is the index one of this layer's.
        let index = indexer.map(|indexer| indexer.finish(reader.bytes_out()));
        Ok((stats, index))
    }
}

fn missing_index(i: usize) -> AgentError {
    AgentError::Io {
        op: format!("indexing layer {i}"),
        source: std::io::Error::other("its unpacking made no index"),
    }
}

/// Hashes what is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
