//! Layers unpacked from tars: files, links, nodes, metadata, whiteouts, attributes; hostile names refused.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use recorder::sandbox::{UnpackError, unpack_layer};
use recorder_tests::root::require_root;
use recorder_tests::sandbox_fixtures::LayerBuilder;
use tar::EntryType;

#[test]
fn unpack_creates_files_links_nodes_and_metadata() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut layer = LayerBuilder::new();
    layer
        .dir("./usr/", 0o755)
        .file_owned("./usr/tool", 0o4755, 1000, 2000, b"#!/bin/sh\n")
        .file("deep/implicit/parent", 0o600, b"p")
        .symlink("usr/abs", "/etc/passwd")
        .symlink("usr/rel", "../deep")
        .hardlink("usr/tool2", "./usr/tool")
        .node(EntryType::Char, "dev-null", 0o666, 1, 3)
        .node(EntryType::Block, "blk", 0o600, 7, 0)
        .node(EntryType::Fifo, "pipe", 0o620, 0, 0)
        .file("replaced", 0o644, b"first")
        .file("replaced", 0o644, b"second");
    let stats = unpack_layer(layer.finish().as_slice(), dir.path()).unwrap();
    assert_eq!(stats.whiteouts, 0);

    let root = dir.path();
    let tool = std::fs::symlink_metadata(root.join("usr/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o4755, "setuid must survive chown");
    assert_eq!((tool.uid(), tool.gid()), (1000, 2000));
    assert_eq!(tool.mtime(), 1_600_000_000);
    assert_eq!(tool.nlink(), 2);
    assert_eq!(
        std::fs::symlink_metadata(root.join("usr/tool2"))
            .unwrap()
            .ino(),
        tool.ino()
    );
    assert_eq!(
        std::fs::read(root.join("deep/implicit/parent")).unwrap(),
        b"p"
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        std::fs::read_link(root.join("usr/rel")).unwrap(),
        Path::new("../deep")
    );
    let null = std::fs::symlink_metadata(root.join("dev-null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(null.rdev()),
            nix::sys::stat::minor(null.rdev())
        ),
        (1, 3)
    );
    assert_eq!(null.mode() & 0o777, 0o666);
    assert!(
        std::fs::symlink_metadata(root.join("blk"))
            .unwrap()
            .file_type()
            .is_block_device()
    );
    let fifo = std::fs::symlink_metadata(root.join("pipe")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o777, 0o620);
    assert_eq!(std::fs::read(root.join("replaced")).unwrap(), b"second");
    let usr = std::fs::metadata(root.join("usr")).unwrap();
    assert_eq!(
        usr.mtime(),
        1_600_000_000,
        "directory mtimes are set after their children"
    );
    assert_eq!(usr.permissions().mode() & 0o777, 0o755);
}

#[test]
fn unpack_converts_whiteouts_and_opaque_dirs() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut layer = LayerBuilder::new();
    layer
        .dir("a", 0o755)
        .file("a/.wh.gone", 0o644, b"")
        .file("b/.wh..wh..opq", 0o644, b"")
        .file("b/kept", 0o644, b"k")
        .file("a/.wh..wh.plnk", 0o644, b"");
    let stats = unpack_layer(layer.finish().as_slice(), dir.path()).unwrap();
    assert_eq!((stats.whiteouts, stats.opaque_dirs), (1, 1));

    let gone = std::fs::symlink_metadata(dir.path().join("a/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!dir.path().join("a/.wh.gone").exists());
    assert!(!dir.path().join("a/.wh..wh.plnk").exists());
    assert!(!dir.path().join("b/.wh..wh..opq").exists());
    let out = std::process::Command::new("getfattr")
        .args([
            "--absolute-names",
            "--only-values",
            "-n",
            "trusted.overlay.opaque",
        ])
        .arg(dir.path().join("b"))
        .output();
    match out {
        Ok(out) => assert_eq!(String::from_utf8_lossy(&out.stdout), "y"),
        Err(_) => {
            // No getfattr: read the xattr directly.
            let v = xattr(&dir.path().join("b"), c"trusted.overlay.opaque").unwrap_or_default();
            assert_eq!(&v[..], b"y");
        }
    }
}

#[test]
fn unpack_rejects_hostile_names_and_writes_nothing_outside() {
    require_root();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"intact").unwrap();
    let outside_str = outside.path().to_str().unwrap().to_owned();

    type Case = (&'static str, Box<dyn Fn(&mut LayerBuilder)>);
    let cases: Vec<Case> = vec![
        // An absolute name pointing into this test's own directory, never a global path.
        ("absolute", {
            let evil = format!("{outside_str}/evil");
            Box::new(move |l: &mut LayerBuilder| {
                l.raw(EntryType::Regular, evil.as_bytes(), None, b"x");
            })
        }),
        (
            "dotdot",
            Box::new(|l: &mut LayerBuilder| {
                l.raw(EntryType::Regular, b"../evil", None, b"x");
            }),
        ),
        (
            "nested dotdot",
            Box::new(|l: &mut LayerBuilder| {
                l.raw(EntryType::Regular, b"a/b/../../../evil", None, b"x");
            }),
        ),
        ("symlink parent", {
            let target = outside_str.clone();
            Box::new(move |l: &mut LayerBuilder| {
                l.symlink("esc", &target);
                l.raw(EntryType::Regular, b"esc/victim", None, b"pwned");
            })
        }),
        (
            "hardlink escape",
            Box::new(|l: &mut LayerBuilder| {
                l.hardlink("h", "../../../etc/passwd");
            }),
        ),
        ("hardlink through symlink", {
            let target = outside_str.clone();
            Box::new(move |l: &mut LayerBuilder| {
                l.symlink("esc", &target);
                l.hardlink("h", "esc/victim");
            })
        }),
        ("whiteout through symlink", {
            let target = outside_str.clone();
            Box::new(move |l: &mut LayerBuilder| {
                l.symlink("esc", &target);
                l.file("esc/.wh.victim", 0o644, b"");
            })
        }),
    ];
    for (what, build) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut layer = LayerBuilder::new();
        build(&mut layer);
        let err = unpack_layer(layer.finish().as_slice(), dir.path())
            .expect_err(&format!("{what}: hostile layer accepted"));
        assert!(matches!(err, UnpackError::Hostile { .. }), "{what}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("layer entry"),
            "{what}: error does not name the entry: {message}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"intact", "{what}");
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            1,
            "{what}"
        );
    }
    assert!(!outside.path().join("evil").exists());
}

/// An xattr of `path` (not following a symlink), if it has it.
fn xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut v = [0u8; 256];
    // SAFETY: valid C strings and a live buffer of the given length.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    (n >= 0).then(|| v[..n as usize].to_vec())
}

