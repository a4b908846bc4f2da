//! Bad input: each case gives an error naming the blob or entry, never a panic.

use std::path::Path;

use recorder::image::{
    BlobDigest, Image, ImageError, IndexOptions, MergedView, Platform, Reason, index_image,
};
use recorder_tests::image_fixtures::{
    Comp, E, descriptor, digest, layer_blobs, layer_tar, oci_layout, oci_layout_from_blobs,
    put_blob, put_manifest, write_layout_index,
};

fn open(dir: &Path) -> Result<Image, ImageError> {
    Image::open_oci_layout(dir, Some("t"), &Platform::host())
}

fn index(dir: &Path) -> Result<MergedView, ImageError> {
    index_image(&open(dir)?, &IndexOptions::default())
}

fn files() -> Vec<E> {
    (0..200)
        .map(|i| {
            E::File(
                Box::leak(format!("dir/file{i}").into_boxed_str()),
                b"some content here",
            )
        })
        .collect()
}

#[test]
fn truncated_gzip_and_zstd_name_the_layer() {
    for comp in [Comp::Gzip, Comp::Zstd] {
        let dir = tempfile::tempdir().unwrap();
        let blob = comp.compress(&layer_tar(&files()));
        let cut = blob[..blob.len() / 2].to_vec();
        let d = digest(&cut);
        oci_layout_from_blobs(dir.path(), "t", &[(comp.media_type().into(), cut)]);
        let err = index(dir.path()).unwrap_err();
        assert!(
            matches!(err, ImageError::BadLayer { .. }),
            "{comp:?}: {err}"
        );
        assert!(err.to_string().contains(&d), "{comp:?}: {err}");
    }
}

#[test]
fn corrupt_tar_header_names_the_entry() {
    for comp in Comp::ALL {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = layer_tar(&[E::File("ok", b"x"), E::File("broken", b"y")]);
        // Second header starts at 1024 (512 header + 512 data); spoil its checksummed name.
        tar[1024] ^= 0x55;
        oci_layout_from_blobs(
            dir.path(),
            "t",
            &[(comp.media_type().into(), comp.compress(&tar))],
        );
        let err = index(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ImageError::BadEntry { .. }),
            "{comp:?}: {msg}"
        );
        assert!(
            msg.contains("#2") && msg.contains("\"ok\""),
            "{comp:?}: {msg}"
        );
    }
}

#[test]
fn digest_mismatch_in_a_layer_is_caught() {
    for comp in Comp::ALL {
        let dir = tempfile::tempdir().unwrap();
        oci_layout(dir.path(), "t", &[vec![E::File("a", b"hello")]], comp);
        let image = open(dir.path()).unwrap();
        let layer = &image.layers()[0];
        let path = dir.path().join("blobs/sha256").join(layer.digest.hex());
        // Same length, different content: only the digest can tell.
        let other = comp.compress(&layer_tar(&[E::File("a", b"jello")]));
        assert_eq!(other.len() as u64, layer.size, "{comp:?}");
        std::fs::write(&path, other).unwrap();
        let err = index_image(&image, &IndexOptions::default()).unwrap_err();
        assert!(
            matches!(err, ImageError::DigestMismatch { .. }),
            "{comp:?}: {err}"
        );
        assert!(err.to_string().contains(&layer.digest.to_string()));
        // The uncompressed stream handed to other modules checks too.
        let mut r = image.open_layer(0).unwrap();
        assert!(matches!(r.finish(), Err(ImageError::DigestMismatch { .. })));
    }
}

#[test]
fn manifest_naming_a_missing_blob() {
    let dir = tempfile::tempdir().unwrap();
    let d = oci_layout(dir.path(), "t", &[vec![E::File("a", b"x")]], Comp::Gzip);
    let image = open(dir.path()).unwrap();
    let layer = image.layers()[0].digest.clone();
    std::fs::remove_file(dir.path().join("blobs/sha256").join(layer.hex())).unwrap();
    let err = index(dir.path()).unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
    assert!(err.to_string().contains(&layer.to_string()));
    // A missing manifest too.
    std::fs::remove_file(dir.path().join("blobs/sha256").join(&d["sha256:".len()..])).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(ImageError::MissingBlob { .. })
    ));
}

