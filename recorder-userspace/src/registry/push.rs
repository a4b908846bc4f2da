//! Pushing a record as an artifact referring to its image manifest.

use std::collections::BTreeMap;
use std::time::SystemTime;

use http::HeaderValue;
use oci_client::Reference;
use serde_json::{Value, json};

use super::client::Registry;
use super::error::{Kind, RegistryError, kind};
use super::{
    ANNOTATION_CREATED, ANNOTATION_ENTRIES, ANNOTATION_TITLE, ANNOTATION_VERSION, ARTIFACT_TYPE,
    COMPANION_MEDIA_TYPE, EMPTY_CONFIG, EMPTY_MEDIA_TYPE, OCI_INDEX, OCI_MANIFEST,
    RECORD_MEDIA_TYPE,
};
use crate::image::BlobDigest;
use crate::image::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
use crate::record;

/// What to push.
#[derive(Debug, Clone, Default)]
pub struct RecordArtifact {
    /// The record, byte for byte.
    pub record: Vec<u8>,
    /// Its companion blob, when there is one.
    pub companion: Option<Vec<u8>>,
    /// Annotations of the workload (command, period, ...); the created time, the recorder
    /// version and the entry count are added.
    pub annotations: BTreeMap<String, String>,
}

/// How pullers will find the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// The registry lists it already (its referrers API, or a tag that had it).
    Listed,
    /// The referrers tag (`sha256-<hex>`) was updated to list it.
    TagUpdated {
        /// The tag.
        tag: String,
    },
}

/// A pushed record.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// The artifact manifest's digest.
    pub digest: BlobDigest,
    /// `HOST/REPOSITORY@DIGEST` of the artifact.
    pub reference: String,
    /// The image manifest it refers to.
    pub subject: BlobDigest,
    /// How it is found.
    pub discovery: Discovery,
}

/// The one image manifest every entry of `record` names.
fn subject_of(bytes: &[u8]) -> Result<BlobDigest, RegistryError> {
    let entries = record::parse(bytes)?;
    let mut digests: Vec<&str> = entries.iter().map(|e| e.manifest_digest.as_str()).collect();
    digests.sort_unstable();
    digests.dedup();
    match digests.as_slice() {
        [] | [""] => Err(RegistryError::NoSubject),
        [one] => one.parse().map_err(|_| RegistryError::NotARecord {
            digest: "the record to push".into(),
            message: format!("its manifestDigest {one:?} is not a sha256 digest"),
        }),
        several => Err(RegistryError::SeveralSubjects(several.join(", "))),
    }
}

/// The descriptor of the subject manifest, as the registry has it.
async fn subject_descriptor(
    registry: &Registry,
    repository: &Reference,
    subject: &BlobDigest,
) -> Result<Value, RegistryError> {
    let at = with_digest(repository, &subject.to_string());
    let accept = [
        OCI_MANIFEST,
        DOCKER_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST_LIST,
    ];
    let (bytes, _) =
        registry
            .manifest(&at, &accept)
            .await
            .map_err(|source| match kind(&source) {
                Kind::NotFound => RegistryError::SubjectMissing {
                    subject: subject.to_string(),
                    repository: format!("{}/{}", registry.host(), repository.repository()),
                    source: Box::new(source),
                },
                _ => registry.error(format!("reading manifest {subject}"), source),
            })?;
    let media_type = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        // An OCI manifest may leave its mediaType out (image spec 1.0).
        .unwrap_or_else(|| OCI_MANIFEST.to_owned());
    Ok(json!({
        "mediaType": media_type,
        "digest": subject.to_string(),
        "size": bytes.len(),
    }))
}

/// `repository` (its registry and name) at `digest`.
pub(crate) fn with_digest(repository: &Reference, digest: &str) -> Reference {
    Reference::with_digest(
        repository.registry().to_owned(),
        repository.repository().to_owned(),
        digest.to_owned(),
    )
}

