//! A record pushed and pulled back byte for byte: the artifact's shape, newest-first discovery.

use recorder_tests::registry::{Registry, read};

use super::{ARTIFACT_TYPE, REPO, failed, image_in, ok, record_of, recorder};

#[test]
fn push_then_pull_round_trips_through_the_referrers_tag() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("docker");
    let manifest = image_in(&registry, dir.path());
    let host = registry.host();
    let repository = format!("{host}/{REPO}");

    let record = dir.path().join("record.json");
    let bytes = record_of(&manifest, 3);
    std::fs::write(&record, &bytes).unwrap();
    let companion = dir.path().join("companion.json");
    std::fs::write(&companion, b"{\"index\":0,\"path\":\"app/f0\",\"pid\":7}\n").unwrap();
    let stdout = ok(recorder(
        &config_dir,
        &[
            "record",
            "push",
            record.to_str().unwrap(),
            &repository,
            "--companion",
            companion.to_str().unwrap(),
            "--annotation",
            "dev.recorder.workload.command=/bin/sh /app/run.sh",
        ],
    ));
    let pushed = stdout.lines().last().unwrap().to_owned();
    let artifact = pushed
        .strip_prefix(&format!("{repository}@"))
        .unwrap_or_else(|| panic!("stdout {stdout:?} does not name an artifact in {repository}"))
        .to_owned();

    // The artifact: an OCI 1.1 image manifest with our artifactType, the empty config, the
    // record and companion as layers, the image's manifest as subject.
    let doc: serde_json::Value =
        serde_json::from_slice(&registry.get(&format!("{REPO}/manifests/{artifact}"))).unwrap();
    assert_eq!(
        doc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(doc["artifactType"], ARTIFACT_TYPE);
    assert_eq!(
        doc["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(doc["config"]["size"], 2);
    assert_eq!(doc["subject"]["digest"], manifest.as_str());
    assert_eq!(
        doc["layers"][0]["mediaType"],
        "application/vnd.stargz-snapshotter.record.v1+jsonl"
    );
    assert_eq!(
        doc["layers"][1]["mediaType"],
        "application/vnd.recorder.record.companion.v1+jsonl"
    );
    let annotations = &doc["annotations"];
    assert!(
        annotations["org.opencontainers.image.created"].is_string(),
        "{doc}"
    );
    assert_eq!(annotations["dev.recorder.entries"], "3");
    assert_eq!(
        annotations["dev.recorder.workload.command"],
        "/bin/sh /app/run.sh"
    );
    assert!(annotations["dev.recorder.version"].is_string(), "{doc}");

    // distribution 2.8 has no referrers API: the pusher wrote the tag schema's index.
    let tag = format!("sha256-{}", manifest.strip_prefix("sha256:").unwrap());
    let index: serde_json::Value =
        serde_json::from_slice(&registry.get(&format!("{REPO}/manifests/{tag}"))).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"][0]["digest"], artifact.as_str());
    assert_eq!(index["manifests"][0]["artifactType"], ARTIFACT_TYPE);

    // Pulled by the image's tag and by its digest: the same bytes, companion included.
    let out = dir.path().join("pulled.json");
    let companion_out = dir.path().join("pulled-companion.json");
    ok(recorder(
        &config_dir,
        &[
            "record",
            "pull",
            &format!("{repository}:1"),
            "--out",
            out.to_str().unwrap(),
            "--companion-out",
            companion_out.to_str().unwrap(),
        ],
    ));
    assert_eq!(read(&out), bytes);
    assert_eq!(read(&companion_out), read(&companion));
    let by_digest = ok(recorder(
        &config_dir,
        &["record", "pull", &format!("{repository}@{manifest}")],
    ));
    assert_eq!(by_digest.as_bytes(), bytes.as_slice());

    // A second record: the newest is pulled, both are listed newest first.
    let second = record_of(&manifest, 5);
    std::fs::write(&record, &second).unwrap();
    let pushed2 = ok(recorder(
        &config_dir,
        &["record", "push", record.to_str().unwrap(), &repository],
    ));
    let artifact2 = pushed2
        .lines()
        .last()
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .to_owned();
    let pulled = ok(recorder(
        &config_dir,
        &["record", "pull", &format!("{repository}:1")],
    ));
    assert_eq!(pulled.as_bytes(), second.as_slice());
    let listed: serde_json::Value = serde_json::from_str(&ok(recorder(
        &config_dir,
        &[
            "record",
            "pull",
            &format!("{repository}:1"),
            "--all",
            "--json",
        ],
    )))
    .unwrap();
    let digests: Vec<&str> = listed["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [artifact2.as_str(), artifact.as_str()]);
    assert_eq!(listed["subject"], manifest.as_str());

    // An index naming the image for linux/amd64: pulled through it by platform.
    let image_size = registry.get(&format!("{REPO}/manifests/{manifest}")).len();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest,
            "size": image_size,
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    }))
    .unwrap();
    registry.put_manifest(
        REPO,
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &index,
    );
    let pulled = ok(recorder(
        &config_dir,
        &[
            "record",
            "pull",
            &format!("{repository}:multi"),
            "--platform",
            "linux/amd64",
        ],
    ));
    assert_eq!(pulled.as_bytes(), second.as_slice());
    let stderr = failed(recorder(
        &config_dir,
        &[
            "record",
            "pull",
            &format!("{repository}:multi"),
            "--platform",
            "linux/arm64",
        ],
    ));
    assert!(
        stderr.contains("is an image index with no manifest for platform linux/arm64"),
        "{stderr}"
    );
}
