//! The image side: reading an image's manifest, config and layers from a blob source,
//! indexing its layers, and answering which layer provides a path.

pub mod build;
pub mod digest;
pub mod error;
pub mod estargz;
pub mod index;
pub mod layer;
pub mod media;
pub mod merged;
pub mod open;
pub mod path;
pub mod platform;
pub mod source;
pub mod zstd_chunked;

pub use build::{IndexOptions, index_image, index_without_decompressing, store_index};
pub use digest::{BlobDigest, VerifyingReader};
pub use error::{ImageError, LayerFault};
pub use index::{
    EntryInfo, EntryKind, IndexCache, IndexCacheError, LayerIndex, LayerIndexBuilder, LayerStats,
    TarIndexer,
};
pub use layer::LayerReader;
pub use media::Compression;
pub use merged::{ChainLink, Found, Lookup, MergedView, MountPoints, NoMounts, Reason, Resolution};
pub use open::{Image, LayerInfo, RunConfig};
pub use platform::Platform;
pub use source::{BlobDir, BlobSource};
