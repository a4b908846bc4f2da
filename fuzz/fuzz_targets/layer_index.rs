//! The layer indexer over plain, gzip and zstd layers (the first byte picks the compression):
//! any blob indexes or fails with an error, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recorder::image::{BlobDigest, Compression, LayerIndexBuilder, LayerReader, VerifyingReader};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, blob)) = data.split_first() else {
        return;
    };
    let compression = match selector % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let reader = VerifyingReader::new(
        Box::new(std::io::Cursor::new(blob.to_vec())) as Box<dyn std::io::Read + Send>,
        BlobDigest::of(blob),
        Some(blob.len() as u64),
    );
    let Ok(mut layer) = LayerReader::new(reader, compression, None) else {
        return;
    };
    let _ = LayerIndexBuilder::new().read_tar(&mut layer, None);
});
