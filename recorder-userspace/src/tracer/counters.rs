//! Kernel-side loss accounting.

use aya::maps::{MapData, PerCpuArray};
use recorder_common::Counter;
use serde::Serialize;

use super::TracerError;

/// Counters kept by the programs, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCounters {
    /// Records written to the ring.
    pub emitted: u64,
    /// Records lost because the ring was full.
    pub dropped: u64,
    /// Paths the kernel could not read (the record still arrives, without its path).
    pub path_read_failed: u64,
    /// `unshare(CLONE_NEWNS)` calls not followed because the in-flight table was full: the
    /// namespace they made was not traced.
    pub in_flight_full: u64,
    /// Successful opens and execs whose file the kernel program could not read (they arrive,
    /// counted by userspace as `unresolved-file`).
    pub file_unresolved: u64,
    /// Mount namespaces made by traced tasks that joined the filter.
    pub nested_namespaces: u64,
    /// Mount namespaces made by traced tasks that could not join: the filter was full.
    pub targets_full: u64,
    /// Program runs the kernel skipped because another tracing program was running on the CPU.
    pub recursion_misses: u64,
}

impl KernelCounters {
    pub(super) fn read(map: &PerCpuArray<MapData, u64>) -> Result<Self, TracerError> {
        let sum = |counter: Counter| -> Result<u64, TracerError> {
            map.get(&(counter as u32), 0)
                .map(|values| values.iter().sum())
                .map_err(|source| TracerError::Map {
                    name: "COUNTERS",
                    source,
                })
        };
        Ok(Self {
            emitted: sum(Counter::Emitted)?,
            dropped: sum(Counter::Dropped)?,
            path_read_failed: sum(Counter::PathReadFailed)?,
            in_flight_full: sum(Counter::InFlightFull)?,
            file_unresolved: sum(Counter::FileUnresolved)?,
            nested_namespaces: sum(Counter::NestedNamespaces)?,
            targets_full: sum(Counter::TargetsFull)?,
            recursion_misses: 0,
        })
    }

    /// Events that never reached userspace, or calls of tasks the filter failed to follow.
    pub fn lost(&self) -> u64 {
        self.dropped + self.in_flight_full + self.targets_full + self.recursion_misses
    }
}