#[test]
fn unsupported_media_type() {
    let dir = tempfile::tempdir().unwrap();
    let blob = Comp::Gzip.compress(&layer_tar(&[E::File("a", b"x")]));
    let d = digest(&blob);
    let mt = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
    oci_layout_from_blobs(dir.path(), "t", &[(mt.into(), blob)]);
    let err = open(dir.path()).unwrap_err();
    match &err {
        ImageError::UnsupportedMediaType { digest, media_type } => {
            assert_eq!(digest, &d);
            assert_eq!(media_type, mt);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn hostile_entry_names() {
    // NUL inside a PAX path record and an over-long component are refused, naming the entry.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_pax_extensions([("path", &b"evil\0name"[..])])
        .unwrap();
    h.set_path("placeholder").unwrap();
    h.set_cksum();
    b.append(&h, &b""[..]).unwrap();
    let nul_tar = b.into_inner().unwrap();
    let long = format!("d/{}", "n".repeat(300));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, &long, &b""[..]).unwrap();
    let long_tar = b.into_inner().unwrap();
    for (tar, what) in [(nul_tar, "NUL"), (long_tar, "NAME_MAX")] {
        for comp in Comp::ALL {
            let dir = tempfile::tempdir().unwrap();
            oci_layout_from_blobs(
                dir.path(),
                "t",
                &[(comp.media_type().into(), comp.compress(&tar))],
            );
            let err = index(dir.path()).unwrap_err();
            assert!(
                matches!(err, ImageError::BadEntry { .. }),
                "{comp:?}: {err}"
            );
            assert!(err.to_string().contains(what), "{comp:?}: {err}");
        }
    }
    // Absolute and `..` names are clamped inside the root, not refused.
    let dir = tempfile::tempdir().unwrap();
    oci_layout(
        dir.path(),
        "t",
        &[vec![E::RawFile(b"/../../etc/passwd".to_vec())]],
        Comp::Tar,
    );
    assert_eq!(
        index(dir.path())
            .unwrap()
            .which(b"etc/passwd")
            .result
            .unwrap()
            .layer,
        0
    );
    // Hostile lookups are refused too.
    let view = index(dir.path()).unwrap();
    assert!(matches!(
        view.which(b"a\0b").result,
        Err(Reason::Invalid(_))
    ));
    assert!(matches!(
        view.which_follow(&[b'x'; 5000]).result,
        Err(Reason::Invalid(_))
    ));
}

#[test]
fn ref_selection_and_platform_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let blobs_a = layer_blobs(&[vec![E::File("a", b"x")]], Comp::Gzip);
    let blobs_b = layer_blobs(
        &[vec![E::File("b", b"x")], vec![E::File("c", b"y")]],
        Comp::Gzip,
    );
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let cfg = "application/vnd.oci.image.config.v1+json";
    let (ma, da) = put_manifest(root, mt, cfg, &blobs_a);
    let (mb, db) = put_manifest(root, mt, cfg, &blobs_b);
    // A nested index with two platforms, named "multi"; "single" names manifest a directly.
    let host = Platform::host();
    let mut pa = descriptor(mt, &ma, &da);
    pa["platform"] = serde_json::json!({"os": "linux", "architecture": "s390x"});
    let mut pb = descriptor(mt, &mb, &db);
    pb["platform"] = serde_json::json!({"os": host.os, "architecture": host.architecture});
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [pa, pb],
    }))
    .unwrap();
    let di = put_blob(root, &inner);
    let mut multi = descriptor("application/vnd.oci.image.index.v1+json", &inner, &di);
    multi["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "multi"});
    let mut single = descriptor(mt, &ma, &da);
    single["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "single"});
    write_layout_index(root, &[multi, single]);

    let img = Image::open_oci_layout(root, Some("multi"), &host).unwrap();
    assert_eq!(img.manifest_digest().to_string(), db);
    assert_eq!(img.layers().len(), 2);
    let s390 = Platform::parse("linux/s390x").unwrap();
    assert_eq!(
        Image::open_oci_layout(root, Some("multi"), &s390)
            .unwrap()
            .manifest_digest()
            .to_string(),
        da
    );
    assert_eq!(
        Image::open_oci_layout(root, Some("single"), &host)
            .unwrap()
            .manifest_digest()
            .to_string(),
        da
    );
    let err = Image::open_oci_layout(root, Some("nope"), &host).unwrap_err();
    assert!(err.to_string().contains("multi, single"), "{err}");
    assert!(matches!(
        Image::open_oci_layout(root, None, &host),
        Err(ImageError::Ambiguous { .. })
    ));
    let arm = Platform::parse("linux/arm64/v8").unwrap();
    assert!(matches!(
        Image::open_oci_layout(root, Some("multi"), &arm),
        Err(ImageError::NoPlatform { .. })
    ));
    // The run config comes through.
    let rc = img.run_config();
    assert_eq!(rc.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(rc.cmd, ["echo hi"]);
    assert_eq!(rc.working_dir, "/work");
    assert_eq!(rc.user, "1000:1000");
    assert_eq!(rc.env, ["PATH=/usr/bin"]);
}

#[test]
fn docker_media_types_from_a_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tar = layer_tar(&[E::File("usr/bin/env", b"elf")]);
    let blobs = vec![(
        "application/vnd.docker.image.rootfs.diff.tar.gzip".to_owned(),
        Comp::Gzip.compress(&tar),
    )];
    let (m, d) = put_manifest(
        root,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.container.image.v1+json",
        &blobs,
    );
    let host = Platform::host();
    let mut pd = descriptor(
        "application/vnd.docker.distribution.manifest.v2+json",
        &m,
        &d,
    );
    pd["platform"] = serde_json::json!({"os": host.os, "architecture": host.architecture});
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [pd],
    }))
    .unwrap();
    let dl = put_blob(root, &list);
    let digest: BlobDigest = dl.parse().unwrap();
    let img = Image::open_store(root, &digest, &host).unwrap();
    assert_eq!(img.manifest_digest().to_string(), d);
    let view = index_image(&img, &IndexOptions::default()).unwrap();
    assert_eq!(view.which(b"usr/bin/env").result.unwrap().layer, 0);
    // A digest that is not in the store.
    let absent: BlobDigest = digest_of_nothing().parse().unwrap();
    assert!(matches!(
        Image::open_store(root, &absent, &host),
        Err(ImageError::MissingBlob { .. })
    ));
}

fn digest_of_nothing() -> String {
    digest(b"")
}

#[test]
fn tampered_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = oci_layout(dir.path(), "t", &[vec![E::File("a", b"x")]], Comp::Tar);
    let path = dir.path().join("blobs/sha256").join(&d["sha256:".len()..]);
    let mut m = std::fs::read(&path).unwrap();
    m.push(b' ');
    std::fs::write(&path, m).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::SizeMismatch { .. } | ImageError::DigestMismatch { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&d));
}
