//! What a workload needed of its image: per layer, the files the record names and their bytes
//! against the layer's totals; the whole image; how long until the last first access; the
//! largest files read. This is the number that decides whether lazy pulling pays.
//!
//! A record is file-level: a file counts with its whole size (from the layer index), however
//! little of it was read.

use serde::Serialize;

use super::RecordEntry;
use super::companion::CompanionLine;
use crate::image::{EntryKind, LayerIndex, LayerInfo, path};

/// Why a record does not describe an image.
#[derive(Debug, thiserror::Error)]
pub enum NeedsError {
    /// The record is of another image.
    #[error("the record is of manifest {record} but the image is {image}")]
    OtherManifest {
        /// The record's manifest digest.
        record: String,
        /// The image's.
        image: String,
    },
    /// The record names a layer the image does not have.
    #[error("the record names layer {layer} for {path:?} but the image has {layers} layers")]
    NoSuchLayer {
        /// The layer index.
        layer: usize,
        /// The path.
        path: String,
        /// Layers of the image.
        layers: usize,
    },
}

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    /// Regular files.
    pub files: u64,
    /// Their sizes, summed.
    pub bytes: u64,
}

impl Amount {
    fn add(&mut self, bytes: u64) {
        self.files += 1;
        self.bytes += bytes;
    }
}

/// One layer: what was read of it, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerNeeds {
    /// Position in the manifest (0 is the base).
    pub index: usize,
    /// The layer blob's digest.
    pub digest: String,
    /// The blob's (compressed) size, as the manifest says.
    pub blob_bytes: u64,
    /// Record entries attributed to the layer (any kind).
    pub entries: u64,
    /// Regular files among them, with their sizes.
    pub read: Amount,
    /// Every regular file of the layer, with their sizes.
    pub total: Amount,
}

/// One file the record names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRead {
    /// Absolute path in the image (lossy text).
    pub path: String,
    /// The layer providing it, if any.
    pub layer: Option<usize>,
    /// What the layer holds there (`file`, `symlink`, ...; `missing` if nothing).
    pub kind: &'static str,
    /// Its size (a hard link's target's), 0 for non-files.
    pub bytes: u64,
    /// Nanoseconds from the start to the first access, when the companion says.
    pub offset_ns: Option<u64>,
    /// Runs that read it, for a merged record.
    pub runs: Option<u32>,
}

/// Everything `record show` tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Needs {
    /// The image's manifest digest.
    pub manifest: String,
    /// Per layer, base first.
    pub layers: Vec<LayerNeeds>,
    /// Regular files read, over all layers.
    pub read: Amount,
    /// Regular files of all layers.
    pub total: Amount,
    /// Sum of the layer blobs' sizes: what a full pull downloads.
    pub blob_bytes: u64,
    /// Record entries.
    pub entries: u64,
    /// Entries with no layer (paths outside the image).
    pub outside: u64,
    /// Nanoseconds from the start to the last first access, when the companion has times.
    pub last_access_ns: Option<u64>,
    /// The largest files read, largest first (then in record order).
    pub largest: Vec<FileRead>,
    /// Every entry, in record order.
    pub files: Vec<FileRead>,
}

/// Computes what the record `entries` (with its companion's lines, possibly empty) needed of
/// the image whose manifest is `manifest`, whose layers are `layers` and indexes `indexes`.
pub fn compute(
    entries: &[RecordEntry],
    companion: &[Option<CompanionLine>],
    manifest: &str,
    layers: &[LayerInfo],
    indexes: &[LayerIndex],
    largest: usize,
) -> Result<Needs, NeedsError> {
    if let Some(e) = entries
        .iter()
        .find(|e| !e.manifest_digest.is_empty() && e.manifest_digest != manifest)
    {
        return Err(NeedsError::OtherManifest {
            record: e.manifest_digest.clone(),
            image: manifest.to_owned(),
        });
    }
    let mut per_layer: Vec<LayerNeeds> = layers
        .iter()
        .zip(indexes)
        .enumerate()
        .map(|(index, (info, idx))| {
            let mut total = Amount::default();
            for (_, e) in idx.entries() {
                if e.kind == EntryKind::File {
                    total.add(e.size);
                }
            }
            LayerNeeds {
                index,
                digest: info.digest.to_string(),
                blob_bytes: info.size,
                entries: 0,
                read: Amount::default(),
                total,
            }
        })
        .collect();
    let mut files = Vec::with_capacity(entries.len());
    let mut outside = 0;
    for (i, e) in entries.iter().enumerate() {
        let line = companion.get(i).and_then(Option::as_ref);
        let cleaned = path::clean(&e.path);
        let shown = format!("/{}", path::display(&cleaned));
        let (kind, bytes) = match e.layer_index {
            None => {
                outside += 1;
                ("missing", 0)
            }
            Some(l) => {
                let (Some(layer), Some(idx)) = (per_layer.get_mut(l), indexes.get(l)) else {
                    return Err(NeedsError::NoSuchLayer {
                        layer: l,
                        path: shown,
                        layers: layers.len(),
                    });
                };
                layer.entries += 1;
                let (kind, bytes) = size_in(idx, &cleaned);
                if matches!(kind, Some(EntryKind::File | EntryKind::Hardlink)) {
                    layer.read.add(bytes);
                }
                (kind.map_or("missing", EntryKind::as_str), bytes)
            }
        };
        files.push(FileRead {
            path: shown,
            layer: e.layer_index,
            kind,
            bytes,
            offset_ns: line.and_then(|l| l.extras.offset_ns),
            runs: line.and_then(|l| l.runs),
        });
    }
    let mut read = Amount::default();
    let mut total = Amount::default();
    for l in &per_layer {
        read.files += l.read.files;
        read.bytes += l.read.bytes;
        total.files += l.total.files;
        total.bytes += l.total.bytes;
    }
    let mut by_size: Vec<&FileRead> = files.iter().filter(|f| f.bytes > 0).collect();
    // Stable: equal sizes stay in record order.
    by_size.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    Ok(Needs {
        manifest: manifest.to_owned(),
        blob_bytes: per_layer.iter().map(|l| l.blob_bytes).sum(),
        layers: per_layer,
        read,
        total,
        entries: entries.len() as u64,
        outside,
        last_access_ns: files.iter().filter_map(|f| f.offset_ns).max(),
        largest: by_size.into_iter().take(largest).cloned().collect(),
        files,
    })
}

