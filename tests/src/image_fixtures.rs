//! Builders of small OCI images for the image-side tests: layers from entry lists, written as
//! OCI layouts or containerd-style content stores, uncompressed, gzip or zstd.

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// One tar entry of a fixture layer.
#[derive(Debug, Clone)]
pub enum E {
    /// A regular file with content.
    File(&'static str, &'static [u8]),
    /// A directory.
    Dir(&'static str),
    /// A symlink and its target.
    Symlink(&'static str, &'static str),
    /// A hardlink and its target entry.
    Hardlink(&'static str, &'static str),
    /// A character device.
    Char(&'static str, u32, u32),
    /// A block device.
    Block(&'static str, u32, u32),
    /// A named pipe.
    Fifo(&'static str),
    /// A regular file with a name given as raw bytes (hostile names).
    RawFile(Vec<u8>),
}

/// Two layers with every kind of entry the index tells apart, whiteouts and an opaque directory
/// over the lower layer, and names Go's JSON encoder escapes: the image of the TOC tests
/// (eStargz, zstd:chunked). `big` is a file over the converter's chunk size, `devices` the
/// device nodes besides `/dev/null` that the converter keeps.
pub fn every_kind_layers(big: &'static [u8], devices: &[E]) -> Vec<Vec<E>> {
    let mut lower = vec![
        E::Dir("etc/"),
        E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        E::File("etc/gone", b"deleted above\n"),
        E::Dir("opt/"),
        E::Dir("opt/app/"),
        E::File("opt/app/old", b"hidden by the opaque dir above\n"),
        E::File("usr/lib/big.so", big),
        E::File("usr/lib/empty", b""),
        E::Symlink("usr/lib/link.so", "big.so"),
        E::Hardlink("usr/lib/hard.so", "usr/lib/big.so"),
        E::Fifo("run/fifo"),
        E::Char("dev/null", 1, 3),
    ];
    lower.extend_from_slice(devices);
    lower.push(E::File("srv/a<b>&c d", b"escaped in JSON\n"));
    vec![
        lower,
        vec![
            E::File("etc/.wh.gone", b""),
            E::Dir("opt/app/"),
            E::File("opt/app/.wh..wh..opq", b""),
            E::File("opt/app/new", b"new\n"),
            E::Symlink("bin", "usr/bin"),
            E::File("etc/shadow", b"root:*:1::::::\n"),
            E::Hardlink("etc/shadow2", "./etc/shadow"),
        ],
    ]
}

/// One entry as a TOC test compares it: path, kind, size, link target, device, implicit.
pub type IndexRow = (
    Vec<u8>,
    String,
    u64,
    Option<Vec<u8>>,
    Option<(u32, u32)>,
    bool,
);

/// Everything an index holds of a layer, in entry order, plus its counts.
pub fn index_rows(idx: &recorder::image::LayerIndex) -> (Vec<IndexRow>, [u64; 4]) {
    let rows = idx
        .entries()
        .map(|(path, e)| {
            (
                path,
                e.kind.as_str().to_owned(),
                e.size,
                e.target.map(<[u8]>::to_vec),
                e.device,
                e.implicit,
            )
        })
        .collect();
    let s = idx.stats();
    (rows, [s.entries, s.whiteouts, s.opaques, s.refused_by_run])
}

/// Fails unless layer `i` of `fast` was indexed from its TOC exactly when `from_toc`, `slow`'s
/// by decompression, and the two hold the same entries with the same opaque directories.
pub fn assert_same_layer(
    fast: &recorder::image::MergedView,
    slow: &recorder::image::MergedView,
    i: usize,
    from_toc: bool,
) {
    let (f, s) = (&fast.layers()[i], &slow.layers()[i]);
    assert_eq!(f.stats().from_toc, from_toc, "layer {i}: from its TOC?");
    assert!(
        !s.stats().from_toc && s.stats().tar_bytes > 0,
        "layer {i} not decompressed"
    );
    let (fr, sr) = (index_rows(f), index_rows(s));
    assert_eq!(fr.1, sr.1, "layer {i}: counts");
    assert_eq!(fr.0.len(), sr.0.len(), "layer {i}: entry count");
    for (n, (a, b)) in fr.0.iter().zip(&sr.0).enumerate() {
        assert_eq!(a, b, "layer {i}, entry {n}");
    }
    assert_eq!(f.node_count(), s.node_count(), "layer {i}: nodes");
    for id in 0..f.node_count() as u32 {
        assert_eq!(f.is_opaque(id), s.is_opaque(id), "layer {i}, node {id}");
    }
}

/// How a fixture layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comp {
    /// Plain tar.
    Tar,
    /// tar+gzip.
    Gzip,
    /// tar+zstd.
    Zstd,
}

impl Comp {
    /// All three, for running each table on each.
    pub const ALL: [Comp; 3] = [Comp::Tar, Comp::Gzip, Comp::Zstd];

    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Comp::Tar => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Compresses a tar stream.
    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Comp::Tar => tar.to_vec(),
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Comp::Zstd => zstd::encode_all(tar, 1).unwrap(),
        }
    }
}

/// What a fixture entry becomes: name, type, data, link target, device numbers.
type Parts<'a> = (
    &'a [u8],
    tar::EntryType,
    &'a [u8],
    Option<&'a str>,
    Option<(u32, u32)>,
);

/// A header with the name stored verbatim (the tar crate refuses `..` and strips `/`,
/// which the tests need to keep).
fn header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
    assert!(name.len() <= 100, "fixture names fit the ustar name field");
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(0);
    h
}

