//! `recorder record ls|rm`, and `record show` of a stored record, against the local content
//! store and a private containerd: records made by real `recorder run`s are listed with their
//! manifest, image and companion, shown from either store (the companion found through the
//! record's labels), and removed with their companion, while blobs that are not records are
//! refused.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use recorder::image::BlobDigest;
use recorder::store::ContentStore;
use recorder_tests::agent_fixtures::{LocalRun, recorder_bin};
use recorder_tests::containerd::{AGENT_IMAGE, Daemon, agent_daemon, recorder_run};
use recorder_tests::deadline::output_within;
use recorder_tests::root::require_root;

/// How long a recording run may take here (seconds, on a loaded machine).
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn recorder(args: &[&str]) -> Output {
    let child = Command::new(recorder_bin())
        .args(args)
        .env("RECORDER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running recorder");
    output_within(child, Duration::from_secs(60), "recorder")
}

fn ok(args: &[&str]) -> String {
    let out = recorder(args);
    assert!(
        out.status.success(),
        "recorder {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `record ls ... --json`, parsed.
fn ls_json(store: &[&str]) -> Vec<serde_json::Value> {
    let out = ok(&[&["record", "ls", "--json"], store].concat());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The last stdout line of a run: the record's digest.
fn last_line(stdout: &str) -> String {
    stdout.lines().last().unwrap_or_default().to_owned()
}

#[test]
fn local_store_records_are_listed_shown_and_removed_with_their_companion() {
    require_root();
    let local = LocalRun::new();
    let (store, manifest) = (&local.store, &local.manifest);
    let out = local.run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let digest = last_line(&String::from_utf8_lossy(&out.stdout));
    // A blob that is no record, as an image's layer in the same store would be.
    let content = ContentStore::open(store).unwrap();
    let layer = content.put("layer", b"not a record", None).unwrap().digest;

    let store_arg = ["--store", store.to_str().unwrap()];
    let listed = ls_json(&store_arg);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["digest"], digest.as_str());
    assert_eq!(listed[0]["manifest"], manifest.as_str());
    let companion: BlobDigest = listed[0]["companion"]
        .as_str()
        .unwrap_or_else(|| panic!("no companion in {}", listed[0]))
        .parse()
        .unwrap();
    assert!(content.exists(&companion));
    assert!(
        listed[0]["created"]
            .as_str()
            .is_some_and(|c| c.ends_with('Z'))
    );
    assert_eq!(
        ok(&[&["record", "ls", "-q"], &store_arg[..]].concat()),
        format!("{digest}\n")
    );
    let table = ok(&[&["record", "ls"], &store_arg[..]].concat());
    assert!(
        table.starts_with("DIGEST") && table.contains(&digest),
        "{table}"
    );
    let shown = ok(&[&["record", "show", &digest], &store_arg[..]].concat());
    assert!(shown.starts_with("entries "), "{shown}");

    // Not a record: refused, and kept.
    let out = recorder(&[&["record", "rm", &layer.to_string()], &store_arg[..]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a record"), "{stderr}");
    assert!(content.exists(&layer));

    let removed = ok(&[&["record", "rm", &digest], &store_arg[..]].concat());
    assert_eq!(removed, format!("{digest}\n{companion}\n"));
    assert!(!content.exists(&companion) && content.exists(&layer));
    assert!(!content.exists(&digest.parse().unwrap()));
    assert_eq!(ls_json(&store_arg), Vec::<serde_json::Value>::new());
    // Gone: a second rm says so.
    let out = recorder(&[&["record", "rm", &digest], &store_arg[..]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
}

/// `--containerd=SOCKET --namespace NS`.
fn ctrd_args(daemon: &Daemon) -> Vec<String> {
    vec![
        format!("--containerd={}", daemon.socket().display()),
        "--namespace".into(),
        daemon.namespace().into(),
    ]
}

fn listed_in_containerd(daemon: &Daemon, digest: &str) -> bool {
    String::from_utf8(daemon.ctr_ok(&["content", "ls", "-q"]))
        .unwrap()
        .lines()
        .any(|l| l == digest)
}

#[test]
fn containerd_records_are_listed_shown_and_removed_with_their_companion() {
    let (daemon, manifest) = agent_daemon();
    let child = recorder_run(&daemon, &["--image", AGENT_IMAGE])
        .spawn()
        .unwrap();
    let out = output_within(child, RUN_LIMIT, "recorder run --containerd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let digest = last_line(&String::from_utf8_lossy(&out.stdout));
    let ctrd = ctrd_args(&daemon);
    let ctrd: Vec<&str> = ctrd.iter().map(String::as_str).collect();

    let listed = ls_json(&ctrd);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["digest"], digest.as_str());
    assert_eq!(listed[0]["manifest"], manifest.as_str());
    assert_eq!(listed[0]["image"], AGENT_IMAGE);
    let companion = listed[0]["companion"]
        .as_str()
        .unwrap_or_else(|| panic!("no companion in {}", listed[0]))
        .to_owned();
    assert!(listed_in_containerd(&daemon, &companion));
    // Filtered by manifest: this one, or none.
    assert_eq!(
        ok(&[&["record", "ls", "-q", "--manifest", &manifest], &ctrd[..]].concat()),
        format!("{digest}\n")
    );
    let other = BlobDigest::of(b"another manifest").to_string();
    assert_eq!(
        ok(&[&["record", "ls", "-q", "--manifest", &other], &ctrd[..]].concat()),
        ""
    );

    // `record show DIGEST --containerd` says what `record show FILE` says of the same bytes.
    let file = daemon.scratch().join("record.json");
    std::fs::write(&file, daemon.ctr_ok(&["content", "get", &digest])).unwrap();
    let from_file = ok(&["record", "show", file.to_str().unwrap()]);
    assert_eq!(
        ok(&[&["record", "show", &digest], &ctrd[..]].concat()),
        from_file
    );
    // With --image, the companion is found through the record's labels: times are known.
    let needs = ok(&[
        &["record", "show", &digest, "--image", AGENT_IMAGE, "--json"],
        &ctrd[..],
    ]
    .concat());
    let needs: serde_json::Value = serde_json::from_str(&needs).unwrap();
    assert!(needs["lastAccessNs"].as_u64().is_some(), "{needs}");

    // The image's manifest is content too, but no record: refused and kept.
    let out = recorder(&[&["record", "rm", &manifest], &ctrd[..]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a record"), "{err}");
    assert!(listed_in_containerd(&daemon, &manifest));

    let removed = ok(&[&["record", "rm", &digest], &ctrd[..]].concat());
    assert_eq!(removed, format!("{digest}\n{companion}\n"));
    assert!(!listed_in_containerd(&daemon, &digest));
    assert!(!listed_in_containerd(&daemon, &companion));
    assert!(listed_in_containerd(&daemon, &manifest));
    assert_eq!(ok(&[&["record", "ls", "-q"], &ctrd[..]].concat()), "");
}

#[test]
fn ls_needs_a_store_and_rm_a_digest() {
    for args in [
        &["record", "ls"][..],
        &["record", "rm", "--store", "/nonexistent"],
        &["record", "rm", "--store", "/tmp", "not-a-digest"],
    ] {
        let out = recorder(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: usage error");
    }
}
