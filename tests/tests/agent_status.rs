//! The status socket answers in every state of a recording, driven step by step through the
//! agent's library, as root: starting, indexing, tracing, committing, done with the digest.

use std::path::PathBuf;

use recorder::agent::{Agent, CommitOptions, ImageSource, StopReason, Target};
use recorder::image::Platform;
use recorder::sandbox::{ProcessSpec, Sandbox, unpack_layer};
use recorder::status::{State, StatusHandle, StopSignal, client, serve};
use recorder::tracer::{Tracer, TracerConfig};
use recorder_tests::agent_fixtures::{Expected, layers, record_entries, write_image};
use recorder_tests::root::require_root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_socket_answers_in_each_state() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    let manifest = write_image(&image);
    let socket = dir.path().join("status.sock");
    let status = StatusHandle::new();
    let stop = StopSignal::new();
    let server = serve(&socket, status.clone(), stop.clone()).unwrap();
    let state = || async { client::status(&socket).await.unwrap() };

    assert_eq!(state().await.state, State::Starting);
    let source: ImageSource = image.to_str().unwrap().parse().unwrap();
    let indexed = Agent::new(status.clone())
        .index(source, Platform::host())
        .await
        .unwrap();
    let report = state().await;
    assert_eq!(report.state, State::Indexing);
    assert_eq!(report.manifest_digest.as_deref(), Some(manifest.as_str()));

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
        args: vec!["/bin/cat".into(), "/etc/shadowed".into(), "/nope".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    };
    let tracer = Tracer::load(&TracerConfig::default()).unwrap();
    let pending = Sandbox::new(lowerdirs, dir.path().join("scratch"), spec)
        .start()
        .unwrap();
    let target = Target::of_pid(pending.mntns_inode() as u32, pending.pid()).unwrap();
    let tracing = indexed.arm(tracer, target).unwrap();
    assert_eq!(state().await.state, State::Tracing);
    pending.release().unwrap().wait().await.unwrap();

    let asked = async {
        assert_eq!(state().await.state, State::Tracing);
        client::stop(&socket).await.unwrap();
    };
    let run = tracing.run(async {
        stop.triggered().await;
        StopReason::Requested
    });
    let (stopped, ()) = tokio::join!(run, asked);
    let stopped = stopped.unwrap();
    assert_eq!(stopped.reason(), &StopReason::Requested);
    assert_eq!(state().await.state, State::Tracing);

    let committing = stopped.begin_commit();
    assert_eq!(state().await.state, State::Committing);
    let summary = committing
        .commit(&CommitOptions {
            store: dir.path().join("store").into(),
            record_out: None,
            companion_out: None,
            fallback_dir: dir.path().to_owned(),
        })
        .unwrap();
    let report = state().await;
    assert_eq!(report.state, State::Done);
    let digest = summary.committed.record.to_string();
    assert_eq!(report.record_digest.as_deref(), Some(digest.as_str()));
    let mut want = Expected::default();
    want.exec("cat").file("etc/shadowed", 1);
    assert_eq!(report.counters.recorded_paths, want.0.len() as u64);
    // The counter counts exactly the committed record's entries, named.
    let bytes = recorder::store::ContentStore::open(dir.path().join("store"))
        .unwrap()
        .read(&summary.committed.record)
        .unwrap();
    assert_eq!(record_entries(&bytes, &manifest), want.0);
    assert_eq!(report.counters.failed_opens, summary.failed);
    assert!(summary.failed >= 1, "cat /nope fails: {summary}");
    assert!(report.counters.events >= report.counters.recorded_paths);
    assert_eq!(report.counters.lost, 0);
    let seen: Vec<State> = report.states.iter().map(|c| c.state).collect();
    assert_eq!(
        seen,
        [
            State::Starting,
            State::Indexing,
            State::Tracing,
            State::Committing,
            State::Done
        ]
    );
    server.shutdown().await;
}