#[test]
fn unpack_keeps_every_attribute_the_workload_can_see() {
    require_root();
    // vfs_cap_data v2, effective, permitting CAP_NET_RAW (13): what ping carries.
    let cap: &[u8] = &[
        0x01, 0, 0, 0x02, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    // (name, mode, uid, gid, mtime): modes the umask would narrow, set-id bits, owners, and
    // a file in a set-group-id directory (which would give it the directory's group).
    let files: &[(&str, u32, u64, u64, u64)] = &[
        ("plain", 0o644, 0, 0, 1_500_000_000),
        ("writable", 0o666, 0, 0, 1_500_000_001),
        ("exec", 0o755, 0, 0, 1_500_000_002),
        ("readonly", 0o444, 0, 0, 1_500_000_003),
        ("owned", 0o640, 1000, 2000, 1_500_000_004),
        ("setgid", 0o2755, 0, 50, 1_500_000_005),
        ("sgid-dir/inside", 0o644, 0, 0, 1_500_000_006),
        ("sgid-dir/theirs", 0o600, 7, 8, 1_500_000_007),
        ("sticky", 0o1777, 0, 0, 1_500_000_008),
    ];
    let mut b = tar::Builder::new(Vec::new());
    let mut dir_header = tar::Header::new_ustar();
    dir_header.set_entry_type(EntryType::Directory);
    dir_header.set_mode(0o2775);
    dir_header.set_uid(0);
    dir_header.set_gid(3000);
    dir_header.set_mtime(1_400_000_000);
    dir_header.set_size(0);
    b.append_data(&mut dir_header, "sgid-dir/", &[][..])
        .unwrap();
    for (name, mode, uid, gid, mtime) in files {
        if *name == "plain" {
            b.append_pax_extensions([
                ("SCHILY.xattr.user.origin", &b"layer"[..]),
                ("SCHILY.xattr.security.capability", cap),
                // Would forge an opaque dir in the lower dir: dropped.
                ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ])
            .unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(*mtime);
        h.set_size(name.len() as u64);
        b.append_data(&mut h, name, name.as_bytes()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let stats = unpack_layer(b.into_inner().unwrap().as_slice(), dir.path()).unwrap();
    assert_eq!(stats.xattrs, 2);
    for (name, mode, uid, gid, mtime) in files {
        let path = dir.path().join(name);
        let m = std::fs::symlink_metadata(&path).unwrap();
        let got = (
            m.mode() & 0o7777,
            m.uid() as u64,
            m.gid() as u64,
            m.mtime() as u64,
        );
        assert_eq!(got, (*mode, *uid, *gid, *mtime), "{name}");
        assert_eq!(std::fs::read(&path).unwrap(), name.as_bytes(), "{name}");
    }
    let plain = dir.path().join("plain");
    assert_eq!(
        xattr(&plain, c"user.origin").as_deref(),
        Some(&b"layer"[..])
    );
    assert_eq!(xattr(&plain, c"security.capability").as_deref(), Some(cap));
    assert_eq!(xattr(&plain, c"trusted.overlay.opaque"), None);
    let sgid = std::fs::symlink_metadata(dir.path().join("sgid-dir")).unwrap();
    assert_eq!((sgid.mode() & 0o7777, sgid.gid()), (0o2775, 3000));
}
