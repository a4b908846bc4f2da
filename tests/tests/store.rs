//! Content store: containerd local-store semantics.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use recorder::image::BlobDigest;
use recorder::store::{ContentStore, StoreError};

fn listing(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn commit_renames_into_blobs_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let data = b"{\"path\":\"a\"}\n";
    let want = BlobDigest::of(data);
    let mut w = store.writer("record-1").unwrap();
    w.write_all(&data[..5]).unwrap();
    // Mid-write, nothing is visible as a blob.
    assert!(!store.exists(&want));
    assert!(
        listing(&dir.path().join("blobs"))
            .iter()
            .all(|p| p == "sha256")
    );
    w.write_all(&data[5..]).unwrap();
    let c = w.commit(Some(data.len() as u64), Some(&want)).unwrap();
    assert_eq!(c.digest, want);
    assert!(!c.already_existed);
    assert!(store.exists(&want));
    let path = store.blob_path(&want);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert_eq!(store.read(&want).unwrap(), data);
    // The ingest is gone.
    assert!(listing(&dir.path().join("ingest")).is_empty());
}

#[test]
fn already_exists_is_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let first = store.put("a", b"same", None).unwrap();
    let second = store.put("b", b"same", Some(&first.digest)).unwrap();
    assert!(second.already_existed);
    assert_eq!(second.digest, first.digest);
    assert!(listing(&dir.path().join("ingest")).is_empty());
}

#[test]
fn failed_commits_leave_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    store.put("keep", b"kept", None).unwrap();
    let before = listing(dir.path());
    let wrong = BlobDigest::of(b"something else");
    let err = store.put("r1", b"data", Some(&wrong)).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let err = store.put("r2", b"data", None).map(|_| ()).and_then(|_| {
        let mut w = store.writer("r3")?;
        w.write_all(b"short").unwrap();
        w.commit(Some(99), None).map(|_| ())
    });
    assert!(matches!(err, Err(StoreError::SizeMismatch { .. })));
    assert!(!store.exists(&BlobDigest::of(b"short")));
    assert!(store.exists(&BlobDigest::of(b"data")));
    let after: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|p| !p.ends_with(BlobDigest::of(b"data").hex()))
        .collect();
    assert_eq!(after, before);
    // An abandoned writer leaves nothing either.
    let mut w = store.writer("abandoned").unwrap();
    w.write_all(b"partial").unwrap();
    drop(w);
    assert!(listing(&dir.path().join("ingest")).is_empty());
}

#[test]
fn one_writer_per_ref() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let w = store.writer("r").unwrap();
    assert!(matches!(store.writer("r"), Err(StoreError::Locked(_))));
    drop(w);
    store.writer("r").unwrap();
    assert!(matches!(store.writer(""), Err(StoreError::BadRef(_))));
}

#[test]
fn reading_verifies_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path()).unwrap();
    let c = store.put("x", b"original", None).unwrap();
    let path = store.blob_path(&c.digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, b"tampered").unwrap();
    assert!(matches!(
        store.read(&c.digest),
        Err(StoreError::Corrupt { .. })
    ));
    let absent = BlobDigest::of(b"absent");
    assert!(matches!(store.read(&absent), Err(StoreError::NotFound(_))));
}
