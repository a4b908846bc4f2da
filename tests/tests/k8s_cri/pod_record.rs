//! The recorder's pod: armed before the pull, decoys ignored, the exact record, confined as the
//! Job says, lingering until stopped, nothing left.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{WORKLOAD_IMAGE, image, job_template, log_lines, node::Node, probe_until_ready};
use recorder_tests::agent_fixtures::{expected_record, record_entries, write_image_named};
use recorder_tests::containerd::AGENT_IMAGE;
use recorder_tests::cri::v1 as cri;

const POD_UID: &str = "5d0c6e1a-2b7f-4c3e-9a8d-7f1e2d3c4b5a";
const DECOY_UID: &str = "c4b5a6d7-e8f9-4a0b-8c1d-2e3f4a5b6c7d";

/// What the kernel says about the confinement of a container's first process.
#[derive(Debug, PartialEq)]
struct Confinement {
    effective_caps: u64,
    no_new_privs: bool,
    seccomp_filter: bool,
    read_only_root: bool,
}

/// The confinement of the process of container `id` (found by its cgroup; with hostPID its
/// pid is a host pid).
fn confinement(id: &str) -> Confinement {
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .find(|e| {
            std::fs::read_to_string(e.path().join("cgroup"))
                .is_ok_and(|c| c.lines().any(|l| l.ends_with(&format!("/{id}"))))
        })
        .unwrap_or_else(|| panic!("no process of container {id}"))
        .path();
    let status = std::fs::read_to_string(pid.join("status")).unwrap();
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in {status}"))
            .trim()
            .to_owned()
    };
    let mountinfo = std::fs::read_to_string(pid.join("mountinfo")).unwrap();
    // "<id> <parent> <dev> <root> <mount point> <options> ..."
    let root_options = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f.get(4) == Some(&"/"))
        .map(|f| f[5].to_owned())
        .unwrap();
    Confinement {
        effective_caps: u64::from_str_radix(&field("CapEff"), 16).unwrap(),
        no_new_privs: field("NoNewPrivs") == "1",
        seccomp_filter: field("Seccomp") == "2",
        read_only_root: root_options.split(',').any(|o| o == "ro"),
    }
}

/// Progress on stderr (shown with --nocapture, and with a failure).
fn phase(start: Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", start.elapsed().as_secs_f64());
}

