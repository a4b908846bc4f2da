//! Renders the profiling-run Job for one image and command from the embedded base manifest.

use serde_norway::{Mapping, Value};

use super::manifest::{EnvVar, Job};
use super::{
    BASE_JOB_YAML, PUSH_ENV, RECORDER_CONTAINER, REGISTRY_CONFIG_ENV, REGISTRY_CONFIG_PATH,
    REGISTRY_VOLUME, WORKLOAD_CONTAINER, WORKLOAD_IMAGE_ENV,
};

/// What `recorder k8s job` renders: the workload to profile and where the Job goes.
#[derive(Debug, Clone, Default)]
pub struct JobRequest {
    /// The workload's image reference (also the recorder's `--image`).
    pub image: String,
    /// The workload's command; empty runs the image's own entrypoint and command.
    pub command: Vec<String>,
    /// The Job's name; default: the base's.
    pub name: Option<String>,
    /// The Job's namespace; default: none, so the one kubectl applies it to.
    pub namespace: Option<String>,
    /// The recorder's image; default: the base's placeholder.
    pub recorder_image: Option<String>,
    /// Push the record to this repository after the commit (the sidecar's `--push`).
    pub push: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret with the registry credentials, mounted
    /// read-only into the sidecar (with `push`).
    pub registry_secret: Option<String>,
}

/// Why a Job could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The embedded base manifest does not parse as a Job.
    #[error("the base Job manifest does not parse")]
    BaseParse(#[source] serde_norway::Error),
    /// The embedded base manifest lacks something rendering patches.
    #[error("the base Job manifest has no {0}")]
    BaseMissing(&'static str),
    /// The rendered Job does not serialise.
    #[error("serialising the Job")]
    Serialise(#[source] serde_norway::Error),
    /// An image reference that cannot be one.
    #[error("{what} {value:?} is not an image reference (empty, or has whitespace)")]
    BadImage {
        /// Which option.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// `--registry-secret` without `--push`.
    #[error("--registry-secret {0:?} needs --push: the credentials are for pushing the record")]
    SecretWithoutPush(String),
    /// A name Kubernetes would refuse.
    #[error(
        "{what} {value:?} is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', \
         starting and ending alphanumeric)"
    )]
    BadName {
        /// Which option.
        what: &'static str,
        /// The value given.
        value: String,
    },
}

/// The base Job, parsed.
pub fn base_job() -> Result<Job, K8sError> {
    serde_norway::from_str(BASE_JOB_YAML).map_err(K8sError::BaseParse)
}

/// The Job for `request`, as a YAML document.
pub fn render_job(request: &JobRequest) -> Result<String, K8sError> {
    let job = patched_job(request)?;
    let yaml = serde_norway::to_string(&job).map_err(K8sError::Serialise)?;
    Ok(format!(
        "# Rendered by `recorder k8s job`; docs/kubernetes.md explains it.\n{yaml}"
    ))
}

/// The base Job with `request` applied.
fn patched_job(request: &JobRequest) -> Result<Job, K8sError> {
    check_image("--image", &request.image)?;
    if let Some(image) = &request.recorder_image {
        check_image("--recorder-image", image)?;
    }
    if let Some(name) = &request.name {
        check_label("--name", name)?;
    }
    if let Some(namespace) = &request.namespace {
        check_label("--namespace", namespace)?;
    }
    if let Some(push) = &request.push {
        check_image("--push", push)?;
    }
    if let Some(secret) = &request.registry_secret {
        if request.push.is_none() {
            return Err(K8sError::SecretWithoutPush(secret.clone()));
        }
        check_subdomain("--registry-secret", secret)?;
    }

    let mut job = base_job()?;
    if let Some(name) = &request.name {
        job.metadata.name.clone_from(name);
    }
    job.metadata.namespace.clone_from(&request.namespace);

    let pod = job.pod_spec_mut();
    let workload = pod
        .container_mut(WORKLOAD_CONTAINER)
        .ok_or(K8sError::BaseMissing("workload container"))?;
    workload.image.clone_from(&request.image);
    // Without a command the image's entrypoint runs, not the base's placeholder.
    workload.command = (!request.command.is_empty()).then(|| request.command.clone());

    let recorder = pod
        .init_container_mut(RECORDER_CONTAINER)
        .ok_or(K8sError::BaseMissing("recorder init container"))?;
    if let Some(image) = &request.recorder_image {
        recorder.image.clone_from(image);
    }
    recorder
        .env_mut(WORKLOAD_IMAGE_ENV)
        .ok_or(K8sError::BaseMissing(
            "WORKLOAD_IMAGE env var on the recorder",
        ))?
        .value = Some(request.image.clone());
    if let Some(push) = &request.push {
        // Through the environment, so that the base's args stay as they are and a kustomize
        // patch can add the same (env lists merge by name; args would be replaced whole).
        recorder.env.push(literal_env(PUSH_ENV, push));
    }
    if let Some(secret) = &request.registry_secret {
        recorder
            .env
            .push(literal_env(REGISTRY_CONFIG_ENV, REGISTRY_CONFIG_PATH));
        let dir = REGISTRY_CONFIG_PATH
            .rsplit_once('/')
            .map_or(REGISTRY_CONFIG_PATH, |(dir, _)| dir);
        let mount = mapping(&[
            ("name", Value::from(REGISTRY_VOLUME)),
            ("mountPath", Value::from(dir)),
            ("readOnly", Value::from(true)),
        ]);
        push_to_sequence(&mut recorder.rest, "volumeMounts", mount);
        // The Secret users already have for imagePullSecrets: its one key is the docker
        // config.json, which is what --registry-config reads.
        let volume = mapping(&[
            ("name", Value::from(REGISTRY_VOLUME)),
            (
                "secret",
                mapping(&[
                    ("secretName", Value::from(secret.as_str())),
                    (
                        "items",
                        Value::Sequence(vec![mapping(&[
                            ("key", Value::from(".dockerconfigjson")),
                            ("path", Value::from("config.json")),
                        ])]),
                    ),
                ]),
            ),
        ]);
        push_to_sequence(pod_volumes(&mut job), "volumes", volume);
    }
    Ok(job)
}

fn pod_volumes(job: &mut Job) -> &mut Mapping {
    &mut job.pod_spec_mut().rest
}

fn literal_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        rest: Mapping::new(),
    }
}

