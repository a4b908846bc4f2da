//! Behaviour tables of the merged view, each run on uncompressed, gzip and zstd layers.

use recorder::image::{EntryKind, Image, IndexOptions, MergedView, Platform, Reason, index_image};
use recorder_tests::image_fixtures::{Comp, E, oci_layout};

/// Expected answer for one path: the layer and kind, or why none.
#[derive(Debug, Clone)]
enum Want {
    At(usize, EntryKind),
    No(Reason),
}
use Want::{At, No};

fn wh(layer: usize, path: &str) -> Want {
    No(Reason::Whiteout {
        layer,
        path: path.into(),
    })
}

fn opq(layer: usize, dir: &str) -> Want {
    No(Reason::OpaqueDir {
        layer,
        dir: dir.into(),
    })
}

const MISSING: Want = No(Reason::NotInImage);

fn build(layers: &[Vec<E>], comp: Comp) -> (tempfile::TempDir, Image, MergedView) {
    let dir = tempfile::tempdir().unwrap();
    oci_layout(dir.path(), "test", layers, comp);
    let image = Image::open_oci_layout(dir.path(), Some("test"), &Platform::host()).unwrap();
    let view = index_image(&image, &IndexOptions::default()).unwrap();
    (dir, image, view)
}

fn check_which(layers: Vec<Vec<E>>, table: &[(&str, Want)]) {
    for comp in Comp::ALL {
        let (_dir, image, view) = build(&layers, comp);
        assert_eq!(image.layers().len(), layers.len());
        for (path, want) in table {
            let got = view.which(path.as_bytes()).result;
            match (want, &got) {
                (At(l, k), Ok(f)) if f.layer == *l && f.kind == *k => {}
                (No(r), Err(g)) if r == g => {}
                _ => panic!("{comp:?}: which({path:?}) = {got:?}, want {want:?}"),
            }
        }
    }
}

#[test]
fn single_layer() {
    check_which(
        vec![vec![
            E::Dir("etc/"),
            E::File("etc/passwd", b"root:x:0:0"),
            E::Symlink("etc/mtab", "/proc/mounts"),
            E::File("usr/lib/libc.so", b"elf"),
        ]],
        &[
            ("etc", At(0, EntryKind::Dir)),
            ("etc/passwd", At(0, EntryKind::File)),
            ("/etc/passwd", At(0, EntryKind::File)),
            ("etc/mtab", At(0, EntryKind::Symlink)),
            ("usr/lib/libc.so", At(0, EntryKind::File)),
            // Only implied by its children: the seed's index has no entry for it either.
            ("usr/lib", MISSING),
            ("etc/shadow", MISSING),
            (
                "etc/passwd/x",
                No(Reason::NotADirectory {
                    layer: 0,
                    ancestor: "etc/passwd".into(),
                }),
            ),
        ],
    );
}

#[test]
fn three_overlaid_layers() {
    check_which(
        vec![
            vec![
                E::Dir("app/"),
                E::File("app/a", b"0"),
                E::File("app/b", b"0"),
                E::File("base", b"0"),
            ],
            vec![E::File("app/b", b"1"), E::File("app/c", b"1")],
            vec![E::Dir("app/"), E::File("app/c", b"2"), E::File("top", b"2")],
        ],
        &[
            ("app", At(2, EntryKind::Dir)),
            ("app/a", At(0, EntryKind::File)),
            ("app/b", At(1, EntryKind::File)),
            ("app/c", At(2, EntryKind::File)),
            ("base", At(0, EntryKind::File)),
            ("top", At(2, EntryKind::File)),
            ("app/d", MISSING),
        ],
    );
}

#[test]
fn name_prefixes_are_cleaned() {
    check_which(
        vec![vec![
            E::Dir("./"),
            E::File("./dot", b"x"),
            E::File("/abs", b"x"),
            E::File("../up", b"x"),
            E::File("a/../../clamped", b"x"),
            E::File("plain", b"x"),
            E::File("./d/./e//f", b"x"),
        ]],
        &[
            ("", At(0, EntryKind::Dir)),
            ("/", At(0, EntryKind::Dir)),
            ("dot", At(0, EntryKind::File)),
            ("./dot", At(0, EntryKind::File)),
            ("abs", At(0, EntryKind::File)),
            ("up", At(0, EntryKind::File)),
            ("../../up", At(0, EntryKind::File)),
            ("clamped", At(0, EntryKind::File)),
            ("plain", At(0, EntryKind::File)),
            ("d/e/f", At(0, EntryKind::File)),
            ("/x/../d/e/./f", At(0, EntryKind::File)),
        ],
    );
}

