//! The agent's end-to-end fixture: an OCI image of three layers built from host binaries,
//! whose workload script makes every kind of access the record must get right, and the
//! exact record it must produce.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::image_fixtures::{digest, oci_layout_with_config};
use crate::sandbox_fixtures::{LayerBuilder, ldd, which};

/// Host programs the image carries at `/bin/NAME`.
pub const PROGRAMS: &[&str] = &["sh", "cat", "grep", "ls", "sleep"];

/// The workload, run as `/bin/sh /app/run.sh` with `/app` as the working directory. Each line
/// is one kind of access (see [`expected_record`]).
pub const SCRIPT: &str = r#"exec >/dev/null 2>&1
cat /etc/shadowed
cat rel.txt
cd sub
cat ./here.txt ../up.txt
cat /app/conf
cat /etc/gone
echo runtime > /data/new.txt
cat /data/new.txt
echo back > /etc/gone
cat /proc/self/status
cat /etc/hosts
grep -r needle /app/tree
ls /data
"#;

/// The three layers' tars, bottom first.
///
/// - 0: programs and libraries; `etc/shadowed` (shadowed by 1), `etc/gone` (whited out by 1),
///   `etc/hosts`, `opt/real/tool.conf`, `data/`.
/// - 1: `etc/shadowed`, the whiteout of `etc/gone`, `cfg -> /opt/real`,
///   `app/tree/deep/found.txt`.
/// - 2: the script, `app/rel.txt`, `app/up.txt`, `app/sub/here.txt`,
///   `app/conf -> ../cfg/tool.conf` (a chain across layers 2, 1 and 0).
pub fn layers() -> Vec<Vec<u8>> {
    let mut base = LayerBuilder::new();
    base.dir("etc", 0o755)
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\n")
        .file("etc/shadowed", 0o644, b"low\n")
        .file("etc/gone", 0o644, b"deleted above\n")
        .file("etc/hosts", 0o644, b"127.0.0.1 image\n")
        .dir("opt", 0o755)
        .dir("opt/real", 0o755)
        .file("opt/real/tool.conf", 0o644, b"tool\n")
        .dir("data", 0o755)
        .file("data/old.txt", 0o644, b"old\n");
    // Parent directories get entries of their own: eStargz's converter cannot move a file
    // ahead of the prefetch landmark without its parent's entry.
    for dir in program_dirs() {
        base.dir(&dir, 0o755);
    }
    base.host_programs(PROGRAMS);
    let mut middle = LayerBuilder::new();
    middle
        .dir("etc", 0o755)
        .file("etc/shadowed", 0o644, b"high\n")
        .file("etc/.wh.gone", 0o644, b"")
        .symlink("cfg", "/opt/real")
        .dir("app", 0o755)
        .dir("app/tree", 0o755)
        .dir("app/tree/deep", 0o755)
        .file("app/tree/deep/found.txt", 0o644, b"needle\n");
    let mut top = LayerBuilder::new();
    top.dir("app", 0o755)
        .file("app/run.sh", 0o755, SCRIPT.as_bytes())
        .file("app/rel.txt", 0o644, b"rel\n")
        .file("app/up.txt", 0o644, b"up\n")
        .dir("app/sub", 0o755)
        .file("app/sub/here.txt", 0o644, b"here\n")
        .symlink("app/conf", "../cfg/tool.conf");
    vec![base.finish(), middle.finish(), top.finish()]
}

/// Every directory above the programs and their libraries, parents first.
fn program_dirs() -> Vec<String> {
    let mut files: Vec<String> = PROGRAMS.iter().map(|p| format!("bin/{p}")).collect();
    for program in PROGRAMS {
        files.extend(libraries(program));
        files.extend(loader(program));
    }
    let mut dirs = std::collections::BTreeSet::new();
    for file in &files {
        let mut path = Path::new(file);
        while let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(parent.to_string_lossy().into_owned());
            path = parent;
        }
    }
    // Sorted, so "lib" comes before "lib/x86_64-linux-gnu".
    dirs.into_iter().collect()
}

/// Writes the image as an OCI layout at `root` (uncompressed layers, config running the
/// script); returns the manifest digest.
pub fn write_image(root: &Path) -> String {
    write_image_named(root, "agent")
}

/// As [`write_image`], the manifest named `name` (a full reference, for `ctr images import`).
pub fn write_image_named(root: &Path, name: &str) -> String {
    let layers = layers();
    let tar_type = "application/vnd.oci.image.layer.v1.tar";
    let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Cmd": ["/bin/sh", "/app/run.sh"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/app",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    let blobs: Vec<(String, Vec<u8>)> = layers
        .into_iter()
        .map(|l| (tar_type.to_owned(), l))
        .collect();
    oci_layout_with_config(root, name, &config, &blobs)
}

