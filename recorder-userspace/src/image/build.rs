//! Indexing all layers of an image, each streamed once, several at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::digest::BlobDigest;
use super::error::{ImageError, LayerFault, Result};
use super::estargz;
use super::index::{IndexCache, LayerIndex, LayerIndexBuilder};
use super::merged::MergedView;
use super::open::Image;
use super::zstd_chunked;

/// How to index an image.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// Layers indexed at once; 0 = one per available CPU.
    pub threads: usize,
    /// Accumulates compressed bytes read, for progress reports.
    pub progress: Option<Arc<AtomicU64>>,
    /// Decompress every layer, even an eStargz or zstd:chunked one whose table of contents
    /// could be read instead, or whose index is stored (which also checks every layer blob against its
    /// digest).
    pub full_decompression: bool,
    /// Where layer indexes are kept: a layer's stored index is used instead of reading the
    /// layer, and the index of a layer that has none is stored.
    pub cache: Option<IndexCache>,
}

/// Indexes every layer of `image` (in parallel) and returns the merged view.
pub fn index_image(image: &Image, opts: &IndexOptions) -> Result<MergedView> {
    let layers = each_layer(image, opts.threads, |i, cancel| {
        index_layer(image, i, opts, cancel)
    })?;
    Ok(MergedView::new(layers))
}

/// Indexes the layers of `image` that can be without decompressing them (in parallel): from
/// their stored index, or from their eStargz or zstd:chunked TOC (stored in turn). The others
/// are left `None`, for a caller that decompresses them anyway and indexes them as it does
/// (`recorder run`'s unpacker, with [`TarIndexer`](super::index::TarIndexer)), so that no layer
/// is decompressed twice. With `full_decompression`, every layer is left `None`.
pub fn index_without_decompressing(
    image: &Image,
    opts: &IndexOptions,
) -> Result<Vec<Option<LayerIndex>>> {
    if opts.full_decompression {
        return Ok(image.layers().iter().map(|_| None).collect());
    }
    each_layer(image, opts.threads, |i, _| {
        if let Some(index) = stored(image, i, opts) {
            return Ok(Some(index));
        }
        let index = from_toc(image, i, opts);
        if let Some(index) = &index {
            store(image, i, opts, index);
        }
        Ok(index)
    })
}

/// Runs `f` on every layer of `image`, `threads` layers at once (0 = one per available CPU);
/// after a failure, layers not started are not, and `f` is told through its flag to stop.
fn each_layer<T: Send>(
    image: &Image,
    threads: usize,
    f: impl Fn(usize, &AtomicBool) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let count = image.layers().len();
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let cancel = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..count).map(|_| None).collect());
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count || cancel.load(Ordering::Relaxed) {
                break;
            }
            let r = f(i, &cancel);
            if let Err(e) = &r {
                tracing::debug!(layer = i, error = %crate::errors::Chain(e), "indexing failed");
                cancel.store(true, Ordering::Relaxed);
            }
            if let Ok(mut slots) = results.lock() {
                slots[i] = Some(r);
            }
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        for h in handles {
            // A panic in a worker leaves its slot empty, reported below.
            let _ = h.join();
        }
    });
    let slots = results
        .into_inner()
        .map_err(|_| ImageError::WorkerPanicked(0))?;
    // Report the first real failure, not the "cancelled" of layers stopped because of it.
    let mut real: Option<ImageError> = None;
    let mut cancelled: Option<ImageError> = None;
    let mut layers = Vec::with_capacity(count);
    for (i, slot) in slots.into_iter().enumerate() {
        match slot {
            Some(Ok(idx)) => layers.push(idx),
            Some(Err(e)) if is_cancel(&e) => {
                cancelled.get_or_insert(e);
            }
            Some(Err(e)) => {
                real.get_or_insert(e);
            }
            // Skipped after another layer failed, or its worker panicked.
            None if cancel.load(Ordering::Relaxed) => {}
            None => {
                real.get_or_insert(ImageError::WorkerPanicked(i));
            }
        }
    }
    match real.or(cancelled) {
        Some(e) => Err(e),
        None => Ok(layers),
    }
}

