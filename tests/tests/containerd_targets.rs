//! Finding containers through containerd: a running container's task, and a container armed
//! by name from its mount namespace's creation by runc, so the real tracer sees its entrypoint
//! from the first exec, for certain.

use std::time::Duration;

use recorder::agent::{Catching, Stops, Target};
use recorder::containerd::{ContainerPattern, Containerd, ContainerdError, TaskWatcher};
use recorder::tracer::{Event, Tracer, TracerConfig, mount_namespace_of};
use recorder_tests::containerd::{Daemon, IMAGE, runnable_image};

fn daemon_with_image() -> Daemon {
    let daemon = Daemon::start();
    let layout = daemon.scratch().join("layout");
    runnable_image(&layout);
    daemon.import_layout(&layout);
    daemon
}

fn connect(rt: &tokio::runtime::Runtime, daemon: &Daemon) -> Containerd {
    rt.block_on(Containerd::connect(daemon.socket(), daemon.namespace()))
        .expect("connect")
}

/// The real tracer catching runc's namespaces, then a watcher of the tasks matching `pattern`:
/// subscribed after the catch started, so whatever it reports was caught as runc made it.
struct Watching {
    rt: tokio::runtime::Runtime,
    catching: Catching,
    stops: Stops,
    watcher: TaskWatcher,
}

fn watching(daemon: &Daemon, pattern: &str) -> Watching {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (catching, stops, watcher) = {
        let _guard = rt.enter();
        let client = connect(&rt, daemon);
        let tracer = Tracer::load(&TracerConfig::default()).expect("load the eBPF programs");
        let catching = Catching::start(tracer).expect("catch runc's namespaces");
        let watcher = rt
            .block_on(client.watch_tasks(ContainerPattern::parse(pattern).unwrap()))
            .expect("watch");
        let stops = Stops::install(recorder::status::StopSignal::new()).unwrap();
        (catching, stops, watcher)
    };
    Watching {
        rt,
        catching,
        stops,
        watcher,
    }
}

