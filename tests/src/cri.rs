//! A blocking client of the Kubernetes CRI (runtime.v1) on a containerd socket, through the
//! kept `k8s-cri` crate: what the kubelet calls, one method per call the tests make.
//!
//! Each call has a deadline (tonic's per-request timeout), so a wedged runtime fails the test
//! instead of hanging it.

use std::path::Path;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub use k8s_cri::v1;

/// Longest any one CRI call may take (creating a sandbox takes well under a second here).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A connected CRI client.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

impl Cri {
    /// Connects to the CRI served on `socket` (containerd's own socket, as the kubelet's
    /// `--container-runtime-endpoint` names it).
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = rt
            .block_on(containerd_client::connect(socket))
            .unwrap_or_else(|e| panic!("connecting to the CRI at {}: {e}", socket.display()));
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    /// `Version`: the runtime's name and version.
    pub fn version(&mut self) -> cri::VersionResponse {
        let call = self
            .runtime
            .version(request(cri::VersionRequest::default()));
        self.rt.block_on(call).expect("CRI Version").into_inner()
    }

    /// `RunPodSandbox`; returns the sandbox id.
    pub fn run_pod_sandbox(&mut self, config: &cri::PodSandboxConfig) -> String {
        let call = self
            .runtime
            .run_pod_sandbox(request(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            }));
        self.rt
            .block_on(call)
            .expect("CRI RunPodSandbox")
            .into_inner()
            .pod_sandbox_id
    }

    /// `StopPodSandbox`: stops every container of the pod, then the sandbox.
    pub fn stop_pod_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let call = self
            .runtime
            .stop_pod_sandbox(request(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }));
        self.rt.block_on(call).map(drop)
    }

    /// `RemovePodSandbox`: removes the sandbox and its containers.
    pub fn remove_pod_sandbox(&mut self, id: &str) -> Result<(), tonic::Status> {
        let call = self
            .runtime
            .remove_pod_sandbox(request(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            }));
        self.rt.block_on(call).map(drop)
    }

    /// `ListPodSandbox`, unfiltered.
    pub fn list_pod_sandbox(&mut self) -> Vec<cri::PodSandbox> {
        let call = self
            .runtime
            .list_pod_sandbox(request(cri::ListPodSandboxRequest::default()));
        self.rt
            .block_on(call)
            .expect("CRI ListPodSandbox")
            .into_inner()
            .items
    }

    /// `CreateContainer` in `sandbox`; returns the container id.
    pub fn create_container(
        &mut self,
        sandbox: &str,
        config: &cri::ContainerConfig,
        sandbox_config: &cri::PodSandboxConfig,
    ) -> String {
        let call = self
            .runtime
            .create_container(request(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.to_owned(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox_config.clone()),
            }));
        self.rt
            .block_on(call)
            .expect("CRI CreateContainer")
            .into_inner()
            .container_id
    }

    /// `StartContainer`.
    pub fn start_container(&mut self, id: &str) {
        let call = self
            .runtime
            .start_container(request(cri::StartContainerRequest {
                container_id: id.to_owned(),
            }));
        self.rt.block_on(call).expect("CRI StartContainer");
    }

    /// `StopContainer`: SIGTERM (or the image's stop signal), SIGKILL after `grace`.
    pub fn stop_container(&mut self, id: &str, grace: Duration) {
        let call = self
            .runtime
            .stop_container(request(cri::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: grace.as_secs() as i64,
            }));
        self.rt.block_on(call).expect("CRI StopContainer");
    }

    /// `ContainerStatus` (verbose off).
    pub fn container_status(&mut self, id: &str) -> cri::ContainerStatus {
        let call = self
            .runtime
            .container_status(request(cri::ContainerStatusRequest {
                container_id: id.to_owned(),
                verbose: false,
            }));
        self.rt
            .block_on(call)
            .expect("CRI ContainerStatus")
            .into_inner()
            .status
            .expect("ContainerStatus has no status")
    }

    /// `ListContainers`, unfiltered.
    pub fn list_containers(&mut self) -> Vec<cri::Container> {
        let call = self
            .runtime
            .list_containers(request(cri::ListContainersRequest::default()));
        self.rt
            .block_on(call)
            .expect("CRI ListContainers")
            .into_inner()
            .containers
    }

    /// `ExecSync` of `cmd` in container `id`, as an exec probe runs (`timeout` is the probe's
    /// `timeoutSeconds`).
    pub fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        let mut req = request(cri::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.to_vec(),
            timeout: timeout.as_secs() as i64,
        });
        req.set_timeout(timeout + CALL_TIMEOUT);
        let call = self.runtime.exec_sync(req);
        self.rt.block_on(call).map(tonic::Response::into_inner)
    }

    /// `ImageStatus` of `reference`: the image, or `None` when the runtime has no such image.
    pub fn image_status(&mut self, reference: &str) -> Option<cri::Image> {
        let call = self.images.image_status(request(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: reference.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        }));
        self.rt
            .block_on(call)
            .expect("CRI ImageStatus")
            .into_inner()
            .image
    }
}
