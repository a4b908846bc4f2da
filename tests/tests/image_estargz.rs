//! eStargz layers are indexed from their table of contents (TOC) without being decompressed,
//! and that index is the one decompressing them gives, entry by entry. The layers are real
//! ones: `ctr-remote image convert --oci --estargz` of an image with every kind of entry, in a
//! private containerd. A TOC that does not match the manifest's annotation, or does not
//! decompress, is not used: the layer is decompressed instead, and a layer whose stream is
//! corrupt still fails, naming the layer.

use std::path::{Path, PathBuf};
use std::process::Command;

use recorder::containerd::{Containerd, ContainerdSource};
use recorder::image::estargz::{TOC_DIGEST_ANNOTATION, TocError, index_from_toc};
use recorder::image::{Image, IndexOptions, MergedView, Platform, index_image};
use recorder_tests::containerd::Daemon;
use recorder_tests::estargz::{LANDMARK, NO_PREFETCH_LANDMARK, manifest_of};
use recorder_tests::image_fixtures::{
    Comp, E, assert_same_layer, digest, every_kind_layers, index_rows, layer_tar,
    oci_layout_with_config, put_blob,
};

const SOURCE: &str = "docker.io/recorder/estargz-src:latest";
const CONVERTED: &str = "docker.io/recorder/estargz:latest";

fn big_file() -> &'static [u8] {
    // Over ctr-remote's 4 MiB chunk size: the TOC lists it as a "reg" entry and "chunk"s.
    Box::leak(vec![b'z'; 9 << 20].into_boxed_slice())
}

/// The TOC tests' image (see `every_kind_layers`).
fn layers() -> Vec<Vec<E>> {
    every_kind_layers(big_file(), &[])
}

/// An OCI layout of `layers()` (with their real diff ids, as containerd's unpack checks).
fn source_layout(root: &Path) {
    let tars: Vec<Vec<u8>> = layers().iter().map(|l| layer_tar(l)).collect();
    let diff_ids: Vec<String> = tars.iter().map(|t| digest(t)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let blobs: Vec<(String, Vec<u8>)> = tars
        .iter()
        .map(|t| (Comp::Gzip.media_type().to_owned(), Comp::Gzip.compress(t)))
        .collect();
    oci_layout_with_config(root, SOURCE, &config, &blobs);
}

/// The daemon with `CONVERTED` made by ctr-remote; returns the converted image's target
/// digest and its (amd64) manifest.
fn converted(daemon: &Daemon) -> (String, serde_json::Value) {
    let layout = daemon.scratch().join("src-layout");
    source_layout(&layout);
    daemon.import_layout(&layout);
    let out = Command::new("ctr-remote")
        .arg("-a")
        .arg(daemon.socket())
        .args(["-n", daemon.namespace()])
        .args(["image", "convert", "--oci", "--estargz", SOURCE, CONVERTED])
        .output()
        .expect("running ctr-remote (`cargo xtask setup` installs it)");
    assert!(
        out.status.success(),
        "ctr-remote image convert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = String::from_utf8(daemon.ctr_ok(&["images", "ls"])).unwrap();
    let target = ls
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&CONVERTED)).then(|| f.get(2).map(|d| d.to_string()))?
        })
        .unwrap_or_else(|| panic!("no {CONVERTED} in:\n{ls}"));
    (target, manifest_of(daemon, CONVERTED))
}

fn content_dir(daemon: &Daemon) -> PathBuf {
    daemon
        .scratch()
        .join("root")
        .join("io.containerd.content.v1.content")
}

fn index(image: &Image, full_decompression: bool) -> MergedView {
    index_image(
        image,
        &IndexOptions {
            full_decompression,
            ..IndexOptions::default()
        },
    )
    .expect("indexing")
}

/// Fails unless `fast` was indexed from TOCs, `slow` by decompression, and the two hold the
/// same entries layer by layer, with the same opaque directories.
fn assert_same(fast: &MergedView, slow: &MergedView) {
    assert_eq!(fast.layers().len(), slow.layers().len());
    for i in 0..fast.layers().len() {
        assert_same_layer(fast, slow, i, true);
    }
}

