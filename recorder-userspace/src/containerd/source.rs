//! Images in containerd: a reference resolved through the Images service, and a
//! [`BlobSource`] that streams blobs through Content.Read.

use std::io::{self, Read};
use std::sync::Arc;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{GetImageRequest, ReadContentRequest};
use containerd_client::tonic::{Code, Status};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::client::Containerd;
use super::error::{ContainerdError, GrpcStatus, Result};
use super::wait::wait;
use crate::image::{BlobDigest, BlobSource, Image, ImageError, Platform};

/// Chunks buffered between the gRPC stream and the blocking reader: enough to keep the
/// stream busy while a layer decoder works, small enough to bound memory per open blob.
const READ_AHEAD_CHUNKS: usize = 16;

/// What an image reference in containerd points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTarget {
    /// The image's name in containerd, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The target's media type (a manifest or an index).
    pub media_type: String,
    /// The target's digest.
    pub digest: BlobDigest,
    /// The target's size in bytes.
    pub size: u64,
}

impl Containerd {
    /// Looks an image reference up in this namespace.
    pub async fn resolve_image(&self, reference: &str) -> Result<ImageTarget> {
        let reply = ImagesClient::new(self.channel())
            .get(self.request(GetImageRequest {
                name: reference.to_owned(),
            }))
            .await
            .map_err(|s| {
                self.get_error("Images.Get", s, || ContainerdError::ImageNotFound {
                    reference: reference.to_owned(),
                    namespace: self.namespace().to_owned(),
                    address: self.address().to_owned(),
                })
            })?
            .into_inner();
        let target =
            reply
                .image
                .and_then(|i| i.target)
                .ok_or_else(|| ContainerdError::BadCall {
                    call: "Images.Get",
                    address: self.address().to_owned(),
                    message: format!("image {reference:?} has no target descriptor"),
                })?;
        Ok(ImageTarget {
            name: reference.to_owned(),
            media_type: target.media_type,
            digest: target.digest.parse().map_err(ImageError::from)?,
            size: u64::try_from(target.size).map_err(|_| ContainerdError::BadCall {
                call: "Images.Get",
                address: self.address().to_owned(),
                message: format!("image {reference:?} has a negative target size"),
            })?,
        })
    }
}

/// Blobs of a containerd content store, read over gRPC.
///
/// Reads block the calling thread while a task on `handle`'s runtime streams the blob: read
/// from `spawn_blocking` or a plain thread (see `wait` for the one thread refused).
#[derive(Clone)]
pub struct ContainerdSource {
    client: Containerd,
    handle: Handle,
}

impl ContainerdSource {
    /// A source over `client`, streaming on the runtime of `handle`.
    pub fn new(client: Containerd, handle: Handle) -> Self {
        ContainerdSource { client, handle }
    }

    /// Opens the image `target` points at, picking `platform` from an index.
    pub fn open_image(&self, target: &ImageTarget, platform: &Platform) -> Result<Image> {
        let source: Arc<dyn BlobSource> = Arc::new(self.clone());
        Ok(Image::open_digest(
            source,
            &target.digest,
            Some(target.size),
            Some(&target.media_type),
            platform,
        )?)
    }
}

impl BlobSource for ContainerdSource {
    fn name(&self) -> String {
        format!(
            "containerd {} (namespace {})",
            self.client.address().display(),
            self.client.namespace()
        )
    }

    fn open_unverified(
        &self,
        digest: &BlobDigest,
    ) -> crate::image::error::Result<Box<dyn Read + Send>> {
        self.stream(digest, 0, 0)
    }

    fn read_at(
        &self,
        digest: &BlobDigest,
        offset: u64,
        len: usize,
    ) -> crate::image::error::Result<Option<Vec<u8>>> {
        let range = |n: u64| {
            i64::try_from(n).map_err(|_| ImageError::Io {
                path: self.client.address().to_owned(),
                source: io::Error::other(format!("Content.Read {digest}: range past 2^63")),
            })
        };
        let (start, size) = (range(offset)?, range(len as u64)?);
        if size == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut buf = Vec::with_capacity(len);
        let mut reader = self.stream(digest, start, size)?;
        reader
            .by_ref()
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Io {
                path: self.client.address().to_owned(),
                source,
            })?;
        if buf.len() != len {
            return Err(ImageError::Io {
                path: self.client.address().to_owned(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "Content.Read {digest}: {} bytes at {offset}, {len} asked",
                        buf.len()
                    ),
                ),
            });
        }
        Ok(Some(buf))
    }
}

impl ContainerdSource {
    /// Streams `size` bytes of a blob from `offset` (0: to its end) through Content.Read.
    fn stream(
        &self,
        digest: &BlobDigest,
        offset: i64,
        size: i64,
    ) -> crate::image::error::Result<Box<dyn Read + Send>> {
        let (tx, mut rx) = mpsc::channel(READ_AHEAD_CHUNKS);
        let client = self.client.clone();
        let request = ReadContentRequest {
            digest: digest.to_string(),
            offset,
            size,
        };
        self.handle.spawn(async move {
            let stream = ContentClient::new(client.channel())
                .read(client.request(request))
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(msg)) => Ok(msg.data),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let failed = item.is_err();
                // A closed receiver means the reader was dropped: stop streaming.
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        // The first message tells a missing blob apart from a readable one.
        let first = wait(&self.handle, rx.recv()).map_err(|source| ImageError::Io {
            path: self.client.address().to_owned(),
            source,
        })?;
        let first = match first {
            Some(Err(status)) if status.code() == Code::NotFound => {
                return Err(ImageError::MissingBlob {
                    digest: digest.to_string(),
                    source_name: self.name(),
                });
            }
            Some(Err(status)) => {
                return Err(ImageError::Io {
                    path: self.client.address().to_owned(),
                    source: read_failed(digest.to_string(), status),
                });
            }
            Some(Ok(data)) => data,
            None => Vec::new(),
        };
        Ok(Box::new(StreamReader {
            rx,
            handle: self.handle.clone(),
            chunk: first,
            pos: 0,
            digest: digest.to_string(),
        }))
    }
}

/// A Content.Read call or stream that failed.
#[derive(Debug, thiserror::Error)]
#[error("Content.Read {digest}")]
struct ReadFailed {
    digest: String,
    #[source]
    status: GrpcStatus,
}

/// A failed read of `digest`, as the I/O error a blob reader returns; its source is the status.
fn read_failed(digest: String, status: Status) -> io::Error {
    io::Error::other(ReadFailed {
        digest,
        status: GrpcStatus(status),
    })
}

/// The blocking side of a Content.Read stream.
struct StreamReader {
    rx: mpsc::Receiver<Result<Vec<u8>, containerd_client::tonic::Status>>,
    handle: Handle,
    chunk: Vec<u8>,
    pos: usize,
    digest: String,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            match wait(&self.handle, self.rx.recv())? {
                None => return Ok(0),
                Some(Ok(data)) => {
                    self.chunk = data;
                    self.pos = 0;
                }
                Some(Err(status)) => return Err(read_failed(self.digest.clone(), status)),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
