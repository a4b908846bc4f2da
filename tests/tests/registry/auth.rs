//! Credentials from docker config files, and TLS with a private CA.

use recorder_tests::registry::{Registry, docker_config};

use super::{REPO, failed, image_in, ok, record_of, recorder};

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