#[test]
fn whiteout_file() {
    check_which(
        vec![
            vec![
                E::File("etc/a", b"0"),
                E::File("etc/b", b"0"),
                E::File("etc/c", b"0"),
            ],
            vec![E::File("etc/.wh.a", b""), E::File("etc/.wh.c", b"")],
            vec![E::File("etc/c", b"2")],
        ],
        &[
            ("etc/a", wh(1, "etc/a")),
            ("etc/b", At(0, EntryKind::File)),
            ("etc/c", At(2, EntryKind::File)),
            // The marker itself is never visible in an overlay mount, so a runtime-made
            // `/etc/.wh.a` (or anything below a `.wh.` name) is not an image file.
            ("etc/.wh.a", MISSING),
            ("etc/.wh.c", MISSING),
            ("etc/.wh.b", MISSING),
            (".wh.etc/a", MISSING),
        ],
    );
}

#[test]
fn opaque_dir() {
    check_which(
        vec![
            vec![
                E::Dir("d/"),
                E::File("d/x", b"0"),
                E::File("d/sub/y", b"0"),
                E::File("keep", b"0"),
            ],
            vec![
                E::Dir("d/"),
                E::File("d/.wh..wh..opq", b""),
                E::File("d/z", b"1"),
            ],
        ],
        &[
            ("d", At(1, EntryKind::Dir)),
            ("d/x", opq(1, "d")),
            ("d/sub/y", opq(1, "d")),
            ("d/z", At(1, EntryKind::File)),
            ("keep", At(0, EntryKind::File)),
        ],
    );
}

#[test]
fn devices_and_fifos() {
    check_which(
        vec![vec![
            E::Char("dev/null", 1, 3),
            E::Block("dev/sda", 8, 0),
            E::Fifo("run/pipe"),
        ]],
        &[
            ("dev/null", At(0, EntryKind::CharDevice)),
            ("dev/sda", At(0, EntryKind::BlockDevice)),
            ("run/pipe", At(0, EntryKind::Fifo)),
        ],
    );
    for comp in Comp::ALL {
        let (_d, _i, view) = build(
            &[vec![E::Char("dev/null", 1, 3), E::Block("dev/sda", 8, 1)]],
            comp,
        );
        assert_eq!(
            view.layers()[0].get(b"dev/null").unwrap().device,
            Some((1, 3))
        );
        assert_eq!(
            view.layers()[0].get(b"dev/sda").unwrap().device,
            Some((8, 1))
        );
    }
}

#[test]
fn whiteout_of_an_ancestor_directory() {
    check_which(
        vec![
            vec![
                E::Dir("a/"),
                E::Dir("a/b/"),
                E::File("a/b/c/file", b"0"),
                E::File("x/y/z", b"0"),
            ],
            vec![E::File(".wh.a", b""), E::File("x/.wh.y", b"")],
        ],
        &[
            // The seed checks the immediate parent only and would answer layer 0 here.
            ("a/b/c/file", wh(1, "a")),
            ("a/b", wh(1, "a")),
            ("a", wh(1, "a")),
            ("x/y/z", wh(1, "x/y")),
        ],
    );
}

#[test]
fn hardlinks_map_to_the_layer_holding_the_link() {
    check_which(
        vec![
            vec![E::File("bin/busybox", b"elf")],
            vec![
                E::Hardlink("bin/ls", "bin/busybox"),
                E::Hardlink("./bin/cat", "./bin/busybox"),
            ],
        ],
        &[
            ("bin/busybox", At(0, EntryKind::File)),
            ("bin/ls", At(1, EntryKind::Hardlink)),
            ("bin/cat", At(1, EntryKind::Hardlink)),
        ],
    );
    let (_d, _i, view) = build(
        &[vec![E::File("a", b"x"), E::Hardlink("b", "./a")]],
        Comp::Gzip,
    );
    assert_eq!(view.layers()[0].get(b"b").unwrap().target, Some(&b"a"[..]));
}

/// `(path, [(symlink, layer)...], final target, expected)` for `which_follow`.
type FollowRow = (
    &'static str,
    &'static [(&'static str, usize)],
    &'static str,
    Want,
);

