//! The userspace end of the ring buffer.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tracing::warn;

use super::{Event, TracerError};

/// Decoded events as they arrive, in batches.
///
/// The kernel wakes this consumer only when the ring fills past a threshold; otherwise the
/// consumer drains on a short poll, so a busy workload does not pay for a wakeup per event.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    poll_interval: Duration,
    undecodable: u64,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("poll_interval", &self.poll_interval)
            .field("undecodable", &self.undecodable)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    pub(super) fn new(
        ring: RingBuf<MapData>,
        poll_interval: Duration,
    ) -> Result<Self, TracerError> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it
        // lives, and the AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|error| TracerError::Io {
            context: "registering the ring buffer with the runtime".into(),
            source: error.into_parts().1,
        })?;
        Ok(Self {
            ring,
            poll_interval,
            undecodable: 0,
        })
    }

    /// Waits until at least one event is available, then appends every available one to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<usize, TracerError> {
        loop {
            let n = self.drain(out);
            if n > 0 {
                return Ok(n);
            }
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| TracerError::Io {
                        context: "polling the ring buffer".into(),
                        source,
                    })?;
                    // Records that race with this clear are found by the next poll.
                    guard.clear_ready();
                }
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Appends every event in the ring to `out` without waiting.
    pub fn drain(&mut self, out: &mut Vec<Event>) -> usize {
        let ring = self.ring.get_mut();
        let mut n = 0;
        while let Some(record) = ring.next() {
            match Event::decode(&record) {
                Ok(event) => {
                    out.push(event);
                    n += 1;
                }
                Err(error) => {
                    self.undecodable += 1;
                    warn!(error = %crate::errors::Chain(&error), "dropping an undecodable ring record");
                }
            }
        }
        n
    }

    /// Records that arrived but could not be decoded (a kernel/userspace version mismatch).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }
}
