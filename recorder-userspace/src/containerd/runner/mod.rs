//! Running an image's container through containerd, as `ctr run` and `ctr-remote image
//! optimize` do, so that `recorder run --containerd` can arm the filter between the task's
//! creation and its start.
//!
//! The steps, each undone by [`ContainerRun::remove`] on every way out:
//! 1. a lease, so that containerd's GC collects nothing of the run while it lasts (and, with
//!    its expiry label, collects everything if the recorder dies without cleaning up);
//! 2. an active `overlayfs` snapshot on top of the image's unpacked layers (parent: the chain
//!    id of the config's `rootfs.diff_ids`);
//! 3. a container with an OCI runtime spec derived from the image config (the same builder as
//!    `recorder run`'s, [`crate::sandbox::runtime_spec()`]);
//! 4. a task, created but not started: its pid is runc's init, blocked on its exec fifo
//!    until [`ContainerRun::start`].
//!
//! The workload's stdout and stderr go through FIFOs, relayed to ours while it runs (see
//! [`super::stdio`] for why not `file://` stdio).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{PrepareSnapshotRequest, StatSnapshotRequest};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest as CreateLeaseRequest, CreateTaskRequest,
};
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::{Code, Request};
use containerd_client::types::Mount;
use sha2::{Digest, Sha256};
use tracing::info;

mod control;

use super::client::Containerd;
use super::error::{ContainerdError, GrpcStatus};
use super::leftovers::OWNER_LABEL;
use super::stdio::{StdioError, TaskStdio};
use crate::image::Image;
use crate::sandbox::{
    BindMount, Confinement, ProcessOverrides, SpecError, SpecLayout, Watchdog, runtime_spec,
};

/// The snapshotter `ctr images import` unpacks into by default.
pub const SNAPSHOTTER: &str = "overlayfs";

/// The runtime `ctr run` uses by default.
pub const RUNTIME: &str = "io.containerd.runc.v2";

/// The type URL containerd stores an OCI runtime spec under.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The gRPC metadata key that puts what a call creates under a lease.
const LEASE_HEADER: &str = "containerd-lease";

