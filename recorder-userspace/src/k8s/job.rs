//! Renders the profiling-run Job for one image and command from the embedded base manifest.

use super::manifest::Job;
use super::{BASE_JOB_YAML, RECORDER_CONTAINER, WORKLOAD_CONTAINER, WORKLOAD_IMAGE_ENV};

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
}

/// Why a Job could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The embedded base manifest does not parse as a Job.
    #[error("the base Job manifest does not parse: {0}")]
    BaseParse(#[source] serde_norway::Error),
    /// The embedded base manifest lacks something rendering patches.
    #[error("the base Job manifest has no {0}")]
    BaseMissing(&'static str),
    /// The rendered Job does not serialise.
    #[error("serialising the Job: {0}")]
    Serialise(#[source] serde_norway::Error),
    /// An image reference that cannot be one.
    #[error("{what} {value:?} is not an image reference (empty, or has whitespace)")]
    BadImage {
        /// Which option.
        what: &'static str,
        /// The value given.
        value: String,
    },
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
    Ok(job)
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
}
