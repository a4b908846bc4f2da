//! The kubelet's part, for tests that run a pod through containerd's CRI plugin: a pod spec
//! (as in `deploy/kubernetes/base/job.yaml`) translated into the CRI's sandbox and container
//! configs the way the kubelet translates it (pkg/kubelet/kuberuntime in Kubernetes 1.29 to
//! 1.33), for the fields these manifests use. A field the translation does not know fails the
//! test, so the manifests cannot grow a setting the CRI tests silently leave out.
//!
//! What differs from a node, and why:
//! - the sandbox uses the node's network namespace and no hostname: containerd here has no
//!   CNI config, and with the node's network a hostname cannot be set;
//! - host paths may be remapped (the node's containerd socket is the test's private one);
//! - volumes live under the test's pod dir, where the kubelet keeps them under
//!   /var/lib/kubelet/pods/<uid>/.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use recorder::sandbox::runtime_spec::{MASKED_PATHS, READONLY_PATHS};

use crate::cri::v1 as cri;
use fields::{check_known_fields, expand_vars, resources, str_of, string_map};

mod fields;

/// A pod of the test: its identity and the dir that stands for its kubelet pod dir.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's dir: logs, volumes and termination-message files go under it.
    pub dir: PathBuf,
    /// Pod-level fields the kubelet reads (`hostPID`, `volumes`, labels...): the Job's
    /// `spec.template`.
    pub template: Value,
    /// Host paths of `hostPath` volumes replaced by the test's own (e.g. containerd's socket).
    pub host_path_remap: HashMap<String, PathBuf>,
    /// The cgroup parent the kubelet would give the pod (`kubepods/burstable/pod<uid>`).
    pub cgroup_parent: String,
}

/// The kubelet's default `/proc` masking (procMount `Default`), passed on every container, is
/// containerd's (the recorder's own runtime spec uses the same tables) and, since Kubernetes
/// 1.31, powercap; the order of the list is not significant: each path is masked on its own.
fn default_masked_paths() -> Vec<String> {
    let kubelet_only = ["/sys/devices/virtual/powercap"];
    MASKED_PATHS
        .iter()
        .chain(&kubelet_only)
        .map(|p| (*p).to_owned())
        .collect()
}

/// What a container run needs besides its CRI config: where the kubelet reads its
/// termination message and its log.
pub struct ContainerFiles {
    pub termination_message: PathBuf,
    pub log: PathBuf,
}

impl Pod {
    fn spec(&self) -> &Value {
        &self.template["spec"]
    }