/// Indexes layer `i`: from its stored index when there is one, else from the layer (and
/// stores what that gives).
fn index_layer(
    image: &Image,
    i: usize,
    opts: &IndexOptions,
    cancel: &AtomicBool,
) -> Result<LayerIndex> {
    if let Some(index) = stored(image, i, opts) {
        return Ok(index);
    }
    let index = match from_toc(image, i, opts) {
        Some(index) => index,
        None => {
            let mut reader = image.open_layer_counted(i, opts.progress.clone())?;
            LayerIndexBuilder::new().read_tar(&mut reader, Some(cancel))?
        }
    };
    store(image, i, opts, &index);
    Ok(index)
}

/// Layer `i`'s index from the index cache, if there is one there and the options allow it.
fn stored(image: &Image, i: usize, opts: &IndexOptions) -> Option<LayerIndex> {
    if opts.full_decompression {
        return None;
    }
    let (cache, layer) = (opts.cache.as_ref()?, image.layers().get(i)?);
    let index = cache.load(&layer.digest)?;
    count_as_read(image, i, opts);
    tracing::debug!(layer = i, "index loaded from the index cache");
    Some(index)
}

/// Stores layer `i`'s index in the index cache, if there is one.
fn store(image: &Image, i: usize, opts: &IndexOptions, index: &LayerIndex) {
    if let (Some(cache), Some(layer)) = (&opts.cache, image.layers().get(i)) {
        store_index(cache, &layer.digest, i, index);
    }
}

/// Stores the index of layer `i`, blob `blob`, in `cache`; a failure is logged: a run goes on
/// without it, and the next one indexes the layer again.
pub fn store_index(cache: &IndexCache, blob: &BlobDigest, i: usize, index: &LayerIndex) {
    if let Err(e) = cache.store(blob, index) {
        tracing::warn!(layer = i, error = %crate::errors::Chain(&e), "cannot store the layer's index");
    }
}

/// Indexes layer `i` from its eStargz or zstd:chunked TOC when it has one (and the options
/// allow it), without decompressing it.
fn from_toc(image: &Image, i: usize, opts: &IndexOptions) -> Option<LayerIndex> {
    if opts.full_decompression {
        return None;
    }
    type Found = std::result::Result<Option<LayerIndex>, Box<dyn std::error::Error>>;
    // A layer is one or the other (gzip or zstd), so at most one of these reads anything.
    let (format, found): (&str, Found) = match estargz::index_from_toc(image, i) {
        Ok(None) => (
            "zstd:chunked",
            zstd_chunked::index_from_toc(image, i).map_err(Into::into),
        ),
        r => ("eStargz", r.map_err(Into::into)),
    };
    match found {
        Ok(Some(index)) => {
            count_as_read(image, i, opts);
            tracing::debug!(layer = i, format, "indexed from its TOC");
            Some(index)
        }
        Ok(None) => None,
        // Falling back rather than failing: the TOC is only a shortcut to what the layer's
        // tar stream says, and that stream is checked against the layer's digest as it is
        // read, so a layer with a bad TOC still gets an exact index (and a corrupt layer
        // still gets its error); a converter's bad TOC must not stop a profiling run.
        Err(e) => {
            tracing::warn!(
                layer = i,
                format,
                error = %crate::errors::Chain(&*e),
                "cannot index from the layer's TOC; decompressing the whole layer instead"
            );
            None
        }
    }
}

/// Counts layer `i` as read, for progress, when a shortcut (a stored index, a TOC) indexed it
/// without reading it.
fn count_as_read(image: &Image, i: usize, opts: &IndexOptions) {
    if let (Some(p), Some(layer)) = (&opts.progress, image.layers().get(i)) {
        p.fetch_add(layer.size, Ordering::Relaxed);
    }
}

fn is_cancel(e: &ImageError) -> bool {
    matches!(
        e,
        ImageError::BadLayer {
            source: LayerFault::Cancelled,
            ..
        }
    )
}
