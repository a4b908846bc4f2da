//! A node: containerd with its CRI plugin on a private socket, driven as the kubelet drives it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::image;
use recorder_tests::containerd::{CriOptions, Daemon, mounts_under};
use recorder_tests::cri::Cri;
use recorder_tests::cri::v1 as cri;
use recorder_tests::cri_fixtures::{PAUSE_IMAGE, pause_image};
use recorder_tests::kubelet::Pod;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A node: containerd with its CRI plugin, the pause and recorder images imported, and a
/// cgroup parent of its own for its pods.
pub(super) struct Node {
    pub(super) cri: Cri,
    pub(super) cgroup_top: String,
    /// Every sandbox and container id the CRI gave out, to look for their cgroups at the end.
    ids: Vec<String>,
    pub(super) daemon: Daemon,
}

impl Node {
    pub(super) fn start() -> Node {
        let cgroup_top = format!(
            "recorder-cri-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let daemon = Daemon::start_cri(CriOptions {
            sandbox_image: PAUSE_IMAGE,
            cgroup_parent: &format!("/{cgroup_top}"),
        });
        let pause = daemon.scratch().join("pause-layout");
        pause_image(&pause);
        daemon.import_layout(&pause);
        // As the image reaches a node: the archive `cargo xtask image` wrote, imported as is.
        daemon.ctr_ok(&["images", "import", image().archive.to_str().unwrap()]);
        let cri = Cri::connect(&daemon.socket());
        Node {
            cri,
            cgroup_top,
            ids: Vec::new(),
            daemon,
        }
    }

    /// A pod of the Job's template with `uid`, its kubelet dir under the daemon's temp dir.
    pub(super) fn pod(&self, name: &str, uid: &str, template: &serde_json::Value) -> Pod {
        Pod {
            name: name.into(),
            namespace: "perf".into(),
            uid: uid.into(),
            dir: self.daemon.scratch().join("pods").join(uid),
            template: template.clone(),
            host_path_remap: HashMap::from([(
                "/run/containerd/containerd.sock".to_owned(),
                self.daemon.socket(),
            )]),
            cgroup_parent: format!("/{}/pod{uid}", self.cgroup_top),
        }
    }

    /// Creates and starts container `name` of `pod` in `sandbox`, its image resolved as the
    /// kubelet resolves it (ImageStatus of the spec's reference, then the image id).
    pub(super) fn start_container(
        &mut self,
        pod: &Pod,
        sandbox: &str,
        sandbox_config: &cri::PodSandboxConfig,
        name: &str,
    ) -> (String, recorder_tests::kubelet::ContainerFiles) {
        let spec_image = pod.container(name)["image"].as_str().unwrap().to_owned();
        let image = self
            .cri
            .image_status(&spec_image)
            .unwrap_or_else(|| panic!("the CRI has no image {spec_image}"));
        // Where the kubelet would find Localhost seccomp profiles (the Job uses none).
        let seccomp_root = self.daemon.scratch().join("seccomp");
        let (config, files) = pod.container_config(name, &image.id, &seccomp_root);
        let id = self.cri.create_container(sandbox, &config, sandbox_config);
        self.ids.push(id.clone());
        self.cri.start_container(&id);
        (id, files)
    }

    /// RunPodSandbox; returns the sandbox id.
    pub(super) fn run_pod_sandbox(&mut self, config: &cri::PodSandboxConfig) -> String {
        let id = self.cri.run_pod_sandbox(config);
        self.ids.push(id.clone());
        id
    }

    pub(super) fn wait_exited(&mut self, id: &str, limit: Duration) -> cri::ContainerStatus {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.cri.container_status(id);
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {:?} after {limit:?}",
                status.state
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet does once a pod is done.
    pub(super) fn remove_pod(&mut self, sandbox: &str) {
        self.cri.stop_pod_sandbox(sandbox).expect("StopPodSandbox");
        self.cri
            .remove_pod_sandbox(sandbox)
            .expect("RemovePodSandbox");
    }

    /// Nothing of any pod is left: sandboxes, containers (CRI's and containerd's), tasks,
    /// shims, mounts, and no cgroup dir under the pods' cgroup parents; then removes those
    /// parents as the kubelet removes its pod cgroups, which only succeeds if they are empty.
    pub(super) fn assert_nothing_left(&mut self) {
        assert_eq!(self.cri.list_pod_sandbox(), Vec::new(), "sandboxes left");
        assert_eq!(self.cri.list_containers(), Vec::new(), "containers left");
        assert_eq!(
            String::from_utf8(self.daemon.ctr_ok(&["containers", "ls", "-q"])).unwrap(),
            "",
            "containerd containers left"
        );
        assert_eq!(
            String::from_utf8(self.daemon.ctr_ok(&["tasks", "ls", "-q"])).unwrap(),
            "",
            "tasks left"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.daemon.shims().is_empty() {
            assert!(
                Instant::now() < deadline,
                "shims left: {:?}",
                self.daemon.shims()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            mounts_under(self.daemon.scratch()),
            Vec::<String>::new(),
            "mounts left"
        );
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            // Not where the CRI puts containers without a cgroup parent either.
            for id in &self.ids {
                let stray = hierarchy.path().join("k8s.io").join(id);
                assert!(!stray.exists(), "cgroup left: {}", stray.display());
            }
            let top = hierarchy.path().join(&self.cgroup_top);
            let Ok(pods) = std::fs::read_dir(&top) else {
                continue;
            };
            for pod in pods.flatten().filter(|e| e.path().is_dir()) {
                let left: Vec<PathBuf> = std::fs::read_dir(pod.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect();
                assert_eq!(left, Vec::<PathBuf>::new(), "container cgroups left");
                std::fs::remove_dir(pod.path())
                    .unwrap_or_else(|e| panic!("removing {}: {e}", pod.path().display()));
            }
            std::fs::remove_dir(&top).unwrap_or_else(|e| panic!("removing {}: {e}", top.display()));
        }
    }
}
