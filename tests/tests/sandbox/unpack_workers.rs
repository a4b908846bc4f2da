//! Small files created on worker threads: the tree, the stats and the errors are those of the
//! sequential unpacker, whatever a later entry does to a name a worker may not have created yet.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use recorder::sandbox::{UnpackBudget, UnpackStats, unpack_layer_with_workers};
use recorder_tests::root::require_root;
use tar::EntryType;

/// Workers in the parallel runs: more than this machine's cores, so that a directory's files
/// and the next directory's go to different threads.
const WORKERS: usize = 4;

/// Builds a layer entry by entry (GNU headers, PAX xattrs where asked).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    /// A layer of `dirs` directories of `files` small files each, first one larger than a
    /// chunk, then the files listed one directory after another in the first half of the
    /// directories and interleaved in the second; some with xattrs, an owner or set-id bits, one
    /// empty, one all zeros (a hole). Then 60 more in the last directory (`t0` to `t59`): the
    /// queue of one worker, which has not made the last ones yet when the next entry comes.
    fn busy(dirs: usize, files: usize) -> Self {
        let mut layer = Self(tar::Builder::new(Vec::new()));
        for d in 0..dirs {
            layer.entry(
                EntryType::Directory,
                &format!("d{d}/"),
                0o755,
                (0, 0),
                b"",
                None,
            );
        }
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        layer.entry(EntryType::Regular, "d0/big", 0o644, (0, 0), &big, None);
        let grouped = (0..dirs / 2).flat_map(|d| (0..files).map(move |f| (d, f)));
        let interleaved = (0..files).flat_map(|f| (dirs / 2..dirs).map(move |d| (d, f)));
        for (i, (d, f)) in grouped.chain(interleaved).enumerate() {
            let name = format!("d{d}/f{f}");
            let (mode, owner) = match i % 7 {
                0 => (0o4755, (0, 0)),
                1 => (0o640, (1000, 2000)),
                2 => (0o666, (0, 0)),
                _ => (0o644, (0, 0)),
            };
            let data = match i % 11 {
                0 => Vec::new(),
                1 => vec![0u8; 5000],
                _ => format!("{name} {i}\n").into_bytes(),
            };
            if i % 5 == 0 {
                layer.xattr(&[("SCHILY.xattr.user.k", name.as_bytes())]);
            }
            layer.entry(EntryType::Regular, &name, mode, owner, &data, None);
        }
        // One worker's queue, full: its last files are not made yet when the next entry comes.
        for t in 0..60 {
            layer.file(&format!("d{}/t{t}", dirs - 1), format!("{t}").as_bytes());
        }
        layer
    }

    fn xattr(&mut self, pairs: &[(&str, &[u8])]) -> &mut Self {
        self.0.append_pax_extensions(pairs.iter().copied()).unwrap();
        self
    }

    fn entry(
        &mut self,
        kind: EntryType,
        name: &str,
        mode: u32,
        (uid, gid): (u64, u64),
        data: &[u8],
        link: Option<&str>,
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_600_000_000 + data.len() as u64);
        h.set_size(data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(EntryType::Regular, name, 0o600, (0, 0), data, None)
    }

    fn dir(&mut self, name: &str, mode: u32, gid: u64) -> &mut Self {
        self.entry(EntryType::Directory, name, mode, (0, gid), b"", None)
    }

    fn link(&mut self, kind: EntryType, name: &str, target: &str) -> &mut Self {
        self.entry(kind, name, 0o777, (0, 0), b"", Some(target))
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// Everything a workload could see of a tree: per path, its type, mode, owner, mtime, size,
/// data or link target, xattr, and which earlier path it is a hardlink of.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(
        root: &Path,
        dir: &Path,
        inodes: &mut BTreeMap<u64, String>,
        out: &mut BTreeMap<String, String>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let content = if m.file_type().is_file() {
                let mut hasher = std::hash::DefaultHasher::new();
                std::fs::read(&path).unwrap().hash(&mut hasher);
                format!("data={:x} blocks={}", hasher.finish(), m.blocks() > 0)
            } else if m.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(&path).unwrap())
            } else {
                format!("rdev={}", m.rdev())
            };
            let link = match inodes.get(&m.ino()) {
                Some(first) if !m.is_dir() => format!(" link of {first}"),
                _ => {
                    inodes.insert(m.ino(), rel.clone());
                    String::new()
                }
            };
            let xattr = xattr(&path, c"user.k");
            let line = format!(
                "mode={:o} owner={}:{} mtime={} size={} {content} xattr={xattr:?}{link}",
                m.mode(),
                m.uid(),
                m.gid(),
                // A whiteout, or a directory made by the test: the time it was made.
                if m.mtime() < 1_700_000_000 {
                    m.mtime().to_string()
                } else {
                    "now".to_owned()
                },
                m.len(),
            );
            out.insert(rel, line);
            if m.is_dir() {
                walk(root, &path, inodes, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut BTreeMap::new(), &mut out);
    out
}

fn xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut v = [0u8; 256];
    // SAFETY: valid C strings and a live buffer of the given length.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    (n >= 0).then(|| v[..n as usize].to_vec())
}

/// Unpacks `tar` with `workers` into a fresh dir (made by `prepare` first); the outcome (stats
/// or error, one line) and the tree.
fn unpack(
    tar: &[u8],
    workers: usize,
    budget: impl Fn() -> UnpackBudget,
    prepare: &dyn Fn(&Path),
) -> (Result<UnpackStats, String>, BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let result = unpack_layer_with_workers(tar, dir.path(), &mut budget(), workers)
        .map_err(|e| recorder::errors::Chain(&e).to_string());
    (result, snapshot(dir.path()))
}

