//! The companion blob: per-entry extras that stay out of the main record so that the record
//! itself remains exactly what `ctr-remote image convert --estargz-record-in` consumes.

use serde::{Deserialize, Serialize};

/// Optional facts about an entry's first access.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extras {
    /// Nanoseconds from the start of recording to the first access.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset_ns: Option<u64>,
    /// Process id of the first accessor.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
    /// Command name of the first accessor.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comm: Option<String>,
    /// Kind of access (e.g. `open`, `exec`, `mmap`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
}

impl Extras {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Extras::default()
    }
}

/// One line of the companion blob: the record entry's position and path, plus its extras.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanionLine {
    /// Position of the entry in the main record (0-based).
    pub index: usize,
    /// The entry's path, lossily decoded (the main record has the exact form).
    pub path: String,
    /// The extras.
    #[serde(flatten)]
    pub extras: Extras,
    /// In a merged record: how many of the merged runs read the file.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub runs: Option<u32>,
    /// In a merged record: the first-access offsets (ns) of the runs that read the file and
    /// knew when, in the order the runs were given; `offsetNs` is then their mean.
    #[serde(rename = "offsetsNs", skip_serializing_if = "Option::is_none", default)]
    pub offsets_ns: Option<Vec<u64>>,
}

/// Suffix of the file a record file's companion is kept in (`record.json` ->
/// `record.json.companion`), as `--record-out` and `record merge --out` write it.
pub const SIDECAR_SUFFIX: &str = ".companion";

/// Where the companion of the record file `record` is kept.
pub fn sidecar_path(record: &std::path::Path) -> std::path::PathBuf {
    let mut name = record.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    name.into()
}

/// Parses a companion blob against its record's `entries`: the line of each entry (`None`
/// where the companion has none). A line naming an entry the record does not have, or
/// another path than the record's at that position, is refused.
pub fn parse(
    bytes: &[u8],
    entries: &[super::RecordEntry],
) -> Result<Vec<Option<CompanionLine>>, super::RecordError> {
    let mut lines = vec![None; entries.len()];
    for (i, l) in bytes.split(|&b| b == b'\n').enumerate() {
        if l.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = i + 1;
        let c: CompanionLine = serde_json::from_slice(l)
            .map_err(|source| super::RecordError::BadCompanionLine { line, source })?;
        let bad = |message: String| super::RecordError::ForeignCompanionLine { line, message };
        let entry = entries.get(c.index).ok_or_else(|| {
            bad(format!(
                "index {} but the record has {} entries",
                c.index,
                entries.len()
            ))
        })?;
        let path = crate::image::path::display(&entry.path);
        if path != c.path {
            return Err(bad(format!(
                "index {} is {:?} in the companion but {path:?} in the record",
                c.index, c.path
            )));
        }
        let index = c.index;
        lines[index] = Some(c);
    }
    Ok(lines)
}