fn check_follow(layers: Vec<Vec<E>>, table: &[FollowRow]) {
    for comp in Comp::ALL {
        let (_dir, _image, view) = build(&layers, comp);
        for (path, chain, target, want) in table {
            let r = view.which_follow(path.as_bytes());
            let got_chain: Vec<(String, usize)> = r
                .chain
                .iter()
                .map(|l| (String::from_utf8(l.path.clone()).unwrap(), l.layer))
                .collect();
            let want_chain: Vec<(String, usize)> =
                chain.iter().map(|(p, l)| ((*p).to_owned(), *l)).collect();
            assert_eq!(got_chain, want_chain, "{comp:?}: chain of {path:?}");
            match (want, &r.result) {
                (At(l, k), Ok(f)) if f.layer == *l && f.kind == *k => {
                    assert_eq!(r.target, target.as_bytes(), "{comp:?}: target of {path:?}")
                }
                (No(w), Err(g)) if w == g => {}
                _ => panic!(
                    "{comp:?}: which_follow({path:?}) = {:?}, want {want:?}",
                    r.result
                ),
            }
        }
    }
}

#[test]
fn symlink_chains_across_layers() {
    check_follow(
        vec![
            vec![
                E::Dir("usr/"),
                E::Dir("usr/bin/"),
                E::File("usr/bin/dash", b"elf"),
                E::Symlink("bin", "usr/bin"),
                E::Symlink("loop/a", "b"),
                E::Symlink("loop/b", "./a"),
            ],
            vec![
                E::Symlink("usr/bin/sh", "dash"),
                E::Symlink("escape", "../../../../usr/bin/dash"),
            ],
            vec![
                E::Symlink("etc/alt", "/bin/sh"),
                E::Symlink("rel", "etc/../bin/sh"),
                E::Symlink("dangling", "/nowhere"),
                E::Symlink("self", "self"),
            ],
        ],
        &[
            ("usr/bin/dash", &[], "usr/bin/dash", At(0, EntryKind::File)),
            (
                "etc/alt",
                &[("etc/alt", 2), ("bin", 0), ("usr/bin/sh", 1)],
                "usr/bin/dash",
                At(0, EntryKind::File),
            ),
            (
                "bin/dash",
                &[("bin", 0)],
                "usr/bin/dash",
                At(0, EntryKind::File),
            ),
            ("bin", &[("bin", 0)], "usr/bin", At(0, EntryKind::Dir)),
            (
                "escape",
                &[("escape", 1)],
                "usr/bin/dash",
                At(0, EntryKind::File),
            ),
            (
                "rel",
                &[("rel", 2), ("bin", 0), ("usr/bin/sh", 1)],
                "usr/bin/dash",
                At(0, EntryKind::File),
            ),
            // `..` applies after the symlink: bin/.. is usr, not the root.
            (
                "bin/../bin/dash",
                &[("bin", 0)],
                "usr/bin/dash",
                At(0, EntryKind::File),
            ),
            ("dangling", &[("dangling", 2)], "", MISSING),
            (
                "loop/a",
                &[("loop/a", 0), ("loop/b", 0)],
                "",
                No(Reason::SymlinkLoop {
                    link: "loop/a".into(),
                }),
            ),
            (
                "self",
                &[("self", 2)],
                "",
                No(Reason::SymlinkLoop {
                    link: "self".into(),
                }),
            ),
        ],
    );
}

#[test]
fn at_most_forty_links() {
    // l0 -> l1 -> ... -> lN -> target: N+1 links.
    fn chain(n: usize) -> Vec<E> {
        let mut v = vec![E::File("target", b"x")];
        for i in 0..n {
            let name: &'static str = Box::leak(format!("l{i}").into_boxed_str());
            let to: &'static str = Box::leak(
                if i + 1 == n {
                    "target".to_owned()
                } else {
                    format!("l{}", i + 1)
                }
                .into_boxed_str(),
            );
            v.push(E::Symlink(name, to));
        }
        v
    }
    for comp in Comp::ALL {
        let (_d, _i, view) = build(&[chain(40)], comp);
        let r = view.which_follow(b"l0");
        assert_eq!(r.chain.len(), 40);
        assert_eq!(r.result.unwrap().kind, EntryKind::File);
        let (_d, _i, view) = build(&[chain(41)], comp);
        assert_eq!(view.which_follow(b"l0").result, Err(Reason::TooManyLinks));
    }
}

#[test]
fn follow_respects_whiteouts_on_the_way() {
    check_follow(
        vec![
            vec![E::File("real/f", b"0"), E::Symlink("link", "real")],
            vec![E::File(".wh.real", b"")],
        ],
        &[("link/f", &[("link", 0)], "real/f", wh(1, "real"))],
    );
}
