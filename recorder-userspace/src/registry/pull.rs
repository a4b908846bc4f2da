//! Finding the records that refer to an image, and pulling one byte for byte.

use std::collections::BTreeMap;

use oci_client::Reference;
use oci_client::errors::{DigestError, OciDistributionError};
use serde_json::Value;

use super::client::Registry;
use super::error::{Kind, RegistryError, kind};
use super::push::with_digest;
use super::{ANNOTATION_CREATED, ARTIFACT_TYPE, COMPANION_MEDIA_TYPE, OCI_INDEX, OCI_MANIFEST};
use crate::image::BlobDigest;
use crate::image::Platform;
use crate::image::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
use crate::record::RECORD_MEDIA_TYPE;

/// A record artifact, as the referrers list describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordRef {
    /// The artifact manifest's digest.
    pub digest: String,
    /// The artifact manifest's size.
    pub size: i64,
    /// Its annotations (created, version, workload).
    pub annotations: BTreeMap<String, String>,
}

impl RecordRef {
    /// When it was pushed (RFC 3339), if it says.
    pub fn created(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_CREATED).map(String::as_str)
    }
}

/// A pulled record.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The artifact.
    pub artifact: RecordRef,
    /// The record, byte for byte as pushed (digest checked).
    pub record: Vec<u8>,
    /// The companion blob, when the artifact has one (digest checked).
    pub companion: Option<Vec<u8>>,
}

/// The platform manifest `image` names: itself, or its index's entry for `platform`.
async fn resolve_subject(
    registry: &Registry,
    image: &Reference,
    platform: &Platform,
) -> Result<BlobDigest, RegistryError> {
    let accept = [
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
    ];
    let (bytes, digest) = registry
        .manifest(image, &accept)
        .await
        .map_err(|e| registry.image_error(format!("reading {}", image.whole()), image, e))?;
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|source| RegistryError::BadDocument {
            what: "manifest",
            reference: image.whole(),
            source,
        })?;
    let Some(manifests) = doc.get("manifests").and_then(Value::as_array) else {
        return digest
            .parse()
            .map_err(|source| RegistryError::BadManifestDigest {
                reference: image.whole(),
                digest,
                source,
            });
    };
    let field = |m: &Value, k: &str| {
        m.get("platform")
            .and_then(|p| p.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    manifests
        .iter()
        .find(|m| {
            field(m, "os").as_deref() == Some(platform.os.as_str())
                && field(m, "architecture").as_deref() == Some(platform.architecture.as_str())
                && (platform.variant.is_none() || field(m, "variant") == platform.variant)
        })
        .and_then(|m| m.get("digest").and_then(Value::as_str))
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| RegistryError::NoPlatform {
            reference: image.whole(),
            platform: platform.to_string(),
        })
}

/// The records referring to `image` (a tag or digest; an index is resolved to `platform`'s
/// manifest), newest first, with the manifest they refer to. No record is
/// [`RegistryError::NoRecord`], naming the other referrers if any.
pub async fn records_of(
    registry: &Registry,
    image: &Reference,
    platform: &Platform,
) -> Result<(BlobDigest, Vec<RecordRef>), RegistryError> {
    let subject = resolve_subject(registry, image, platform).await?;
    let index = registry.referrers(image, &subject).await?;
    let mut others = Vec::new();
    let mut records = Vec::new();
    for m in index.manifests {
        if m.artifact_type.as_deref() == Some(ARTIFACT_TYPE) {
            records.push(RecordRef {
                digest: m.digest,
                size: m.size,
                annotations: m.annotations.unwrap_or_default(),
            });
        } else {
            others.push(m.artifact_type.unwrap_or_else(|| m.media_type.clone()));
        }
    }
    if records.is_empty() {
        return Err(RegistryError::NoRecord {
            image: image.whole(),
            subject: subject.to_string(),
            repository: format!("{}/{}", registry.host(), image.repository()),
            others: if others.is_empty() {
                String::new()
            } else {
                format!(
                    "; its {} other referrer(s) are not records ({})",
                    others.len(),
                    others.join(", ")
                )
            },
        });
    }
    // Newest first; among equal or missing times, the one listed last (the tag schema
    // appends) first.
    records.reverse();
    records.sort_by(|a, b| b.created().cmp(&a.created()));
    Ok((subject, records))
}

