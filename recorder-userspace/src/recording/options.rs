//! The one options value a recording is run with: what the command line says, checked.

use std::path::PathBuf;
use std::time::Duration;

use crate::agent::{AgentError, CommitOptions, ContainerdSink, ImageSource, RecordSink};
use crate::containerd::RecordLabels;
use crate::image::{BlobDigest, Image, Platform};
use crate::sandbox::{BindMount, Confinement, LayerCache, ProcessOverrides};
use crate::tracer::TracerConfig;

use super::input::Connection;
use super::target::TargetSpec;

/// Where the image comes from.
#[derive(Debug, Clone)]
pub enum ImageSpec {
    /// An OCI layout directory or a local content store, opened while indexing.
    Local(ImageSource),
    /// An image reference in containerd.
    Containerd {
        /// containerd's socket.
        address: PathBuf,
        /// The namespace.
        namespace: String,
        /// The image reference.
        reference: String,
    },
}

/// What `recorder record` and `recorder run` share.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image.
    pub image: ImageSpec,
    /// `--image` as given, named when the image is not built for `platform`.
    pub image_arg: String,
    /// The platform asked for; `None`: this machine's, not checked against the image.
    pub platform: Option<Platform>,
    /// The local content store the record goes to (containerd's own store otherwise).
    pub store: Option<PathBuf>,
    /// Also write the record here.
    pub record_out: Option<PathBuf>,
    /// Write the companion here.
    pub companion_out: Option<PathBuf>,
    /// Whether stdout carries the record or its digest (`-`): the workload's stdout then goes
    /// to stderr.
    pub stdout_taken: bool,
    /// Stop after this long.
    pub period: Option<Duration>,
    /// Scratch space, and where a record that cannot be committed is kept.
    pub work_dir: PathBuf,
    /// The tracer's sizing.
    pub tracer: TracerConfig,
    /// Commit an empty record instead of failing.
    pub allow_empty: bool,
}

/// What only `recorder record` has.
#[derive(Debug, Clone)]
pub struct RecordPlan {
    /// What to trace.
    pub target: TargetSpec,
    /// Stop once every process of the target's mount namespaces has exited.
    pub until_exit: bool,
}

/// What only `recorder run` has.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// How the workload is contained.
    pub confinement: Confinement,
    /// Changes to the image's process.
    pub overrides: ProcessOverrides,
    /// Most bytes the image may take unpacked; `None`: a share of the free space.
    pub max_unpacked: Option<u64>,
    /// Host paths bind-mounted into the container (`--mount`).
    pub binds: Vec<BindMount>,
    /// The layer cache the layers are unpacked into and shared from; `None`: into the work dir.
    pub cache: Option<LayerCache>,
    /// Most bytes the cache may hold after the layers are unpacked (`--cache-max`).
    pub cache_max: Option<u64>,
}

impl Options {
    /// The platform to pick from an index.
    pub fn platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::host)
    }

    /// Fails when a platform was asked for and `image` is not built for it.
    pub fn check_platform(&self, image: &Image) -> Result<(), AgentError> {
        let Some(platform) = &self.platform else {
            return Ok(());
        };
        platform
            .check_image(image)
            .map_err(|source| AgentError::Image {
                image: self.image_arg.clone(),
                source,
            })
    }

    /// Where the record goes: containerd's store when the image came from there, else the
    /// local store.
    pub fn commit_options(
        &self,
        containerd: Option<&Connection>,
        manifest: &BlobDigest,
    ) -> Result<CommitOptions, AgentError> {
        let store = match (containerd, &self.store) {
            (Some(connection), _) => {
                let mut labels = RecordLabels::new(manifest.clone());
                labels.image = Some(connection.reference.clone());
                RecordSink::Containerd(Box::new(ContainerdSink {
                    client: connection.client.clone(),
                    runtime: connection.handle(),
                    labels,
                }))
            }
            (None, Some(dir)) => RecordSink::Local(dir.clone()),
            // The command line requires a store without containerd; this is a safety net.
            (None, None) => {
                return Err(AgentError::Io {
                    op: "committing".into(),
                    source: std::io::Error::other("--store is required"),
                });
            }
        };
        Ok(CommitOptions {
            store,
            record_out: self.record_out.clone(),
            companion_out: self.companion_out.clone(),
            fallback_dir: self.work_dir.clone(),
        })
    }
}