/// The kind of `path` in `idx` and its size (a hard link's target's size; 0 for non-files);
/// no kind when the layer has no such path (a record of another build of the image).
fn size_in(idx: &LayerIndex, path: &[u8]) -> (Option<EntryKind>, u64) {
    let Some(info) = idx.get(path) else {
        return (None, 0);
    };
    match info.kind {
        EntryKind::File => (Some(EntryKind::File), info.size),
        EntryKind::Hardlink => {
            let size = info
                .target
                .and_then(|t| idx.get(t))
                .filter(|t| t.kind == EntryKind::File)
                .map_or(0, |t| t.size);
            (Some(EntryKind::Hardlink), size)
        }
        kind => (Some(kind), 0),
    }
}

/// `12.3 MiB`-style text of a byte count.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{BlobDigest, Compression, LayerIndexBuilder};

    fn layer(entries: &[(&str, EntryKind, u64, Option<&str>)]) -> LayerIndex {
        let mut b = LayerIndexBuilder::new();
        for (name, kind, size, target) in entries {
            b.add(
                name.as_bytes(),
                *kind,
                *size,
                target.map(str::as_bytes),
                None,
            )
            .unwrap();
        }
        b.finish()
    }

    fn info(i: u8) -> LayerInfo {
        LayerInfo {
            digest: format!("sha256:{}", format!("{i:x}").repeat(64))
                .parse::<BlobDigest>()
                .unwrap(),
            media_type: String::new(),
            size: 100 * u64::from(i + 1),
            compression: Compression::Gzip,
            toc_digest: None,
        }
    }

    fn entry(path: &str, layer: Option<usize>) -> RecordEntry {
        RecordEntry {
            path: path.as_bytes().to_vec(),
            manifest_digest: "sha256:m".into(),
            layer_index: layer,
        }
    }

    #[test]
    fn sums_read_files_against_layer_totals() {
        use EntryKind::*;
        let indexes = vec![
            layer(&[
                ("bin/sh", File, 1000, None),
                ("bin/ls", File, 500, None),
                ("bin/link", Hardlink, 0, Some("bin/sh")),
                ("etc", Dir, 0, None),
            ]),
            layer(&[
                ("app/main", File, 70, None),
                ("app/cfg", Symlink, 3, Some("x")),
            ]),
        ];
        let entries = vec![
            entry("app/main", Some(1)),
            entry("bin/link", Some(0)),
            entry("app/cfg", Some(1)),
            entry("proc/self", None),
        ];
        let mut companion = vec![None; 4];
        companion[0] = Some(CompanionLine {
            index: 0,
            path: "app/main".into(),
            extras: crate::record::Extras {
                offset_ns: Some(5),
                ..Default::default()
            },
            runs: None,
            offsets_ns: None,
        });
        companion[1] = companion[0].clone().map(|mut c| {
            c.extras.offset_ns = Some(9);
            c
        });
        let n = compute(
            &entries,
            &companion,
            "sha256:m",
            &[info(0), info(1)],
            &indexes,
            1,
        )
        .unwrap();
        assert_eq!(
            n.layers[0].read,
            Amount {
                files: 1,
                bytes: 1000
            }
        );
        assert_eq!(
            n.layers[0].total,
            Amount {
                files: 2,
                bytes: 1500
            }
        );
        assert_eq!(
            n.layers[1].read,
            Amount {
                files: 1,
                bytes: 70
            }
        );
        assert_eq!(n.layers[1].entries, 2);
        assert_eq!(
            n.read,
            Amount {
                files: 2,
                bytes: 1070
            }
        );
        assert_eq!(
            n.total,
            Amount {
                files: 3,
                bytes: 1570
            }
        );
        assert_eq!((n.outside, n.entries, n.blob_bytes), (1, 4, 300));
        assert_eq!(n.last_access_ns, Some(9));
        assert_eq!(n.largest.len(), 1);
        assert_eq!(n.largest[0].path, "/bin/link");
        let other = compute(&entries, &[], "sha256:x", &[info(0), info(1)], &indexes, 1);
        assert!(matches!(other, Err(NeedsError::OtherManifest { .. })));
        let short = compute(&entries, &[], "sha256:m", &[info(0)], &indexes[..1], 1);
        assert!(matches!(
            short,
            Err(NeedsError::NoSuchLayer { layer: 1, .. })
        ));
    }
}