/// Pushes `artifact` to the repository of `repository` (its tag or digest, if any, is not
/// used): checks that the record's image manifest is there, uploads the blobs and the
/// manifest, and makes sure the record is discoverable from the image.
pub async fn push_record(
    registry: &Registry,
    repository: &Reference,
    artifact: &RecordArtifact,
) -> Result<Pushed, RegistryError> {
    let subject = subject_of(&artifact.record)?;
    let entries = record::parse(&artifact.record)?.len();
    let subject_desc = subject_descriptor(registry, repository, &subject).await?;

    let blob = |data: &[u8], media_type: &str, title: &str| {
        json!({
            "mediaType": media_type,
            "digest": BlobDigest::of(data).to_string(),
            "size": data.len(),
            "annotations": { ANNOTATION_TITLE: title },
        })
    };
    let mut layers = vec![blob(&artifact.record, RECORD_MEDIA_TYPE, "record.jsonl")];
    let mut uploads: Vec<(&[u8], &str)> = vec![(EMPTY_CONFIG, "the empty config")];
    uploads.push((&artifact.record, "the record"));
    if let Some(companion) = &artifact.companion {
        layers.push(blob(companion, COMPANION_MEDIA_TYPE, "companion.jsonl"));
        uploads.push((companion, "the companion"));
    }
    for (data, what) in uploads {
        let digest = BlobDigest::of(data).to_string();
        registry
            .client
            .push_blob(repository, data.to_vec(), &digest)
            .await
            .map_err(|e| registry.error(format!("uploading {what} ({digest})"), e))?;
    }

    let mut annotations = artifact.annotations.clone();
    annotations.insert(
        ANNOTATION_CREATED.into(),
        crate::status::time::rfc3339(SystemTime::now()),
    );
    annotations.insert(
        ANNOTATION_VERSION.into(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    annotations.insert(ANNOTATION_ENTRIES.into(), entries.to_string());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": BlobDigest::of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
            "data": "e30=",
        },
        "layers": layers,
        "subject": subject_desc,
        "annotations": annotations,
    });
    // Serialising a Value cannot fail.
    let bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    let digest = BlobDigest::of(&bytes);
    let at = with_digest(repository, &digest.to_string());
    registry
        .client
        .push_manifest_raw(&at, bytes.clone(), HeaderValue::from_static(OCI_MANIFEST))
        .await
        .map_err(|e| registry.error(format!("pushing the record manifest {digest}"), e))?;
    tracing::info!(%digest, %subject, "record artifact pushed");

    let descriptor = json!({
        "mediaType": OCI_MANIFEST,
        "digest": digest.to_string(),
        "size": bytes.len(),
        "artifactType": ARTIFACT_TYPE,
        "annotations": annotations,
    });
    let discovery = make_discoverable(registry, repository, &subject, &digest, descriptor).await?;
    Ok(Pushed {
        reference: format!("{}/{}@{digest}", registry.host(), repository.repository()),
        digest,
        subject,
        discovery,
    })
}

/// If the referrers of `subject` (the API's answer, or the tag schema's index when the
/// registry has no API) do not list `digest` yet, adds it to the `sha256-<hex>` tag's index,
/// as the distribution spec asks of clients when the registry did not take the subject into
/// account. (oci-client reads the tag schema but does not write it: that part is ours.) Two
/// pushers updating the same tag at once may lose one entry; the spec offers no lock.
async fn make_discoverable(
    registry: &Registry,
    repository: &Reference,
    subject: &BlobDigest,
    digest: &BlobDigest,
    descriptor: Value,
) -> Result<Discovery, RegistryError> {
    let listed = registry.referrers(repository, subject).await?;
    let digest_str = digest.to_string();
    if listed.manifests.iter().any(|m| m.digest == digest_str) {
        return Ok(Discovery::Listed);
    }
    let tag = format!("sha256-{}", subject.hex());
    let tag_ref = Reference::with_tag(
        repository.registry().to_owned(),
        repository.repository().to_owned(),
        tag.clone(),
    );
    let mut index = match registry.manifest(&tag_ref, &[OCI_INDEX]).await {
        Ok((bytes, _)) => serde_json::from_slice::<Value>(&bytes).map_err(|source| {
            RegistryError::BadDocument {
                what: "referrers index",
                reference: tag_ref.whole(),
                source,
            }
        })?,
        Err(e) if matches!(kind(&e), Kind::NotFound) => {
            json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [] })
        }
        Err(e) => return Err(registry.error(format!("reading the referrers tag {tag}"), e)),
    };
    match index.get_mut("manifests").and_then(Value::as_array_mut) {
        Some(manifests) => manifests.push(descriptor),
        None => {
            return Err(RegistryError::Registry {
                registry: registry.host().to_owned(),
                op: format!("updating the referrers tag {tag}"),
                source: Box::new(
                    oci_client::errors::OciDistributionError::SpecViolationError(
                        "the tag holds no image index".into(),
                    ),
                ),
            });
        }
    }
    let bytes = serde_json::to_vec(&index).unwrap_or_default();
    registry
        .client
        .push_manifest_raw(&tag_ref, bytes, HeaderValue::from_static(OCI_INDEX))
        .await
        .map_err(|e| registry.error(format!("updating the referrers tag {tag}"), e))?;
    tracing::info!(%tag, "referrers tag updated (the registry has no referrers API)");
    Ok(Discovery::TagUpdated { tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_table() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let line =
            |d: &str| format!("{{\"path\":\"x\",\"manifestDigest\":\"{d}\",\"layerIndex\":0}}\n");
        assert_eq!(subject_of(line(&a).as_bytes()).unwrap().to_string(), a);
        assert_eq!(
            subject_of(format!("{}{}", line(&a), line(&a)).as_bytes())
                .unwrap()
                .to_string(),
            a
        );
        assert!(matches!(
            subject_of(format!("{}{}", line(&a), line(&b)).as_bytes()),
            Err(RegistryError::SeveralSubjects(_))
        ));
        assert!(matches!(subject_of(b""), Err(RegistryError::NoSubject)));
        assert!(matches!(
            subject_of(b"{\"path\":\"x\"}\n"),
            Err(RegistryError::NoSubject)
        ));
        assert!(matches!(
            subject_of(b"garbage\n"),
            Err(RegistryError::BadRecord(_))
        ));
    }
}
