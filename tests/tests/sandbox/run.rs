//! The workload in its overlay root: private namespaces, held before exec, the image user, failures named and cleaned up.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use recorder::sandbox::{ImageProcess, Sandbox, SandboxError, SpecError, unpack_layer};
use recorder_tests::root::require_root;
use recorder_tests::sandbox_fixtures::{LayerBuilder, mounts_mentioning};

use super::{TapMkdir, assert_cleaned, capture, image, read_all, spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_workload_in_a_private_overlay_root() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let script = "echo pid=$$; cat /etc/marker; \
        if [ -e /etc/gone ]; then echo gone=present; else echo gone=absent; fi; \
        ls /data/opq; \
        echo hi > /tmp/t && cat /tmp/t; echo up > /written; \
        [ -c /dev/null ] && echo devnull=ok; [ -c /dev/urandom ] && echo urandom=ok; \
        [ -L /dev/ptmx ] && echo ptmx=ok; \
        while read dev mnt fs rest; do echo mount $mnt $fs; done < /proc/mounts; \
        ls /proc | while read p; do case $p in [0-9]*) echo proc=$p;; esac; done; \
        exit 7";
    let (w, r) = capture();
    let pending = Sandbox::new(layers.clone(), scratch.clone(), spec(&["sh", "-c", script]))
        .stdout(w)
        .start()
        .unwrap();
    assert!(scratch.join("upper").is_dir());

    let host_ns = std::fs::metadata("/proc/self/ns/mnt").unwrap().ino();
    let child_ns = std::fs::metadata(format!("/proc/{}/ns/mnt", pending.pid()))
        .unwrap()
        .ino();
    assert_eq!(pending.mntns_inode(), child_ns);
    assert_ne!(pending.mntns_inode(), host_ns);
    // The overlay is visible in the child's namespace only.
    let theirs = std::fs::read_to_string(format!("/proc/{}/mountinfo", pending.pid())).unwrap();
    assert!(theirs.contains(" - overlay "), "{theirs}");
    assert!(
        mounts_mentioning(&scratch).is_empty(),
        "overlay leaked into the host namespace"
    );

    let running = pending.release().unwrap();
    let status = running.wait().await.unwrap();
    assert_eq!(status.code(), Some(7));
    let out = read_all(r);
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "pid=1",
        "top",
        "gone=absent",
        "new",
        "hi",
        "devnull=ok",
        "urandom=ok",
        "ptmx=ok",
        "mount / overlay",
        "mount /proc proc",
        "mount /dev tmpfs",
        "mount /dev/pts devpts",
        "mount /dev/shm tmpfs",
        "mount /tmp tmpfs",
        "mount /sys sysfs",
    ] {
        assert!(lines.contains(&want), "missing {want:?} in output:\n{out}");
    }
    assert!(
        !lines.contains(&"old"),
        "opaque dir let the lower layer through:\n{out}"
    );
    // Only the container's processes are visible: sh (pid 1) and its children.
    let pids: Vec<u32> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("proc="))
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        pids.contains(&1) && pids.iter().all(|p| *p < 100),
        "{pids:?}"
    );
    // Writes went to the upper dir, which is gone now; the layers are untouched.
    assert!(!layers.iter().any(|l| l.join("written").exists()));
    assert_cleaned(&scratch, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_the_workload_before_exec_until_released() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let pending = Sandbox::new(layers, scratch.clone(), spec(&["/bin/sleep", "30"]))
        .start()
        .unwrap();
    let pid = pending.pid();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Still runc's init, parked on its exec fifo: it has not exec'd.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(!exe.ends_with("bin/sleep"), "{}", exe.display());

    let running = pending.release().unwrap();
    // `runc start` returns once init is let go; the exec follows at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        if exe.ends_with("bin/sleep") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workload never exec'd: {}",
            exe.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    running.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    let status = running.wait().await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert_cleaned(&scratch, dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_image_user_with_its_groups_and_workdir() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let config = ImageProcess {
        entrypoint: vec!["sh".into(), "-c".into()],
        cmd: vec!["echo ignored".into()],
        env: vec![],
        working_dir: "/home/app/work".into(),
        user: "app".into(),
    };
    let over = vec![
        "id -u; id -g; id -G; pwd; echo $HOME; echo $PATH; touch /nope 2>/dev/null || echo ro"
            .to_owned(),
    ];
    let process = config.to_spec(Some(&over), &layers).unwrap();
    let (w, r) = capture();
    let pending = Sandbox::new(layers, scratch.clone(), process)
        .stdout(w)
        .start()
        .unwrap();
    let status = pending.release().unwrap().wait().await.unwrap();
    assert!(status.success());
    let out = read_all(r);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "1000",
            "1000",
            "1000 50",
            "/home/app/work",
            "/home/app",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ro"
        ],
        "{out}"
    );
    assert_cleaned(&scratch, dir.path());
}