/// The paths whose lines differ, each with both lines: short enough to read in a failure.
fn differences(
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut paths: Vec<&String> = got.keys().chain(want.keys()).collect();
    paths.sort();
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| got.get(*p) != want.get(*p))
        .map(|p| (p.clone(), got.get(p).cloned(), want.get(p).cloned()))
        .collect()
}

#[test]
fn workers_make_the_tree_the_sequential_unpacker_makes_whatever_later_entries_do() {
    require_root();
    type Case = (&'static str, fn(&mut Layer));
    // (what the entries after the busy prefix do, those entries)
    let cases: &[Case] = &[
        ("nothing", |_| {}),
        ("a duplicate of a file", |l| {
            l.entry(
                EntryType::Regular,
                "d9/t59",
                0o4711,
                (5, 6),
                b"second",
                None,
            );
        }),
        ("a duplicate in the same directory twice", |l| {
            l.file("d9/t58", b"two").file("d9/t58", b"three");
        }),
        ("a hardlink to a file", |l| {
            l.link(EntryType::Link, "d1/hard", "d9/t59");
        }),
        ("a hardlink, then its target replaced", |l| {
            l.link(EntryType::Link, "d1/hard", "d9/t59")
                .file("d9/t59", b"new");
        }),
        ("a whiteout of a file", |l| {
            l.file("d9/.wh.t59", b"");
        }),
        ("a whiteout of a directory with files", |l| {
            l.file(".wh.d7", b"");
        }),
        ("a directory replacing a file", |l| {
            l.dir("d9/t59/", 0o750, 0).file("d9/t59/inner", b"in");
        }),
        ("a file replacing a directory with files", |l| {
            l.file("d6", b"file");
        }),
        ("a symlink replacing a file", |l| {
            l.link(EntryType::Symlink, "d9/t59", "../d0/f0");
        }),
        ("a device replacing a file", |l| {
            l.entry(EntryType::Fifo, "d9/t59", 0o600, (0, 0), b"", None);
        }),
        ("an entry below a file", |l| {
            l.file("d9/t59/below", b"x");
        }),
        ("a set-group-id directory after its files", |l| {
            l.dir("d8/", 0o2775, 3000).file("d8/after", b"a");
        }),
        ("an opaque marker among files", |l| {
            l.file("d9/.wh..wh..opq", b"").file("d9/f99", b"z");
        }),
    ];
    for (what, later) in cases {
        let mut layer = Layer::busy(10, 40);
        later(&mut layer);
        let tar = layer.finish();
        let (want, want_tree) = unpack(&tar, 1, UnpackBudget::unlimited, &|_| {});
        // Several times: the workers' timing differs from one run to the next.
        for run in 0..4 {
            let (got, got_tree) = unpack(&tar, WORKERS, UnpackBudget::unlimited, &|_| {});
            assert_eq!(got, want, "{what}, run {run}");
            let diff = differences(&got_tree, &want_tree);
            assert!(
                diff.is_empty(),
                "{what}, run {run}: (path, got, want) {diff:#?}"
            );
        }
    }
}

#[test]
fn a_failure_names_the_first_failing_entry_as_the_sequential_unpacker_does() {
    require_root();
    // A directory with something in it where the layer puts a file: the worker creating the
    // file cannot replace it.
    fn occupied(root: &Path, at: &str) {
        std::fs::create_dir_all(root.join(at).join("child")).unwrap();
    }
    type Case = (&'static str, fn(&Path), fn() -> UnpackBudget, &'static str);
    // (what, the target before, the budget, the error)
    let cases: &[Case] = &[
        (
            "a file's name taken by a directory",
            |root| occupied(root, "d3/f9"),
            UnpackBudget::unlimited,
            "layer entry \"d3/f9\": replace existing entry: Directory not empty (os error 39)",
        ),
        (
            "two of them: the first in the layer's order",
            |root| {
                occupied(root, "d6/f30");
                occupied(root, "d2/f3");
            },
            UnpackBudget::unlimited,
            "layer entry \"d2/f3\": replace existing entry: Directory not empty (os error 39)",
        ),
        (
            "a file over the budget",
            |_| {},
            || UnpackBudget::new(400_000),
            "layer entry \"d8/f34\": the unpacked image would exceed 400000 bytes (--max-unpacked)",
        ),
        (
            "cancelled",
            |_| {},
            || UnpackBudget::unlimited().cancel_on(Arc::new(AtomicBool::new(true))),
            "unpacking was cancelled",
        ),
    ];
    let tar = Layer::busy(10, 40).finish();
    for (what, prepare, budget, error) in cases {
        let (want, want_tree) = unpack(&tar, 1, budget, prepare);
        assert_eq!(
            want.as_ref().err().map(String::as_str),
            Some(*error),
            "{what}"
        );
        for run in 0..3 {
            let (got, got_tree) = unpack(&tar, WORKERS, budget, prepare);
            assert_eq!(got, want, "{what}, run {run}");
            // Files after the failing one may be made or not: only the failing one is compared.
            if let Some(path) = error.split('"').nth(1) {
                assert_eq!(got_tree.get(path), want_tree.get(path), "{what}, run {run}");
            }
        }
    }
}

#[test]
fn stats_count_what_workers_created() {
    require_root();
    let tar = Layer::busy(3, 10).finish();
    let (sequential, _) = unpack(&tar, 1, UnpackBudget::unlimited, &|_| {});
    let (parallel, _) = unpack(&tar, WORKERS, UnpackBudget::unlimited, &|_| {});
    let stats = parallel.unwrap();
    assert_eq!(Ok(stats.clone()), sequential);
    // 3 dirs, the big file, 30 files, 60 more; 6 files with an xattr.
    assert_eq!((stats.entries, stats.xattrs), (94, 6));
}
