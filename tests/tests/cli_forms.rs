//! The README's command forms, each run as a user runs it: `image inspect DIR`,
//! `image which [--follow] [--json]`, `--image STORE@sha256:…` (inspect and `run`), `record show`,
//! `trace --mntns`, and a bare `--containerd` going to containerd's default socket.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use recorder::image::BlobDigest;
use recorder::sandbox::{ProcessSpec, Sandbox, unpack_layer};
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{Expected, layers, record_entries, recorder_bin, write_image};
use recorder_tests::image_fixtures::digest;
use recorder_tests::mntns::private_mount_namespace;
use recorder_tests::root::require_root;

fn recorder(args: &[&str]) -> Output {
    Command::new(recorder_bin()).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = recorder(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "recorder {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `image inspect DIR` names the manifest and each layer as the layout holds them; `image which`
/// answers literally, through symlinks with `--follow` (the chain across layers 2, 1 and 0),
/// and as JSON.
#[test]
fn image_inspect_and_which_read_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let manifest = write_image(&image);
    let image = image.to_str().unwrap();

    let out = ok(&["image", "inspect", image]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("manifest {manifest}"), "{out}");
    // The fixture's whiteouts: etc/gone in layer 1; no opaque directory.
    let whiteouts = [0, 1, 0];
    let tars = layers();
    assert_eq!(lines.len(), 1 + tars.len() + 1, "{out}");
    for (i, tar) in tars.iter().enumerate() {
        let line = lines[1 + i];
        let head = format!(
            "layer {i} {} application/vnd.oci.image.layer.v1.tar size {} entries ",
            digest(tar),
            tar.len()
        );
        assert!(line.starts_with(&head), "{line}\nwant {head}");
        assert!(
            line.ends_with(&format!(
                " whiteouts {} opaque 0 refused-by-run 0",
                whiteouts[i]
            )),
            "{line}"
        );
    }
    assert!(lines[1 + tars.len()].starts_with("index "), "{out}");

    assert_eq!(
        ok(&["image", "which", image, "app/conf", "/etc/shadowed"]),
        "/app/conf: layer 2 (symlink)\n/etc/shadowed: layer 1 (file)\n"
    );
    // A path not in the image: every path is still answered, and the command fails (exit
    // status 1, as the README's table says for an error) naming each missing one.
    for (paths, error) in [
        (
            &["app/conf", "etc/gone", "/etc/shadowed"][..],
            "Error: not in the image: /etc/gone: deleted by a whiteout of etc/gone in layer 1",
        ),
        (
            &["no/such", "etc/gone"][..],
            "Error: 2 of 2 paths are not in the image: /no/such: not in the image; \
             /etc/gone: deleted by a whiteout of etc/gone in layer 1",
        ),
    ] {
        let out = recorder(&[&["image", "which", image][..], paths].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{paths:?}: {stderr}");
        assert!(stderr.contains(error), "{paths:?}: {stderr}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            paths.len(),
            "every path answered"
        );
    }
    let out = recorder(&["image", "which", image, "--json", "etc/gone"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["layerIndex"], serde_json::Value::Null);
    assert_eq!(
        ok(&["image", "which", image, "--follow", "app/conf"]),
        "/app/conf -> ../cfg/tool.conf (symlink in layer 2) -> /opt/real (symlink in layer 1) \
         => /opt/real/tool.conf: layer 0 (file)\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "image", "which", image, "--follow", "--json", "app/conf",
    ]))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "path": "app/conf",
            "target": "opt/real/tool.conf",
            "layerIndex": 0,
            "reason": null,
        })
    );
}

