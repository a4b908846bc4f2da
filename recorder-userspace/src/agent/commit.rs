//! Writing the record out: to `--record-out` when asked, then to the content store (a local
//! directory or containerd's), and to a fallback file when the store fails, so that nothing
//! recorded is ever lost.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::containerd::{Containerd, ContainerdContent, RecordLabels};
use crate::content::{self, ContentError, Labels};
use crate::image::BlobDigest;
use crate::record::{RecordBuilder, stored};
use crate::store::ContentStore;

/// Where the record goes.
#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// The content store.
    pub store: RecordSink,
    /// Also write the record to this file (as ctr-remote's `--record-out`; `-` is stdout),
    /// by [`crate::outputs::write`]'s rules.
    pub record_out: Option<PathBuf>,
    /// Write the companion here; default: `FILE.companion` beside a `--record-out FILE`.
    pub companion_out: Option<PathBuf>,
    /// Where to keep the record if it cannot be written where asked.
    pub fallback_dir: PathBuf,
}

/// A content store for records.
#[derive(Debug, Clone)]
pub enum RecordSink {
    /// A containerd-style content store directory.
    Local(PathBuf),
    /// containerd's content store, through its API.
    Containerd(Box<ContainerdSink>),
}

impl From<PathBuf> for RecordSink {
    fn from(dir: PathBuf) -> Self {
        RecordSink::Local(dir)
    }
}

/// containerd's content store, with the labels records get there.
#[derive(Clone)]
pub struct ContainerdSink {
    /// The connection.
    pub client: Containerd,
    /// A runtime the connection's I/O is driven on; the commit blocks on it from a thread of
    /// its own, since it is called from synchronous code that may sit inside another runtime.
    pub runtime: tokio::runtime::Handle,
    /// The manifest, image and GC labels.
    pub labels: RecordLabels,
}

impl std::fmt::Debug for ContainerdSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerdSink")
            .field("address", &self.client.address())
            .field("namespace", &self.client.namespace())
            .field("labels", &self.labels)
            .finish()
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The record blob's digest in the store.
    pub record: BlobDigest,
    /// The companion blob's digest, when there were extras to keep.
    pub companion: Option<BlobDigest>,
    /// The `--record-out` file, when written.
    pub record_out: Option<PathBuf>,
}

/// Why the record could not be committed; `kept` names where it was saved instead.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The content store refused the record.
    #[error("committing the record to the content store failed; {}", kept_note(.kept))]
    Store {
        /// The store's error.
        #[source]
        source: ContentError,
        /// Where the record was kept instead.
        kept: Option<PathBuf>,
    },
    /// The commit did not finish in time (a content store that stopped answering); the record
    /// was saved to a fallback file if it could be.
    #[error("committing the record did not finish within {after:?}; {}", kept_note(.kept))]
    TimedOut {
        /// How long it was given.
        after: std::time::Duration,
        /// Where the record was kept instead.
        kept: Option<PathBuf>,
    },
    /// The record is in the store, but not everything else asked for was written: each part
    /// is named, written or not.
    #[error(
        "the record was committed only in part: written: {}; NOT written: {}",
        written.join(", "),
        failed.join("; ")
    )]
    Partial {
        /// The record's digest in the store.
        record: BlobDigest,
        /// What was written (`record DIGEST`, `companion DIGEST`, `--record-out PATH`).
        written: Vec<String>,
        /// What was not, each with its error.
        failed: Vec<String>,
    },
}

fn kept_note(kept: &Option<PathBuf>) -> String {
    match kept {
        Some(path) => format!("the record is kept in {}", path.display()),
        None => "and it could not be saved to a fallback file either".to_owned(),
    }
}

