//! The profiling sandbox, for real: layers unpacked from tars, an overlay root in private
//! mount and PID namespaces, a workload built from host binaries. Needs root.

use std::io::Read;
use std::path::{Path, PathBuf};

use recorder::sandbox::{ProcessSpec, unpack_layer};
use recorder_tests::sandbox_fixtures::{LayerBuilder, mounts_mentioning};

mod run;
mod unpack;
mod unpack_workers;

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

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
