//! What unpacking may take ([`UnpackBudget`]): the bytes written, counted against a limit
//! shared by every layer of an image, and a flag that cancels it, checked between chunks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::UnpackError;

/// What unpacking may take: bytes on disk (shared by all layers of an image, and by the
/// clones of a budget, so layers unpacked in parallel draw on one), and a flag that cancels it.
#[derive(Clone, Debug, Default)]
pub struct UnpackBudget {
    limit: Option<u64>,
    used: Arc<AtomicU64>,
    cancel: Option<Arc<AtomicBool>>,
}

/// Entries cost at least their metadata: a million empty files are not free.
pub(super) const ENTRY_COST: u64 = 512;

/// Chunk size of file copies: holes are found, and cancellation checked, per chunk.
pub(super) const CHUNK: usize = 64 * 1024;

impl UnpackBudget {
    /// At most `limit` bytes written (file data outside holes, plus 512 per entry).
    pub fn new(limit: u64) -> Self {
        Self {
            limit: Some(limit),
            ..Self::default()
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Stops unpacking with [`UnpackError::Cancelled`] once `flag` is set.
    pub fn cancel_on(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// The flag that cancels it, if any: for work done beside unpacking (indexing a cached
    /// layer) to stop with it.
    pub fn cancel_flag(&self) -> Option<&AtomicBool> {
        self.cancel.as_deref()
    }

    /// The cancel flag, for the threads that create files for the unpacker.
    pub(super) fn cancel_arc(&self) -> Option<Arc<AtomicBool>> {
        self.cancel.clone()
    }

    /// Bytes counted so far (by this budget and its clones).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(super) fn check_cancel(&self) -> Result<(), UnpackError> {
        match &self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(UnpackError::Cancelled),
            _ => Ok(()),
        }
    }

    pub(super) fn charge(&mut self, bytes: u64, entry: &str) -> Result<(), UnpackError> {
        let used = self
            .used
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        match self.limit {
            Some(limit) if used > limit => Err(UnpackError::TooLarge {
                entry: entry.to_owned(),
                limit,
            }),
            _ => self.check_cancel(),
        }
    }
}
