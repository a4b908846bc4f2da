//! containerd's content service: writing blobs (records, labelled so that its garbage
//! collector keeps them and so that they can be found from their image), their labels,
//! listing and removing them; and [`ContainerdContent`], the [`content::Store`] over it.

use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    DeleteContentRequest, Info, InfoRequest, ListContentRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::{Code, Status};
use prost_types::FieldMask;
use tokio::runtime::Handle;
use tracing::{debug, info};

use super::client::Containerd;
use super::error::{ContainerdError, Result};
use super::source::ContainerdSource;
use super::wait::wait;
use crate::content::{self, Committed, ContentError, Labels};
use crate::image::{BlobDigest, BlobSource, ImageError};
use crate::record::stored::RecordLabels;

/// Bytes per Write message: well under gRPC's 4 MiB default message limit.
const WRITE_CHUNK: usize = 1 << 20;

impl Containerd {
    /// Writes a record blob labelled with `labels` and a GC root.
    pub async fn put_record(&self, bytes: &[u8], labels: &RecordLabels) -> Result<Committed> {
        self.put_blob(bytes, labels.to_map(SystemTime::now())).await
    }

    /// Writes `bytes` with its expected size and digest, so containerd verifies them on commit.
    /// A blob that already exists counts as written; `labels` are then added to it, so that a
    /// second record of the same bytes is protected all the same.
    pub async fn put_blob(
        &self,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<Committed> {
        // The ref names this upload; tying it to the digest makes a concurrent writer of the
        // same bytes wait on containerd's ref lock rather than write a second copy.
        let reference = format!("recorder-{}", BlobDigest::of(bytes).hex());
        self.put_blob_as(&reference, bytes, labels).await
    }

    /// [`Containerd::put_blob`] through the ingest `reference`.
    pub async fn put_blob_as(
        &self,
        reference: &str,
        bytes: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<Committed> {
        let digest = BlobDigest::of(bytes);
        let total = i64::try_from(bytes.len()).map_err(|_| ContainerdError::BadCall {
            call: "Content.Write",
            address: self.address().to_owned(),
            message: format!("{} bytes is too large a blob", bytes.len()),
        })?;
        let requests = write_requests(bytes, reference, total, &digest, labels.clone());
        let outcome = self.write_stream(requests, &digest).await;
        match outcome {
            Ok(()) => {
                info!(%digest, size = total, "record written to containerd");
                Ok(Committed {
                    digest,
                    size: bytes.len() as u64,
                    already_existed: false,
                })
            }
            Err(s) if s.code() == Code::AlreadyExists => {
                debug!(%digest, "blob already in containerd; merging labels");
                self.add_labels(&digest, labels).await?;
                Ok(Committed {
                    digest,
                    size: bytes.len() as u64,
                    already_existed: true,
                })
            }
            Err(s) => Err(self.rpc_error("Content.Write", s)),
        }
    }

    /// Sends the Write stream and waits for the commit's acknowledgement.
    async fn write_stream(
        &self,
        requests: Vec<WriteContentRequest>,
        digest: &BlobDigest,
    ) -> std::result::Result<(), Status> {
        let mut replies = ContentClient::new(self.channel())
            .write(self.request(tokio_stream::iter(requests)))
            .await?
            .into_inner();
        while let Some(reply) = replies.message().await? {
            if reply.action == WriteAction::Commit as i32 {
                // containerd checked the digest on commit; a different answer would be a bug
                // on its side, reported rather than trusted.
                return if reply.digest == digest.to_string() {
                    Ok(())
                } else {
                    Err(Status::data_loss(format!(
                        "containerd committed {}, expected {digest}",
                        reply.digest
                    )))
                };
            }
        }
        Err(Status::unknown(
            "the Write stream ended before the commit was confirmed",
        ))
    }

    /// The labels and size containerd holds for a blob.
    pub async fn content_info(&self, digest: &BlobDigest) -> Result<Info> {
        ContentClient::new(self.channel())
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
            .map_err(|s| self.rpc_error("Content.Info", s))?
            .into_inner()
            .info
            .ok_or_else(|| ContainerdError::BadCall {
                call: "Content.Info",
                address: self.address().to_owned(),
                message: format!("no info returned for {digest}"),
            })
    }

    /// Every blob carrying the label `key` (all blobs when `None`).
    pub async fn list_content(&self, key: Option<&str>) -> Result<Vec<Info>> {
        // containerd's filter syntax: a field alone selects the blobs that have it.
        let filters = key
            .map(|k| vec![format!("labels.{k:?}")])
            .unwrap_or_default();
        let mut replies = ContentClient::new(self.channel())
            .list(self.request(ListContentRequest { filters }))
            .await
            .map_err(|s| self.rpc_error("Content.List", s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(reply) = replies
            .message()
            .await
            .map_err(|s| self.rpc_error("Content.List", s))?
        {
            out.extend(reply.info);
        }
        Ok(out)
    }

    /// Removes a blob (whatever its labels: an explicit delete is not a collection).
    pub async fn delete_content(&self, digest: &BlobDigest) -> Result<()> {
        ContentClient::new(self.channel())
            .delete(self.request(DeleteContentRequest {
                digest: digest.to_string(),
            }))
            .await
            .map_err(|s| self.rpc_error("Content.Delete", s))?;
        Ok(())
    }

    /// Sets `labels` on an existing blob, leaving its other labels alone.
    async fn add_labels(&self, digest: &BlobDigest, labels: HashMap<String, String>) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel())
            .update(self.request(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    labels,
                    ..Info::default()
                }),
                update_mask: Some(FieldMask { paths }),
            }))
            .await
            .map_err(|s| self.rpc_error("Content.Update", s))?;
        Ok(())
    }
}

