//! `recorder record push` and `recorder record pull` against a real registry (Debian's
//! distribution 2.8, started by the test; it has no referrers API, so these go through the
//! referrers tag schema): byte-for-byte round trips, the artifact's shape, newest-first
//! discovery, basic auth with docker config files, and the errors a user meets.

use std::path::Path;
use std::process::{Command, Output};

use recorder_tests::agent_fixtures::{recorder_bin, write_image};
use recorder_tests::registry::{Registry, docker_config, free_port, read};

const ARTIFACT_TYPE: &str = "application/vnd.recorder.record.v1+json";
const REPO: &str = "recorder/agent";

/// `recorder ARGS` with `DOCKER_CONFIG` pointing at `docker_config_dir` (never the host's).
fn recorder(docker_config_dir: &Path, args: &[&str]) -> Output {
    Command::new(recorder_bin())
        .env("DOCKER_CONFIG", docker_config_dir)
        .env("RECORDER_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The stderr of a run that must fail with status 1.
fn failed(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    stderr
}

/// A record of the image whose manifest is `manifest`, `n` entries.
fn record_of(manifest: &str, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "{{\"path\":\"app/f{i}\",\"manifestDigest\":\"{manifest}\",\"layerIndex\":1}}\n"
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// A layout with the agent image, copied to `registry` as `REPO:1`; its manifest digest.
fn image_in(registry: &Registry, dir: &Path) -> String {
    let layout = dir.join("layout");
    let manifest = write_image(&layout);
    registry.push_layout(&layout, "agent", &format!("{REPO}:1"));
    manifest
}

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

#[test]
fn basic_auth_with_docker_config_files() {
    let registry = Registry::start_with_basic_auth("tester", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let manifest = image_in(&registry, dir.path());
    let host = registry.host();
    let repository = format!("{host}/{REPO}");
    let record = dir.path().join("record.json");
    let bytes = record_of(&manifest, 2);
    std::fs::write(&record, &bytes).unwrap();
    let record = record.to_str().unwrap();

    // No credentials anywhere: refused, saying where they were looked for.
    let nowhere = dir.path().join("nowhere");
    let stderr = failed(recorder(&nowhere, &["record", "push", record, &repository]));
    assert!(
        stderr.contains(&format!("registry {host} refused")),
        "{stderr}"
    );
    assert!(stderr.contains("none (anonymous)"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/config.json (absent)", nowhere.display())),
        "{stderr}"
    );

    // A wrong password in --registry-config: refused, naming the user and the file.
    let wrong_dir = dir.path().join("wrong");
    std::fs::create_dir(&wrong_dir).unwrap();
    let wrong = docker_config(&wrong_dir, &host, "tester", "nope");
    let stderr = failed(recorder(
        &nowhere,
        &[
            "record",
            "push",
            record,
            &repository,
            "--registry-config",
            wrong.to_str().unwrap(),
        ],
    ));
    assert!(
        stderr.contains(&format!("registry {host} refused")),
        "{stderr}"
    );
    assert!(stderr.contains("of user \"tester\""), "{stderr}");
    assert!(stderr.contains(wrong.to_str().unwrap()), "{stderr}");

    // The right password, from $DOCKER_CONFIG: pushed and pulled back.
    let good_dir = dir.path().join("good");
    std::fs::create_dir(&good_dir).unwrap();
    docker_config(&good_dir, &host, "tester", "s3cret");
    ok(recorder(
        &good_dir,
        &["record", "push", record, &repository],
    ));
    let pulled = ok(recorder(
        &good_dir,
        &["record", "pull", &format!("{repository}:1")],
    ));
    assert_eq!(pulled.as_bytes(), bytes.as_slice());
    // And without them, pulling is refused too.
    let stderr = failed(recorder(
        &nowhere,
        &["record", "pull", &format!("{repository}:1")],
    ));
    assert!(
        stderr.contains(&format!("registry {host} refused")),
        "{stderr}"
    );
}

#[test]
fn tls_with_a_private_ca_needs_ca_file() {
    let registry = Registry::start_with_tls();
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("docker");
    let manifest = image_in(&registry, dir.path());
    let host = registry.host();
    let repository = format!("{host}/{REPO}");
    let record = dir.path().join("record.json");
    let bytes = record_of(&manifest, 2);
    std::fs::write(&record, &bytes).unwrap();
    let ca = registry.ca_file();

    // Another CA: the handshake fails, and the message says what to give.
    let other = dir.path().join("other-ca");
    std::fs::create_dir(&other).unwrap();
    recorder_tests::registry::write_ca_and_certificate(&other);
    let stderr = failed(recorder(
        &config_dir,
        &[
            "record",
            "push",
            record.to_str().unwrap(),
            &repository,
            "--ca-file",
            other.join("ca.pem").to_str().unwrap(),
        ],
    ));
    assert!(
        stderr.contains(&format!("TLS with registry {host} failed")),
        "{stderr}"
    );
    assert!(stderr.contains("--ca-file"), "{stderr}");

    // Its own CA: pushed and pulled over HTTPS.
    ok(recorder(
        &config_dir,
        &[
            "record",
            "push",
            record.to_str().unwrap(),
            &repository,
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    ));
    let pulled = ok(recorder(
        &config_dir,
        &[
            "record",
            "pull",
            &format!("{repository}:1"),
            "--ca-file",
            ca.to_str().unwrap(),
        ],
    ));
    assert_eq!(pulled.as_bytes(), bytes.as_slice());

    // Or from a containerd-style certs.d directory: DIR/HOST:PORT/ca.crt.
    let certs = dir.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&host)).unwrap();
    std::fs::copy(&ca, certs.join(&host).join("ca.crt")).unwrap();
    let pulled = ok(recorder(
        &config_dir,
        &[
            "record",
            "pull",
            &format!("{repository}:1"),
            "--certs-dir",
            certs.to_str().unwrap(),
        ],
    ));
    assert_eq!(pulled.as_bytes(), bytes.as_slice());
}
