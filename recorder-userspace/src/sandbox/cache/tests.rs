//! The cache's unit tests: entries made once and hit, invalid ones made again, eviction by
//! last use, the dir's permissions.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::SystemTime;

use super::*;
use crate::content::BlobDigest;

fn digest(n: u8) -> BlobDigest {
    BlobDigest::of(&[n])
}

/// A new cache in a temp dir (dropped with the dir).
fn fresh() -> (tempfile::TempDir, LayerCache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = LayerCache::open(&dir.path().join("c")).unwrap();
    (dir, cache)
}

fn make(cache: &LayerCache, d: &BlobDigest, bytes: u64) -> CachedLayer {
    match cache.acquire(d).unwrap() {
        Lookup::Miss(m) => {
            std::fs::write(m.root().join("f"), b"x").unwrap();
            m.commit(bytes).unwrap()
        }
        Lookup::Hit(_) => panic!("{d} already cached"),
    }
}

#[test]
fn an_entry_is_made_once_then_hit() {
    let (_dir, cache) = fresh();
    let d = digest(1);
    let made = make(&cache, &d, 10);
    assert!(!made.hit());
    assert_eq!(std::fs::read(made.root().join("f")).unwrap(), b"x");
    match cache.acquire(&d).unwrap() {
        Lookup::Hit(h) => assert_eq!(h.root(), made.root()),
        Lookup::Miss(_) => panic!("not cached"),
    }
}

#[test]
fn half_made_and_mismarked_entries_are_made_again() {
    let (_dir, cache) = fresh();
    let d = digest(2);
    // (what the entry holds, as a crash or another layer's marker would leave it)
    let cases: [(&str, Option<String>); 3] = [
        ("no marker", None),
        (
            "another diff id",
            Some(format!(r#"{{"diffId":"{}","bytes":1}}"#, digest(3))),
        ),
        ("garbage marker", Some("{".into())),
    ];
    for (what, marker) in cases {
        let entry = cache.entry(d.hex());
        std::fs::create_dir_all(entry.join("root")).unwrap();
        if let Some(m) = marker {
            std::fs::write(entry.join(MARKER), m).unwrap();
        }
        // A dead maker's temp dir too.
        std::fs::create_dir_all(cache.dir.join("tmp").join(format!("{}.x", d.hex()))).unwrap();
        match cache.acquire(&d).unwrap() {
            Lookup::Miss(m) => drop(m.commit(1).unwrap()),
            Lookup::Hit(_) => panic!("{what}: an invalid entry was used"),
        }
        assert_eq!(std::fs::read_dir(cache.dir.join("tmp")).unwrap().count(), 0);
        assert!(
            matches!(cache.acquire(&d).unwrap(), Lookup::Hit(_)),
            "{what}"
        );
        cache.clear().unwrap();
    }
}

#[test]
fn eviction_takes_the_least_recently_used_and_never_one_in_use() {
    let (_dir, cache) = fresh();
    let (a, b, c) = (digest(4), digest(5), digest(6));
    drop(make(&cache, &a, 100));
    drop(make(&cache, &b, 100));
    let held_c = make(&cache, &c, 100);
    // a is used after b: b is the least recently used.
    let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
    for (d, t) in [(&b, old), (&c, old)] {
        let f = File::options()
            .write(true)
            .open(cache.entry(d.hex()).join(MARKER))
            .unwrap();
        f.set_modified(t).unwrap();
    }
    let removal = cache.evict_to(150).unwrap();
    let removed: Vec<_> = removal.removed.iter().map(|e| e.diff_id.clone()).collect();
    // c is older than a too but in use; b goes, then a (still over 150 with c held).
    assert_eq!(removed, [b.to_string(), a.to_string()]);
    assert_eq!(removal.busy.len(), 1);
    assert!(held_c.root().is_dir());
    drop(held_c);
    let removal = cache.clear().unwrap();
    assert_eq!(removal.removed.len(), 1);
    assert!(cache.entries().unwrap().is_empty());
}

#[test]
fn a_dir_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(matches!(
        LayerCache::open(&open),
        Err(CacheError::Unsafe { .. })
    ));
    let made = dir.path().join("a/b/cache");
    LayerCache::open(&made).unwrap();
    let mode = std::fs::metadata(&made).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700);
}
