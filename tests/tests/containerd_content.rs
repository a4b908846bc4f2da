//! Records written into containerd's content store: byte for byte, labelled, protected from
//! its garbage collector, and idempotent.

use std::collections::HashMap;

use recorder::containerd::{Containerd, GC_ROOT_LABEL, IMAGE_LABEL, MANIFEST_LABEL, RecordLabels};
use recorder::image::BlobDigest;
use recorder_tests::containerd::{Daemon, IMAGE, runnable_image};

fn record_bytes(manifest: &str) -> Vec<u8> {
    format!(
        "{{\"path\":\"etc/hello\",\"manifestDigest\":\"{manifest}\",\"layerIndex\":1}}\n\
         {{\"path\":\"bin/cat\",\"manifestDigest\":\"{manifest}\",\"layerIndex\":0}}\n"
    )
    .into_bytes()
}

fn content_ls(daemon: &Daemon) -> String {
    String::from_utf8(daemon.ctr_ok(&["content", "ls"])).unwrap()
}

#[test]
fn record_is_stored_byte_for_byte_with_labels_and_survives_gc() {
    let daemon = Daemon::start();
    let layout = daemon.scratch().join("layout");
    let manifest = runnable_image(&layout);
    daemon.import_layout(&layout);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .unwrap();

    let bytes = record_bytes(&manifest);
    let mut labels = RecordLabels::new(manifest.parse().unwrap());
    labels.image = Some(IMAGE.to_owned());
    let stored = rt
        .block_on(client.put_record(&bytes, &labels))
        .expect("put");
    assert_eq!(stored.digest, BlobDigest::of(&bytes));
    assert_eq!(stored.size, bytes.len() as u64);
    assert!(!stored.already_existed);
    let digest = stored.digest.to_string();

    // ctr returns the same bytes, and lists the labels.
    assert_eq!(daemon.ctr_ok(&["content", "get", &digest]), bytes);
    let line = content_ls(&daemon)
        .lines()
        .find(|l| l.starts_with(&digest))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{digest} not listed"));
    for label in [
        format!("{MANIFEST_LABEL}={manifest}"),
        format!("{IMAGE_LABEL}={IMAGE}"),
        format!("{GC_ROOT_LABEL}="),
    ] {
        assert!(line.contains(&label), "{label} missing from {line}");
    }
    let info = rt
        .block_on(client.content_info(&stored.digest))
        .expect("info");
    assert_eq!(info.labels[MANIFEST_LABEL], manifest);

    // A blob without a GC root is what the collector removes; removing an image with --sync
    // runs a collection. The record must outlive it.
    let unprotected = b"no gc root here".to_vec();
    let loose = rt
        .block_on(client.put_blob(&unprotected, HashMap::new()))
        .unwrap();
    daemon.ctr_ok(&["images", "rm", "--sync", IMAGE]);
    let listing = content_ls(&daemon);
    let listed = |d: &str| listing.lines().any(|l| l.starts_with(d));
    assert!(
        !listed(&loose.digest.to_string()),
        "GC did not run: the unprotected blob is still there:\n{listing}"
    );
    assert!(
        !listed(&manifest),
        "the image's manifest should have been collected:\n{listing}"
    );
    assert_eq!(daemon.ctr_ok(&["content", "get", &digest]), bytes);
}

#[test]
fn writing_the_same_record_twice_succeeds_and_keeps_it_protected() {
    let daemon = Daemon::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .unwrap();
    let manifest = BlobDigest::of(b"some manifest");
    let bytes = record_bytes(&manifest.to_string());
    let labels = RecordLabels::new(manifest.clone());
    let first = rt.block_on(client.put_record(&bytes, &labels)).unwrap();
    let mut again = RecordLabels::new(manifest);
    again.image = Some("docker.io/x/y:2".into());
    let second = rt.block_on(client.put_record(&bytes, &again)).unwrap();
    assert!(!first.already_existed);
    assert!(second.already_existed, "the second write is AlreadyExists");
    assert_eq!(first.digest, second.digest);
    let info = rt.block_on(client.content_info(&second.digest)).unwrap();
    assert!(info.labels.contains_key(GC_ROOT_LABEL));
    assert_eq!(
        info.labels[IMAGE_LABEL], "docker.io/x/y:2",
        "labels merged in"
    );

    // Large records go in several Write messages.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let stored = rt.block_on(client.put_record(&big, &labels)).unwrap();
    assert_eq!(
        daemon.ctr_ok(&["content", "get", &stored.digest.to_string()]),
        big
    );
}
