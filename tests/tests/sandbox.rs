//! The profiling sandbox, for real: layers unpacked from tars, an overlay root in private
//! mount and PID namespaces, a workload built from host binaries. Needs root.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use recorder::sandbox::{
    ImageProcess, ProcessSpec, Sandbox, SandboxError, SpecError, UnpackError, unpack_layer,
};
use recorder_tests::sandbox_fixtures::{LayerBuilder, mounts_mentioning, require_root};
use tar::EntryType;

const PROGRAMS: &[&str] = &["sh", "cat", "ls", "id", "sleep"];

/// Two layers: a base with binaries and files, and a top one that overrides, whites out and
/// makes a directory opaque. Returns the lowerdirs, bottom first.
fn image(dir: &Path) -> Vec<PathBuf> {
    let mut base = LayerBuilder::new();
    base.dir("etc", 0o755)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
        )
        .file("etc/marker", 0o644, b"base\n")
        .file("etc/gone", 0o644, b"x\n")
        .dir("data", 0o755)
        .dir("data/opq", 0o755)
        .file("data/opq/old", 0o644, b"old\n")
        .host_programs(PROGRAMS);
    let mut top = LayerBuilder::new();
    top.file("etc/marker", 0o644, b"top\n")
        .file("etc/.wh.gone", 0o644, b"")
        .file("data/opq/.wh..wh..opq", 0o644, b"")
        .file("data/opq/new", 0o644, b"new\n");
    [("0", base), ("1", top)]
        .into_iter()
        .map(|(name, layer)| {
            let path = dir.join(name);
            std::fs::create_dir(&path).unwrap();
            unpack_layer(layer.finish().as_slice(), &path).unwrap();
            path
        })
        .collect()
}

fn spec(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    }
}

/// A pipe whose write end becomes the workload's stdout; read the output after it exits.
fn capture() -> (std::os::fd::OwnedFd, std::fs::File) {
    let (r, w) = nix::unistd::pipe().unwrap();
    (w, std::fs::File::from(r))
}

fn read_all(mut f: std::fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

fn assert_cleaned(scratch: &Path, layers: &Path) {
    assert!(
        !scratch.exists(),
        "scratch dir {} left behind",
        scratch.display()
    );
    let left = mounts_mentioning(scratch);
    assert!(
        left.is_empty(),
        "mounts of ours left in /proc/self/mountinfo: {left:?}"
    );
    let left = mounts_mentioning(layers);
    assert!(
        left.is_empty(),
        "mounts of ours left in /proc/self/mountinfo: {left:?}"
    );
}

#[test]
fn unpack_creates_files_links_nodes_and_metadata() {
    require_root("unpack_creates_files_links_nodes_and_metadata");
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
    require_root("unpack_converts_whiteouts_and_opaque_dirs");
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
            let c = std::ffi::CString::new(dir.path().join("b").to_str().unwrap()).unwrap();
            let mut v = [0u8; 4];
            // SAFETY: valid C strings and a live buffer of the given length.
            let n = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    v.as_mut_ptr().cast(),
                    v.len(),
                )
            };
            assert_eq!(&v[..n.max(0) as usize], b"y");
        }
    }
}