/// Commits `record` (and its companion blob) as `opts` says.
pub fn commit(record: &RecordBuilder, opts: &CommitOptions) -> Result<Committed, CommitError> {
    let bytes = record.to_bytes();
    let out_result = opts
        .record_out
        .as_deref()
        .map(|path| write_atomically(path, &bytes).map(|()| path.to_owned()));
    // The companion goes to --companion-out, or next to --record-out (`FILE.companion`):
    // `record show`, `report` and `merge` read times from it. Losing it loses no record entry,
    // so a failure only warns.
    let companion_path = match (&opts.companion_out, opts.record_out.as_deref()) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(path)) if !crate::outputs::is_stdout(path) => {
            Some(crate::record::companion::sidecar_path(path))
        }
        _ => None,
    };
    let companion_bytes = record.companion_bytes();
    let record_out_failed = matches!(out_result, Some(Err(_)));
    if let (Some(sidecar), false, false) = (
        companion_path,
        record_out_failed,
        companion_bytes.is_empty(),
    ) && let Err(e) = write_atomically(&sidecar, &companion_bytes)
    {
        tracing::warn!(path = %sidecar.display(), error = %crate::errors::Chain(&e), "writing the companion failed");
    }
    let stored = put(&opts.store, record, &bytes, &companion_bytes);
    let (record, companion) = match stored {
        Ok(stored) => stored,
        Err(source) => {
            let kept = match out_result {
                Some(Ok(path)) => Some(path),
                _ => keep_fallback(&opts.fallback_dir, &bytes),
            };
            return Err(CommitError::Store { source, kept });
        }
    };
    let mut written = vec![format!("record {record}")];
    let mut failed = Vec::new();
    let companion = match companion {
        Ok(Some(digest)) => {
            written.push(format!("companion {digest}"));
            Some(digest)
        }
        Ok(None) => None,
        Err(error) => {
            failed.push(format!("companion blob: {}", crate::errors::Chain(&error)));
            None
        }
    };
    let record_out = match out_result {
        None => None,
        Some(Ok(path)) => {
            written.push(format!("--record-out {}", path.display()));
            Some(path)
        }
        Some(Err(error)) => {
            let path = opts.record_out.clone().unwrap_or_default();
            failed.push(format!("--record-out {}: {error}", path.display()));
            None
        }
    };
    if !failed.is_empty() {
        return Err(CommitError::Partial {
            record,
            written,
            failed,
        });
    }
    Ok(Committed {
        record,
        companion,
        record_out,
    })
}

/// Commits the record and its companion to the sink's store; the companion's failure does
/// not undo the record's.
fn put(
    sink: &RecordSink,
    record: &RecordBuilder,
    bytes: &[u8],
    companion: &[u8],
) -> Result<(BlobDigest, content::Result<Option<BlobDigest>>), ContentError> {
    let (store, labels): (Box<dyn content::Store>, Labels) = match sink {
        RecordSink::Local(dir) => {
            let labels = Labels::from([(
                stored::MANIFEST_LABEL.to_owned(),
                record.manifest_digest().to_owned(),
            )]);
            (Box::new(ContentStore::open(dir)?), labels)
        }
        RecordSink::Containerd(sink) => (
            Box::new(ContainerdContent::new(
                sink.client.clone(),
                sink.runtime.clone(),
            )),
            sink.labels.to_map(std::time::SystemTime::now()),
        ),
    };
    let reference = format!("recorder-{}", std::process::id());
    let (main, companion) = stored::put(&*store, &reference, &labels, bytes, companion)?;
    Ok((main.digest, companion.map(|c| c.map(|c| c.digest))))
}