/// containerd's content service as a [`content::Store`]: each call is driven on `handle`'s
/// runtime and waited for where it is made (see `wait`: a plain thread, `spawn_blocking`, or
/// a multi-thread runtime).
#[derive(Clone)]
pub struct ContainerdContent {
    client: Containerd,
    handle: Handle,
}

impl ContainerdContent {
    /// The content service of `client`, driven on `handle`'s runtime.
    pub fn new(client: Containerd, handle: Handle) -> Self {
        ContainerdContent { client, handle }
    }

    /// Runs `call` to completion on the connection's runtime.
    fn block<T>(&self, call: impl Future<Output = T>) -> content::Result<T> {
        wait(&self.handle, call).map_err(|e| ContentError::Store(Box::new(e)))
    }

    /// A containerd error as a content error: NotFound for a missing blob.
    fn content_error(&self, digest: Option<&BlobDigest>, e: ContainerdError) -> ContentError {
        match (digest, &e) {
            (Some(digest), ContainerdError::Rpc { status, .. })
                if status.0.code() == Code::NotFound =>
            {
                ContentError::NotFound {
                    digest: digest.clone(),
                    store: content::Store::name(self),
                }
            }
            _ => ContentError::Store(Box::new(e)),
        }
    }
}

impl std::fmt::Debug for ContainerdContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerdContent")
            .field("address", &self.client.address())
            .field("namespace", &self.client.namespace())
            .finish()
    }
}

impl content::Store for ContainerdContent {
    fn name(&self) -> String {
        format!(
            "containerd {} (namespace {})",
            self.client.address().display(),
            self.client.namespace()
        )
    }

    fn commit(&self, reference: &str, bytes: &[u8], labels: &Labels) -> content::Result<Committed> {
        self.block(self.client.put_blob_as(reference, bytes, labels.clone()))?
            .map_err(|e| self.content_error(None, e))
    }