#[test]
fn unpack_rejects_hostile_names_and_writes_nothing_outside() {
    require_root("unpack_rejects_hostile_names_and_writes_nothing_outside");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_workload_in_a_private_overlay_root() {
    require_root("runs_the_workload_in_a_private_overlay_root");
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let script = "echo pid=$$; cat /etc/marker; \
        if [ -e /etc/gone ]; then echo gone=present; else echo gone=absent; fi; \
        ls /data/opq; \
        echo hi > /tmp/t && cat /tmp/t; echo up > /written; \
        [ -c /dev/null ] && echo devnull=ok; [ -c /dev/urandom ] && echo urandom=ok; \
        [ -L /dev/ptmx ] && echo ptmx=ok; \
        while read dev mnt fs rest; do echo mount $mnt $fs; done < /proc/mounts; \
        ls /proc | while read p; do case $p in [0-9]*) echo proc=$p;; esac; done; \
        exit 7";
    let (w, r) = capture();
    let pending = Sandbox::new(layers.clone(), scratch.clone(), spec(&["sh", "-c", script]))
        .stdout(w)
        .start()
        .unwrap();
    assert!(scratch.join("upper").is_dir());

    let host_ns = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
    let child_ns = std::fs::metadata(format!("/proc/{}/ns/mnt", pending.pid()))
        .unwrap()
        .ino();
    assert_eq!(pending.mntns_inode(), child_ns);
    assert_ne!(pending.mntns_inode(), host_ns);
    // The overlay is visible in the child's namespace only.
    let theirs = std::fs::read_to_string(format!("/proc/{}/mountinfo", pending.pid())).unwrap();
    assert!(theirs.contains(" - overlay "), "{theirs}");
    assert!(
        mounts_mentioning(&scratch).is_empty(),
        "overlay leaked into the host namespace"
    );

    let running = pending.release().unwrap();
    let status = running.wait().await.unwrap();
    assert_eq!(status.code(), Some(7));
    let out = read_all(r);
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "pid=1",
        "top",
        "gone=absent",
        "new",
        "hi",
        "devnull=ok",
        "urandom=ok",
        "ptmx=ok",
        "mount / overlay",
        "mount /proc proc",
        "mount /dev tmpfs",
        "mount /dev/pts devpts",
        "mount /dev/shm tmpfs",
        "mount /tmp tmpfs",
        "mount /sys sysfs",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in output:\n{out}");
    }
    assert!(
        !lines.contains(&"old"),
        "opaque dir let the lower layer through:\n{out}"
    );
    // Only the container's processes are visible: sh (pid 1) and its children.
    let pids: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("proc="))
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        pids.contains(&1) && pids.iter().all(|p| *p < 100),
        "{pids:?}"
    );
    // Writes went to the upper dir, which is gone now; the layers are untouched.
    assert!(!layers.iter().any(|l| l.join("written").exists()));
    assert_cleaned(&scratch, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_the_workload_before_exec_until_released() {
    require_root("holds_the_workload_before_exec_until_released");
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let pending = Sandbox::new(layers, scratch.clone(), spec(&["/bin/sleep", "30"]))
        .start()
        .unwrap();
    let pid = pending.pid();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Still runc's init, parked on its exec fifo: it has not exec'd.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(!exe.ends_with("bin/sleep"), "{}", exe.display());

    let running = pending.release().unwrap();
    // `runc start` returns once init is let go; the exec follows at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        if exe.ends_with("bin/sleep") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workload never exec'd: {}",
            exe.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    running.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = running.wait().await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_cleaned(&scratch, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_image_user_with_its_groups_and_workdir() {
    require_root("runs_as_the_image_user_with_its_groups_and_workdir");
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let config = ImageProcess {
        entrypoint: vec!["sh".into(), "-c".into()],
        cmd: vec!["echo ignored".into()],
        env: vec![],
        working_dir: "/home/app/work".into(),
        user: "app".into(),
    };
    let over = vec![
        "id -u; id -g; id -G; pwd; echo $HOME; echo $PATH; touch /nope 2>/dev/null || echo ro"
            .to_owned(),
    ];
    let process = config.to_spec(Some(&over), &layers).unwrap();
    let (w, r) = capture();
    let pending = Sandbox::new(layers, scratch.clone(), process)
        .stdout(w)
        .start()
        .unwrap();
    let status = pending.release().unwrap().wait().await.unwrap();
    assert!(status.success());
    let out = read_all(r);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "1000",
            "1000",
            "1000 50",
            "/home/app/work",
            "/home/app",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ro"
        ],
        "{out}"
    );
    assert_cleaned(&scratch, dir.path());
}

#[test]
fn user_lookup_sees_the_merged_view_of_the_layers() {
    require_root("user_lookup_sees_the_merged_view_of_the_layers");
    let dir = tempfile::tempdir().unwrap();
    let mut layers = image(&dir.path().join("layers").tap_mkdir());
    let config = ImageProcess {
        cmd: vec!["sh".into()],
        user: "app".into(),
        ..ImageProcess::default()
    };
    assert_eq!(config.to_spec(None, &layers).unwrap().uid, 1000);

    // A later layer that whites out /etc/passwd hides the user.
    let mut wh = LayerBuilder::new();
    wh.file("etc/.wh.passwd", 0o644, b"");
    let path = dir.path().join("layers/2");
    std::fs::create_dir(&path).unwrap();
    unpack_layer(wh.finish().as_slice(), &path).unwrap();
    layers.push(path);
    assert!(matches!(
        config.to_spec(None, &layers),
        Err(SpecError::UnknownUser(_))
    ));

    // A later layer with an opaque /etc and its own passwd wins.
    let mut opq = LayerBuilder::new();
    opq.file("etc/.wh..wh..opq", 0o644, b"").file(
        "etc/passwd",
        0o644,
        b"app:x:2000:2000::/:/bin/sh\n",
    );
    let path = dir.path().join("layers/3");
    std::fs::create_dir(&path).unwrap();
    unpack_layer(opq.finish().as_slice(), &path).unwrap();
    layers.push(path);
    let spec = config.to_spec(None, &layers).unwrap();
    assert_eq!((spec.uid, spec.gid), (2000, 2000));
    // /etc/group is hidden by the opaque /etc: no supplementary groups.
    assert!(spec.additional_gids.is_empty());
}

#[test]
fn a_bad_command_fails_with_its_name_and_cleans_up() {
    require_root("a_bad_command_fails_with_its_name_and_cleans_up");
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    for cmd in ["no-such-command", "/bin/missing", "/etc/marker"] {
        let scratch = dir.path().join("scratch");
        // runc looks the command up before parking init, so either step may refuse it.
        let err = Sandbox::new(layers.clone(), scratch.clone(), spec(&[cmd]))
            .start()
            .and_then(|pending| pending.release())
            .expect_err("exec of a bad command succeeded");
        assert!(matches!(err, SandboxError::Exec { .. }), "{err}");
        assert!(
            err.to_string().contains(cmd),
            "error does not name {cmd}: {err}"
        );
        assert_cleaned(&scratch, dir.path());
    }
}

#[test]
fn dropping_a_pending_workload_kills_it_and_cleans_up() {
    require_root("dropping_a_pending_workload_kills_it_and_cleans_up");
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let pending = Sandbox::new(layers, scratch.clone(), spec(&["sh"]))
        .start()
        .unwrap();
    let pid = pending.pid();
    drop(pending);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} still exists"
    );
    assert_cleaned(&scratch, dir.path());

    // Dropping a running workload does the same.
    let layers = image(&dir.path().join("layers2").tap_mkdir());
    let pending = Sandbox::new(layers, scratch.clone(), spec(&["sleep", "60"]))
        .start()
        .unwrap();
    let running = pending.release().unwrap();
    let pid = running.pid();
    drop(running);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "workload {pid} still exists"
    );
    assert_cleaned(&scratch, dir.path());
}

#[test]
fn a_setup_failure_names_the_step_and_cleans_up() {
    require_root("a_setup_failure_names_the_step_and_cleans_up");
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let err = Sandbox::new(
        vec![dir.path().join("no-such-layer")],
        scratch.clone(),
        spec(&["sh"]),
    )
    .start()
    .expect_err("overlay over a missing layer mounted");
    assert!(matches!(err, SandboxError::Setup { .. }), "{err}");
    assert!(err.to_string().contains("mount overlay"), "{err}");
    assert_cleaned(&scratch, dir.path());

    // A scratch dir with someone's data in it is refused, and left alone.
    std::fs::create_dir(&scratch).unwrap();
    std::fs::write(scratch.join("keep"), b"mine").unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let err = Sandbox::new(layers, scratch.clone(), spec(&["sh"]))
        .start()
        .unwrap_err();
    assert!(matches!(err, SandboxError::Scratch { .. }), "{err}");
    assert_eq!(std::fs::read(scratch.join("keep")).unwrap(), b"mine");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
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
    require_root("unpack_keeps_every_attribute_the_workload_can_see");
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