#[test]
fn recorder_container_records_its_pods_workload_through_the_cri_and_leaves_nothing() {
    let start = Instant::now();
    image();
    phase(start, "recorder image built");
    let mut node = Node::start();
    phase(start, "containerd with CRI up, images imported");
    let version = node.cri.version();
    assert_eq!(version.runtime_name, "containerd");
    eprintln!("runtime: containerd {}", version.runtime_version);

    let mut template = job_template();
    // Another container of the same pod, not the target: a copy of the workload's spec
    // named `helper`, reading a file the workload does not.
    let mut helper = template["spec"]["containers"][0].clone();
    helper["name"] = "helper".into();
    helper["command"] = serde_json::json!(["/bin/cat", "/data/old.txt"]);
    template["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(helper);
    let pod = node.pod("recorder-profile-x7k2p", POD_UID, &template);
    let sandbox_config = pod.sandbox_config();
    let sandbox = node.run_pod_sandbox(&sandbox_config);
    let (recorder, files) = node.start_container(&pod, &sandbox, &sandbox_config, "recorder");
    phase(start, "recorder container started");
    // In the pod's cgroup, under the Job's memory limit (which the eBPF maps are charged to).
    let memory = Path::new("/sys/fs/cgroup/memory")
        .join(&node.cgroup_top)
        .join(format!("pod{POD_UID}"))
        .join(&recorder)
        .join("memory.limit_in_bytes");
    assert_eq!(
        std::fs::read_to_string(&memory)
            .unwrap_or_else(|e| panic!("{}: {e}", memory.display()))
            .trim(),
        (1u64 << 30).to_string()
    );
    let ready = probe_until_ready(&mut node, &pod, &recorder);
    assert!(
        ready.is_ok(),
        "the startup probe failed: {ready:?}\nrecorder log:\n{}",
        log_lines(&files.log).join("\n")
    );
    phase(start, "startup probe passed");
    // Ready inside the confinement the Job asks for, as the kernel reports it.
    assert_eq!(
        confinement(&recorder),
        Confinement {
            // CAP_SYS_PTRACE (19), CAP_PERFMON (38), CAP_BPF (39), and nothing else.
            effective_caps: (1 << 19) | (1 << 38) | (1 << 39),
            no_new_privs: true,
            seccomp_filter: true,
            read_only_root: true,
        }
    );
    // The kubelet pulls the workload's image only after the probe passed.
    assert_eq!(node.cri.image_status(WORKLOAD_IMAGE), None);
    let layout = node.daemon.scratch().join("workload-layout");
    let manifest = write_image_named(&layout, AGENT_IMAGE);
    node.daemon.import_layout(&layout);

    // Decoys, each reading a file the workload does not (the exact record below shows that
    // neither was recorded), each run to its end before the workload starts. First another
    // pod's container with the same name; then the other container of the workload's pod.
    let mut decoy_template = template.clone();
    decoy_template["spec"]["containers"][0]["command"] =
        serde_json::json!(["/bin/cat", "/data/old.txt"]);
    let decoy = node.pod("decoy-q9w4e", DECOY_UID, &decoy_template);
    let decoy_config = decoy.sandbox_config();
    let decoy_sandbox = node.run_pod_sandbox(&decoy_config);
    let (decoy_workload, _) =
        node.start_container(&decoy, &decoy_sandbox, &decoy_config, "workload");
    let decoy_status = node.wait_exited(&decoy_workload, Duration::from_secs(60));
    assert_eq!(decoy_status.exit_code, 0, "{decoy_status:?}");
    let (helper, _) = node.start_container(&pod, &sandbox, &sandbox_config, "helper");
    let helper_status = node.wait_exited(&helper, Duration::from_secs(60));
    assert_eq!(helper_status.exit_code, 0, "{helper_status:?}");

    let (workload, _) = node.start_container(&pod, &sandbox, &sandbox_config, "workload");
    let status = node.wait_exited(&workload, Duration::from_secs(60));
    assert_eq!(status.exit_code, 0, "{status:?}");
    phase(start, "decoy and workload ran");

    // The recorder commits once the workload's task exited, then writes the digest.
    let deadline = Instant::now() + Duration::from_secs(120);
    let digest = loop {
        let message = std::fs::read_to_string(&files.termination_message).unwrap();
        if !message.is_empty() {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "no termination message in 120 s; recorder log:\n{}",
            log_lines(&files.log).join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        digest.starts_with("sha256:"),
        "termination message: {digest}"
    );
    phase(start, "record committed");
    // Lingering until the kubelet's SIGTERM: still running 2 s after the commit (a recorder
    // that does not linger exits within milliseconds of it).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        node.cri.container_status(&recorder).state,
        cri::ContainerState::ContainerRunning as i32,
        "the recorder exited before it was stopped; log:\n{}",
        log_lines(&files.log).join("\n")
    );

    // The exact record, in the CRI's namespace, labelled.
    let bytes = node.daemon.ctr_ok(&["content", "get", &digest]);
    assert_eq!(record_entries(&bytes, &manifest), expected_record(false));
    let labels = String::from_utf8(node.daemon.ctr_ok(&["content", "ls"])).unwrap();
    let line = labels.lines().find(|l| l.starts_with(&digest)).unwrap();
    assert!(
        line.contains(&format!("dev.recorder.image={AGENT_IMAGE}")),
        "{line}"
    );
    assert!(line.contains("containerd.io/gc.root="), "{line}");

    // Every regular container exited: the kubelet stops the sidecar.
    let grace = template["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    node.cri
        .stop_container(&recorder, Duration::from_secs(grace));
    let stopped = node.wait_exited(&recorder, Duration::from_secs(10));
    let log = log_lines(&files.log);
    assert_eq!(stopped.exit_code, 0, "recorder log:\n{}", log.join("\n"));
    assert!(
        log.iter().any(|l| *l == format!("record: {digest}")),
        "{log:?}"
    );
    let log = log.join("\n");
    // Traced from the moment runc made the workload's namespace: never a late arm.
    assert!(
        log.contains(recorder_tests::containerd::ARMED_AT_CREATION),
        "{log}"
    );
    assert!(log.contains("warnings: 0"), "{log}");
    assert!(
        log.contains("stopped: every target process exited"),
        "{log}"
    );

    phase(start, "recorder stopped, exit 0");
    node.remove_pod(&decoy_sandbox);
    node.remove_pod(&sandbox);
    node.assert_nothing_left();
    phase(start, "pods removed, nothing left");
}
