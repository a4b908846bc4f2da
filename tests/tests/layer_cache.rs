//! The layer cache of `recorder run`, end to end as root: concurrent runs share one entry per
//! layer (and record exactly), an entry cut short by a SIGKILL is never used and is made
//! again, `--cache-max` evicts the least recently used entry, a cached image's layer indexes
//! are cached too, and `recorder gc --cache` empties the cache. Every cache here is in the
//! test's temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use recorder_tests::agent_fixtures::{
    expected_record, layers, logged, record_entries, recorder_bin, spawn_run,
    write_cat_shadowed_image, write_image,
};
use recorder_tests::deadline::output_within;
use recorder_tests::image_fixtures::{Comp, digest};
use recorder_tests::root::require_root;
use recorder_tests::sandbox_fixtures::LayerBuilder;

fn run(dir: &Path, image: &Path, cache: &Path, extra: &[&str]) -> Output {
    let child = spawn_run(dir, image, cache, extra);
    output_within(child, Duration::from_secs(300), "recorder run")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The record `recorder run` committed (the digest on its last stdout line) in `dir`'s store.
fn record(dir: &Path, out: &Output) -> Vec<u8> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let digest = stdout.lines().last().unwrap_or_default().parse().unwrap();
    recorder::store::ContentStore::open(dir.join("store"))
        .unwrap()
        .read(&digest)
        .unwrap()
}

/// How many layers the run took from the cache, from its "layers unpacked" log line.
fn cached(stderr: &str) -> usize {
    logged(stderr, "layers unpacked", "cached")
}

/// How many layer indexes the run loaded from the cache, from its "image indexed" log line.
fn indexes_cached(stderr: &str) -> usize {
    logged(stderr, "image indexed", "from_index_cache")
}

/// The stored layer indexes of the cache: file names (blob digest hex) and sizes, sorted.
fn stored_indexes(cache: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(cache.join("index"))
        .map(|d| {
            d.map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.metadata().unwrap().len())
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The complete entries of the cache: diff id -> (bytes, root dir).
fn entries(cache: &Path) -> Vec<(String, u64, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(cache.join("layers")).unwrap() {
        let e = e.unwrap();
        let marker: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path().join("complete")).unwrap()).unwrap();
        let diff_id = marker["diffId"].as_str().unwrap().to_owned();
        assert_eq!(
            diff_id,
            format!("sha256:{}", e.file_name().to_string_lossy()),
            "an entry's marker names another diff id"
        );
        out.push((
            diff_id,
            marker["bytes"].as_u64().unwrap(),
            e.path().join("root"),
        ));
    }
    out.sort();
    out
}

