//! The image to record and, with containerd, the connection it is read through.

use tokio::runtime::Handle;

use crate::agent::{Agent, AgentError, ImageSource, Indexed, Stops};
use crate::containerd::{Containerd, ContainerdSource};
use crate::image::{Image, Platform};
use crate::k8s::normalize_reference;

use super::options::{ImageSpec, Options};
use super::target::TargetSpec;

/// A connection to containerd, for one image reference, driven on the runtime it was made on.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The connection.
    pub client: Containerd,
    /// The image reference read through it.
    pub reference: String,
    handle: Handle,
}

impl Connection {
    /// Connects to containerd at `address`, namespace `namespace`, for image `reference`
    /// (which may not exist yet). Call it inside the runtime that is to drive its calls.
    pub async fn connect(
        address: &std::path::Path,
        namespace: &str,
        reference: &str,
    ) -> Result<Self, AgentError> {
        let client = Containerd::connect(address, namespace).await?;
        Ok(Self::new(client, reference.to_owned(), Handle::current()))
    }

    /// A connection made already, driven on `handle`'s runtime.
    pub fn new(client: Containerd, reference: String, handle: Handle) -> Self {
        Self {
            client,
            reference,
            handle,
        }
    }

    /// The runtime the connection is driven on.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Its blobs, read from synchronous code.
    pub fn source(&self) -> ContainerdSource {
        ContainerdSource::new(self.client.clone(), self.handle())
    }

    /// Resolves the reference and opens the image, picking `platform` from an index (the
    /// blob reads block: they run on a blocking thread).
    pub async fn open(&self, platform: &Platform) -> Result<Image, AgentError> {
        let target = self.client.resolve_image(&self.reference).await?;
        let source = self.source();
        let platform = platform.clone();
        let opened = tokio::task::spawn_blocking(move || source.open_image(&target, &platform))
            .await
            .map_err(AgentError::Join)?;
        opened.map_err(|source| AgentError::OpenImage {
            reference: self.reference.clone(),
            source: Box::new(source),
        })
    }

    /// Fails when container `id` runs another image than this reference: the record would
    /// name files of the wrong image. Equal names, or names of the same manifest or index,
    /// pass; a container without an image name cannot be checked.
    pub async fn check_container_image(&self, id: &str, image: &str) -> Result<(), AgentError> {
        if image.is_empty() || image == self.reference {
            return Ok(());
        }
        let wanted = self.client.resolve_image(&self.reference).await?;
        let runs = self.client.resolve_image(image).await;
        if runs.as_ref().is_ok_and(|runs| runs.digest == wanted.digest) {
            return Ok(());
        }
        let runs_digest = runs.map(|r| format!(" ({})", r.digest)).unwrap_or_default();
        Err(AgentError::Target {
            target: format!("container:{id}"),
            message: format!(
                "it runs image {image}{runs_digest}, not --image {} ({}): the record would name \
                 files of the wrong image; give --image {image}",
                self.reference, wanted.digest
            ),
        })
    }
}

/// The image to index: named by the options, or already opened from containerd.
pub enum ImageInput {
    /// A layout or local store, opened while indexing.
    Source(ImageSource),
    /// An image read from containerd, and its reference.
    Containerd(Box<Image>, String),
}

impl ImageInput {
    /// Indexes the image, unless a stop comes first: then at once, leaving the indexing thread
    /// (which writes nothing) to end with the process.
    pub async fn index_or_stop(
        self,
        agent: Agent,
        platform: Platform,
        stops: &Stops,
    ) -> Result<Indexed, AgentError> {
        tokio::select! {
            biased;
            reason = stops.wait() => Err(AgentError::StoppedEarly(reason)),
            indexed = self.index(agent, platform) => indexed,
        }
    }

    /// Indexes the image.
    pub async fn index(self, agent: Agent, platform: Platform) -> Result<Indexed, AgentError> {
        match self {
            ImageInput::Source(source) => agent.index(source, platform).await,
            ImageInput::Containerd(image, reference) => {
                let described = format!("{reference} (containerd)");
                agent.index_opened(*image, described).await
            }
        }
    }
}

/// What a recording starts from: the image (unless it is opened later, once a pod's container
/// exists) and the containerd connection, if any.
pub struct Input {
    /// The image; `None` for a `k8s:` target, whose image the kubelet has not pulled yet.
    pub image: Option<ImageInput>,
    /// The connection, when the image is in containerd.
    pub containerd: Option<Connection>,
}

impl Input {
    /// Opens what `options` name: a local image is opened while indexing; a containerd image
    /// is opened now (so that a wrong reference fails first), unless `target` is a pod's
    /// container, whose image is opened once the container exists.
    pub async fn open(options: &Options, target: Option<&TargetSpec>) -> Result<Self, AgentError> {
        let (address, namespace, reference) = match &options.image {
            ImageSpec::Local(source) => {
                return Ok(Input {
                    image: Some(ImageInput::Source(source.clone())),
                    containerd: None,
                });
            }
            ImageSpec::Containerd {
                address,
                namespace,
                reference,
            } => (address, namespace, reference),
        };
        if let Some(TargetSpec::K8s { .. }) = target {
            let normalized = normalize_reference(reference);
            if &normalized != reference {
                tracing::info!(
                    image = reference,
                    reference = %normalized,
                    "image reference normalized as the CRI names it"
                );
            }
            let connection = Connection::connect(address, namespace, &normalized).await?;
            return Ok(Input {
                image: None,
                containerd: Some(connection),
            });
        }
        let connection = Connection::connect(address, namespace, reference).await?;
        let image = connection.open(&options.platform()).await?;
        Ok(Input {
            image: Some(ImageInput::Containerd(
                Box::new(image),
                connection.reference.clone(),
            )),
            containerd: Some(connection),
        })
    }
}
