//! Records in a content store, written and found the same way in the local store and in
//! containerd's (through [`content::Store`]): the labels a record and its companion carry,
//! committing both, listing records and removing them.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::content::{self, BlobDigest, Committed, ContentError, Labels};

/// containerd's GC keeps content carrying this label (its value is informational; containerd
/// writes an RFC 3339 time there).
pub const GC_ROOT_LABEL: &str = "containerd.io/gc.root";

/// The manifest digest a record belongs to.
pub const MANIFEST_LABEL: &str = "dev.recorder.manifest";

/// The image reference a record was made from, when it was one.
pub const IMAGE_LABEL: &str = "dev.recorder.image";

/// What a blob is to the recorder: [`KIND_RECORD`] or [`KIND_COMPANION`].
pub const KIND_LABEL: &str = "dev.recorder.kind";

/// [`KIND_LABEL`]'s value on a record.
pub const KIND_RECORD: &str = "record";

/// [`KIND_LABEL`]'s value on a companion.
pub const KIND_COMPANION: &str = "companion";

/// On a record: its companion's digest.
pub const COMPANION_LABEL: &str = "dev.recorder.companion";

/// On a companion: its record's digest.
pub const RECORD_LABEL: &str = "dev.recorder.record";

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
        labels.insert(GC_ROOT_LABEL.into(), crate::time::rfc3339_seconds(now));
        labels.insert(MANIFEST_LABEL.into(), self.manifest.to_string());
        if let Some(image) = &self.image {
            labels.insert(IMAGE_LABEL.into(), image.clone());
        }
        labels
    }
}

/// The record's commit, and the companion's (none when there are no extras), whose failure
/// does not undo the record's.
pub type StoredRecord = (Committed, content::Result<Option<Committed>>);

/// Commits `record` and, unless it is empty, `companion` to `store` through the ingests
/// `REFERENCE-record` and `REFERENCE-companion`. Both carry `labels`, the companion being as
/// much a GC root as the record, and each names the other.
pub fn put(
    store: &dyn content::Store,
    reference: &str,
    labels: &Labels,
    record: &[u8],
    companion: &[u8],
) -> content::Result<StoredRecord> {
    let record_digest = BlobDigest::of(record);
    let companion_digest = (!companion.is_empty()).then(|| BlobDigest::of(companion));
    let mut record_labels = labels.clone();
    record_labels.insert(KIND_LABEL.into(), KIND_RECORD.into());
    if let Some(c) = &companion_digest {
        record_labels.insert(COMPANION_LABEL.into(), c.to_string());
    }
    let main = store.commit(&format!("{reference}-record"), record, &record_labels)?;
    let companion = match companion_digest {
        None => Ok(None),
        Some(_) => {
            let mut companion_labels = labels.clone();
            companion_labels.insert(KIND_LABEL.into(), KIND_COMPANION.into());
            companion_labels.insert(RECORD_LABEL.into(), record_digest.to_string());
            store
                .commit(
                    &format!("{reference}-companion"),
                    companion,
                    &companion_labels,
                )
                .map(Some)
        }
    };
    Ok((main, companion))
}

/// A record in a content store, as `record ls` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// The record blob.
    pub digest: BlobDigest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed, RFC 3339, when the store knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The manifest it was recorded against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The image reference it was recorded from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Its companion blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub companion: Option<BlobDigest>,
    #[serde(skip)]
    created_at: Option<SystemTime>,
}

/// Whether a blob's labels make it a record: its kind says so, or (as committed before
/// blobs had a kind) it has a manifest and is nobody's companion.
fn is_record(labels: &Labels, companions: &[BlobDigest], digest: &BlobDigest) -> bool {
    match labels.get(KIND_LABEL).map(String::as_str) {
        Some(kind) => kind == KIND_RECORD,
        None => labels.contains_key(MANIFEST_LABEL) && !companions.contains(digest),
    }
}

/// The records in `store`, newest first (then by digest).
pub fn list(store: &dyn content::Store) -> content::Result<Vec<Listed>> {
    let blobs = store.walk(Some(MANIFEST_LABEL))?;
    let companions: Vec<BlobDigest> = blobs
        .iter()
        .filter_map(|info| info.labels.get(COMPANION_LABEL)?.parse().ok())
        .collect();
    let mut out: Vec<Listed> = blobs
        .into_iter()
        .filter(|info| is_record(&info.labels, &companions, &info.digest))
        .map(|mut info| Listed {
            size: info.size,
            created: info.created.map(crate::time::rfc3339_seconds),
            manifest: info.labels.remove(MANIFEST_LABEL),
            image: info.labels.remove(IMAGE_LABEL),
            companion: info
                .labels
                .get(COMPANION_LABEL)
                .and_then(|d| d.parse().ok()),
            created_at: info.created,
            digest: info.digest,
        })
        .collect();
    out.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    Ok(out)
}

