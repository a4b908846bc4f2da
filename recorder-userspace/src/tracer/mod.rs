//! Kernel side: loads the eBPF programs, arms the mount-namespace filter, and streams events.

pub mod btf;
mod counters;
mod detach;
pub mod event;
mod kfunc;
mod load;
mod offsets;
mod stream;

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::ProgramError,
};
use thiserror::Error;
use tracing::{debug, info};

use self::load::{BTF_TRACEPOINTS, TRACEFS, TRACEPOINTS};
pub use self::{
    btf::{Btf, BtfError},
    counters::KernelCounters,
    event::{DecodeError, Event},
    kfunc::KfuncError,
    offsets::KernelOffsets,
    stream::EventStream,
};

/// Why the tracer could not start or stream.
#[derive(Debug, Error)]
pub enum TracerError {
    /// A thread for loading could not be made.
    #[error("starting a thread to load the eBPF programs")]
    Thread {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A thread loading programs panicked (a bug).
    #[error("a thread loading the eBPF programs panicked")]
    LoaderPanicked,
    /// The binary was built with `AYA_BUILD_SKIP=1`.
    #[error("this binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild without it")]
    NotBuilt,
    /// Kernel offsets could not be computed.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// The programs' kernel-function calls could not be linked.
    #[error(transparent)]
    Kfunc(#[from] KfuncError),
    /// The kernel's BTF could not be read for the BTF tracepoints.
    #[error("reading the kernel's BTF for the BTF tracepoints failed")]
    KernelBtf {
        /// The cause.
        #[source]
        source: aya::BtfError,
    },
    /// tracefs is needed to attach tracepoints.
    #[error("tracefs is not mounted and mounting it at {TRACEFS} failed")]
    Tracefs(#[source] nix::Error),
    /// The kernel refused the object.
    #[error("loading the eBPF object failed (this needs root, or CAP_BPF and CAP_PERFMON)")]
    Load(#[from] aya::EbpfError),
    /// A program is missing, failed verification, or could not attach.
    #[error("program {name} failed (the programs need Linux 6.17 or later with BTF)")]
    Program {
        /// The program.
        name: &'static str,
        /// The cause.
        #[source]
        source: ProgramError,
    },
    /// A map is missing or could not be used.
    #[error("map {name} failed")]
    Map {
        /// The map.
        name: &'static str,
        /// The cause.
        #[source]
        source: MapError,
    },
    /// A map the object must define is absent.
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    /// The ring size is not one the kernel accepts.
    #[error("ring buffer size {0} must be a power of two and a multiple of the page size")]
    RingSize(u32),
    /// Reading a target's namespace or polling the ring failed.
    #[error("{context} failed")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// How the tracer is sized and how its consumer waits.
#[derive(Clone, Debug)]
pub struct TracerConfig {
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ring_bytes: u32,
    /// Unread bytes in the ring above which the kernel wakes the consumer at once.
    pub wakeup_threshold: u64,
    /// How often the consumer looks at the ring when nothing woke it.
    pub poll_interval: Duration,
    /// Also read each call's path argument and a relative path's directory (for
    /// `recorder trace`); records name files by what the kernel opened and need neither.
    pub arg_paths: bool,
    /// On drop, hand the tracepoints to a child process that detaches them, instead of waiting
    /// for the kernel's grace periods here (about 0.1–0.4 s, seconds under load): for a
    /// process that exits once its tracer is gone. The child holds nothing else.
    pub detach_in_background: bool,
}

impl Default for TracerConfig {
    fn default() -> Self {
        // 16 MiB holds about three seconds of a 600k events/s burst of short paths; waking at
        // 256 KiB keeps the consumer well ahead of that, while the 5 ms poll bounds latency
        // without a wakeup per event.
        Self {
            ring_bytes: 16 << 20,
            wakeup_threshold: 256 << 10,
            poll_interval: Duration::from_millis(5),
            arg_paths: false,
            detach_in_background: false,
        }
    }
}

/// Loaded and attached programs with their filter and counters.
///
/// Dropping it detaches the programs.
pub struct Tracer {
    /// The programs' attachments, detached in parallel on drop (see `Drop`).
    links: Vec<Box<dyn Send>>,
    // The programs stay loaded while it lives.
    ebpf: Ebpf,
    targets: HashMap<MapData, u32, u8>,
    catch_runc: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    poll_interval: Duration,
    detach_in_background: bool,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// Detaches every program: at once in parallel, or, when the config asks, in a child process
/// so this one can exit without waiting for the kernel's grace periods (see `detach`).
impl Drop for Tracer {
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        if self.detach_in_background {
            // Nothing is traced while the child holds the programs.
            if let Err(error) = self.clear_targets() {
                debug!(error = %crate::errors::Chain(&error), "clearing the targets before detaching");
            }
            detach::in_background(links);
        } else {
            detach::in_parallel(links);
        }
    }
}

impl Tracer {
    /// Loads the programs and attaches them to their tracepoints. No task is traced until a
    /// target is added.
    pub fn load(config: &TracerConfig) -> Result<Self, TracerError> {
        let (mut ebpf, links) = load::programs(config)?;
        let targets = take_map(&mut ebpf, "TARGETS", HashMap::try_from)?;
        let catch_runc = take_map(&mut ebpf, "CATCH_RUNC", Array::try_from)?;
        let counters = take_map(&mut ebpf, "COUNTERS", PerCpuArray::try_from)?;
        let events = take_map(&mut ebpf, "EVENTS", RingBuf::try_from)?;
        info!(ring_bytes = config.ring_bytes, "tracer attached");
        Ok(Self {
            links,
            ebpf,
            targets,
            catch_runc,
            counters,
            events: Some(events),
            poll_interval: config.poll_interval,
            detach_in_background: config.detach_in_background,
        })
    }

    /// Whether dropping it hands the detach to a child process (see
    /// [`TracerConfig::detach_in_background`]): then the drop takes milliseconds.
    pub fn detaches_in_background(&self) -> bool {
        self.detach_in_background
    }

    /// Starts tracing every task in the mount namespace with this inode.
    pub fn add_target(&mut self, mntns: u32) -> Result<(), TracerError> {
        self.targets
            .insert(mntns, 1, 0)
            .map_err(|source| TracerError::Map {
                name: "TARGETS",
                source,
            })?;
        info!(mntns, "filter armed");
        Ok(())
    }

    /// Stops tracing a mount namespace.
    pub fn remove_target(&mut self, mntns: u32) -> Result<(), TracerError> {
        match self.targets.remove(&mntns) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            // What a delete of an absent key gives (seen: a namespace removed twice).
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(TracerError::Map {
                name: "TARGETS",
                source,
            }),
        }
    }

    /// While `on`, each mount namespace a runc init stage makes (a container's, as runc creates
    /// it) joins the filter the moment it is made, reported by a caught
    /// [`EventKind::MntNs`](recorder_common::EventKind::MntNs) event; see
    /// [`crate::agent::Catching`].
    pub fn catch_runc_namespaces(&mut self, on: bool) -> Result<(), TracerError> {
        self.catch_runc
            .set(0, u32::from(on), 0)
            .map_err(|source| TracerError::Map {
                name: "CATCH_RUNC",
                source,
            })
    }

    /// Stops tracing every namespace: those armed and those the kernel joined to the filter as
    /// traced tasks made them. After this the ring only holds what came before, so a final
    /// drain ends even when the traced namespaces are busy.
    pub fn clear_targets(&mut self) -> Result<(), TracerError> {
        let keys: Vec<u32> = self
            .targets
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|source| TracerError::Map {
                name: "TARGETS",
                source,
            })?;
        for mntns in keys {
            self.remove_target(mntns)?;
        }
        Ok(())
    }

    /// The event stream; there is one per tracer, so this returns `None` the second time.
    ///
    /// Call it inside a tokio runtime: the stream registers with its reactor.
    pub fn take_events(&mut self) -> Result<Option<EventStream>, TracerError> {
        self.events
            .take()
            .map(|ring| EventStream::new(ring, self.poll_interval))
            .transpose()
    }

    /// Kernel-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<KernelCounters, TracerError> {
        let mut counters = KernelCounters::read(&self.counters)?;
        counters.recursion_misses = self.recursion_misses();
        Ok(counters)
    }

    /// Each program's run count and run time so far, as the kernel accounts them while run-time
    /// statistics are enabled (`aya::sys::enable_stats`, which lasts as long as its fd and
    /// changes no sysctl); both stay 0 otherwise. For benchmarks.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        TRACEPOINTS
            .iter()
            .map(|(_, name)| *name)
            .chain(BTF_TRACEPOINTS)
            .filter_map(|name| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some(ProgramStats {
                    name,
                    runs: info.run_count(),
                    run_time: info.run_time(),
                })
            })
            .collect()
    }

