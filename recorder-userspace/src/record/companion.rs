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
}
