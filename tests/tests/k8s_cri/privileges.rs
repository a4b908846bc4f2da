//! Each privilege the Job grants is needed.

use std::time::{Duration, Instant};

use super::{job_template, log_lines, node::Node, probe_until_ready};
use recorder_tests::agent_fixtures::write_image_named;
use recorder_tests::containerd::AGENT_IMAGE;

/// A mutation of the Job's pod template.
type Without = fn(&mut serde_json::Value);

/// Without each privilege the Job grants, the recorder fails and says why (termination
/// message, failed probe), so none is granted for nothing. CAP_SYS_PTRACE matters only for a
/// workload running as another uid than the recorder's 0; without it the message says so.
/// Without hostPID the workload's pid is not in the recorder's /proc at all, which looks like
/// an exit to it, and the message says the container exited before the filter was armed. The BTF host mount the Job used to have is not needed: the container's own sysfs shows
/// `/sys/kernel/btf` (the main test runs without it).
#[test]
fn without_each_privilege_the_job_grants_the_recorder_fails_and_says_why() {
    fn recorder(t: &mut serde_json::Value) -> &mut serde_json::Value {
        &mut t["spec"]["initContainers"][0]
    }
    let cases: &[(&str, Without, bool, &str)] = &[
        // (what is taken away, how, whether the failure shows only once the workload runs,
        // what the termination message says)
        (
            "CAP_BPF",
            |t| {
                recorder(t)["securityContext"]["capabilities"]["add"] =
                    serde_json::json!(["PERFMON", "SYS_PTRACE"])
            },
            false,
            "loading the eBPF object failed",
        ),
        (
            "CAP_PERFMON",
            |t| {
                recorder(t)["securityContext"]["capabilities"]["add"] =
                    serde_json::json!(["BPF", "SYS_PTRACE"])
            },
            false,
            "Operation not permitted",
        ),
        (
            "the tracefs host mount",
            |t| {
                let mounts = recorder(t)["volumeMounts"].as_array_mut().unwrap();
                mounts.retain(|m| m["name"] != "tracefs");
            },
            false,
            "tracefs is not mounted",
        ),
        (
            // The workload's host pid, which containerd reports, is not in the recorder's
            // /proc: the probe passes, arming fails.
            "hostPID",
            |t| t["spec"]["hostPID"] = false.into(),
            true,
            "before the filter was armed",
        ),
        (
            // The kernel lets a process read another's /proc/<pid>/ns/mnt only with the same
            // uid or CAP_SYS_PTRACE.
            "CAP_SYS_PTRACE, with a workload running as another uid",
            |t| {
                recorder(t)["securityContext"]["capabilities"]["add"] =
                    serde_json::json!(["BPF", "PERFMON"]);
                t["spec"]["containers"][0]["securityContext"] =
                    serde_json::json!({"runAsUser": 65534});
            },
            true,
            "the recorder needs CAP_SYS_PTRACE",
        ),
    ];
    let mut node = Node::start();
    let layout = node.daemon.scratch().join("workload-layout");
    write_image_named(&layout, AGENT_IMAGE);
    node.daemon.import_layout(&layout);
    for (i, (what, without, at_arming, says)) in cases.iter().enumerate() {
        let mut template = job_template();
        without(&mut template);
        let uid = format!("0b5f3c2e-7d1a-4e8b-9c6f-00000000000{i}");
        let pod = node.pod(&format!("recorder-profile-without-{i}"), &uid, &template);
        let sandbox_config = pod.sandbox_config();
        let sandbox = node.run_pod_sandbox(&sandbox_config);
        let (recorder, files) = node.start_container(&pod, &sandbox, &sandbox_config, "recorder");
        let probe = probe_until_ready(&mut node, &pod, &recorder);
        if *at_arming {
            assert!(probe.is_ok(), "without {what}: {probe:?}");
            let (workload, _) = node.start_container(&pod, &sandbox, &sandbox_config, "workload");
            node.wait_exited(&workload, Duration::from_secs(60));
        } else {
            assert!(probe.is_err(), "without {what} the probe passed: {probe:?}");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let message = loop {
            let message = std::fs::read_to_string(&files.termination_message).unwrap();
            if !message.is_empty() || Instant::now() > deadline {
                break message;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            message.starts_with("recorder failed:") && message.contains(says),
            "without {what}: termination message {message:?}; log:\n{}",
            log_lines(&files.log).join("\n")
        );
        node.cri.stop_container(&recorder, Duration::from_secs(10));
        let stopped = node.wait_exited(&recorder, Duration::from_secs(20));
        assert_ne!(stopped.exit_code, 0, "without {what}");
        node.remove_pod(&sandbox);
    }
    node.assert_nothing_left();
}