#[test]
fn user_lookup_sees_the_merged_view_of_the_layers() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut layers = image(&dir.path().join("layers").tap_mkdir());
    let config = ImageProcess {
        cmd: vec!["sh".into()],
        user: "app".into(),
        ..ImageProcess::default()
    };
    assert_eq!(config.to_spec(None, &layers).unwrap().uid, 1000);

    // A later layer that whites out /etc/passwd hides the user.
    let mut wh = LayerBuilder::new();
    wh.file("etc/.wh.passwd", 0o644, b"");
    let path = dir.path().join("layers/2");
    std::fs::create_dir(&path).unwrap();
    unpack_layer(wh.finish().as_slice(), &path).unwrap();
    layers.push(path);
    assert!(matches!(
        config.to_spec(None, &layers),
        Err(SpecError::UnknownUser(_))
    ));

    // A later layer with an opaque /etc and its own passwd wins.
    let mut opq = LayerBuilder::new();
    opq.file("etc/.wh..wh..opq", 0o644, b"").file(
        "etc/passwd",
        0o644,
        b"app:x:2000:2000::/:/bin/sh\n",
    );
    let path = dir.path().join("layers/3");
    std::fs::create_dir(&path).unwrap();
    unpack_layer(opq.finish().as_slice(), &path).unwrap();
    layers.push(path);
    let spec = config.to_spec(None, &layers).unwrap();
    assert_eq!((spec.uid, spec.gid), (2000, 2000));
    // /etc/group is hidden by the opaque /etc: no supplementary groups.
    assert!(spec.additional_gids.is_empty());
}

#[test]
fn a_bad_command_fails_with_its_name_and_cleans_up() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    for cmd in ["no-such-command", "/bin/missing", "/etc/marker"] {
        let scratch = dir.path().join("scratch");
        // runc looks the command up before parking init, so either step may refuse it.
        let err = Sandbox::new(layers.clone(), scratch.clone(), spec(&[cmd]))
            .start()
            .and_then(|pending| pending.release())
            .expect_err("exec of a bad command succeeded");
        assert!(matches!(err, SandboxError::Exec { .. }), "{err}");
        assert!(
            err.to_string().contains(cmd),
            "error does not name {cmd}: {err}"
        );
        assert_cleaned(&scratch, dir.path());
    }
}

#[test]
fn dropping_a_pending_workload_kills_it_and_cleans_up() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let scratch = dir.path().join("scratch");
    let pending = Sandbox::new(layers, scratch.clone(), spec(&["sh"]))
        .start()
        .unwrap();
    let pid = pending.pid();
    drop(pending);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} still exists"
    );
    assert_cleaned(&scratch, dir.path());

    // Dropping a running workload does the same.
    let layers = image(&dir.path().join("layers2").tap_mkdir());
    let pending = Sandbox::new(layers, scratch.clone(), spec(&["sleep", "60"]))
        .start()
        .unwrap();
    let running = pending.release().unwrap();
    let pid = running.pid();
    drop(running);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "workload {pid} still exists"
    );
    assert_cleaned(&scratch, dir.path());
}

#[test]
fn a_setup_failure_names_the_step_and_cleans_up() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    let err = Sandbox::new(
        vec![dir.path().join("no-such-layer")],
        scratch.clone(),
        spec(&["sh"]),
    )
    .start()
    .expect_err("overlay over a missing layer mounted");
    assert!(matches!(err, SandboxError::Setup { .. }), "{err}");
    assert!(err.to_string().contains("mount overlay"), "{err}");
    assert_cleaned(&scratch, dir.path());

    // A scratch dir with someone's data in it is refused, and left alone.
    std::fs::create_dir(&scratch).unwrap();
    std::fs::write(scratch.join("keep"), b"mine").unwrap();
    let layers = image(&dir.path().join("layers").tap_mkdir());
    let err = Sandbox::new(layers, scratch.clone(), spec(&["sh"]))
        .start()
        .unwrap_err();
    assert!(matches!(err, SandboxError::Scratch { .. }), "{err}");
    assert_eq!(std::fs::read(scratch.join("keep")).unwrap(), b"mine");
}
