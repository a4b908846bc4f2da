//! The profiling pod for real through containerd's own CRI plugin, the test playing only the
//! kubelet's part: containerd runs with its CRI plugin on a private socket (root, state, runc
//! root and opt in a temp dir); pods are created with the CRI calls the kubelet makes, from
//! `deploy/kubernetes/base/job.yaml` translated as the kubelet translates it
//! (tests/src/kubelet.rs), and the recorder runs inside its container from the image
//! `cargo xtask image` builds, with only the privileges that container gets.
//!
//! Not a kubelet: no API server, no pod network (the sandbox shares the node's, see
//! tests/src/kubelet.rs), and the probe is run by the test through `ExecSync` as the kubelet's
//! prober does. What the kubelet would have decided (start the workload once the probe passes,
//! stop the sidecar once the workload exited) the test does in that order.
//!
//! The image is `cargo xtask image`'s, packaging this build's recorder (debug, its debug info
//! stripped) rather than a release build: the same code, without a release build in the suite.
//! containerd's `k8s.io` namespace here is the private daemon's, so parallel tests and the
//! host's own containerd stay apart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use recorder_tests::agent_fixtures::{expected_record, record_entries, write_image_named};
use recorder_tests::containerd::{AGENT_IMAGE, CriOptions, Daemon, mounts_under};
use recorder_tests::cri::Cri;
use recorder_tests::cri::v1 as cri;
use recorder_tests::cri_fixtures::{PAUSE_IMAGE, RecorderImage, pause_image, recorder_image};
use recorder_tests::kubelet::Pod;

const POD_UID: &str = "5d0c6e1a-2b7f-4c3e-9a8d-7f1e2d3c4b5a";
const DECOY_UID: &str = "c4b5a6d7-e8f9-4a0b-8c1d-2e3f4a5b6c7d";
/// The workload's image as a pod spec writes it; the CRI normalizes it to [`AGENT_IMAGE`].
const WORKLOAD_IMAGE: &str = "recorder/agent-test:1";

static NEXT: AtomicU32 = AtomicU32::new(0);

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

/// A node: containerd with its CRI plugin, the pause and recorder images imported, and a
/// cgroup parent of its own for its pods.
struct Node {
    cri: Cri,
    cgroup_top: String,
    /// Every sandbox and container id the CRI gave out, to look for their cgroups at the end.
    ids: Vec<String>,
    daemon: Daemon,
}

impl Node {
    fn start() -> Node {
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
    fn pod(&self, name: &str, uid: &str, template: &serde_json::Value) -> Pod {
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
    fn start_container(
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
    fn run_pod_sandbox(&mut self, config: &cri::PodSandboxConfig) -> String {
        let id = self.cri.run_pod_sandbox(config);
        self.ids.push(id.clone());
        id
    }

    fn wait_exited(&mut self, id: &str, limit: Duration) -> cri::ContainerStatus {
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
    fn remove_pod(&mut self, sandbox: &str) {
        self.cri.stop_pod_sandbox(sandbox).expect("StopPodSandbox");
        self.cri
            .remove_pod_sandbox(sandbox)
            .expect("RemovePodSandbox");
    }

    /// Nothing of any pod is left: sandboxes, containers (CRI's and containerd's), tasks,
    /// shims, mounts, and no cgroup dir under the pods' cgroup parents; then removes those
    /// parents as the kubelet removes its pod cgroups, which only succeeds if they are empty.
    fn assert_nothing_left(&mut self) {
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

/// `cargo xtask image` writes one layer holding the binary, the libraries it loads and the TLS
/// roots, and nothing else; the `--rootfs` tree is that layer's files, and the Dockerfile's
/// image is exactly that tree (a `scratch` stage copying it), so both give the same files.
#[test]
fn image_holds_the_binary_its_libraries_and_tls_roots_and_the_dockerfile_copies_the_same() {
    let image = image();
    // The layout's one layer, its entries.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], image.digest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        image.reference.as_str()
    );
    let blob = |digest: &str| {
        std::fs::read(
            image
                .layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&image.digest)).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let gz = blob(layers[0]["digest"].as_str().unwrap());
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
    let mut in_layer: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            path.trim_end_matches('/').to_owned()
        })
        .collect();
    in_layer.sort();
    let mut in_tree = Vec::new();
    let mut dirs = vec![image.rootfs.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            in_tree.push(
                path.strip_prefix(&image.rootfs)
                    .unwrap()
                    .display()
                    .to_string(),
            );
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            }
        }
    }
    in_tree.sort();
    assert_eq!(in_layer, in_tree);

    // Exactly what the recorder needs: itself, what ldd says it loads (with the links on the
    // way), the TLS roots; no shell, no package manager, nothing else.
    let files: Vec<&String> = in_tree
        .iter()
        .filter(|p| image.rootfs.join(p).symlink_metadata().unwrap().is_file())
        .collect();
    let mut expected = vec![
        "usr/local/bin/recorder".to_owned(),
        "etc/ssl/certs/ca-certificates.crt".to_owned(),
    ];
    let ldd = std::process::Command::new("ldd")
        .arg(image.rootfs.join("usr/local/bin/recorder"))
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split("=>")
            .last()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        if path.starts_with('/') {
            let real = std::fs::canonicalize(path).unwrap();
            expected.push(
                real.display()
                    .to_string()
                    .trim_start_matches('/')
                    .to_owned(),
            );
        }
    }
    expected.sort();
    expected.dedup();
    let mut files: Vec<String> = files.into_iter().cloned().collect();
    files.sort();
    assert_eq!(files, expected);

    // The archive `ctr images import` took in the other tests is also a docker archive.
    let mut archive = tar::Archive::new(std::fs::File::open(&image.archive).unwrap());
    let docker_manifest = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
        .map(|mut e| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        })
        .expect("no manifest.json in the archive");
    assert_eq!(
        docker_manifest[0]["RepoTags"][0],
        image.reference.as_str(),
        "{docker_manifest}"
    );
    assert_eq!(
        docker_manifest[0]["Layers"][0],
        format!(
            "blobs/sha256/{}",
            layers[0]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        )
    );

    // containers/image's docker-archive reader (the one `docker load`'s format is read with by
    // skopeo and podman) takes it: the same config, the same layer.
    let inspect = std::process::Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", image.archive.display()))
        .output()
        .expect("running skopeo (cargo xtask setup installs it)");
    assert!(
        inspect.status.success(),
        "skopeo inspect docker-archive: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        inspected["Env"],
        serde_json::json!(["PATH=/usr/local/bin:/usr/bin:/bin"])
    );
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));

    // The Dockerfile's image: the same command writes the tree, and only the tree is copied.
    let dockerfile =
        std::fs::read_to_string(workspace().join("deploy/container/Dockerfile")).unwrap();
    let instructions: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        instructions.contains(&"RUN cargo xtask image --rootfs /rootfs"),
        "{dockerfile}"
    );
    let last_stage: Vec<&str> = instructions
        .iter()
        .rev()
        .take_while(|l| !l.starts_with("FROM "))
        .copied()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let from = instructions[instructions.len() - last_stage.len() - 1];
    assert_eq!(from, "FROM scratch");
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(
        last_stage,
        [
            "COPY --from=build /rootfs /".to_owned(),
            format!("ENV {}", config["config"]["Env"][0].as_str().unwrap()),
            format!(
                "ENTRYPOINT {}",
                serde_json::to_string(&config["config"]["Entrypoint"]).unwrap()
            ),
        ]
    );
}

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
