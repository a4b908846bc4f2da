//! The profiling pod for real through containerd's own CRI plugin, the test playing only the
//! kubelet's part: containerd runs with its CRI plugin on a private socket (root, state, runc
//! root and opt in a temp dir); pods are created with the CRI calls the kubelet makes, from
//! `deploy/kubernetes/base/job.yaml` translated as the kubelet translates it
//! (tests/src/kubelet/), and the recorder runs inside its container from the image
//! `cargo xtask image` builds, with only the privileges that container gets.
//!
//! Not a kubelet: no API server, no pod network (the sandbox shares the node's, see
//! tests/src/kubelet/), and the probe is run by the test through `ExecSync` as the kubelet's
//! prober does. What the kubelet would have decided (start the workload once the probe passes,
//! stop the sidecar once the workload exited) the test does in that order.
//!
//! The image is `cargo xtask image`'s, packaging this build's recorder (debug, its debug info
//! stripped) rather than a release build: the same code, without a release build in the suite.
//! containerd's `k8s.io` namespace here is the private daemon's, so parallel tests and the
//! host's own containerd stay apart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use node::Node;
use recorder_tests::cri::v1 as cri;
use recorder_tests::cri_fixtures::{RecorderImage, recorder_image};
use recorder_tests::kubelet::Pod;

mod image;
mod node;
mod pod_record;
mod privileges;

/// The workload's image as a pod spec writes it; the CRI normalizes it to
/// [`recorder_tests::containerd::AGENT_IMAGE`].
const WORKLOAD_IMAGE: &str = "recorder/agent-test:1";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The recorder image, built once per test binary into the target dir.
fn image() -> &'static RecorderImage {
    static IMAGE: std::sync::OnceLock<RecorderImage> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/k8s_cri-HASH -> target/<profile>/k8s-cri-image, replaced
        // by each run.
        let out = exe
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("k8s-cri-image");
        let _ = std::fs::remove_dir_all(&out);
        let binary = recorder_tests::agent_fixtures::recorder_bin();
        recorder_image(&binary, &out)
    })
}

/// The Job's pod template, as a user's overlay sets it up for this workload
/// (deploy/kubernetes/overlays/example/workload.yaml): both image fields set to the workload's
/// image, the workload's command left to the image, the recorder's image the one built above.
/// Nothing else changes: the recorder's security context is the Job's, seccomp RuntimeDefault
/// included.
fn job_template() -> serde_json::Value {
    let job: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(workspace().join("deploy/kubernetes/base/job.yaml")).unwrap(),
    )
    .unwrap();
    let mut template = job["spec"]["template"].clone();
    let spec = &mut template["spec"];
    let recorder = spec["initContainers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "recorder")
        .unwrap();
    recorder["image"] = image().reference.clone().into();
    for env in recorder["env"].as_array_mut().unwrap() {
        if env["name"] == "WORKLOAD_IMAGE" {
            env["value"] = WORKLOAD_IMAGE.into();
        }
    }
    let workload = spec["containers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "workload")
        .unwrap();
    workload["image"] = WORKLOAD_IMAGE.into();
    workload.as_object_mut().unwrap().remove("command");
    template
}

/// Runs the startup probe through ExecSync every second (the Job's period is 5 s; the test
/// does not wait that long) until it passes; fails the test on a deadline or if the container
/// exits. Returns the last output.
fn probe_until_ready(node: &mut Node, pod: &Pod, id: &str) -> Result<String, String> {
    let (command, timeout) = pod.startup_probe("recorder");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let out = node
            .cri
            .exec_sync(id, &command, Duration::from_secs(timeout))
            .expect("ExecSync of the startup probe");
        let text = format!(
            "exit {}: {}{}",
            out.exit_code,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.exit_code == 0 {
            return Ok(text);
        }
        let state = node.cri.container_status(id).state;
        if state != cri::ContainerState::ContainerRunning as i32 || text.contains("failed") {
            return Err(text);
        }
        assert!(
            Instant::now() < deadline,
            "the startup probe did not pass in 180 s: {text}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The CRI's container log (what `kubectl logs` shows), lines without their CRI prefix.
fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // "<time> <stream> <F|P> <message>"
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_owned))
        .collect()
}
