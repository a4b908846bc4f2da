//! Writing a record into containerd's content store, labelled so that its garbage collector
//! keeps it and so that it can be found from its image.

use std::collections::HashMap;
use std::time::SystemTime;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    Info, InfoRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{Code, Status};
use prost_types::FieldMask;
use tracing::{debug, info};

use super::client::Containerd;
use super::error::{ContainerdError, Result};
use crate::image::BlobDigest;

/// containerd's GC keeps content carrying this label (its value is informational; containerd
/// writes an RFC 3339 time there).
pub const GC_ROOT_LABEL: &str = "containerd.io/gc.root";

/// The manifest digest a record belongs to.
pub const MANIFEST_LABEL: &str = "dev.recorder.manifest";

/// The image reference a record was made from, when it was one.
pub const IMAGE_LABEL: &str = "dev.recorder.image";

/// Bytes per Write message: well under gRPC's 4 MiB default message limit.
const WRITE_CHUNK: usize = 1 << 20;

/// The labels a record carries besides the GC root.
#[derive(Debug, Clone)]
pub struct RecordLabels {
    /// The image manifest the record's entries refer to.
    pub manifest: BlobDigest,
    /// The image reference, when the image came from one.
    pub image: Option<String>,
    /// Further labels, e.g. for the agent's own bookkeeping.
    pub extra: HashMap<String, String>,
}

impl RecordLabels {
    /// Labels for a record of `manifest`.
    pub fn new(manifest: BlobDigest) -> Self {
        RecordLabels {
            manifest,
            image: None,
            extra: HashMap::new(),
        }
    }

    /// All labels, with a GC root stamped `now`.
    pub fn to_map(&self, now: SystemTime) -> HashMap<String, String> {
        let mut labels = self.extra.clone();
        labels.insert(GC_ROOT_LABEL.into(), rfc3339(now));
        labels.insert(MANIFEST_LABEL.into(), self.manifest.to_string());
        if let Some(image) = &self.image {
            labels.insert(IMAGE_LABEL.into(), image.clone());
        }
        labels
    }
}

/// A blob in the content store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its digest.
    pub digest: BlobDigest,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the store already had it (its labels were then merged in).
    pub already_existed: bool,
}

impl Containerd {
    /// Writes a record blob labelled with `labels` and a GC root.
    pub async fn put_record(&self, bytes: &[u8], labels: &RecordLabels) -> Result<Stored> {
        self.put_blob(bytes, labels.to_map(SystemTime::now())).await
    }

    /// Writes `bytes` with its expected size and digest, so containerd verifies them on commit.
    /// A blob that already exists counts as written; `labels` are then added to it, so that a
    /// second record of the same bytes is protected all the same.
    pub async fn put_blob(&self, bytes: &[u8], labels: HashMap<String, String>) -> Result<Stored> {
        let digest = BlobDigest::of(bytes);
        let total = i64::try_from(bytes.len()).map_err(|_| ContainerdError::Rpc {
            call: "Content.Write",
            address: self.address().to_owned(),
            message: format!("{} bytes is too large a blob", bytes.len()),
        })?;
        // The ref names this upload; tying it to the digest makes a concurrent writer of the
        // same bytes wait on containerd's ref lock rather than write a second copy.
        let reference = format!("recorder-{}", digest.hex());
        let requests = write_requests(bytes, &reference, total, &digest, labels.clone());
        let outcome = self.write_stream(requests, &digest).await;
        match outcome {
            Ok(()) => {
                info!(%digest, size = total, "record written to containerd");
                Ok(Stored {
                    digest,
                    size: bytes.len() as u64,
                    already_existed: false,
                })
            }
            Err(s) if s.code() == Code::AlreadyExists => {
                debug!(%digest, "blob already in containerd; merging labels");
                self.add_labels(&digest, labels).await?;
                Ok(Stored {
                    digest,
                    size: bytes.len() as u64,
                    already_existed: true,
                })
            }
            Err(s) => Err(self.rpc_error("Content.Write", &s)),
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
            .map_err(|s| self.rpc_error("Content.Info", &s))?
            .into_inner()
            .info
            .ok_or_else(|| ContainerdError::Rpc {
                call: "Content.Info",
                address: self.address().to_owned(),
                message: format!("no info returned for {digest}"),
            })
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
            .map_err(|s| self.rpc_error("Content.Update", &s))?;
        Ok(())
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

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), as containerd stamps its own GC roots. (The status module
/// has a millisecond variant, private to it.)
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

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