#[test]
fn container_id_resolves_to_its_task_pid_and_mount_namespace() {
    let daemon = daemon_with_image();
    daemon.run_detached(IMAGE, "sleeper", &["/bin/sleep", "300"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = connect(&rt, &daemon);
    let task = rt.block_on(client.container_task("sleeper")).expect("task");
    assert_eq!(task.container_id, "sleeper");
    assert_eq!(task.pid, daemon.task_pid("sleeper"));
    assert_eq!(task.mntns, mount_namespace_of(task.pid).unwrap());
    assert_ne!(task.mntns, mount_namespace_of(std::process::id()).unwrap());
    // `ctr run -d` returns once runc start has released the init, which execs the entrypoint
    // a moment later (seen once in 26 loop runs: still `runc:[2:INIT]`): wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", task.pid)).unwrap();
        if comm.trim() == "sleep" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task's process is still {comm:?} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn missing_and_exited_containers_are_named() {
    let daemon = daemon_with_image();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = connect(&rt, &daemon);

    let err = rt.block_on(client.container_task("nobody")).unwrap_err();
    assert!(
        matches!(err, ContainerdError::ContainerNotFound { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"nobody\""), "{err}");

    // A task that has exited but is not yet deleted is STOPPED.
    daemon.run_detached(IMAGE, "quick", &[]);
    daemon.wait_stopped("quick");
    let err = rt.block_on(client.container_task("quick")).unwrap_err();
    assert!(matches!(err, ContainerdError::NoTask { .. }), "{err:?}");
    assert!(err.to_string().contains("\"quick\""), "{err}");
    // Then deleted, leaving the container without a task.
    daemon.ctr_ok(&["tasks", "delete", "quick"]);
    let err = rt.block_on(client.container_task("quick")).unwrap_err();
    assert!(matches!(err, ContainerdError::NoTask { .. }), "{err:?}");
}

#[test]
fn bad_patterns_are_refused() {
    assert_eq!(ContainerPattern::parse(""), None);
    assert_eq!(ContainerPattern::parse("=v"), None);
}

fn describe(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| {
            let file = e
                .file
                .as_ref()
                .map(|f| String::from_utf8_lossy(&f.path).into_owned());
            format!(
                "{} {} {} -> {}",
                e.kind.name(),
                e.ret,
                e.path().display(),
                file.unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn container_name_pattern_arms_the_tracer_before_the_entrypoint_runs() {
    let daemon = daemon_with_image();
    // Subscribed first; the container is started only afterwards.
    let Watching {
        rt,
        mut catching,
        stops,
        mut watcher,
    } = watching(&daemon, "armed-*");
    let _guard = rt.enter();
    // A container that does not match must be passed over.
    let other = {
        let (socket, ns) = (daemon.socket(), daemon.namespace().to_owned());
        std::thread::spawn(move || ctr_run(&socket, &ns, "other"))
    };
    other.join().unwrap();
    let runner = {
        let (socket, ns) = (daemon.socket(), daemon.namespace().to_owned());
        std::thread::spawn(move || ctr_run(&socket, &ns, "armed-1"))
    };
    let created = rt
        .block_on(catching.created(&mut watcher, &stops))
        .expect("the task is created");
    // The test's own delay, as long as the entrypoint's whole run: with an arm on the creation
    // report this would be a late arm every time.
    runner.join().unwrap();
    let target = Target::of_pid(created.target.mntns, created.target.pid)
        .or_else(|_| {
            // Already gone (`ctr run --rm`): nothing to pin; its buffer holds all it did.
            Ok::<_, ()>(Target {
                mntns: created.target.mntns,
                mounts: Default::default(),
                root: None,
                pin: None,
            })
        })
        .unwrap();
    let caught = catching.identify(target).expect("identify the target");
    assert!(
        caught.in_time(),
        "the target's namespace was not caught as runc made it"
    );
    assert_eq!(created.target.container_id, "armed-1");
    assert_eq!(created.image, IMAGE);
    let (_tracer, mut stream, _target, mut events) = caught.into_parts();

    // The task has exited: everything it did is in the buffer or the ring.
    rt.block_on(async {
        // Read until the ring is empty; bounded, so a broken tracer fails below, not hangs.
        for _ in 0..100 {
            let before = events.len();
            let _ = tokio::time::timeout(Duration::from_millis(50), stream.next_batch(&mut events))
                .await;
            stream.drain(&mut events);
            if events.len() == before && before > 0 {
                break;
            }
        }
    });
    assert!(
        events.iter().all(|e| e.mntns == created.target.mntns),
        "events of another namespace:\n{}",
        describe(&events)
    );

    let exec = events
        .iter()
        .position(|e| e.is_exec() && e.path() == std::path::Path::new("/bin/cat"))
        .unwrap_or_else(|| panic!("no execve of the entrypoint:\n{}", describe(&events)));
    // Opens are named by the file the kernel opened (argument paths are read only by `trace`).
    let opened = |suffix: &str| {
        events.iter().position(|e| {
            !e.is_exec()
                && e.succeeded()
                && e.file
                    .as_ref()
                    .is_some_and(|f| f.path.ends_with(suffix.as_bytes()))
        })
    };
    let libc = opened("libc.so.6").unwrap_or_else(|| {
        panic!(
            "the loader's open of libc is missing:\n{}",
            describe(&events)
        )
    });
    let hello = opened("etc/hello")
        .unwrap_or_else(|| panic!("the entrypoint's open is missing:\n{}", describe(&events)));
    assert!(exec < libc && libc < hello, "{}", describe(&events));
}

fn ctr_run(socket: &std::path::Path, namespace: &str, id: &str) {
    ctr(socket, namespace, &["run", "--rm", "--null-io", IMAGE, id]);
}

fn ctr(socket: &std::path::Path, namespace: &str, args: &[&str]) {
    let out = std::process::Command::new("ctr")
        .arg("-a")
        .arg(socket)
        .args(["-n", namespace])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container that runs and exits before containerd's report of its task reaches the
/// recorder (seen under load: "exited before the filter was armed") is recorded from its
/// caught namespace, pinned when the kernel reported it: its mounts and root are read from
/// inside the namespace, and its events were buffered from its creation.
#[test]
fn a_container_that_exits_before_its_report_is_recorded_from_its_caught_namespace() {
    let daemon = daemon_with_image();
    let Watching {
        rt,
        mut catching,
        stops,
        mut watcher,
    } = watching(&daemon, "gone-*");
    let _guard = rt.enter();

    // The container runs to its end while the ring is read (so its namespace is caught and
    // pinned), but before the watcher is asked about it: its report is read after it exited.
    let runner = {
        let (socket, ns) = (daemon.socket(), daemon.namespace().to_owned());
        // Not removed when it exits: the watcher looks the container up by its report.
        std::thread::spawn(move || ctr(&socket, &ns, &["run", "--null-io", IMAGE, "gone-1"]))
    };
    rt.block_on(catching.while_waiting(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !runner.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "ctr run did not end in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }))
    .unwrap();
    runner.join().unwrap();

    let created = rt
        .block_on(catching.created(&mut watcher, &stops))
        .expect("the task's report");
    assert_eq!(created.target.container_id, "gone-1");
    assert_eq!(
        created.target.mntns, 0,
        "the task's process was still there when its report was read"
    );
    assert!(Target::of_pid(created.target.mntns, created.target.pid).is_err());
    let target = catching
        .exited_target(&created.target)
        .expect("the caught namespace stands for the exited container");
    // Read from inside the namespace: the container's own root (the overlay, whole).
    let root = target.mounts.root().cloned().expect("no root mount read");
    assert_eq!(root.root, b"", "{root:?}");
    assert!(target.root.is_some() && target.pin.is_some());
    let caught = catching.identify(target).expect("identify the target");
    assert!(caught.in_time(), "not traced from its creation");
    let (_tracer, _stream, target, events) = caught.into_parts();
    assert!(
        events.iter().all(|e| e.mntns == target.mntns),
        "events of another namespace:\n{}",
        describe(&events)
    );
    let exec = events
        .iter()
        .find(|e| e.is_exec() && e.path() == std::path::Path::new("/bin/cat"))
        .unwrap_or_else(|| panic!("no execve of the entrypoint:\n{}", describe(&events)));
    assert_eq!(
        exec.file.as_ref().map(|f| f.dev),
        Some(root.dev),
        "the entrypoint is not on the root read from the namespace"
    );
    assert!(
        events.iter().any(|e| !e.is_exec()
            && e.succeeded()
            && e.file
                .as_ref()
                .is_some_and(|f| f.path.ends_with(b"etc/hello"))),
        "the entrypoint's open is missing:\n{}",
        describe(&events)
    );
}
