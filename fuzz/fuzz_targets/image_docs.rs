//! The image documents (index, manifest, config) through the OCI layout opener: an
//! `index.json` from the input, pointing at blobs that are the input too. Opens or fails,
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recorder::image::{BlobDigest, Image, Platform};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    std::fs::write(root.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    // The input is both index.json and a blob, so a manifest or config may point at itself.
    std::fs::write(root.join("index.json"), data).unwrap();
    std::fs::write(
        root.join("blobs/sha256").join(BlobDigest::of(data).hex()),
        data,
    )
    .unwrap();
    let platform = Platform::host();
    let _ = Image::open_oci_layout(root, None, &platform);
});