/// How long the lease outlives a recorder that died without deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// How long a killed task may take to exit before cleanup goes on regardless.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a containerd-run container could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The image's layers are not unpacked for the snapshotter.
    #[error(
        "image {image:?} is not unpacked for the {snapshotter} snapshotter (no snapshot \
         {chain_id}); unpack it first, e.g. `ctr images import` (unpacks by default) or \
         `ctr run` it once"
    )]
    NotUnpacked {
        /// The image reference.
        image: String,
        /// The snapshotter.
        snapshotter: &'static str,
        /// The chain id of its layers.
        chain_id: String,
    },
    /// The image has no layers to run.
    #[error("image {0:?} has no layers (rootfs.diff_ids is empty)")]
    NoLayers(String),
    /// The snapshot's mounts are not an overlay or bind mount this runner can read.
    #[error("snapshot {key}: unexpected mounts {mounts}")]
    Mounts {
        /// The snapshot key.
        key: String,
        /// What containerd returned.
        mounts: String,
    },
    /// The image config does not give a process to run.
    #[error("building the image's process failed")]
    Process(#[from] SpecError),
    /// Building or serializing the runtime spec failed.
    #[error("building the OCI runtime spec failed ({what})")]
    Spec {
        /// What of it.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// containerd refused to create the task (runc create failed, e.g. no such command).
    #[error("creating the task of container {id}")]
    TaskCreate {
        /// The container id.
        id: String,
        /// containerd's status, with runc's message.
        #[source]
        status: GrpcStatus,
    },
    /// The watchdog could not be told the task's init (it would outlive a killed recorder).
    #[error("telling the watchdog about task {pid} failed")]
    Watchdog {
        /// The task's init.
        pid: u32,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The FIFOs of the task's stdio could not be made.
    #[error("setting up the task's stdio failed")]
    Stdio(#[from] StdioError),
    /// A containerd call failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
}

/// What to run: the image, under which name, and where the stdio FIFOs go.
pub struct RunRequest<'a> {
    /// The image, opened from this containerd.
    pub image: &'a Image,
    /// Its reference in containerd.
    pub reference: &'a str,
    /// What changes of the image's process: entrypoint, command (`Cmd`), env, user, cwd.
    pub overrides: &'a ProcessOverrides,
    /// A private directory for the stdout and stderr FIFOs.
    pub io_dir: &'a Path,
    /// How the workload is contained.
    pub confinement: Confinement,
    /// Host paths bind-mounted into the container (`--mount`).
    pub binds: &'a [BindMount],
    /// Kills the task's init should the recorder die before removing the run.
    pub watchdog: Option<&'a Watchdog>,
}

/// What of a run exists in containerd, so that removal undoes exactly that.
#[derive(Debug, Default)]
struct Made {
    lease: bool,
    snapshot: bool,
    container: bool,
    task: bool,
}

/// A container created through containerd with its task created and not yet started.
pub struct ContainerRun {
    client: Containerd,
    id: String,
    lease: AsciiMetadataValue,
    pid: u32,
    /// The task's stdio, from its creation until [`ContainerRun::forward_output`].
    stdio: Option<TaskStdio>,
    made: Made,
}

impl Containerd {
    /// Creates the lease, snapshot, container and task of a run of `req.image`. On error,
    /// whatever was made is removed before returning.
    pub async fn create_run(&self, req: &RunRequest<'_>) -> Result<ContainerRun, RunError> {
        let id = unique_id();
        let lease = AsciiMetadataValue::try_from(id.as_str()).map_err(|e| RunError::Spec {
            what: format!("lease id {id:?}"),
            source: Box::new(e),
        })?;
        let mut run = ContainerRun {
            client: self.clone(),
            id,
            lease,
            pid: 0,
            stdio: None,
            made: Made::default(),
        };
        match run.create(req).await {
            Ok(()) => Ok(run),
            Err(error) => {
                run.remove().await;
                Err(error)
            }
        }
    }
}

impl ContainerRun {
    /// The run `id` of another recorder, as if this one had made all of it: for
    /// [`ContainerRun::remove`] to take away whatever of it is left.
    pub(crate) fn adopt(client: Containerd, id: String) -> Self {
        let lease = AsciiMetadataValue::try_from(id.as_str())
            .unwrap_or_else(|_| AsciiMetadataValue::from_static("invalid"));
        Self {
            client,
            id,
            lease,
            pid: 0,
            stdio: None,
            made: Made {
                lease: true,
                snapshot: true,
                container: true,
                task: true,
            },
        }
    }

    /// The container id (also the snapshot key and the lease id).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The task's init process (runc's, until started), in the host's pid namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn create(&mut self, req: &RunRequest<'_>) -> Result<(), RunError> {
        let c = &self.client;
        let owner = HashMap::from([(OWNER_LABEL.to_owned(), std::process::id().to_string())]);
        let mut labels = owner.clone();
        labels.insert("containerd.io/gc.expire".to_owned(), expiry());
        LeasesClient::new(c.channel())
            .create(c.request(CreateLeaseRequest {
                id: self.id.clone(),
                labels,
            }))
            .await
            .map_err(|s| c.rpc_error("Leases.Create", s))?;
        self.made.lease = true;

        let parent = chain_id(req.image, req.reference)?;
        self.check_unpacked(&parent, req.reference).await?;
        let mounts = SnapshotsClient::new(c.channel())
            .prepare(self.leased(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: self.id.clone(),
                parent,
                labels: owner.clone(),
            }))
            .await
            .map_err(|s| c.rpc_error("Snapshots.Prepare", s))?
            .into_inner()
            .mounts;
        self.made.snapshot = true;

        let lowerdirs = image_dirs(&mounts).ok_or_else(|| RunError::Mounts {
            key: self.id.clone(),
            mounts: format!("{mounts:?}"),
        })?;
        let process = req.overrides.spec(req.image, &lowerdirs)?;
        let layout = SpecLayout {
            // Relative: the shim mounts the task's rootfs there, in the bundle.
            root: PathBuf::from("rootfs"),
            // Where `ctr run` puts its containers, so cgroups are found and removed the same way.
            cgroups_path: PathBuf::from(format!("/{}/{}", c.namespace(), self.id)),
            tmp_tmpfs: false,
            binds: req.binds.to_vec(),
        };
        let runtime_spec =
            runtime_spec(&process, &layout, &req.confinement).map_err(|e| RunError::Spec {
                what: "the spec".into(),
                source: Box::new(e),
            })?;
        let value = serde_json::to_vec(&runtime_spec).map_err(|e| RunError::Spec {
            what: "serialising it".into(),
            source: Box::new(e),
        })?;
        ContainersClient::new(c.channel())
            .create(self.leased(CreateContainerRequest {
                container: Some(Container {
                    id: self.id.clone(),
                    image: req.reference.to_owned(),
                    runtime: Some(Runtime {
                        name: RUNTIME.into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: SPEC_TYPE_URL.into(),
                        value,
                    }),
                    snapshotter: SNAPSHOTTER.into(),
                    snapshot_key: self.id.clone(),
                    labels: owner,
                    ..Container::default()
                }),
            }))
            .await
            .map_err(|s| c.rpc_error("Containers.Create", s))?;
        self.made.container = true;

        // Read ends open before Tasks.Create: the shim opens the write ends during it.
        let stdio = TaskStdio::create(req.io_dir)?;
        let created = TasksClient::new(c.channel())
            .create(self.leased(CreateTaskRequest {
                container_id: self.id.clone(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: stdio.stdout_path().to_owned(),
                stderr: stdio.stderr_path().to_owned(),
                terminal: false,
                ..CreateTaskRequest::default()
            }))
            .await
            .map_err(|s| RunError::TaskCreate {
                id: self.id.clone(),
                status: GrpcStatus(s),
            })?
            .into_inner();
        self.made.task = true;
        self.pid = created.pid;
        self.stdio = Some(stdio);
        // From here on a SIGKILLed recorder does not leave the workload running: the watchdog
        // kills the task's init (see crate::sandbox::watchdog).
        if let Some(watchdog) = req.watchdog {
            watchdog
                .watch_process(self.pid)
                .map_err(|source| RunError::Watchdog {
                    pid: self.pid,
                    source,
                })?;
        }
        info!(container = self.id, pid = self.pid, "task created");
        Ok(())
    }

    /// Fails clearly when the image's layers have no committed snapshot to stack on.
    async fn check_unpacked(&self, chain_id: &str, reference: &str) -> Result<(), RunError> {
        let c = &self.client;
        let stat = SnapshotsClient::new(c.channel())
            .stat(c.request(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: chain_id.to_owned(),
            }))
            .await;
        match stat {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Err(RunError::NotUnpacked {
                image: reference.to_owned(),
                snapshotter: SNAPSHOTTER,
                chain_id: chain_id.to_owned(),
            }),
            Err(s) => Err(c.rpc_error("Snapshots.Stat", s).into()),
        }
    }

    /// A request in this client's namespace, under the run's lease.
    fn leased<T>(&self, message: T) -> Request<T> {
        let mut req = self.client.request(message);
        req.metadata_mut().insert(LEASE_HEADER, self.lease.clone());
        req
    }
}

