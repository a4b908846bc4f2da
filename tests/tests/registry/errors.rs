//! The errors a user meets, each naming the image, the registry and the problem.

use recorder_tests::registry::{Registry, free_port, read};

use super::{ARTIFACT_TYPE, REPO, failed, image_in, ok, record_of, recorder};

#[test]
fn errors_name_the_image_the_registry_and_the_problem() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("docker");
    let manifest = image_in(&registry, dir.path());
    let host = registry.host();
    let repository = format!("{host}/{REPO}");
    let record = dir.path().join("record.json");
    std::fs::write(&record, record_of(&manifest, 2)).unwrap();
    let record = record.to_str().unwrap();

    // An image the registry does not have.
    let stderr = failed(recorder(
        &config_dir,
        &["record", "pull", &format!("{host}/recorder/none:1")],
    ));
    assert!(
        stderr.contains(&format!("unknown image {host}/recorder/none:1")),
        "{stderr}"
    );

    // An image with no record yet.
    let stderr = failed(recorder(
        &config_dir,
        &["record", "pull", &format!("{repository}:1")],
    ));
    assert!(stderr.contains("no record refers to"), "{stderr}");

    // A repository without the record's image.
    let stderr = failed(recorder(
        &config_dir,
        &["record", "push", record, &format!("{host}/other/repo")],
    ));
    assert!(
        stderr.contains(&format!(
            "manifest {manifest}, which is not in {host}/other/repo"
        )),
        "{stderr}"
    );

    // Nobody listening.
    let closed = format!("127.0.0.1:{}", free_port());
    let stderr = failed(recorder(
        &config_dir,
        &["record", "pull", &format!("{closed}/x/y:1")],
    ));
    assert!(
        stderr.contains(&format!("registry {closed} is unreachable")),
        "{stderr}"
    );
    let stderr = failed(recorder(
        &config_dir,
        &["record", "push", record, &format!("{closed}/x/y")],
    ));
    assert!(
        stderr.contains(&format!("registry {closed} is unreachable")),
        "{stderr}"
    );

    // A record that names no image.
    let bare = dir.path().join("bare.json");
    std::fs::write(&bare, b"{\"path\":\"x\"}\n").unwrap();
    let stderr = failed(recorder(
        &config_dir,
        &["record", "push", bare.to_str().unwrap(), &repository],
    ));
    assert!(stderr.contains("names no image manifest"), "{stderr}");

    // Another tool's artifact referring to the image: not taken for a record.
    let empty = registry.put_blob(REPO, b"{}");
    let payload = registry.put_blob(REPO, b"signature");
    let subject_size = registry.get(&format!("{REPO}/manifests/{manifest}")).len();
    let other = |artifact_type: &str, created: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "text/plain", "digest": payload, "size": 9}],
            "subject": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest,
                "size": subject_size,
            },
            "annotations": {"org.opencontainers.image.created": created},
        }))
        .unwrap()
    };
    let signature = other("application/example.signature", "2020-01-01T00:00:00Z");
    let signature_digest = registry.put_manifest(
        REPO,
        &image_fixtures_digest(&signature),
        "application/vnd.oci.image.manifest.v1+json",
        &signature,
    );
    let tag = format!("sha256-{}", manifest.strip_prefix("sha256:").unwrap());
    let descriptor = |digest: &str, size: usize, artifact_type: &str, created: &str| {
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "artifactType": artifact_type,
            "annotations": {"org.opencontainers.image.created": created},
        })
    };
    let mut index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [descriptor(&signature_digest, signature.len(), "application/example.signature", "2020-01-01T00:00:00Z")],
    });
    registry.put_manifest(
        REPO,
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    let stderr = failed(recorder(
        &config_dir,
        &["record", "pull", &format!("{repository}:1")],
    ));
    assert!(
        stderr.contains("1 other referrer(s) are not records (application/example.signature)"),
        "{stderr}"
    );

    // An artifact that claims to be a record but has no record in it.
    let fake = other(ARTIFACT_TYPE, "2030-01-01T00:00:00Z");
    let fake_digest = registry.put_manifest(
        REPO,
        &image_fixtures_digest(&fake),
        "application/vnd.oci.image.manifest.v1+json",
        &fake,
    );
    index["manifests"].as_array_mut().unwrap().push(descriptor(
        &fake_digest,
        fake.len(),
        ARTIFACT_TYPE,
        "2030-01-01T00:00:00Z",
    ));
    registry.put_manifest(
        REPO,
        &tag,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    let stderr = failed(recorder(
        &config_dir,
        &["record", "pull", &format!("{repository}:1")],
    ));
    assert!(
        stderr.contains(&format!("{fake_digest} is not a recorder record")),
        "{stderr}"
    );
}

fn image_fixtures_digest(data: &[u8]) -> String {
    recorder_tests::image_fixtures::digest(data)
}

#[test]
fn a_record_corrupted_in_the_registry_is_a_digest_mismatch() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("docker");
    let manifest = image_in(&registry, dir.path());
    let repository = format!("{}/{REPO}", registry.host());
    let record = dir.path().join("record.json");
    let bytes = record_of(&manifest, 2);
    std::fs::write(&record, &bytes).unwrap();
    ok(recorder(
        &config_dir,
        &["record", "push", record.to_str().unwrap(), &repository],
    ));
    // Same length, other bytes: distribution serves what its storage holds.
    let blob = registry.blob_file(&image_fixtures_digest(&bytes));
    let mut corrupt = read(&blob);
    corrupt[10] ^= 0x20;
    std::fs::write(&blob, &corrupt).unwrap();
    let out = dir.path().join("pulled.json");
    let stderr = failed(recorder(
        &config_dir,
        &[
            "record",
            "pull",
            &format!("{repository}:1"),
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(
        stderr.contains("digest mismatch on record blob"),
        "{stderr}"
    );
    assert!(
        !out.exists(),
        "a corrupt record was written to {}",
        out.display()
    );
}