/// `--image STORE@sha256:HEX`: an image whose blobs are in a containerd-style content store,
/// named by its manifest digest, reads as its OCI layout does, and `run` records from it.
#[test]
fn an_image_in_a_content_store_is_named_by_its_manifest_digest() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let manifest = write_image(&layout);
    let content = dir.path().join("content");
    let store = ContentStore::open(&content).unwrap();
    for blob in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap().path();
        let hex = blob.file_name().unwrap().to_str().unwrap().to_owned();
        let want: BlobDigest = format!("sha256:{hex}").parse().unwrap();
        store
            .put(&hex, &std::fs::read(&blob).unwrap(), Some(&want))
            .unwrap();
    }
    let by_digest = format!("{}@{manifest}", content.display());

    // Everything but the timing line is the same as from the layout.
    let untimed = |out: String| -> Vec<String> {
        out.lines()
            .filter(|l| !l.starts_with("index "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        untimed(ok(&["image", "inspect", &by_digest])),
        untimed(ok(&["image", "inspect", layout.to_str().unwrap()]))
    );

    let records = dir.path().join("records");
    let cache = dir.path().join("layer-cache");
    let out = recorder(&[
        "run",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--image",
        &by_digest,
        "--store",
        records.to_str().unwrap(),
        "--",
        "/bin/cat",
        "/etc/shadowed",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let record: BlobDigest = stdout.lines().last().unwrap_or_default().parse().unwrap();
    let bytes = ContentStore::open(&records).unwrap().read(&record).unwrap();
    let mut want = Expected::default();
    want.exec("cat").file("etc/shadowed", 1);
    assert_eq!(
        record_entries(&bytes, &manifest),
        want.0,
        "stderr:\n{stderr}"
    );

    // `record show DIGEST --store DIR` and `record show FILE`: entries per manifest and per
    // layer, with each layer's first path, as the record holds them.
    let mut shown = format!(
        "entries {n}\nmanifest {manifest} entries {n}\n",
        n = want.0.len()
    );
    let mut per_layer: std::collections::BTreeMap<usize, (usize, &str)> = Default::default();
    for (path, layer) in &want.0 {
        per_layer.entry(*layer).or_insert((0, path)).0 += 1;
    }
    for (layer, (n, first)) in per_layer {
        shown.push_str(&format!("layer {layer} entries {n} first /{first}\n"));
    }
    let digest = record.to_string();
    assert_eq!(
        ok(&[
            "record",
            "show",
            &digest,
            "--store",
            records.to_str().unwrap()
        ]),
        shown
    );
    let file = dir.path().join("record.json");
    std::fs::write(&file, &bytes).unwrap();
    assert_eq!(ok(&["record", "show", file.to_str().unwrap()]), shown);
}

/// `trace --mntns INODE --json` prints the opens and execs of that mount namespace: the exec of
/// cat and its open of /etc/shadowed, with the argument and the file the kernel opened.
#[test]
fn trace_by_mount_namespace_prints_its_events() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let lowerdirs: Vec<PathBuf> = layers()
        .iter()
        .enumerate()
        .map(|(i, tar)| {
            let d = dir.path().join(format!("layer{i}"));
            std::fs::create_dir(&d).unwrap();
            unpack_layer(tar.as_slice(), &d).unwrap();
            d
        })
        .collect();
    let spec = ProcessSpec {
        args: vec!["/bin/cat".into(), "/etc/shadowed".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    };
    let pending = Sandbox::new(lowerdirs, dir.path().join("scratch"), spec)
        .start()
        .unwrap();
    let mut trace = Command::new(recorder_bin())
        .args(["trace", "--json", "--mntns"])
        .arg(pending.mntns_inode().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Armed once it says so on stderr; the rest of stderr is collected for the end.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = trace.stderr.take().unwrap();
    let collector = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if line.starts_with("tracing mount namespace(s)") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = trace.kill();
        panic!(
            "trace did not arm within 60 s: {}",
            collector.join().unwrap()
        );
    }
    let status = pending.release().unwrap().wait_blocking().unwrap();
    assert!(status.success(), "workload: {status}");
    // The workload's events are in the ring (emitted at each syscall's exit); what reached
    // the ring before the signal is still printed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(trace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = recorder_tests::deadline::output_within(
        trace,
        Duration::from_secs(60),
        "recorder trace after SIGINT",
    );
    let stderr = collector.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let shown = || format!("{events:#?}\nstderr:\n{stderr}");
    assert!(
        events.iter().any(|e| e["kind"] == "exec"
            && e["comm"] == "cat"
            && e["file"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("bin/cat"))),
        "no exec of cat: {}",
        shown()
    );
    let open = events
        .iter()
        .find(|e| e["path"] == "/etc/shadowed")
        .unwrap_or_else(|| panic!("no open of /etc/shadowed: {}", shown()));
    assert_eq!(open["comm"], "cat", "{open}");
    assert!(open["ret"].as_i64().is_some_and(|r| r >= 0), "{open}");
    assert_eq!(open["file"]["fsType"], "overlay", "{open}");
    assert!(
        open["file"]["path"]
            .as_str()
            .is_some_and(|p| p.trim_start_matches('/') == "etc/shadowed"),
        "{open}"
    );
    assert!(
        events.iter().all(|e| e["mntns"] == open["mntns"]),
        "an event of another namespace: {}",
        shown()
    );
}

/// The default socket, as the README names it.
const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// Runs `recorder ARGS` in a mount namespace of its own whose /run is an empty tmpfs, so that
/// nothing answers at containerd's default socket whether or not this host runs containerd
/// (a private mount namespace changes nothing for anyone else).
fn without_default_containerd(args: &[&str]) -> Output {
    let mut cmd = Command::new(recorder_bin());
    cmd.args(args);
    // SAFETY: between fork and exec the closure only makes raw syscalls (unshare, mount); it
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(|| {
            use nix::mount::{MsFlags, mount};
            private_mount_namespace()?;
            mount(
                Some("tmpfs"),
                "/run",
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )?;
            Ok(())
        });
    }
    cmd.output().unwrap()
}

/// A bare `--containerd` goes to containerd's default socket and, when nothing answers there,
/// says which socket it tried.
#[test]
fn bare_containerd_goes_to_the_default_socket() {
    require_root();
    for args in [
        &[
            "image",
            "inspect",
            "--containerd",
            "docker.io/library/app:1",
        ][..],
        &[
            "record",
            "--containerd",
            "--image",
            "docker.io/library/app:1",
            "--target",
            "container:app-1",
        ],
    ] {
        let out = without_default_containerd(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(DEFAULT_SOCKET), "{args:?}: {stderr}");
    }
}