/// Writes an OCI layout at `root` of `blobs` (media type and bytes, bottom first) whose config
/// runs `/bin/cat /etc/shadowed`; returns the manifest digest. For tests that stack layers of
/// their own around [`layers`].
pub fn write_cat_shadowed_image(root: &Path, blobs: &[(String, Vec<u8>)]) -> String {
    let diff_ids: Vec<String> = blobs
        .iter()
        .map(|(mt, b)| crate::image_fixtures::diff_id(mt, b))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/cat", "/etc/shadowed"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .unwrap();
    oci_layout_with_config(root, "img", &config, blobs)
}

/// The shared libraries the dynamic loader opens for `program` (the loader itself is mapped
/// by the kernel, with no open call), as image paths, in load order.
pub fn libraries(program: &str) -> Vec<String> {
    ldd(&which(program))
        .into_iter()
        .filter(|lib| !is_loader(&lib.to_string_lossy()))
        .map(|lib| lib.to_string_lossy().trim_start_matches('/').to_owned())
        .collect()
}

/// The dynamic loader `ldd` names for `/bin/PROGRAM`, relative to the root.
pub fn loader(program: &str) -> Option<String> {
    ldd(&which(program))
        .into_iter()
        .map(|lib| lib.to_string_lossy().trim_start_matches('/').to_owned())
        .find(|lib| is_loader(lib))
}

fn is_loader(path: &str) -> bool {
    path.contains("/ld-linux")
}

/// An ordered, deduplicated expected record.
#[derive(Default)]
pub struct Expected(pub Vec<(String, usize)>);

impl Expected {
    /// A file read from `layer`.
    pub fn file(&mut self, path: &str, layer: usize) -> &mut Self {
        if !self.0.iter().any(|(p, _)| p == path) {
            self.0.push((path.to_owned(), layer));
        }
        self
    }

    /// An exec of `/bin/PROGRAM`, then the dynamic loader the kernel maps for it, then the
    /// libraries the loader opens (all in layer 0).
    pub fn exec(&mut self, program: &str) -> &mut Self {
        self.exec_binary(&format!("bin/{program}"), &which(program))
    }

    /// An exec of the image file `name`, a copy of host binary `host` in layer 0, with its loader
    /// and libraries.
    pub fn exec_binary(&mut self, name: &str, host: &Path) -> &mut Self {
        self.file(name, 0);
        let libs: Vec<String> = ldd(host)
            .into_iter()
            .map(|lib| lib.to_string_lossy().trim_start_matches('/').to_owned())
            .collect();
        if let Some(loader) = libs.iter().find(|lib| is_loader(lib)) {
            self.file(loader, 0);
        }
        for lib in libs.iter().filter(|lib| !is_loader(lib)) {
            self.file(lib, 0);
        }
        self
    }
}

/// The exact record of [`SCRIPT`]. `hosts_from_image`: whether `/etc/hosts` is the image's
/// (in `recorder run`) rather than a bind mount.
pub fn expected_record(hosts_from_image: bool) -> Vec<(String, usize)> {
    let mut e = Expected::default();
    e.exec("sh")
        .file("app/run.sh", 2)
        .exec("cat")
        .file("etc/shadowed", 1)
        .file("app/rel.txt", 2)
        .file("app/sub/here.txt", 2)
        .file("app/up.txt", 2)
        .file("opt/real/tool.conf", 0);
    if hosts_from_image {
        e.file("etc/hosts", 0);
    }
    e.exec("grep").file("app/tree/deep/found.txt", 1).exec("ls");
    e.0
}