/// `recorder-run-PID-NANOS`: unique per process and moment, and recognizable in `ctr` lists.
fn unique_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{RUN_PREFIX}{}-{nanos}", std::process::id())
}

/// The prefix of the ids of runs (container, snapshot key, lease).
pub const RUN_PREFIX: &str = "recorder-run-";

/// The chain id of the image's layers (the OCI image spec's ChainID): the name of the
/// committed snapshot the unpacker made for the top layer.
fn chain_id(image: &Image, reference: &str) -> Result<String, RunError> {
    let diff_ids = image.config().rootfs().diff_ids();
    let (first, rest) = diff_ids
        .split_first()
        .ok_or_else(|| RunError::NoLayers(reference.to_owned()))?;
    Ok(rest.iter().fold(first.clone(), |chain, diff_id| {
        let digest = Sha256::digest(format!("{chain} {diff_id}").as_bytes());
        format!("sha256:{}", hex::encode(digest))
    }))
}

/// The image's layer directories, bottom first, from an active snapshot's mounts: an
/// overlay's `lowerdir` (listed top first), or a bind mount's source for a one-layer parent
/// view. `None` for anything else.
fn image_dirs(mounts: &[Mount]) -> Option<Vec<PathBuf>> {
    let [mount] = mounts else { return None };
    match mount.r#type.as_str() {
        "overlay" => {
            let lower = mount
                .options
                .iter()
                .find_map(|o| o.strip_prefix("lowerdir="))?;
            Some(lower.split(':').rev().map(PathBuf::from).collect())
        }
        "bind" => Some(vec![PathBuf::from(&mount.source)]),
        _ => None,
    }
}

/// The lease's `containerd.io/gc.expire` label: RFC 3339, [`LEASE_EXPIRY`] from now.
fn expiry() -> String {
    crate::time::rfc3339_seconds(SystemTime::now() + LEASE_EXPIRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lowerdirs_are_reversed_to_bottom_first() {
        let mount = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "workdir=/w".into(),
                "upperdir=/u".into(),
                "lowerdir=/top:/mid:/bottom".into(),
            ],
            ..Mount::default()
        };
        assert_eq!(
            image_dirs(&[mount]),
            Some(vec!["/bottom".into(), "/mid".into(), "/top".into()])
        );
    }
}