    fn read_blob(&self, digest: &BlobDigest, limit: u64) -> content::Result<Vec<u8>> {
        let info = self.info(digest)?;
        if info.size > limit {
            return Err(ContentError::TooLarge {
                digest: digest.clone(),
                store: self.name(),
                limit,
            });
        }
        let source = ContainerdSource::new(self.client.clone(), self.handle.clone());
        let mut out = Vec::new();
        let read = source.open(digest, Some(info.size)).and_then(|mut reader| {
            reader.read_to_end(&mut out).map_err(|e| {
                crate::image::digest::unwrap_io(e, |source| ImageError::Io {
                    path: self.client.address().to_owned(),
                    source,
                })
            })
        });
        match read {
            Ok(_) => Ok(out),
            Err(ImageError::MissingBlob { .. }) => Err(ContentError::NotFound {
                digest: digest.clone(),
                store: self.name(),
            }),
            Err(e) => Err(ContentError::Store(Box::new(e))),
        }
    }

    fn info(&self, digest: &BlobDigest) -> content::Result<content::Info> {
        let info = self
            .block(self.client.content_info(digest))?
            .map_err(|e| self.content_error(Some(digest), e))?;
        self.convert(info)
    }

    fn walk(&self, key: Option<&str>) -> content::Result<Vec<content::Info>> {
        self.block(self.client.list_content(key))?
            .map_err(|e| self.content_error(None, e))?
            .into_iter()
            .map(|info| self.convert(info))
            .collect()
    }

    fn delete(&self, digest: &BlobDigest) -> content::Result<()> {
        self.block(self.client.delete_content(digest))?
            .map_err(|e| self.content_error(Some(digest), e))
    }
}

impl ContainerdContent {
    /// containerd's Info as the content layer's.
    fn convert(&self, info: Info) -> content::Result<content::Info> {
        let bad = |what: &str| {
            ContentError::Store(Box::new(ContainerdError::BadCall {
                call: "Content.Info",
                address: self.client.address().to_owned(),
                message: format!("blob {:?}: {what}", info.digest),
            }))
        };
        let digest: BlobDigest = info
            .digest
            .parse()
            .map_err(|_| bad("not a sha256 digest"))?;
        let size = u64::try_from(info.size).map_err(|_| bad("negative size"))?;
        let created = info.created_at.and_then(|t| {
            let secs = u64::try_from(t.seconds).ok()?;
            let nanos = u32::try_from(t.nanos).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
        });
        Ok(content::Info {
            digest,
            size,
            created,
            labels: info.labels,
        })
    }
}

/// The Write stream: data in chunks, the last message committing with the expected digest.
fn write_requests(
    bytes: &[u8],
    reference: &str,
    total: i64,
    digest: &BlobDigest,
    labels: HashMap<String, String>,
) -> Vec<WriteContentRequest> {
    let mut requests: Vec<WriteContentRequest> = bytes
        .chunks(WRITE_CHUNK)
        .scan(0i64, |offset, chunk| {
            let req = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.to_owned(),
                total,
                expected: digest.to_string(),
                offset: *offset,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            };
            *offset += chunk.len() as i64;
            Some(req)
        })
        .collect();
    requests.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference.to_owned(),
        total,
        expected: digest.to_string(),
        offset: total,
        data: Vec::new(),
        labels,
    });
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_then_commit_with_labels() {
        let data = vec![7u8; WRITE_CHUNK + 10];
        let digest = BlobDigest::of(&data);
        let labels = HashMap::from([("a".to_owned(), "b".to_owned())]);
        let reqs = write_requests(&data, "r", data.len() as i64, &digest, labels.clone());
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[1].offset, WRITE_CHUNK as i64);
        assert_eq!(reqs[2].action, WriteAction::Commit as i32);
        assert_eq!(reqs[2].offset, data.len() as i64);
        assert_eq!(reqs[2].labels, labels);
        assert!(reqs[..2].iter().all(|r| r.labels.is_empty()));
    }
}