/// `(path, layerIndex)` of each line of a record, checking every manifest digest.
pub fn record_entries(bytes: &[u8], manifest: &str) -> Vec<(String, usize)> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["manifestDigest"], manifest, "{line}");
            (
                v["path"].as_str().unwrap().to_owned(),
                v["layerIndex"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

/// The variable `recorder run` reads its layer cache dir from (`--cache-dir`): every test
/// that runs `recorder run` points it into its own temp dir, so no test writes to the
/// system's cache (/var/lib/recorder/cache).
pub const CACHE_DIR_ENV: &str = "RECORDER_CACHE_DIR";

/// The `recorder` binary of this build, built on demand, once per test process.
///
/// The build is a no-op when it is up to date, and keeps the test honest when it is not. Once
/// per process: the suite is one binary, and a no-op `cargo build` per test took several seconds
/// each under load, the tests queueing on cargo's lock.
pub fn recorder_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(build_recorder).clone()
}

fn build_recorder() -> PathBuf {
    // target/<profile>/deps/<test>-HASH -> target/<profile>/recorder
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("recorder");
    let mut build = xtask::cargo();
    build.args([
        "build",
        "--quiet",
        "-p",
        "recorder-userspace",
        "--bin",
        "recorder",
    ]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("running cargo to build recorder");
    assert!(status.success(), "building the recorder binary failed");
    assert!(bin.is_file(), "no recorder binary at {}", bin.display());
    bin
}

/// A temp dir holding the agent fixture image as a layout, a place for a local content store
/// and an empty work dir: what a `recorder run --store` needs.
pub struct LocalRun {
    /// The temp dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// The image layout ([`write_image`]'s).
    pub image: PathBuf,
    /// The content store (not created yet).
    pub store: PathBuf,
    /// The work dir.
    pub work: PathBuf,
    /// The image's manifest digest.
    pub manifest: String,
}

impl LocalRun {
    /// Writes the image and makes the work dir.
    pub fn new() -> LocalRun {
        let dir = tempfile::tempdir().unwrap();
        let (image, store, work) = (
            dir.path().join("image"),
            dir.path().join("store"),
            dir.path().join("work"),
        );
        std::fs::create_dir(&work).unwrap();
        let manifest = write_image(&image);
        LocalRun {
            dir,
            image,
            store,
            work,
            manifest,
        }
    }

    /// `recorder run` of the image into the store, with `extra` arguments (see
    /// [`run_into_store`]).
    pub fn run(&self, extra: &[&str]) -> Output {
        run_into_store(&self.image, &self.store, &self.work, extra)
    }
}

impl Default for LocalRun {
    fn default() -> Self {
        LocalRun::new()
    }
}

/// The number after `key=` on the first line of `stderr` (the recorder's log) containing
/// `line`: how a test reads the counts the agent logs (`layers unpacked`'s `cached=`,
/// `image indexed`'s `from_index_cache=`, ...).
pub fn logged(stderr: &str, line: &str, key: &str) -> usize {
    let found = stderr
        .lines()
        .find(|l| l.contains(line))
        .unwrap_or_else(|| panic!("no {line:?} line in:\n{stderr}"));
    let n = found
        .split(&format!("{key}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {key} in {found}"));
    n.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|_| panic!("{found}"))
}

/// `recorder run` of `image` with the cache in `cache`, a store and work dir of its own under
/// `dir`, and `extra` arguments.
pub fn spawn_run(dir: &Path, image: &Path, cache: &Path, extra: &[&str]) -> Child {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    Command::new(recorder_bin())
        .env(CACHE_DIR_ENV, cache)
        .arg("run")
        .arg("--image")
        .arg(image)
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--work-dir")
        .arg(&work)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `recorder run --image IMAGE --store STORE --work-dir WORK EXTRA...`, its output once it
/// has exited (failing the test if that takes more than 180 s).
pub fn run_into_store(image: &Path, store: &Path, work: &Path, extra: &[&str]) -> Output {
    let child = Command::new(recorder_bin())
        // Beside the work dir, in the test's temp dir: never the system's cache.
        .env(CACHE_DIR_ENV, work.with_file_name("layer-cache"))
        .arg("run")
        .args(["--image".as_ref(), image.as_os_str()])
        .args(["--store".as_ref(), store.as_os_str()])
        .args(["--work-dir".as_ref(), work.as_os_str()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting recorder run");
    crate::deadline::output_within(child, Duration::from_secs(180), "recorder run")
}

/// Bind-mounts host file `source` over `target` inside the mount namespace of `pid`, as a
/// container runtime mounts /etc/hosts: the mount is cloned here and moved in there.
pub fn bind_into(pid: u32, source: &Path, target: &str) {
    let source = std::ffi::CString::new(source.to_str().unwrap()).unwrap();
    let target = std::ffi::CString::new(target).unwrap();
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    // setns(CLONE_NEWNS) needs a thread that shares its filesystem context with no other.
    std::thread::spawn(move || {
        const OPEN_TREE_CLONE: libc::c_uint = 1;
        const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
        // SAFETY: open_tree with a valid C string; returns a new fd or -1.
        let tree = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                source.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            )
        };
        assert!(tree >= 0, "open_tree: {}", std::io::Error::last_os_error());
        // SAFETY: the fd was just returned to us and is owned by nobody else.
        let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        // SAFETY: move_mount with a valid fd and C strings.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        assert_eq!(rc, 0, "move_mount: {}", std::io::Error::last_os_error());
    })
    .join()
    .unwrap();
}
