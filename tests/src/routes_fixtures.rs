//! The capture fixture: an image whose workload (`routes-workload`) reaches each of its files by
//! another route than a plain open of the file's path, and the exact record that must follow.

use std::path::{Path, PathBuf};

use crate::agent_fixtures::Expected;
use crate::image_fixtures::{digest, oci_layout_with_config};
use crate::sandbox_fixtures::{LayerBuilder, which};

/// Host programs the image carries at `/bin/NAME`, for the routes that exec.
pub const PROGRAMS: &[&str] = &["sh", "cat", "grep", "true"];

/// Where the workload sits in the image.
pub const WORKLOAD: &str = "bin/routes";

/// The `#!` script of the `script` step: it reads a file with a shell builtin, so no further
/// exec follows.
pub const SCRIPT: &str = "#!/bin/sh\nread line < /routes/script-read.txt\nexit 0\n";

/// The `#!` script of the `fexecve-script` step, run through an fd.
pub const FD_SCRIPT: &str = "#!/bin/sh\nread line < /routes/fd-script-read.txt\nexit 0\n";

/// Every step of the workload, in the order it runs them. The routes that make mount
/// namespaces (`unshare`, `clone-newns`) need CAP_SYS_ADMIN in the container.
pub const STEPS: &[&str] = &[
    "thread",
    "dirfd",
    "opaque",
    "uring",
    "uring-fixed",
    "opath",
    "procroot",
    "chdir-symlink",
    "dotdot",
    "runtime-symlink",
    "hardlink",
    "creat",
    "fork-exec",
    "fexecve",
    "execveat",
    "fexecve-script",
    "script",
    "chroot",
    "unshare",
    "clone-newns",
];

/// The image path (no leading `/`) of the `long-path` step's file: `routes/long/`, directories
/// of 250 bytes, and a file name that brings `/` + the path to PATH_MAX - 1 = 4095 bytes, the
/// longest path open() takes. The workload opens it by this same function.
pub fn long_path() -> String {
    let mut path = String::from("routes/long/");
    while 4094 - path.len() > 255 {
        path.push_str(&"d".repeat(250));
        path.push('/');
    }
    let name_len = 4094 - path.len();
    path.push_str(&"f".repeat(name_len));
    path
}

/// The steps that make mount namespaces, which need CAP_SYS_ADMIN: not granted by containerd's
/// default spec (ours under `recorder run --containerd`, and `ctr-remote image optimize`'s).
pub const NAMESPACE_STEPS: &[&str] = &["unshare", "clone-newns"];

/// The steps that use io_uring, which the default seccomp profile denies (as Docker's and
/// containerd's current defaults do).
pub const URING_STEPS: &[&str] = &["uring", "uring-fixed"];

/// [`STEPS`] less [`NAMESPACE_STEPS`] and [`URING_STEPS`]: what a workload under `recorder run`'s
/// default confinement can do.
pub fn confined_steps() -> Vec<&'static str> {
    unprivileged_steps()
        .into_iter()
        .filter(|s| !URING_STEPS.contains(s))
        .collect()
}

/// [`STEPS`] less [`NAMESPACE_STEPS`].
pub fn unprivileged_steps() -> Vec<&'static str> {
    STEPS
        .iter()
        .copied()
        .filter(|s| !NAMESPACE_STEPS.contains(s))
        .collect()
}

/// The image's reference in the containerd tests.
pub const IMAGE: &str = "docker.io/recorder/routes-test:1";

/// The two layers, bottom first: 0 the programs, their libraries, the workload and
/// `routes/opq/old.txt`; 1 the files the routes reach (`linkdir -> routes/realdir` among them,
/// `routes/hard.txt`, a hard link to `routes/hard-target.txt`, and `routes/opq`, opaque, with
/// `new.txt`).
pub fn layers(workload: &Path) -> Vec<Vec<u8>> {
    let mut base = LayerBuilder::new();
    let mut binaries: Vec<(String, PathBuf)> = PROGRAMS
        .iter()
        .map(|p| (format!("bin/{p}"), which(p)))
        .collect();
    binaries.push((WORKLOAD.to_owned(), workload.to_path_buf()));
    base.dir("bin", 0o755)
        .dir("lib", 0o755)
        .dir("lib64", 0o755)
        .dir("lib/x86_64-linux-gnu", 0o755)
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .dir("usr/lib/x86_64-linux-gnu", 0o755)
        .dir("tmp", 0o1777)
        .dir("mnt", 0o755)
        .dir("dev", 0o755)
        .dir("proc", 0o755)
        .dir("routes", 0o755)
        .dir("routes/opq", 0o755)
        .file("routes/opq/old.txt", 0o644, b"hidden above")
        .host_binaries(&binaries);
    let mut routes = LayerBuilder::new();
    routes.dir("routes", 0o755);
    for file in [
        "thread.txt",
        "dirfd.txt",
        "uring.txt",
        "uring-fixed.txt",
        "opath.txt",
        "procroot.txt",
        "dotdot.txt",
        "symtarget.txt",
        "hard-target.txt",
        "creat.txt",
        "fexecve.txt",
        "execveat.txt",
        "script-read.txt",
        "fd-script-read.txt",
        "nested.txt",
        "cloned.txt",
        "late.txt",
    ] {
        routes.file(&format!("routes/{file}"), 0o644, file.as_bytes());
    }
    routes
        .dir("routes/opq", 0o755)
        .file("routes/opq/.wh..wh..opq", 0o644, b"")
        .file("routes/opq/new.txt", 0o644, b"new")
        .hardlink("routes/hard.txt", "routes/hard-target.txt")
        .dir("routes/realdir", 0o755)
        .file("routes/realdir/file.txt", 0o644, b"file")
        .symlink("linkdir", "routes/realdir")
        .file("routes/script.sh", 0o755, SCRIPT.as_bytes())
        .file("routes/fd-script.sh", 0o755, FD_SCRIPT.as_bytes())
        .dir("routes/jail", 0o755)
        .file("routes/jail/inside.txt", 0o644, b"inside")
        .dir("routes/bindsrc", 0o755)
        .file("routes/bindsrc/bound.txt", 0o644, b"bound");
    vec![base.finish(), routes.finish()]
}