fn mapping(entries: &[(&str, Value)]) -> Value {
    Value::Mapping(
        entries
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

/// Appends `item` to the sequence at `key` of `map`, creating it if absent.
fn push_to_sequence(map: &mut Mapping, key: &str, item: Value) {
    match map.get_mut(key) {
        Some(Value::Sequence(items)) => items.push(item),
        _ => {
            map.insert(Value::from(key), Value::Sequence(vec![item]));
        }
    }
}

fn check_image(what: &'static str, value: &str) -> Result<(), K8sError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(K8sError::BadImage {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// A DNS-1123 subdomain (Secret names): dot-separated labels, at most 253 characters.
fn check_subdomain(what: &'static str, value: &str) -> Result<(), K8sError> {
    if value.len() > 253 {
        return Err(K8sError::BadName {
            what,
            value: value.to_owned(),
        });
    }
    value
        .split('.')
        .try_for_each(|label| check_label(what, label))
        .map_err(|_| K8sError::BadName {
            what,
            value: value.to_owned(),
        })
}

fn check_label(what: &'static str, value: &str) -> Result<(), K8sError> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = (1..=63).contains(&value.len())
        && value.chars().all(|c| alnum(c) || c == '-')
        && value.starts_with(alnum)
        && value.ends_with(alnum);
    if ok {
        Ok(())
    } else {
        Err(K8sError::BadName {
            what,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_norway::Value;

    use super::*;

    fn request(image: &str, command: &[&str]) -> JobRequest {
        JobRequest {
            image: image.to_owned(),
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            ..JobRequest::default()
        }
    }

    fn rendered(request: &JobRequest) -> Value {
        let yaml = render_job(request).unwrap();
        serde_norway::from_str(&yaml).unwrap()
    }

    fn container<'a>(job: &'a Value, list: &str, name: &str) -> &'a Value {
        job["spec"]["template"]["spec"][list]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|c| c["name"].as_str() == Some(name))
            .unwrap()
    }

    fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
        container["env"]
            .as_sequence()?
            .iter()
            .find(|e| e["name"].as_str() == Some(name))?["value"]
            .as_str()
    }

    #[test]
    fn sets_the_workload_image_in_both_places_and_its_command() {
        let job = rendered(&request("quay.io/org/app:1.2", &["/app", "--serve", "x y"]));
        let workload = container(&job, "containers", WORKLOAD_CONTAINER);
        assert_eq!(workload["image"].as_str(), Some("quay.io/org/app:1.2"));
        let command: Vec<&str> = workload["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(command, ["/app", "--serve", "x y"]);
        let recorder = container(&job, "initContainers", RECORDER_CONTAINER);
        assert_eq!(
            env_value(recorder, WORKLOAD_IMAGE_ENV),
            Some("quay.io/org/app:1.2")
        );
    }

    #[test]
    fn no_command_leaves_the_image_entrypoint() {
        let job = rendered(&request("quay.io/org/app:1.2", &[]));
        let workload = container(&job, "containers", WORKLOAD_CONTAINER);
        assert!(workload.get("command").is_none(), "{workload:?}");
    }

    #[test]
    fn name_namespace_and_recorder_image() {
        let job = rendered(&JobRequest {
            name: Some("profile-app".into()),
            namespace: Some("perf".into()),
            recorder_image: Some("registry.local/recorder@sha256:0123".into()),
            ..request("app:1", &[])
        });
        assert_eq!(job["metadata"]["name"].as_str(), Some("profile-app"));
        assert_eq!(job["metadata"]["namespace"].as_str(), Some("perf"));
        let recorder = container(&job, "initContainers", RECORDER_CONTAINER);
        assert_eq!(
            recorder["image"].as_str(),
            Some("registry.local/recorder@sha256:0123")
        );
    }

    #[test]
    fn everything_else_is_the_base_unchanged() {
        let base: Value = serde_norway::from_str(BASE_JOB_YAML).unwrap();
        let job = rendered(&request(
            "docker.io/library/busybox:1.36",
            &["sh", "-c", "cat /etc/os-release"],
        ));
        // The base's own workload, rendered, is the base again: nothing is lost or added.
        assert_eq!(job, base);
    }

    #[test]
    fn rejects_bad_names_and_images() {
        for bad in ["", "a b", "x\n"] {
            let err = render_job(&request(bad, &[])).unwrap_err();
            assert!(
                matches!(
                    err,
                    K8sError::BadImage {
                        what: "--image",
                        ..
                    }
                ),
                "{err}"
            );
        }
        for bad in ["Upper", "-lead", "trail-", "dot.ted", &"a".repeat(64)] {
            let err = render_job(&JobRequest {
                name: Some(bad.to_owned()),
                ..request("app:1", &[])
            })
            .unwrap_err();
            assert!(
                matches!(err, K8sError::BadName { what: "--name", .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn push_wires_the_env_and_the_secret_read_only() {
        let mut req = request("quay.io/a/b:1", &[]);
        req.push = Some("quay.io/a/b".into());
        req.registry_secret = Some("pull-secret".into());
        let job = rendered(&req);
        let recorder = container(&job, "initContainers", "recorder");
        let env = |name: &str| {
            recorder["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|e| e["name"].as_str() == Some(name))
                .map(|e| e["value"].as_str().unwrap().to_owned())
        };
        assert_eq!(env("RECORDER_PUSH").as_deref(), Some("quay.io/a/b"));
        assert_eq!(
            env("RECORDER_REGISTRY_CONFIG").as_deref(),
            Some("/etc/recorder/registry/config.json")
        );
        let mount = recorder["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some("registry-credentials"))
            .unwrap();
        assert_eq!(mount["mountPath"].as_str(), Some("/etc/recorder/registry"));
        assert_eq!(mount["readOnly"].as_bool(), Some(true));
        let volume = job["spec"]["template"]["spec"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some("registry-credentials"))
            .unwrap();
        assert_eq!(volume["secret"]["secretName"].as_str(), Some("pull-secret"));
        assert_eq!(
            volume["secret"]["items"][0]["key"].as_str(),
            Some(".dockerconfigjson")
        );

        // Push alone: the env, no Secret.
        req.registry_secret = None;
        let job = rendered(&req);
        let recorder = container(&job, "initContainers", "recorder");
        assert!(!format!("{recorder:?}").contains("registry-credentials"));
        assert!(format!("{recorder:?}").contains("RECORDER_PUSH"));

        // Refused: a Secret without push, a bad Secret name.
        let mut bad = request("quay.io/a/b:1", &[]);
        bad.registry_secret = Some("s".into());
        assert!(matches!(
            render_job(&bad),
            Err(K8sError::SecretWithoutPush(_))
        ));
        bad.push = Some("quay.io/a/b".into());
        bad.registry_secret = Some("Bad_Name".into());
        assert!(matches!(render_job(&bad), Err(K8sError::BadName { .. })));
    }
}