/// Saves the record in `dir` under a name of its own (random, created with `O_EXCL`, so
/// nothing planted there is followed or overwritten); `None` if even that fails.
pub(crate) fn keep_fallback(dir: &Path, bytes: &[u8]) -> Option<PathBuf> {
    let digest = BlobDigest::of(bytes);
    let saved = (|| {
        let mut file = tempfile::Builder::new()
            .prefix(&format!("recorder-record-{}-", &digest.hex()[..16]))
            .suffix(".jsonl")
            .permissions(std::fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        let (_, path) = file.keep().map_err(|e| e.error)?;
        Ok::<_, io::Error>(path)
    })();
    match saved {
        Ok(path) => Some(path),
        Err(error) => {
            tracing::error!(dir = %dir.display(), error = %crate::errors::Chain(&error), "could not save the record");
            None
        }
    }
}

/// Writes `bytes` to the output `path` the user named: see [`crate::outputs`] (a regular
/// file is replaced atomically; a symlink the user named is written through; `-` is stdout).
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::outputs::write(path, bytes).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local store, `record_out`, and `dir` for the fallback.
    fn options(dir: &Path, store: PathBuf, record_out: Option<PathBuf>) -> CommitOptions {
        CommitOptions {
            store: store.into(),
            record_out,
            companion_out: None,
            fallback_dir: dir.to_owned(),
        }
    }

    #[test]
    fn store_failure_keeps_the_record() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the store's directory should be: the store cannot be opened.
        let store = dir.path().join("store");
        std::fs::write(&store, b"not a directory").unwrap();
        let mut record = RecordBuilder::new("sha256:abc");
        record.push(b"bin/sh", Some(0));
        let err = commit(&record, &options(dir.path(), store, None)).unwrap_err();
        let CommitError::Store {
            kept: Some(kept), ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(std::fs::read(kept).unwrap(), record.to_bytes());
        assert!(err.to_string().contains(&kept.display().to_string()));
    }

    #[test]
    fn planted_files_beside_record_out_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"intact").unwrap();
        let out = dir.path().join("record.json");
        // The names the temporary file had before (NAME.tmp-PID), planted as symlinks.
        for name in [
            format!("record.json.tmp-{}", std::process::id()),
            ".record.json.tmp".to_owned(),
        ] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let mut record = RecordBuilder::new("sha256:abc");
        record.push(b"bin/sh", Some(0));
        write_atomically(&out, &record.to_bytes()).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), record.to_bytes());
        assert_eq!(std::fs::read(&victim).unwrap(), b"intact");
        // Only the planted links, the victim and the record: no temporary file left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
        // A symlink at the path itself, the caller's own, is what the user named: written
        // through (its target replaced), the link kept (see crate::outputs).
        std::fs::remove_file(&out).unwrap();
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        write_atomically(&out, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(&out).unwrap().is_symlink());
        // Fallback records get a fresh name each time.
        let a = keep_fallback(dir.path(), b"x").unwrap();
        let b = keep_fallback(dir.path(), b"x").unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
    }

    #[test]
    fn a_failed_companion_or_record_out_is_named_and_the_record_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        // The companion's ingest directory is taken by a file: only the companion fails.
        let companion_ref = format!("recorder-{}-companion", std::process::id());
        let ingest = store.join("ingest");
        std::fs::create_dir_all(&ingest).unwrap();
        std::fs::write(
            ingest.join(BlobDigest::of(companion_ref.as_bytes()).hex()),
            b"in the way",
        )
        .unwrap();
        let mut record = RecordBuilder::new("sha256:abc");
        record.push_with(
            b"bin/sh",
            Some(0),
            crate::record::Extras {
                pid: Some(1),
                ..Default::default()
            },
        );
        // --record-out in a directory that does not exist: it fails too.
        let out = dir.path().join("missing/record.json");
        let err = commit(
            &record,
            &options(dir.path(), store.clone(), Some(out.clone())),
        )
        .unwrap_err();
        let CommitError::Partial {
            record: digest,
            written,
            failed,
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(written, &[format!("record {digest}")]);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].starts_with("companion blob: "), "{failed:?}");
        assert!(failed[1].contains(&out.display().to_string()), "{failed:?}");
        let message = err.to_string();
        assert!(message.contains("committed only in part"), "{message}");
        assert_eq!(
            ContentStore::open(&store).unwrap().read(digest).unwrap(),
            record.to_bytes()
        );
    }

    #[test]
    fn writes_store_and_record_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = RecordBuilder::new("sha256:abc");
        record.push(b"bin/sh", Some(0));
        let out = dir.path().join("record.json");
        let committed = commit(
            &record,
            &options(dir.path(), dir.path().join("store"), Some(out.clone())),
        )
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), record.to_bytes());
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        assert_eq!(store.read(&committed.record).unwrap(), record.to_bytes());
        assert_eq!(committed.companion, None);
        // No extras, no companion file.
        assert!(!crate::record::companion::sidecar_path(&out).exists());
    }

    #[test]
    fn keeps_the_companion_next_to_record_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = RecordBuilder::new("sha256:abc");
        let extras = crate::record::Extras {
            offset_ns: Some(7),
            ..Default::default()
        };
        record.push_with(b"bin/sh", Some(0), extras);
        let out = dir.path().join("record.json");
        let committed = commit(
            &record,
            &options(dir.path(), dir.path().join("store"), Some(out.clone())),
        )
        .unwrap();
        let sidecar = crate::record::companion::sidecar_path(&out);
        assert_eq!(sidecar, dir.path().join("record.json.companion"));
        assert_eq!(std::fs::read(&sidecar).unwrap(), record.companion_bytes());
        let store = ContentStore::open(dir.path().join("store")).unwrap();
        let stored = store.read(&committed.companion.unwrap()).unwrap();
        assert_eq!(stored, record.companion_bytes());
    }
}