/// The companion of the record `digest`, when its labels name one.
pub fn companion_of(
    store: &dyn content::Store,
    digest: &BlobDigest,
) -> content::Result<Option<BlobDigest>> {
    let info = store.info(digest)?;
    Ok(info
        .labels
        .get(COMPANION_LABEL)
        .and_then(|d| d.parse().ok()))
}

/// Why a record could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// The blob is not a record (an image layer, say): never removed by `record rm`.
    #[error("{digest} in {store} is not a record (it has no {MANIFEST_LABEL} label); not removed")]
    NotARecord {
        /// The blob.
        digest: BlobDigest,
        /// The store.
        store: String,
    },
    /// The store failed.
    #[error("removing {digest} failed")]
    Content {
        /// The blob.
        digest: BlobDigest,
        /// The store's error.
        #[source]
        source: ContentError,
    },
}

/// Removes the record `digest` and its companion (if the companion is gone already, that is
/// not an error); returns the companion removed.
pub fn remove(
    store: &dyn content::Store,
    digest: &BlobDigest,
) -> Result<Option<BlobDigest>, RemoveError> {
    let failed = |digest: &BlobDigest| {
        let digest = digest.clone();
        move |source| RemoveError::Content { digest, source }
    };
    let info = store.info(digest).map_err(failed(digest))?;
    let kind = info.labels.get(KIND_LABEL).map(String::as_str);
    if kind == Some(KIND_COMPANION) || !info.labels.contains_key(MANIFEST_LABEL) {
        return Err(RemoveError::NotARecord {
            digest: digest.clone(),
            store: store.name(),
        });
    }
    let companion: Option<BlobDigest> = info
        .labels
        .get(COMPANION_LABEL)
        .and_then(|d| d.parse().ok());
    store.delete(digest).map_err(failed(digest))?;
    let Some(companion) = companion else {
        return Ok(None);
    };
    match store.delete(&companion) {
        Ok(()) => Ok(Some(companion)),
        Err(ContentError::NotFound { .. }) => Ok(None),
        Err(source) => Err(RemoveError::Content {
            digest: companion,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ContentStore;

    fn labels(manifest: &BlobDigest) -> Labels {
        RecordLabels::new(manifest.clone()).to_map(SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn records_and_companions_name_each_other_and_are_listed_and_removed_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let manifest = BlobDigest::of(b"manifest");
        let (record, companion) = put(
            &store,
            "r1",
            &labels(&manifest),
            b"record\n",
            b"companion\n",
        )
        .unwrap();
        let companion = companion.unwrap().unwrap();
        let (bare, none) = put(&store, "r2", &labels(&manifest), b"bare\n", b"").unwrap();
        assert!(none.unwrap().is_none());
        // An unlabelled blob (an image layer, say) is no record.
        let layer = store.put("layer", b"layer", None).unwrap();

        let listed = list(&store).unwrap();
        let digests: Vec<_> = listed.iter().map(|l| l.digest.clone()).collect();
        assert_eq!(digests.len(), 2, "{listed:?}");
        assert!(digests.contains(&record.digest) && digests.contains(&bare.digest));
        let first = listed.iter().find(|l| l.digest == record.digest).unwrap();
        assert_eq!(first.companion.as_ref(), Some(&companion.digest));
        assert_eq!(
            first.manifest.as_deref(),
            Some(manifest.to_string().as_str())
        );
        assert_eq!(
            companion_of(&store, &record.digest).unwrap(),
            Some(companion.digest.clone())
        );

        for not_a_record in [&layer.digest, &companion.digest] {
            let err = remove(&store, not_a_record).unwrap_err();
            assert!(matches!(err, RemoveError::NotARecord { .. }), "{err}");
        }
        assert_eq!(
            remove(&store, &record.digest).unwrap(),
            Some(companion.digest.clone())
        );
        assert!(!store.exists(&record.digest) && !store.exists(&companion.digest));
        assert!(!store.labels_path(&record.digest).exists());
        assert!(store.exists(&layer.digest));
        let err = remove(&store, &record.digest).unwrap_err();
        assert!(
            matches!(
                err,
                RemoveError::Content {
                    source: ContentError::NotFound { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(list(&store).unwrap().len(), 1);
    }
}