    fn identity_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            ("io.kubernetes.pod.name".into(), self.name.clone()),
            ("io.kubernetes.pod.namespace".into(), self.namespace.clone()),
            ("io.kubernetes.pod.uid".into(), self.uid.clone()),
        ])
    }

    fn namespaces(&self) -> cri::NamespaceOption {
        let host_pid = self.spec()["hostPID"].as_bool().unwrap_or(false);
        cri::NamespaceOption {
            // No pod network here (see the module doc).
            network: cri::NamespaceMode::Node as i32,
            pid: if host_pid {
                cri::NamespaceMode::Node as i32
            } else {
                cri::NamespaceMode::Container as i32
            },
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    /// `RunPodSandbox`'s config: the pod's labels plus the kubelet's identity labels, its
    /// annotations plus the kubelet's, the pod dir's logs, the cgroup parent.
    pub fn sandbox_config(&self) -> cri::PodSandboxConfig {
        let meta = &self.template["metadata"];
        let mut labels = string_map(&meta["labels"]);
        labels.extend(self.identity_labels());
        let mut annotations = string_map(&meta["annotations"]);
        annotations.insert("kubernetes.io/config.source".into(), "api".into());
        annotations.insert(
            "kubernetes.io/config.seen".into(),
            "2026-01-01T00:00:00.000000000Z".into(),
        );
        std::fs::create_dir_all(self.dir.join("logs")).unwrap();
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: String::new(),
            log_directory: self.dir.join("logs").display().to_string(),
            labels,
            annotations,
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    // No pod-level seccompProfile and the kubelet's SeccompDefault off: the
                    // pause container runs unconfined.
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                        localhost_ref: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The container named `name` of the pod spec (under `initContainers` or `containers`).
    pub fn container(&self, name: &str) -> &Value {
        ["initContainers", "containers"]
            .iter()
            .filter_map(|k| self.spec()[k].as_array())
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name} in the pod spec"))
    }

    /// `CreateContainer`'s config for container `name` of the pod, with its image given as the
    /// kubelet gives it (the image id `ImageStatus` returned after the pull), and the files the
    /// kubelet reads back.
    pub fn container_config(
        &self,
        name: &str,
        image_ref: &str,
        seccomp_root: &Path,
    ) -> (cri::ContainerConfig, ContainerFiles) {
        let c = self.container(name);
        check_known_fields(c);
        let env: Vec<(String, String)> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| (str_of(&e["name"]), self.env_value(e)))
            .collect();
        let expand = |s: &str| expand_vars(s, &env);
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| expand(s.as_str().unwrap()))
                .collect()
        };

        let termination_path = c["terminationMessagePath"]
            .as_str()
            .unwrap_or("/dev/termination-log");
        let container_dir = self.dir.join("containers").join(name);
        std::fs::create_dir_all(&container_dir).unwrap();
        let termination_message = container_dir.join("termination-log");
        std::fs::write(&termination_message, b"").unwrap();
        let mut mounts: Vec<cri::Mount> = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| self.mount(m))
            .collect();
        mounts.push(cri::Mount {
            container_path: termination_path.to_owned(),
            host_path: termination_message.display().to_string(),
            ..Default::default()
        });

        let mut labels = self.identity_labels();
        labels.insert("io.kubernetes.container.name".into(), name.to_owned());
        let annotations = HashMap::from([
            ("io.kubernetes.container.hash".into(), "0".into()),
            ("io.kubernetes.container.restartCount".into(), "0".into()),
            (
                "io.kubernetes.container.terminationMessagePath".into(),
                termination_path.to_owned(),
            ),
            (
                "io.kubernetes.container.terminationMessagePolicy".into(),
                c["terminationMessagePolicy"]
                    .as_str()
                    .unwrap_or("File")
                    .to_owned(),
            ),
            (
                "io.kubernetes.pod.terminationGracePeriod".into(),
                self.spec()["terminationGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30)
                    .to_string(),
            ),
        ]);
        let log = self.dir.join("logs").join(name).join("0.log");
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image_ref.to_owned(),
                user_specified_image: str_of(&c["image"]),
                ..Default::default()
            }),
            command: strings(&c["command"]),
            args: strings(&c["args"]),
            working_dir: c["workingDir"].as_str().unwrap_or_default().to_owned(),
            envs: env
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts,
            labels,
            annotations,
            log_path: format!("{name}/0.log"),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources(&c["resources"])),
                security_context: Some(self.security_context(&c["securityContext"], seccomp_root)),
            }),
            ..Default::default()
        };
        (
            config,
            ContainerFiles {
                termination_message,
                log,
            },
        )
    }

    /// The startup probe's exec command of container `name`, and its `timeoutSeconds`.
    pub fn startup_probe(&self, name: &str) -> (Vec<String>, u64) {
        let probe = &self.container(name)["startupProbe"];
        let command = probe["exec"]["command"]
            .as_array()
            .unwrap_or_else(|| panic!("container {name} has no exec startup probe"))
            .iter()
            .map(str_of)
            .collect();
        (command, probe["timeoutSeconds"].as_u64().unwrap_or(1))
    }

    fn env_value(&self, e: &Value) -> String {
        if let Some(v) = e["value"].as_str() {
            return v.to_owned();
        }
        match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.uid") => self.uid.clone(),
            Some("metadata.name") => self.name.clone(),
            Some("metadata.namespace") => self.namespace.clone(),
            other => panic!("env {e}: the test's kubelet does not resolve {other:?}"),
        }
    }

    fn mount(&self, m: &Value) -> cri::Mount {
        let name = str_of(&m["name"]);
        let volume = self.spec()["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name.as_str())
            .unwrap_or_else(|| panic!("volumeMount {name} has no volume"));
        let host_path = if let Some(path) = volume["hostPath"]["path"].as_str() {
            self.host_path_remap
                .get(path)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(path))
        } else if volume.get("emptyDir").is_some() {
            let dir = self.dir.join("volumes/kubernetes.io~empty-dir").join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        } else {
            panic!("volume {volume}: the test's kubelet mounts hostPath and emptyDir only")
        };
        cri::Mount {
            container_path: str_of(&m["mountPath"]),
            host_path: host_path.display().to_string(),
            readonly: m["readOnly"].as_bool().unwrap_or(false),
            propagation: cri::MountPropagation::PropagationPrivate as i32,
            ..Default::default()
        }
    }

    /// A container's `securityContext` as the kubelet passes it: capabilities as written,
    /// `allowPrivilegeEscalation: false` as no_new_privs, the seccomp profile by type (a
    /// Localhost one under the kubelet's seccomp root), the pod's namespaces, default masking.
    fn security_context(
        &self,
        sc: &Value,
        seccomp_root: &Path,
    ) -> cri::LinuxContainerSecurityContext {
        let names =
            |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().map(str_of).collect() };
        let seccomp = match sc["seccompProfile"]["type"].as_str() {
            Some("RuntimeDefault") => cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            },
            Some("Localhost") => cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: seccomp_root
                    .join(str_of(&sc["seccompProfile"]["localhostProfile"]))
                    .display()
                    .to_string(),
            },
            Some("Unconfined") | None => cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                localhost_ref: String::new(),
            },
            Some(other) => panic!("unknown seccompProfile type {other}"),
        };
        cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: names(&sc["capabilities"]["add"]),
                drop_capabilities: names(&sc["capabilities"]["drop"]),
                add_ambient_capabilities: Vec::new(),
            }),
            privileged: sc["privileged"].as_bool().unwrap_or(false),
            namespace_options: Some(self.namespaces()),
            run_as_user: sc["runAsUser"]
                .as_i64()
                .map(|value| cri::Int64Value { value }),
            readonly_rootfs: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
            no_new_privs: sc["allowPrivilegeEscalation"] == false,
            masked_paths: default_masked_paths(),
            readonly_paths: READONLY_PATHS.iter().map(|p| (*p).to_owned()).collect(),
            seccomp: Some(seccomp),
            ..Default::default()
        }
    }
}
