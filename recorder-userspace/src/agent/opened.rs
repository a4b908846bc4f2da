//! `recorder run`'s image before its layers are unpacked: opened, and its layers indexed where
//! that costs no decompression (a stored index, an eStargz or zstd:chunked TOC). The other
//! layers are decompressed anyway to be unpacked, and indexed in that pass ([`Opened::unpack`],
//! see [`super::unpack`]): a cold run decompresses each layer once.

use std::sync::Arc;

use crate::image::{Image, LayerIndex, MergedView, Platform, index_without_decompressing};
use crate::sandbox::UnpackBudget;
use crate::status::{State, StatusHandle};

use super::AgentError;
use super::session::{Agent, Indexed, indexing};
use super::source::ImageSource;
use super::unpack::{UnpackTo, Unpacked, unpack_layers};

/// An opened image, its layers indexed where that needs no decompression.
#[derive(Debug)]
pub struct Opened {
    status: StatusHandle,
    image: Arc<Image>,
    /// One a layer: `None` for a layer indexed as it is unpacked.
    indexes: Vec<Option<LayerIndex>>,
}

impl Agent {
    /// Opens the image and indexes the layers that can be without decompressing them (state
    /// `indexing`), on a blocking thread. A stop meanwhile drops this future; the thread, which
    /// writes nothing but stored indexes (whole, by rename), ends with the runtime's shutdown.
    pub async fn open_for_run(
        self,
        source: ImageSource,
        platform: Platform,
    ) -> Result<Opened, AgentError> {
        self.status.set_state(State::Indexing);
        let described = source.to_string();
        let cache = self.index_cache;
        let task = tokio::task::spawn_blocking(move || {
            let image = source.open(&platform)?;
            // The layers left to index while unpacking are counted by the unpacking bar.
            let (_progress, options) = indexing(&image, cache);
            let indexes = index_without_decompressing(&image, &options)?;
            Ok((image, indexes))
        });
        let (image, indexes) =
            task.await
                .map_err(AgentError::Join)?
                .map_err(|source| AgentError::Image {
                    image: described,
                    source,
                })?;
        self.status
            .set_manifest_digest(image.manifest_digest().to_string());
        tracing::debug!(
            layers = image.layers().len(),
            indexed = indexes.iter().flatten().count(),
            "image opened; its other layers are indexed as they are unpacked"
        );
        Ok(Opened {
            status: self.status,
            image: Arc::new(image),
            indexes,
        })
    }
}

impl Opened {
    /// The image.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// Unpacks the layers (see [`unpack_layers`]), indexing those not indexed yet in the same
    /// pass; blocks. The image is then indexed, ready to trace.
    pub fn unpack(
        self,
        to: &UnpackTo<'_>,
        budget: &mut UnpackBudget,
    ) -> Result<(Indexed, Unpacked), AgentError> {
        let from_index_cache = self
            .indexes
            .iter()
            .flatten()
            .filter(|l| l.stats().from_cache)
            .count();
        let (unpacked, layers) = unpack_layers(&self.image, self.indexes, to, budget)?;
        let view = MergedView::new(layers);
        tracing::info!(
            manifest = %self.image.manifest_digest(),
            layers = self.image.layers().len(),
            from_index_cache,
            while_unpacking = unpacked.indexed_while_unpacking,
            read_to_index = unpacked.read_to_index,
            entries = view.entry_count(),
            "image indexed"
        );
        let indexed = Indexed {
            status: self.status,
            image: self.image,
            view: Arc::new(view),
        };
        Ok((indexed, unpacked))
    }
}