/// The newest of `records`, as [`records_of`] orders them.
pub fn newest(records: &[RecordRef]) -> Option<&RecordRef> {
    records.first()
}

fn refused(what: &'static str, expected: &str, source: DigestError) -> RegistryError {
    RegistryError::ContentRefused {
        what,
        expected: expected.to_owned(),
        source,
    }
}

/// Pulls the record artifact `artifact` from `repository`: checks that it is a record, and
/// the digests of its manifest and blobs.
pub async fn pull_record(
    registry: &Registry,
    repository: &Reference,
    artifact: &RecordRef,
) -> Result<Pulled, RegistryError> {
    let at = with_digest(repository, &artifact.digest);
    let (bytes, _) = registry
        .manifest(&at, &[OCI_MANIFEST])
        .await
        .map_err(|e| match e {
            OciDistributionError::DigestError(source) => {
                refused("record manifest", &artifact.digest, source)
            }
            e => registry.image_error(format!("reading record {}", artifact.digest), &at, e),
        })?;
    let actual = BlobDigest::of(&bytes).to_string();
    if actual != artifact.digest {
        return Err(RegistryError::DigestMismatch {
            what: "record manifest",
            expected: artifact.digest.clone(),
            found: format!("digest {actual}"),
        });
    }
    let not_a_record = |message: String| RegistryError::NotARecord {
        digest: artifact.digest.clone(),
        message,
    };
    let manifest: Value = serde_json::from_slice(&bytes).map_err(|source| {
        RegistryError::UnreadableRecordManifest {
            digest: artifact.digest.clone(),
            source,
        }
    })?;
    let artifact_type = manifest.get("artifactType").and_then(Value::as_str);
    if artifact_type != Some(ARTIFACT_TYPE) {
        return Err(not_a_record(format!(
            "its artifactType is {artifact_type:?}, not {ARTIFACT_TYPE}"
        )));
    }
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let layer = |media_type: &str| {
        layers
            .iter()
            .find(|l| l.get("mediaType").and_then(Value::as_str) == Some(media_type))
            .and_then(|l| {
                Some((
                    l.get("digest")?.as_str()?.to_owned(),
                    l.get("size")?.as_u64()?,
                ))
            })
    };
    let (record_digest, record_size) = layer(RECORD_MEDIA_TYPE)
        .ok_or_else(|| not_a_record(format!("it has no {RECORD_MEDIA_TYPE} layer")))?;
    let record = blob(
        registry,
        repository,
        &record_digest,
        record_size,
        "record blob",
    )
    .await?;
    let companion = match layer(COMPANION_MEDIA_TYPE) {
        Some((digest, size)) => {
            Some(blob(registry, repository, &digest, size, "companion blob").await?)
        }
        None => None,
    };
    Ok(Pulled {
        artifact: artifact.clone(),
        record,
        companion,
    })
}

/// A blob, with its digest and size checked.
async fn blob(
    registry: &Registry,
    repository: &Reference,
    digest: &str,
    size: u64,
    what: &'static str,
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    registry
        .client
        .pull_blob(repository, digest, &mut out)
        .await
        .map_err(|e| match e {
            OciDistributionError::DigestError(source) => refused(what, digest, source),
            e if matches!(kind(&e), Kind::NotFound) => RegistryError::UnknownImage {
                reference: with_digest(repository, digest).whole(),
                registry: registry.host().to_owned(),
                source: Box::new(e),
            },
            e => registry.error(format!("reading {what} {digest}"), e),
        })?;
    let actual = BlobDigest::of(&out).to_string();
    if actual != digest || out.len() as u64 != size {
        return Err(RegistryError::DigestMismatch {
            what,
            expected: digest.to_owned(),
            found: format!("{} bytes, digest {actual}", out.len()),
        });
    }
    Ok(out)
}