#[test]
fn an_estargz_layer_indexed_from_its_toc_equals_it_decompressed() {
    let daemon = Daemon::start();
    let (manifest_digest, manifest) = converted(&daemon);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        assert!(
            l["annotations"][TOC_DIGEST_ANNOTATION].is_string(),
            "ctr-remote left no TOC annotation: {l}"
        );
    }
    let store = content_dir(&daemon);
    let image =
        Image::open_store(&store, &manifest_digest.parse().unwrap(), &Platform::host()).unwrap();
    let (fast, slow) = (index(&image, false), index(&image, true));
    assert_same(&fast, &slow);

    // What the layers hold, by name: the conversion's landmarks and TOC are entries of the
    // tar stream, so both ways index them as files.
    let names = |i: usize| -> Vec<String> {
        fast.layers()[i]
            .entries()
            .map(|(p, _)| String::from_utf8(p).unwrap())
            .collect()
    };
    for i in 0..2 {
        let n = names(i);
        assert_eq!(n.last().map(String::as_str), Some("stargz.index.json"));
        assert!(
            n.iter().any(|x| x == LANDMARK || x == NO_PREFETCH_LANDMARK),
            "layer {i}: {n:?}"
        );
    }
    for (path, layer) in [
        ("usr/lib/big.so", Some(0)),
        ("srv/a<b>&c d", Some(0)),
        ("etc/shadow2", Some(1)),
        ("opt/app/new", Some(1)),
        ("opt/app/old", None),
        ("etc/gone", None),
    ] {
        let found = fast.which(path.as_bytes()).result.map(|f| f.layer);
        assert_eq!(found.ok(), layer, "{path}");
    }
    let big = fast.layers()[0].get(b"usr/lib/big.so").unwrap();
    assert_eq!(big.size, 9 << 20);

    // The same through containerd's Content API, which reads the footer and the TOC by range.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .expect("connect");
    let target = rt
        .block_on(client.resolve_image(CONVERTED))
        .expect("resolve");
    let source = ContainerdSource::new(client, rt.handle().clone());
    let via_ctrd = source.open_image(&target, &Platform::host()).unwrap();
    assert_same(&index(&via_ctrd, false), &slow);
}

/// A copy of the converted image in an OCI layout at `root` whose layer 0 is `blob` with TOC
/// annotation `toc`; returns the opened image.
fn altered(
    daemon: &Daemon,
    manifest: &serde_json::Value,
    root: &Path,
    blob: &[u8],
    toc: &str,
) -> Image {
    let store = content_dir(daemon);
    let cfg = manifest["config"]["digest"].as_str().unwrap();
    let cfg_bytes =
        std::fs::read(store.join("blobs/sha256").join(&cfg["sha256:".len()..])).unwrap();
    put_blob(root, &cfg_bytes);
    let mut m = manifest.clone();
    let d = put_blob(root, blob);
    m["layers"][0]["digest"] = d.into();
    m["layers"][0]["size"] = blob.len().into();
    m["layers"][0]["annotations"][TOC_DIGEST_ANNOTATION] = toc.into();
    for l in m["layers"].as_array().unwrap()[1..].iter() {
        let d = l["digest"].as_str().unwrap();
        let bytes = std::fs::read(store.join("blobs/sha256").join(&d["sha256:".len()..])).unwrap();
        put_blob(root, &bytes);
    }
    let bytes = serde_json::to_vec(&m).unwrap();
    let md = put_blob(root, &bytes);
    recorder_tests::image_fixtures::write_layout_index(
        root,
        &[serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "x"},
        })],
    );
    Image::open_oci_layout(root, Some("x"), &Platform::host()).unwrap()
}

#[test]
fn a_bad_toc_is_not_used_and_a_corrupt_layer_is_named() {
    let daemon = Daemon::start();
    let (_, manifest) = converted(&daemon);
    let layer0 = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let toc = manifest["layers"][0]["annotations"][TOC_DIGEST_ANNOTATION]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = std::fs::read(
        content_dir(&daemon)
            .join("blobs/sha256")
            .join(&layer0["sha256:".len()..]),
    )
    .unwrap();

    // The annotation names another TOC: refused by name, and the layer is decompressed.
    let wrong = digest(b"some other TOC");
    let dir = tempfile::tempdir().unwrap();
    let image = altered(&daemon, &manifest, dir.path(), &blob, &wrong);
    let err = index_from_toc(&image, 0).unwrap_err();
    assert!(matches!(err, TocError::Mismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&layer0) && text.contains(&wrong), "{text}");
    let view = index(&image, false);
    assert!(!view.layers()[0].stats().from_toc);
    assert!(view.layers()[1].stats().from_toc);
    let reference = index(&image, true);
    assert_eq!(
        index_rows(&view.layers()[0]),
        index_rows(&reference.layers()[0])
    );

    // The TOC's gzip member corrupted (in its deflate data, past its 10-byte header): the TOC
    // does not decompress, and decompressing the layer fails too, naming it.
    let footer = &blob[blob.len() - 51..];
    let extra = std::str::from_utf8(&footer[16..32]).unwrap();
    let toc_at = usize::from_str_radix(extra, 16).unwrap();
    let mut bad = blob.clone();
    for b in &mut bad[toc_at + 20..toc_at + 60] {
        *b ^= 0x55;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = altered(&daemon, &manifest, dir.path(), &bad, &toc);
    let bad_digest = digest(&bad);
    let err = index_from_toc(&image, 0).unwrap_err();
    assert!(
        matches!(err, TocError::Decompress { .. } | TocError::BadToc { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&bad_digest), "{err}");
    let err = index_image(&image, &IndexOptions::default()).unwrap_err();
    assert!(err.to_string().contains(&bad_digest), "{err}");
}