/// A tar stream of the entries, in order.
pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (name, kind, data, link, dev): Parts = match e {
            E::File(n, d) => (n.as_bytes(), tar::EntryType::Regular, d, None, None),
            E::Dir(n) => (n.as_bytes(), tar::EntryType::Directory, b"", None, None),
            E::Symlink(n, t) => (n.as_bytes(), tar::EntryType::Symlink, b"", Some(t), None),
            E::Hardlink(n, t) => (n.as_bytes(), tar::EntryType::Link, b"", Some(t), None),
            E::Char(n, ma, mi) => (
                n.as_bytes(),
                tar::EntryType::Char,
                b"",
                None,
                Some((*ma, *mi)),
            ),
            E::Block(n, ma, mi) => (
                n.as_bytes(),
                tar::EntryType::Block,
                b"",
                None,
                Some((*ma, *mi)),
            ),
            E::Fifo(n) => (n.as_bytes(), tar::EntryType::Fifo, b"", None, None),
            E::RawFile(n) => (&n[..], tar::EntryType::Regular, b"", None, None),
        };
        let mut h = header(name, kind, data.len() as u64);
        if let Some(t) = link {
            let field = &mut h.as_gnu_mut().unwrap().linkname;
            field[..t.len()].copy_from_slice(t.as_bytes());
        }
        if let Some((ma, mi)) = dev {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// `sha256:<hex>` of some bytes.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex_of(&Sha256::digest(data)))
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes a blob under `<root>/blobs/sha256/` and returns its digest.
pub fn put_blob(root: &Path, data: &[u8]) -> String {
    let d = digest(data);
    let dir = root.join("blobs").join("sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&d["sha256:".len()..]), data).unwrap();
    d
}

/// A descriptor as JSON.
pub fn descriptor(media_type: &str, data: &[u8], digest: &str) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": data.len()})
}

/// Layer blobs ready to be put in a manifest: `(media type, blob bytes)`.
pub fn layer_blobs(layers: &[Vec<E>], comp: Comp) -> Vec<(String, Vec<u8>)> {
    layers
        .iter()
        .map(|l| (comp.media_type().to_owned(), comp.compress(&layer_tar(l))))
        .collect()
}

/// Config JSON with an entrypoint, for the run-config accessors (placeholder diff ids).
pub fn config_json(layer_count: usize) -> Vec<u8> {
    let diff_ids: Vec<String> = (0..layer_count)
        .map(|i| digest(format!("diff{i}").as_bytes()))
        .collect();
    config_with_diff_ids(&diff_ids)
}

/// As [`config_json`], with `diff_ids`.
pub fn config_with_diff_ids(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "Env": ["PATH=/usr/bin"],
            "WorkingDir": "/work",
            "User": "1000:1000"
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap()
}

/// A layer blob's diff id: the digest of its uncompressed tar (`recorder run` checks it, and
/// keys its layer cache by it); of the blob as it is when it does not decompress (the
/// fixtures of corrupt layers).
pub fn diff_id(media_type: &str, blob: &[u8]) -> String {
    use std::io::Read;
    let tar = if media_type.ends_with("+gzip") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .ok()
            .map(|_| out)
    } else if media_type.ends_with("+zstd") {
        zstd::decode_all(blob).ok()
    } else {
        None
    };
    digest(tar.as_deref().unwrap_or(blob))
}

/// Writes config and layers and a manifest into `root`; returns `(manifest bytes, digest)`.
pub fn put_manifest(
    root: &Path,
    manifest_type: &str,
    config_type: &str,
    layers: &[(String, Vec<u8>)],
) -> (Vec<u8>, String) {
    put_manifest_with_config(
        root,
        manifest_type,
        config_type,
        &config_json(layers.len()),
        layers,
    )
}

/// As [`put_manifest`], with the given image config.
pub fn put_manifest_with_config(
    root: &Path,
    manifest_type: &str,
    config_type: &str,
    cfg: &[u8],
    layers: &[(String, Vec<u8>)],
) -> (Vec<u8>, String) {
    let cfg_digest = put_blob(root, cfg);
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|(mt, blob)| {
            let d = put_blob(root, blob);
            descriptor(mt, blob, &d)
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": descriptor(config_type, cfg, &cfg_digest),
        "layers": layer_descs,
    }))
    .unwrap();
    let d = put_blob(root, &manifest);
    (manifest, d)
}

/// Writes `oci-layout` and an `index.json` listing the given descriptors.
pub fn write_layout_index(root: &Path, manifests: &[serde_json::Value]) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    std::fs::write(root.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// An OCI layout at `root` with one manifest named `name`; returns the manifest digest.
pub fn oci_layout(root: &Path, name: &str, layers: &[Vec<E>], comp: Comp) -> String {
    let blobs = layer_blobs(layers, comp);
    oci_layout_from_blobs(root, name, &blobs)
}

/// As [`oci_layout`], from ready layer blobs.
pub fn oci_layout_from_blobs(root: &Path, name: &str, blobs: &[(String, Vec<u8>)]) -> String {
    let diff_ids: Vec<String> = blobs.iter().map(|(mt, b)| diff_id(mt, b)).collect();
    oci_layout_with_config(root, name, &config_with_diff_ids(&diff_ids), blobs)
}

/// As [`oci_layout_from_blobs`], with the given image config.
pub fn oci_layout_with_config(
    root: &Path,
    name: &str,
    config: &[u8],
    blobs: &[(String, Vec<u8>)],
) -> String {
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let config_type = "application/vnd.oci.image.config.v1+json";
    let (manifest, d) = put_manifest_with_config(root, mt, config_type, config, blobs);
    let mut desc = descriptor(mt, &manifest, &d);
    desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
    write_layout_index(root, &[desc]);
    d
}
