//! zstd:chunked layers are indexed from their table of contents (TOC) without being
//! decompressed, and that index is the one decompressing them gives, entry by entry. The layers
//! are real ones: `skopeo copy --dest-compress-format zstd:chunked` of an image with every kind
//! of entry. A TOC that does not match the manifest's checksum annotation, is not where the
//! position annotation says, or cannot name an entry exactly is not used: the layer is
//! decompressed instead, and gives the same index.

use std::path::{Path, PathBuf};

use recorder::containerd::{Containerd, ContainerdSource};
use recorder::image::zstd_chunked::{ANNOTATIONS, ChunkedTocError, index_from_toc};
use recorder::image::{Image, IndexOptions, MergedView, Platform, index_image};
use recorder_tests::containerd::Daemon;
use recorder_tests::image_fixtures::{
    Comp, E, assert_same_layer, digest, every_kind_layers, layer_blobs, oci_layout_from_blobs,
    put_blob, write_layout_index,
};

/// 1.5 MiB of noise around 64 KiB of zeros: containers/storage cuts a file into chunks where a
/// rolling checksum says (about every 64 KiB of noise) and makes runs of zeros chunks of their
/// own, so the TOC lists it as a "reg" entry and many "chunk"s, a "zeros" one among them.
fn big_file() -> &'static [u8] {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let mut data = noise(1 << 20);
    data.extend(std::iter::repeat_n(0, 64 << 10));
    data.extend(noise(512 << 10));
    Box::leak(data.into_boxed_slice())
}

/// The TOC tests' image (see `every_kind_layers`).
fn layers() -> Vec<Vec<E>> {
    every_kind_layers(big_file(), &[E::Block("dev/loop0", 7, 0)])
}

/// `layers` as tar+gzip in an OCI layout, copied by skopeo to a zstd:chunked one under `dir`;
/// returns that layout and its manifest.
fn converted(dir: &Path, layers: &[Vec<E>]) -> (PathBuf, serde_json::Value) {
    let (src, dst) = (dir.join("src"), dir.join("zstd-chunked"));
    oci_layout_from_blobs(&src, "src", &layer_blobs(layers, Comp::Gzip));
    let from = format!("oci:{}:src", src.display());
    let to = format!("oci:{}:latest", dst.display());
    let out = xtask::skopeo_copy_to_zstd_chunked(&from, &to)
        .output()
        .expect("running skopeo under unshare (`cargo xtask setup` installs skopeo)");
    assert!(
        out.status.success(),
        "skopeo copy (`cargo xtask setup` installs skopeo): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dst.join("index.json")).unwrap()).unwrap();
    let manifest = blob(&dst, index["manifests"][0]["digest"].as_str().unwrap());
    (dst, serde_json::from_slice(&manifest).unwrap())
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
}

fn open(layout: &Path, name: &str) -> Image {
    Image::open_oci_layout(layout, Some(name), &Platform::host()).unwrap()
}

fn index(image: &Image, full_decompression: bool) -> MergedView {
    let opts = IndexOptions {
        full_decompression,
        ..IndexOptions::default()
    };
    index_image(image, &opts).expect("indexing")
}

/// The zstd:chunked (checksum, position) annotations of a layer descriptor.
fn annotations(layer: &serde_json::Value) -> (String, String) {
    let a = &layer["annotations"];
    let found = ANNOTATIONS
        .iter()
        .find(|(c, p)| a[c].is_string() && a[p].is_string());
    let (c, p) =
        found.unwrap_or_else(|| panic!("skopeo left no zstd:chunked annotations: {layer}"));
    (a[c].as_str().unwrap().into(), a[p].as_str().unwrap().into())
}

/// The TOC JSON of a layer blob, read by hand where its position annotation says.
fn toc_json(blob: &[u8], position: &str) -> serde_json::Value {
    let f: Vec<usize> = position.split(':').map(|x| x.parse().unwrap()).collect();
    let json = zstd::decode_all(&blob[f[0]..f[0] + f[1]]).unwrap();
    assert_eq!(json.len(), f[2]);
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn a_zstd_chunked_layer_indexed_from_its_toc_equals_it_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, manifest) = converted(dir.path(), &layers());
    let descs = manifest["layers"].as_array().unwrap();
    assert_eq!(descs.len(), 2);
    for l in descs {
        assert_eq!(l["mediaType"], Comp::Zstd.media_type(), "{l}");
        let (checksum, position) = annotations(l);
        // What the checksum covers: the compressed TOC at the position.
        let f: Vec<usize> = position.split(':').map(|x| x.parse().unwrap()).collect();
        let b = blob(&layout, l["digest"].as_str().unwrap());
        assert_eq!(checksum, digest(&b[f[0]..f[0] + f[1]]), "{l}");
    }
    // The big file is in chunks, a run of zeros among them: the TOC's "chunk" entries are
    // read (and skipped) by the fast path.
    let b = blob(&layout, descs[0]["digest"].as_str().unwrap());
    let toc = toc_json(&b, &annotations(&descs[0]).1);
    let chunks: Vec<&serde_json::Value> = toc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "chunk" && e["name"] == "usr/lib/big.so")
        .collect();
    assert!(chunks.len() > 4, "too few chunks: {toc}");
    assert!(chunks.iter().any(|e| e["chunkType"] == "zeros"), "{toc}");

    let image = open(&layout, "latest");
    let (fast, slow) = (index(&image, false), index(&image, true));
    for i in 0..2 {
        assert_same_layer(&fast, &slow, i, true);
    }
    for (path, layer) in [
        ("usr/lib/big.so", Some(0)),
        ("dev/loop0", Some(0)),
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
    assert_eq!(big.size as usize, big_file().len());

    // The same through containerd's Content API, which reads the TOC by range.
    const NAME: &str = "docker.io/recorder/zstd-chunked:latest";
    let index_json = layout.join("index.json");
    let mut list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_json).unwrap()).unwrap();
    list["manifests"][0]["annotations"]["io.containerd.image.name"] = NAME.into();
    std::fs::write(&index_json, serde_json::to_vec(&list).unwrap()).unwrap();
    let daemon = Daemon::start();
    daemon.import_layout(&layout);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .expect("connect");
    let target = rt.block_on(client.resolve_image(NAME)).expect("resolve");
    let source = ContainerdSource::new(client, rt.handle().clone());
    let via_ctrd = index(
        &source.open_image(&target, &Platform::host()).unwrap(),
        false,
    );
    for i in 0..2 {
        assert_same_layer(&via_ctrd, &slow, i, true);
    }
}

