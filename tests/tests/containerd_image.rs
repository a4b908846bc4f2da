//! Reading an image through containerd's gRPC API gives what reading its OCI layout gives.

use std::sync::Arc;

use recorder::containerd::{Containerd, ContainerdError, ContainerdSource};
use recorder::image::{Image, IndexOptions, MergedView, Platform, index_image};
use recorder_tests::containerd::{Daemon, HELLO, IMAGE, runnable_image};

fn index(image: &Image) -> MergedView {
    index_image(image, &IndexOptions::default()).expect("indexing")
}

#[test]
fn image_through_containerd_matches_its_oci_layout() {
    let daemon = Daemon::start();
    let layout = daemon.scratch().join("layout");
    let manifest = runnable_image(&layout);
    daemon.import_layout(&layout);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .expect("connect");
    let target = rt.block_on(client.resolve_image(IMAGE)).expect("resolve");
    assert_eq!(target.digest.to_string(), manifest);
    let source = ContainerdSource::new(client, rt.handle().clone());
    let platform = Platform::host();
    let via_ctrd = source
        .open_image(&target, &platform)
        .expect("open via containerd");
    let via_layout = Image::open_oci_layout(&layout, Some(IMAGE), &platform).unwrap();

    assert_eq!(via_ctrd.manifest_digest(), via_layout.manifest_digest());
    let layers = |i: &Image| {
        i.layers()
            .iter()
            .map(|l| (l.digest.clone(), l.media_type.clone(), l.size))
            .collect::<Vec<_>>()
    };
    assert_eq!(layers(&via_ctrd), layers(&via_layout));
    assert_eq!(via_ctrd.run_config(), via_layout.run_config());

    let (a, b) = (index(&via_ctrd), index(&via_layout));
    assert_eq!(a.entry_count(), b.entry_count());
    for path in [HELLO, "bin/sh", "bin/cat", "etc/passwd", "tmp", "missing"] {
        let (x, y) = (a.which(path.as_bytes()), b.which(path.as_bytes()));
        assert_eq!(
            format!("{:?}", x.result),
            format!("{:?}", y.result),
            "which {path}"
        );
    }
    assert_eq!(a.which(HELLO.as_bytes()).result.unwrap().layer, 1);
    assert_eq!(a.which(b"bin/sh").result.unwrap().layer, 0);
}

#[test]
fn blobs_through_containerd_are_verified_and_missing_ones_named() {
    let daemon = Daemon::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .unwrap();
    let source: Arc<dyn recorder::image::BlobSource> =
        Arc::new(ContainerdSource::new(client, rt.handle().clone()));
    let absent = recorder::image::BlobDigest::of(b"never written");
    let err = source.read_small(&absent, None).map(|_| ()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&absent.to_string()) && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn image_not_found_names_the_reference_and_namespace() {
    let daemon = Daemon::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .unwrap();
    let err = rt
        .block_on(client.resolve_image("docker.io/library/nope:0"))
        .unwrap_err();
    assert!(
        matches!(err, ContainerdError::ImageNotFound { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("docker.io/library/nope:0") && msg.contains(daemon.namespace()),
        "{msg}"
    );
}

fn recorder(args: &[&str]) -> std::process::Output {
    std::process::Command::new(recorder_tests::agent_fixtures::recorder_bin())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_reads_an_image_reference_from_containerd_like_its_layout() {
    let daemon = Daemon::start();
    let layout = daemon.scratch().join("layout");
    let manifest = runnable_image(&layout);
    daemon.import_layout(&layout);
    let address = format!("--containerd={}", daemon.socket().display());
    let ns = daemon.namespace();
    let layout_arg = layout.to_str().unwrap();

    let via_ctrd = recorder(&[
        "image",
        "which",
        "--json",
        &address,
        "--namespace",
        ns,
        IMAGE,
        "/etc/hello",
        "/bin/sh",
        "/nope",
    ]);
    // `/nope` is not in the image: every path is answered, and the status says so.
    assert_eq!(
        via_ctrd.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&via_ctrd.stderr)
    );
    assert!(
        String::from_utf8_lossy(&via_ctrd.stderr).contains("not in the image: /nope"),
        "{}",
        String::from_utf8_lossy(&via_ctrd.stderr)
    );
    let via_layout = recorder(&[
        "image",
        "which",
        "--json",
        layout_arg,
        "/etc/hello",
        "/bin/sh",
        "/nope",
    ]);
    assert_eq!(via_layout.status.code(), Some(1));
    assert_eq!(via_ctrd.stdout, via_layout.stdout);
    // ...and both say what the image holds (runnable_image: etc/hello in layer 1 over the
    // programs in layer 0), not merely the same thing.
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&via_ctrd.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        answers,
        [
            serde_json::json!({"path": "etc/hello", "layerIndex": 1, "reason": null}),
            serde_json::json!({"path": "bin/sh", "layerIndex": 0, "reason": null}),
            serde_json::json!({"path": "nope", "layerIndex": null, "reason": "not in the image"}),
        ]
    );

    let inspect = recorder(&["image", "inspect", &address, "--namespace", ns, IMAGE]);
    let out = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        inspect.status.success(),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    assert!(out.contains(&format!("manifest {manifest}")), "{out}");
    assert!(
        out.contains(&format!("image {IMAGE} from containerd")),
        "{out}"
    );

    // Errors name the thing: an unknown reference, and a socket given without `=`.
    let missing = recorder(&[
        "image",
        "inspect",
        &address,
        "--namespace",
        ns,
        "docker.io/x/none:1",
    ]);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        err.contains("docker.io/x/none:1") && err.contains("not found"),
        "{err}"
    );
    let socket = daemon.socket();
    let spaced = recorder(&["image", "inspect", socket.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&spaced.stderr);
    assert!(!spaced.status.success());
    assert!(
        err.contains("is a socket") && err.contains("--containerd="),
        "{err}"
    );
}