    /// Runs the kernel skipped because another tracing program was running on that CPU: the
    /// only way a call can escape the programs, so it is counted as lost.
    fn recursion_misses(&self) -> u64 {
        TRACEPOINTS
            .iter()
            .map(|(_, name)| *name)
            .chain(BTF_TRACEPOINTS)
            .filter_map(|name| self.ebpf.program(name)?.fd().ok())
            .map(|fd| {
                let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
                std::fs::read_to_string(path)
                    .ok()
                    .and_then(|info| {
                        info.lines()
                            .find_map(|l| l.strip_prefix("recursion_misses:"))
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// A program's accounted runs (see [`Tracer::program_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// The program's (and its tracepoint's) name.
    pub name: &'static str,
    /// Runs accounted.
    pub runs: u64,
    /// Time spent in them.
    pub run_time: Duration,
}

fn take_map<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    convert: impl FnOnce(aya::maps::Map) -> Result<T, MapError>,
) -> Result<T, TracerError> {
    let map = ebpf.take_map(name).ok_or(TracerError::Missing(name))?;
    convert(map).map_err(|source| TracerError::Map { name, source })
}

/// The mount-namespace inode of a process, the key the filter is armed with.
pub fn mount_namespace_of(pid: u32) -> Result<u32, TracerError> {
    let ns = crate::procfs::MntNs::of_pid(pid).map_err(|source| TracerError::Io {
        context: format!(
            "reading the mount namespace of pid {pid} ({})",
            crate::procfs::mnt_ns_path(pid).display()
        ),
        source,
    })?;
    u32::try_from(ns.inode()).map_err(|_| TracerError::Io {
        context: format!("mount namespace inode of pid {pid}"),
        source: io::Error::other("inode does not fit in 32 bits"),
    })
}