/// [`layers`], and when `steps` has `long-path`, a third layer with the file at
/// [`long_path`] (a GNU long-name tar entry). Only then: containerd's unpacker cannot make a
/// path that long below its snapshot directory (`lstat …: file name too long`).
pub fn layers_for(workload: &Path, steps: &[&str]) -> Vec<Vec<u8>> {
    let mut layers = layers(workload);
    if steps.contains(&"long-path") {
        let mut long = LayerBuilder::new();
        long.long_file(&long_path(), 0o644, b"long");
        layers.push(long.finish());
    }
    layers
}

/// Writes the image as an OCI layout at `root`, its config running the workload with `steps`;
/// returns the manifest digest.
pub fn write_image(root: &Path, name: &str, workload: &Path, steps: &[&str]) -> String {
    let layers = layers_for(workload, steps);
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let mut cmd = vec![format!("/{WORKLOAD}")];
    cmd.extend(steps.iter().map(|s| (*s).to_owned()));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let tar_type = "application/vnd.oci.image.layer.v1.tar";
    let blobs: Vec<(String, Vec<u8>)> = layers
        .into_iter()
        .map(|l| (tar_type.to_owned(), l))
        .collect();
    oci_layout_with_config(root, name, &config, &blobs)
}

/// The exact record of the workload running `steps`: what fanotify reports for the same run.
pub fn expected_record(workload: &Path, steps: &[&str]) -> Vec<(String, usize)> {
    let mut e = Expected::default();
    e.exec_binary(WORKLOAD, workload);
    for step in steps {
        match *step {
            "thread" => e.file("routes/thread.txt", 1),
            "dirfd" => e.file("routes/dirfd.txt", 1),
            // The lower file is hidden (the failed open is not recorded), the upper one read.
            "opaque" => e.file("routes/opq/new.txt", 1),
            "uring" => e.file("routes/uring.txt", 1),
            // Read from the ring's fixed-file table: a slot is not an fd.
            "uring-fixed" => e.file("routes/uring-fixed.txt", 1),
            "opath" => e.file("routes/opath.txt", 1),
            "procroot" => e.file("routes/procroot.txt", 1),
            "chdir-symlink" => e.file("routes/realdir/file.txt", 1),
            "dotdot" => e.file("routes/dotdot.txt", 1),
            "runtime-symlink" => e.file("routes/symtarget.txt", 1),
            // Named by the link it was opened through, as fanotify names it.
            "hardlink" => e.file("routes/hard.txt", 1),
            // Opened for writing (and truncated): fanotify reports the open, and so do we.
            "creat" => e.file("routes/creat.txt", 1),
            "fork-exec" => e.exec("true"),
            "fexecve" => e.exec("cat").file("routes/fexecve.txt", 1),
            "execveat" => e.exec("grep").file("routes/execveat.txt", 1),
            // The script, then the interpreter its #! names and that one's loader and libraries.
            "script" => e
                .file("routes/script.sh", 1)
                .exec("sh")
                .file("routes/script-read.txt", 1),
            // Named by the fd it was run through; the interpreter is known by then.
            "fexecve-script" => e
                .file("routes/fd-script.sh", 1)
                .exec("sh")
                .file("routes/fd-script-read.txt", 1),
            "chroot" => e.file("routes/jail/inside.txt", 1),
            // The bind mount's file is named by its place in the image.
            "unshare" => e
                .file("routes/bindsrc/bound.txt", 1)
                .file("routes/nested.txt", 1),
            "clone-newns" => e.file("routes/cloned.txt", 1),
            "late" => e.file("routes/late.txt", 1),
            // Failed execs record nothing (they are counted).
            "failed-exec" => &mut e,
            "long-path" => e.file(&long_path(), 2),
            other => panic!("no step {other:?}"),
        };
    }
    e.0
}