/// A copy at `root` of the converted layout whose layer 0 is `blob` with annotations
/// (checksum, position); returns the opened image.
fn altered(
    layout: &Path,
    manifest: &serde_json::Value,
    root: &Path,
    blob0: &[u8],
    (checksum, position): (&str, &str),
) -> Image {
    let mut m = manifest.clone();
    put_blob(root, &blob(layout, m["config"]["digest"].as_str().unwrap()));
    for l in &m["layers"].as_array().unwrap()[1..] {
        put_blob(root, &blob(layout, l["digest"].as_str().unwrap()));
    }
    let l0 = &mut m["layers"][0];
    l0["digest"] = put_blob(root, blob0).into();
    l0["size"] = blob0.len().into();
    l0["annotations"] = serde_json::json!({ANNOTATIONS[0].0: checksum, ANNOTATIONS[0].1: position});
    let bytes = serde_json::to_vec(&m).unwrap();
    let md = put_blob(root, &bytes);
    write_layout_index(
        root,
        &[serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "x"},
        })],
    );
    open(root, "x")
}

#[test]
fn a_toc_that_does_not_check_out_is_not_used_and_the_layer_is_decompressed() {
    let dir = tempfile::tempdir().unwrap();
    let (layout, manifest) = converted(dir.path(), &layers());
    let l0 = &manifest["layers"][0];
    let good = blob(&layout, l0["digest"].as_str().unwrap());
    let (checksum, position) = annotations(l0);
    let f: Vec<u64> = position.split(':').map(|x| x.parse().unwrap()).collect();
    let (at, len) = (f[0] as usize, f[1] as usize);
    let mut toc_altered = good.clone();
    toc_altered[at + len / 2] ^= 0x55;
    let other = digest(b"some other TOC");
    let moved = format!("{}:{}:{}:1", f[0] + 1, f[1], f[2]);
    let of_type_2 = format!("{}:{}:{}:2", f[0], f[1], f[2]);
    type Check = fn(&ChunkedTocError) -> bool;
    type Annotations<'a> = (&'a str, &'a str);
    let cases: [(&str, &[u8], Annotations, Check); 4] = [
        (
            "the checksum names another TOC",
            &good,
            (&other, &position),
            |e| matches!(e, ChunkedTocError::Mismatch { .. }),
        ),
        // In its skippable frame, which the decoder skips: the layer still decompresses.
        (
            "the TOC altered in the blob",
            &toc_altered,
            (&checksum, &position),
            |e| matches!(e, ChunkedTocError::Mismatch { .. }),
        ),
        (
            "the position one byte off",
            &good,
            (&checksum, &moved),
            |e| matches!(e, ChunkedTocError::BadToc { .. }),
        ),
        (
            "a manifest type other than 1",
            &good,
            (&checksum, &of_type_2),
            |e| matches!(e, ChunkedTocError::Annotation { .. }),
        ),
    ];
    for (what, blob0, annotations, check) in cases {
        let root = tempfile::tempdir().unwrap();
        let image = altered(&layout, &manifest, root.path(), blob0, annotations);
        let err = index_from_toc(&image, 0).unwrap_err();
        assert!(check(&err), "{what}: {err:?}");
        assert!(err.to_string().contains(&digest(blob0)), "{what}: {err}");
        let (fast, slow) = (index(&image, false), index(&image, true));
        assert_same_layer(&fast, &slow, 0, false);
        assert_same_layer(&fast, &slow, 1, true);
    }
}

#[test]
fn a_name_the_toc_cannot_carry_exactly_makes_the_layer_decompressed() {
    // Not UTF-8: Go's JSON encoder writes U+FFFD for the byte, so the TOC names another file.
    let layers = vec![vec![
        E::File("srv/plain", b"plain\n"),
        E::RawFile(b"srv/caf\xe9".to_vec()),
    ]];
    let dir = tempfile::tempdir().unwrap();
    let (layout, manifest) = converted(dir.path(), &layers);
    let toc = toc_json(
        &blob(&layout, manifest["layers"][0]["digest"].as_str().unwrap()),
        &annotations(&manifest["layers"][0]).1,
    );
    assert!(toc.to_string().contains("srv/caf\u{fffd}"), "{toc}");
    let image = open(&layout, "latest");
    let err = index_from_toc(&image, 0).unwrap_err();
    assert!(matches!(err, ChunkedTocError::Lossy { .. }), "{err:?}");
    let (fast, slow) = (index(&image, false), index(&image, true));
    assert_same_layer(&fast, &slow, 0, false);
    assert!(fast.layers()[0].get(b"srv/caf\xe9").is_some());
}