fn tmp_dirs(cache: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cache.join("tmp"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// The agent fixture's layers under `bottom` and over `top` extra layers, as a layout
/// running `/bin/cat /etc/shadowed`.
fn image_with(root: &Path, bottom: Vec<(String, Vec<u8>)>, top: Vec<Vec<u8>>) {
    let tar = Comp::Tar.media_type().to_owned();
    let mut blobs = bottom;
    blobs.extend(layers().into_iter().map(|l| (tar.clone(), l)));
    blobs.extend(top.into_iter().map(|l| (tar.clone(), l)));
    write_cat_shadowed_image(root, &blobs);
}

#[test]
fn concurrent_runs_of_one_image_share_one_entry_per_layer_and_record_exactly() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let manifest = write_image(&image);
    let cache = dir.path().join("cache");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let children = [
        spawn_run(&a, &image, &cache, &[]),
        spawn_run(&b, &image, &cache, &[]),
    ];
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| output_within(c, Duration::from_secs(300), "recorder run"))
        .collect();
    for (out, d) in outs.iter().zip([&a, &b]) {
        assert_eq!(out.status.code(), Some(0), "stderr:\n{}", stderr(out));
        assert_eq!(
            record_entries(&record(d, out), &manifest),
            expected_record(true)
        );
    }
    // One entry per layer, made by one run and used as it was by the other: every layer
    // was taken from the cache exactly once.
    let made = entries(&cache);
    assert_eq!(made.len(), layers().len(), "{made:?}");
    assert_eq!(
        cached(&stderr(&outs[0])) + cached(&stderr(&outs[1])),
        made.len(),
        "{}\n{}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );
    assert!(tmp_dirs(&cache).is_empty());
    // The cache is root's alone.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o700);
    // A third run takes everything from the cache, and records the same.
    let c = dir.path().join("c");
    let out = run(&c, &image, &cache, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(cached(&stderr(&out)), made.len());
    assert_eq!(
        record_entries(&record(&c, &out), &manifest),
        expected_record(true)
    );
}

#[test]
fn an_entry_cut_short_by_sigkill_is_not_used_and_is_made_again() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    const FILES: usize = 100_000;
    let mut big = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_size(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    big.append_data(&mut header.clone(), "f", &[][..]).unwrap();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    for i in 0..FILES {
        big.append_data(&mut header.clone(), format!("f/{i}"), &[][..])
            .unwrap();
    }
    let big = big.into_inner().unwrap();
    let big_diff = digest(&big);
    let image = dir.path().join("image");
    image_with(
        &image,
        vec![(Comp::Zstd.media_type().into(), Comp::Zstd.compress(&big))],
        Vec::new(),
    );
    let cache = dir.path().join("cache");

    // Killed while the many-files layer is half unpacked into the cache.
    let mut child = spawn_run(&dir.path().join("killed"), &image, &cache, &[]);
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let half = tmp_dirs(&cache)
            .iter()
            .any(|t| std::fs::read_dir(t.join("root/f")).is_ok_and(|d| d.count() > 1000));
        if half {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!("the recorder ended before it was killed:\n{}", stderr(&out));
        }
        assert!(
            Instant::now() < end,
            "the layer was not being unpacked after 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !cache.join("layers").join(&big_diff[7..]).exists(),
        "a half-made entry was put in place"
    );
    assert!(!tmp_dirs(&cache).is_empty(), "the half-made entry is gone");

    // A run of another image, without that layer, removes it once its outcome is out.
    let other_image = dir.path().join("other-image");
    image_with(&other_image, Vec::new(), vec![top(3)]);
    let other = run(&dir.path().join("other"), &other_image, &cache, &[]);
    assert_eq!(other.status.code(), Some(0), "{}", stderr(&other));
    assert!(tmp_dirs(&cache).is_empty(), "{:?}", tmp_dirs(&cache));
    assert!(
        stderr(&other).contains("removed a half-made layer cache entry of a dead run"),
        "{}",
        stderr(&other)
    );
    // The small layers are complete now (made before the kill or by that run); the other
    // image's own layer is not the image's.
    let complete_before = entries(&cache).len() - 1;

    // The next run does not use it: it makes the entry again, whole.
    let again = dir.path().join("again");
    let out = run(&again, &image, &cache, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Every complete entry is used; the half-made one is not.
    assert_eq!(cached(&stderr(&out)), complete_before, "{}", stderr(&out));
    let made = entries(&cache);
    let (_, _, root) = made
        .iter()
        .find(|(d, _, _)| *d == big_diff)
        .unwrap_or_else(|| panic!("no entry for the many-files layer: {made:?}"));
    assert_eq!(std::fs::read_dir(root.join("f")).unwrap().count(), FILES);
    assert!(tmp_dirs(&cache).is_empty(), "{:?}", tmp_dirs(&cache));
    assert!(String::from_utf8_lossy(&record(&again, &out)).contains("\"path\":\"etc/shadowed\""));
}

/// A top layer of one file of 64 KiB, different for each `tag`: the images differ in it only,
/// and their own entries are the same size.
fn top(tag: u8) -> Vec<u8> {
    let mut layer = LayerBuilder::new();
    layer.file("extra", 0o644, &vec![tag; 64 << 10]);
    layer.finish()
}

#[test]
fn cache_max_evicts_the_least_recently_used_and_gc_cache_empties_it() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let images: Vec<PathBuf> = (0..3)
        .map(|i| {
            let image = dir.path().join(format!("image{i}"));
            image_with(&image, Vec::new(), vec![top(i as u8 + 1)]);
            image
        })
        .collect();
    let own = |i: usize| digest(&top(i as u8 + 1));
    // Image 0, then 1: 0's own layer is the least recently used.
    for (i, image) in images[..2].iter().enumerate() {
        let out = run(&dir.path().join(format!("run{i}")), image, &cache, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let total: u64 = entries(&cache).iter().map(|(_, b, _)| b).sum();
    // Room for what is there now: image 2's own layer makes one entry too many.
    let out = run(
        &dir.path().join("run2"),
        &images[2],
        &cache,
        &["--cache-max", &total.to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let left: Vec<String> = entries(&cache).into_iter().map(|(d, _, _)| d).collect();
    assert!(
        !left.contains(&own(0)),
        "the least recently used stayed: {left:?}"
    );
    assert!(
        left.contains(&own(1)),
        "a more recently used one went: {left:?}"
    );
    assert!(left.contains(&own(2)), "{left:?}");
    assert_eq!(left.len(), layers().len() + 2, "{left:?}");
    let err = stderr(&out);
    assert!(err.contains("evicted from the layer cache"), "{err}");

    // gc --cache --dry-run lists the entries and removes nothing; gc --cache empties it.
    let gc = |extra: &[&str]| {
        let out = Command::new(recorder_bin())
            .args(["gc", "--cache", "--work-dir"])
            .arg(dir.path())
            .arg("--cache-dir")
            .arg(&cache)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed: serde_json::Value = serde_json::from_str(&gc(&["--dry-run", "--json"])).unwrap();
    let listed = listed["cache"]["removed"].as_array().unwrap().clone();
    assert_eq!(listed.len(), left.len(), "{listed:?}");
    for entry in &listed {
        assert!(left.contains(&entry["diffId"].as_str().unwrap().to_owned()));
        assert!(entry["bytes"].as_u64().unwrap() > 0, "{entry}");
        assert!(entry["lastUse"].as_u64().is_some(), "{entry}");
    }
    assert_eq!(entries(&cache).len(), left.len());
    let human = gc(&[]);
    assert!(human.contains(&own(1)), "{human}");
    assert!(entries(&cache).is_empty());
    // The next run makes every layer again.
    let out = run(&dir.path().join("run3"), &images[0], &cache, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(cached(&stderr(&out)), 0);
}

#[test]
fn a_cached_images_layer_indexes_are_cached_too_and_a_bad_one_is_made_again() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let image = dir.path().join("image");
    image_with(&image, Vec::new(), vec![top(7)]);
    let blobs: Vec<String> = std::fs::read_dir(image.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let layer_count = layers().len() + 1;
    let first = run(&dir.path().join("run0"), &image, &cache, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(indexes_cached(&stderr(&first)), 0);
    // One stored index a layer, named by the layer blob's digest.
    let stored = stored_indexes(&cache);
    assert_eq!(stored.len(), layer_count, "{stored:?}");
    for (name, _) in &stored {
        assert!(blobs.contains(name), "{name} is no blob of the image");
    }
    let expected = record(&dir.path().join("run0"), &first);

    // The second run reads no layer to index it, and records the same.
    let second = run(&dir.path().join("run1"), &image, &cache, &[]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert_eq!(indexes_cached(&stderr(&second)), layer_count);
    assert_eq!(cached(&stderr(&second)), layer_count);
    assert_eq!(record(&dir.path().join("run1"), &second), expected);

    // A stored index that is not one is ignored, the layer indexed again and the file replaced.
    let (bad, good_len) = stored[0].clone();
    std::fs::write(cache.join("index").join(&bad), b"not an index").unwrap();
    let third = run(&dir.path().join("run2"), &image, &cache, &[]);
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    assert_eq!(indexes_cached(&stderr(&third)), layer_count - 1);
    assert!(
        stderr(&third).contains("ignoring a stored layer index"),
        "{}",
        stderr(&third)
    );
    assert_eq!(record(&dir.path().join("run2"), &third), expected);
    assert_eq!(
        stored_indexes(&cache),
        stored,
        "{bad} ({good_len} bytes) was not made again"
    );

    // gc --cache takes the indexes with the layers.
    let out = Command::new(recorder_bin())
        .args(["gc", "--cache", "--work-dir"])
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(entries(&cache).is_empty());
    assert_eq!(stored_indexes(&cache), Vec::new());
}
