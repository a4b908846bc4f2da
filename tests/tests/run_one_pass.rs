//! A cold `recorder run` decompresses each layer once (issue 16): a layer with no stored index
//! is indexed in the pass that unpacks it into the layer cache, and that index, stored for the
//! next run, is entry by entry the one `recorder image inspect` makes by reading the layer
//! alone. A layer whose unpacked copy is cached but whose index is gone is read to index it
//! only. Every cache here is in the test's temp dir.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use recorder::image::{
    BlobDigest, Image, IndexCache, IndexOptions, MergedView, Platform, index_image,
};
use recorder_tests::agent_fixtures::{self, layers, spawn_run, write_cat_shadowed_image};
use recorder_tests::deadline::output_within;
use recorder_tests::image_fixtures::{Comp, index_rows};
use recorder_tests::root::require_root;
use recorder_tests::sandbox_fixtures::LayerBuilder;

/// The agent fixture's layers, gzip-compressed, under a layer with an opaque directory, a
/// whiteout and a hardlink; the config runs `/bin/cat /etc/shadowed`. Returns the layer blobs'
/// digests, bottom first.
fn write_image(root: &Path) -> Vec<String> {
    let mut top = LayerBuilder::new();
    top.dir("app", 0o755)
        .file("app/.wh..wh..opq", 0o644, b"")
        .file("app/new.txt", 0o644, b"new\n")
        .file("etc/.wh.hosts", 0o644, b"")
        .file("etc/motd", 0o644, b"hello\n")
        .hardlink("etc/motd2", "etc/motd");
    let gzip = Comp::Gzip.media_type().to_owned();
    let blobs: Vec<(String, Vec<u8>)> = layers()
        .into_iter()
        .chain([top.finish()])
        .map(|tar| (gzip.clone(), Comp::Gzip.compress(&tar)))
        .collect();
    write_cat_shadowed_image(root, &blobs);
    blobs
        .iter()
        .map(|(_, b)| recorder_tests::image_fixtures::digest(b))
        .collect()
}

/// `recorder run` of `image` with the cache in `cache`, a store and work dir of its own under
/// `dir`, and `extra` arguments; it must succeed.
fn run(dir: &Path, image: &Path, cache: &Path, extra: &[&str]) -> Output {
    let child = spawn_run(dir, image, cache, extra);
    let out = output_within(child, Duration::from_secs(300), "recorder run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The number after `key=` on the run's log line containing `line`.
fn logged(out: &Output, line: &str, key: &str) -> usize {
    agent_fixtures::logged(&String::from_utf8_lossy(&out.stderr), line, key)
}

/// `recorder image inspect`'s index of the image: every layer read, nothing cached.
fn inspected(image: &Path) -> MergedView {
    let image = Image::open_oci_layout(image, Some("img"), &Platform::host()).unwrap();
    index_image(&image, &IndexOptions::default()).unwrap()
}

/// Fails unless the cache holds, for every layer blob, an index entry by entry the same as
/// `slow`'s, with the same counts and the same uncompressed length.
fn assert_stored_as_inspected(cache: &Path, blobs: &[String], slow: &MergedView) {
    let stored = IndexCache::new(cache.join("index"));
    for (i, blob) in blobs.iter().enumerate() {
        let digest: BlobDigest = blob.parse().unwrap();
        let fast = stored
            .load(&digest)
            .unwrap_or_else(|| panic!("layer {i}: no stored index"));
        let slow = &slow.layers()[i];
        let (fr, sr) = (index_rows(&fast), index_rows(slow));
        assert_eq!(fr.1, sr.1, "layer {i}: counts");
        assert_eq!(fr.0.len(), sr.0.len(), "layer {i}: entry count");
        for (n, (a, b)) in fr.0.iter().zip(&sr.0).enumerate() {
            assert_eq!(a, b, "layer {i}, entry {n}");
        }
        assert_eq!(fast.node_count(), slow.node_count(), "layer {i}: nodes");
        for id in 0..fast.node_count() as u32 {
            assert_eq!(
                fast.is_opaque(id),
                slow.is_opaque(id),
                "layer {i}, node {id}"
            );
        }
        assert_eq!(
            fast.stats().tar_bytes,
            slow.stats().tar_bytes,
            "layer {i}: uncompressed bytes"
        );
        assert!(slow.stats().tar_bytes > 0, "layer {i} was not read");
    }
}

#[test]
fn a_cold_run_indexes_each_layer_as_it_unpacks_it_as_image_inspect_does() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let blobs = write_image(&image);
    let cache = dir.path().join("cache");
    let slow = inspected(&image);

    // Cold: nothing stored, every layer indexed while it is unpacked, none read beforehand.
    let cold = run(&dir.path().join("run0"), &image, &cache, &[]);
    assert_eq!(logged(&cold, "image indexed", "from_index_cache"), 0);
    assert_eq!(
        logged(&cold, "image indexed", "while_unpacking"),
        blobs.len()
    );
    assert_eq!(logged(&cold, "image indexed", "read_to_index"), 0);
    assert_eq!(logged(&cold, "layers unpacked", "cached"), 0);
    assert_stored_as_inspected(&cache, &blobs, &slow);

    // The layers cached, their indexes gone: each layer is read to index it, and not unpacked.
    std::fs::remove_dir_all(cache.join("index")).unwrap();
    let reindexed = run(&dir.path().join("run1"), &image, &cache, &[]);
    assert_eq!(logged(&reindexed, "image indexed", "from_index_cache"), 0);
    assert_eq!(logged(&reindexed, "image indexed", "while_unpacking"), 0);
    assert_eq!(
        logged(&reindexed, "image indexed", "read_to_index"),
        blobs.len()
    );
    assert_eq!(logged(&reindexed, "layers unpacked", "cached"), blobs.len());
    assert_stored_as_inspected(&cache, &blobs, &slow);

    // Warm: nothing read at all.
    let warm = run(&dir.path().join("run2"), &image, &cache, &[]);
    assert_eq!(
        logged(&warm, "image indexed", "from_index_cache"),
        blobs.len()
    );
    assert_eq!(logged(&warm, "image indexed", "while_unpacking"), 0);
    assert_eq!(logged(&warm, "image indexed", "read_to_index"), 0);
    assert_eq!(logged(&warm, "layers unpacked", "cached"), blobs.len());
}

/// Without a cache (`--no-cache`) the layers go into the work dir, indexed as they are unpacked
/// there, and the run records what it records with the cache.
#[test]
fn without_the_cache_layers_are_indexed_as_they_are_unpacked_into_the_work_dir() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let blobs = write_image(&image);
    let cache = dir.path().join("cache");
    let with_cache = run(&dir.path().join("run0"), &image, &cache, &[]);
    let without = run(
        &dir.path().join("run1"),
        &image,
        &dir.path().join("unused-cache"),
        &["--no-cache"],
    );
    assert_eq!(
        logged(&without, "image indexed", "while_unpacking"),
        blobs.len()
    );
    assert!(!dir.path().join("unused-cache").exists());
    // The same record: the last stdout line is its digest.
    let digest = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(digest(&without), digest(&with_cache));
}
