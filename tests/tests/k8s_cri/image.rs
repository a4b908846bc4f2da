//! The image `cargo xtask image` builds: its one layer, the docker archive, the Dockerfile.

use super::{image, workspace};

/// `cargo xtask image` writes one layer holding the binary, the libraries it loads and the TLS
/// roots, and nothing else; the `--rootfs` tree is that layer's files, and the Dockerfile's
/// image is exactly that tree (a `scratch` stage copying it), so both give the same files.
#[test]
fn image_holds_the_binary_its_libraries_and_tls_roots_and_the_dockerfile_copies_the_same() {
    let image = image();
    // The layout's one layer, its entries.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.digest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        image.reference.as_str()
    );
    let blob = |digest: &str| {
        std::fs::read(
            image
                .layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&image.digest)).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let gz = blob(layers[0]["digest"].as_str().unwrap());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
    let mut in_layer: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            path.trim_end_matches('/').to_owned()
        })
        .collect();
    in_layer.sort();
    let mut in_tree = Vec::new();
    let mut dirs = vec![image.rootfs.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            in_tree.push(
                path.strip_prefix(&image.rootfs)
                    .unwrap()
                    .display()
                    .to_string(),
            );
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            }
        }
    }
    in_tree.sort();
    assert_eq!(in_layer, in_tree);

    // Exactly what the recorder needs: itself, what ldd says it loads (with the links on the
    // way), the TLS roots; no shell, no package manager, nothing else.
    let files: Vec<&String> = in_tree
        .iter()
        .filter(|p| image.rootfs.join(p).symlink_metadata().unwrap().is_file())
        .collect();
    let mut expected = vec![
        "usr/local/bin/recorder".to_owned(),
        "etc/ssl/certs/ca-certificates.crt".to_owned(),
    ];
    let ldd = std::process::Command::new("ldd")
        .arg(image.rootfs.join("usr/local/bin/recorder"))
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        if path.starts_with('/') {
            let real = std::fs::canonicalize(path).unwrap();
            expected.push(
                real.display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_owned(),
            );
        }
    }
    expected.sort();
    expected.dedup();
    let mut files: Vec<String> = files.into_iter().cloned().collect();
    files.sort();
    assert_eq!(files, expected);

    // The archive `ctr images import` took in the other tests is also a docker archive.
    let mut archive = tar::Archive::new(std::fs::File::open(&image.archive).unwrap());
    let docker_manifest = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|mut e| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        })
        .expect("no manifest.json in the archive");
    assert_eq!(
        docker_manifest[0]["RepoTags"][0],
        image.reference.as_str(),
        "{docker_manifest}"
    );
    assert_eq!(
        docker_manifest[0]["Layers"][0],
        format!(
            "blobs/sha256/{}",
            layers[0]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        )
    );

    // containers/image's docker-archive reader (the one `docker load`'s format is read with by
    // skopeo and podman) takes it: the same config, the same layer.
    let inspect = xtask::skopeo()
        .arg("inspect")
        .arg(format!("docker-archive:{}", image.archive.display()))
        .output()
        .expect("running skopeo (cargo xtask setup installs it)");
    assert!(
        inspect.status.success(),
        "skopeo inspect docker-archive: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        inspected["Env"],
        serde_json::json!(["PATH=/usr/local/bin:/usr/bin:/bin"])
    );
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));

    // The Dockerfile's image: the same command writes the tree, and only the tree is copied.
    let dockerfile =
        std::fs::read_to_string(workspace().join("deploy/container/Dockerfile")).unwrap();
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        instructions.contains(&"RUN cargo xtask image --rootfs /rootfs"),
        "{dockerfile}"
    );
    let last_stage: Vec<&str> = instructions
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("FROM "))
        .copied()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let from = instructions[instructions.len() - last_stage.len() - 1];
    assert_eq!(from, "FROM scratch");
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(
        last_stage,
        [
            "COPY --from=build /rootfs /".to_owned(),
            format!("ENV {}", config["config"]["Env"][0].as_str().unwrap()),
            format!(
                "ENTRYPOINT {}",
                serde_json::to_string(&config["config"]["Entrypoint"]).unwrap()
            ),
        ]
    );
}
