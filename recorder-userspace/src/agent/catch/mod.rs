//! Waiting for a container that does not exist yet, without an arming race.
//!
//! A `container-name:` or `k8s:` target is known only once containerd reports its task, and
//! that report travels (shim → containerd → us) while the client goes on to start the task:
//! arming on it left about 30 ms of margin before the entrypoint's first instruction, and an
//! arm came late about once in 30 runs of the containerd tests under load.
//!
//! So while the target is awaited, the kernel joins every mount namespace that runc's init
//! stages (`runc:[0:PARENT]`, `runc:[1:CHILD]`, `runc:[2:INIT]`) make to the filter the moment
//! it is made ([`Tracer::catch_runc_namespaces`]), and reports it. runc makes a container's
//! mount namespace before it sets up the rootfs, and executes the entrypoint only after
//! `runc start`, which containerd runs after the task's creation is reported; so a namespace
//! caught this way is traced from before anything of the container ran, whatever the delays
//! of the report or of this process (even a recorder stopped with SIGSTOP meanwhile: the
//! kernel buffers in the ring, see the containerd tests).
//!
//! [`Catching`] sorts the events into one buffer per caught namespace (with the namespaces
//! that namespace's tasks make), drops the namespaces of containers the watcher passes over,
//! and, given the target, keeps its buffer, stops catching, and drops all the others
//! ([`Catching::identify`]).
//!
//! A caught namespace may die and its inode number be given to a new one (the kernel hands
//! out the lowest free number): the kernel reports every namespace it catches or joins, even
//! under a number already in the filter, and a report starts that number's buffer afresh. The
//! ring keeps the order: a dead namespace's events come before the report of the namespace
//! that reuses its number.
//!
//! Namespaces made by other runtimes (crun, youki) are not caught: their containers are armed
//! on the task's creation report as before, and [`CreatedTask::arm_timing`] tells whether that
//! came too late.
//!
//! [`CreatedTask::arm_timing`]: crate::containerd::CreatedTask::arm_timing

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::MetadataExt;

use recorder_common::{EventKind, MNTNS_CAUGHT};

use crate::containerd::{CreatedTask, TaskTarget, TaskWatcher, Watched};
use crate::tracer::{Event, EventStream, Tracer};

mod trees;

use trees::Trees;

use super::AgentError;
use super::session::{Target, monotonic_ns};
use super::stop::Stops;

/// Caught namespaces held open at once (one file descriptor each); more are not pinned.
const PINS_MAX: usize = 256;

/// Tries for a namespace's pin before it is given up: runc's stage that made it may be gone
/// by its first events, and its init, which stays, comes within the next few.
const PIN_TRIES: u8 = 8;

/// The comm prefix of runc's own init stages: their reads (the rootfs setup, the user's
/// `/etc/passwd` and `/etc/group`) are runc's, not the workload's, and a filter armed on the
/// task's creation report never saw them either.
const RUNC_COMM_PREFIX: &str = "runc:[";

/// Waiting for a container's task while the kernel catches every mount namespace runc makes.
pub struct Catching {
    tracer: Tracer,
    events: EventStream,
    trees: Trees,
    batch: Vec<Event>,
    /// Each caught namespace, held open from its report on (see [`Catching::exited_target`]).
    pins: Pins,
}

impl std::fmt::Debug for Catching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catching")
            .field("trees", &self.trees.trees.len())
            .finish_non_exhaustive()
    }
}

/// The target, identified: the tracer armed on it, and what it did before.
pub struct Caught {
    pub(super) tracer: Tracer,
    pub(super) events: EventStream,
    pub(super) target: Target,
    /// The target's events from its namespace's creation on, in order, without runc's own.
    pub(super) early: Vec<Event>,
    /// When the namespace was made (CLOCK_MONOTONIC), or when the filter was armed.
    pub(super) start_ns: u64,
    in_time: bool,
}

impl std::fmt::Debug for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caught")
            .field("mntns", &self.target.mntns)
            .field("early", &self.early.len())
            .field("in_time", &self.in_time)
            .finish_non_exhaustive()
    }
}

impl Caught {
    /// Whether the target's namespace was traced from its creation by runc: then nothing the
    /// container did is missing, for certain. Otherwise the filter was armed only now, and
    /// whether that was in time is for [`CreatedTask::arm_timing`] to say.
    ///
    /// [`CreatedTask::arm_timing`]: crate::containerd::CreatedTask::arm_timing
    pub fn in_time(&self) -> bool {
        self.in_time
    }

    /// The armed tracer, its events from now on, the target, and its events so far.
    pub fn into_parts(self) -> (Tracer, EventStream, Target, Vec<Event>) {
        (self.tracer, self.events, self.target, self.early)
    }
}

impl Catching {
    /// Takes the tracer's events and starts catching. Call it before subscribing to task
    /// creations: a container the watcher reports was then caught when runc made it.
    pub fn start(mut tracer: Tracer) -> Result<Self, AgentError> {
        let events = tracer.take_events()?.ok_or(AgentError::StreamTaken)?;
        tracer.catch_runc_namespaces(true)?;
        tracing::debug!("catching the mount namespaces runc makes");
        Ok(Self {
            tracer,
            events,
            trees: Trees::default(),
            batch: Vec::with_capacity(4096),
            pins: Pins::default(),
        })
    }

    /// Runs `work` (indexing, waiting for the watcher) while taking the ring's events into their
    /// namespaces' buffers, so that the ring cannot fill meanwhile.
    pub async fn while_waiting<F: Future>(&mut self, work: F) -> Result<F::Output, AgentError> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                biased;
                done = &mut work => return Ok(done),
                result = self.events.next_batch(&mut self.batch) => {
                    result?;
                    self.sort()?;
                }
            }
        }
    }

    /// Waits for the watcher's next matching task, dropping the namespaces of the containers
    /// it passes over; a stop first ends the wait.
    pub async fn created(
        &mut self,
        watcher: &mut TaskWatcher,
        stops: &Stops,
    ) -> Result<CreatedTask, AgentError> {
        loop {
            let watched = self
                .while_waiting(async {
                    tokio::select! {
                        watched = watcher.next_task() => watched.map_err(AgentError::from),
                        reason = stops.wait() => Err(AgentError::StoppedEarly(reason)),
                    }
                })
                .await??;
            match watched {
                Watched::Matching(created) => return Ok(created),
                Watched::Other { container_id, pid } => self.pass_over(&container_id, pid)?,
            }
        }
    }

    /// The target is known (and pinned): stops catching, arms the filter on it, and returns
    /// its buffered events; every other caught namespace leaves the filter.
    pub fn identify(mut self, target: Target) -> Result<Caught, AgentError> {
        self.tracer.catch_runc_namespaces(false)?;
        // The target holds its own pin; the others' namespaces may go.
        self.pins.clear();
        // Everything reported before the namespace was pinned is in the ring by now.
        self.drain()?;
        let mine: HashSet<u32> = self
            .trees
            .trees
            .get(&target.mntns)
            .filter(|_| self.trees.roots.get(&target.mntns) == Some(&target.mntns))
            .map(|tree| tree.namespaces.iter().copied().collect())
            .unwrap_or_default();
        // Every number the kernel put in the filter, not only those of live trees: a tree
        // started afresh under a reused number leaves its nested namespaces' entries behind,
        // and an unrelated namespace given one of those numbers would pass the filter.
        let others: Vec<u32> = self
            .trees
            .filtered
            .iter()
            .copied()
            .filter(|ns| !mine.contains(ns))
            .collect();
        for &mntns in &others {
            self.tracer.remove_target(mntns)?;
        }
        self.tracer.add_target(target.mntns)?;
        // A number just removed may already belong to a namespace the target made since.
        self.drain_rejoining(&others)?;
        let (early, start_ns, in_time) = match self.trees.take(target.mntns) {
            Some(tree) if !tree.overflowed => {
                let mut early = tree.events;
                early.retain(|e| {
                    e.kind == EventKind::MntNs || !e.comm.starts_with(RUNC_COMM_PREFIX)
                });
                (early, tree.made_ns, true)
            }
            _ => (Vec::new(), monotonic_ns(), false),
        };
        tracing::info!(
            mntns = target.mntns,
            caught = in_time,
            early = early.len(),
            dropped = others.len(),
            "target identified among the caught namespaces"
        );
        Ok(Caught {
            tracer: self.tracer,
            events: self.events,
            target,
            early,
            start_ns,
            in_time,
        })
    }

    /// The target of a created task whose process has already exited, from its caught
    /// namespace, if it was caught and is still held: its mounts and root are read from inside
    /// the namespace ([`Target::of_namespace`]), which holds them while it is pinned.
    ///
    /// A short workload can run and exit before this process hears of its task (seen under
    /// load: containerd's report arrived after the container had exited, 3 times in 4 loops of
    /// the containerd tests with five builds running). Its events are all in the caught
    /// namespace's buffer; only what `/proc/PID` would have said is missing, and the pin taken
    /// at the kernel's report has it.
    pub fn exited_target(&mut self, task: &TaskTarget) -> Option<Target> {
        self.drain().ok()?;
        let root = self
            .trees
            .trees
            .get(&task.mntns)
            .map(|_| task.mntns)
            .or_else(|| self.trees.root_of_process(task.pid))?;
        let pin = self.pins.take(root)?;
        match Target::of_namespace(root, pin) {
            Ok(target) => {
                tracing::info!(
                    container = task.container_id,
                    pid = task.pid,
                    mntns = root,
                    "the container exited before its report: its caught namespace stands for it"
                );
                Some(target)
            }
            Err(e) => {
                tracing::warn!(
                    container = task.container_id,
                    error = %crate::errors::Chain(&e),
                    "reading the exited container's namespace failed"
                );
                None
            }
        }
    }

    /// A container that does not match: its namespace (pinned meanwhile, so that its number
    /// cannot pass to another) and those its tasks made leave the filter, their buffer dropped.
    fn pass_over(&mut self, container_id: &str, pid: u32) -> Result<(), AgentError> {
        let Ok(pin) = File::open(format!("/proc/{pid}/ns/mnt")) else {
            return Ok(());
        };
        let Ok(mntns) = pin.metadata().map(|m| m.ino() as u32) else {
            return Ok(());
        };
        self.drain()?;
        let Some(tree) = self.trees.take(mntns) else {
            return Ok(());
        };
        // Not remembered as removed: the pinned root's number cannot be reused meanwhile, and a
        // nested one's only by a namespace made within these microseconds.
        for &ns in &tree.namespaces {
            self.tracer.remove_target(ns)?;
            self.trees.filtered.remove(&ns);
        }
        self.pins.forget(mntns);
        tracing::debug!(
            container = container_id,
            mntns,
            namespaces = tree.namespaces.len(),
            "not the target: its caught namespaces leave the filter"
        );
        drop(pin);
        Ok(())
    }

    fn drain(&mut self) -> Result<(), AgentError> {
        self.events.drain(&mut self.batch);
        self.sort()
    }

    /// Drains, putting back into the filter any of `removed` reported again.
    fn drain_rejoining(&mut self, removed: &[u32]) -> Result<(), AgentError> {
        self.trees.removed.extend(removed);
        self.drain()
    }

    fn sort(&mut self) -> Result<(), AgentError> {
        for event in self.batch.drain(..) {
            let (mntns, tid) = (event.mntns, event.tid);
            if event.kind == EventKind::MntNs && event.flags & MNTNS_CAUGHT != 0 {
                // A new namespace under this number: the old pin (if any) is of a dead one.
                self.pins.forget(mntns);
            }
            let rejoin = self.trees.sort(event);
            // Pinned through the first of its tasks still alive when its event is read: runc's
            // stage that made it exits within milliseconds, its init lives on.
            if self.trees.roots.get(&mntns) == Some(&mntns) {
                self.pins.try_pin(mntns, tid);
            }
            if let Some(rejoin) = rejoin {
                // Reported after being removed: a new namespace under a freed number, which the
                // removal may have taken out of the filter again.
                self.tracer.add_target(rejoin)?;
            }
        }
        Ok(())
    }
}

/// Caught namespaces held open, so that each outlives a container that exits before it is
/// identified; pinned through one of their tasks, best effort.
#[derive(Debug, Default)]
struct Pins {
    held: HashMap<u32, File>,
    /// Failed tries per namespace not held yet: a namespace whose tasks this process cannot
    /// see (no host pid namespace) would otherwise cost an `open` per event.
    tries: HashMap<u32, u8>,
}

impl Pins {
    /// Holds namespace `mntns` through task `tid`, unless it is held, or was tried
    /// [`PIN_TRIES`] times. A task already gone, or no longer in `mntns`, pins nothing (the
    /// namespace's next event tries again).
    fn try_pin(&mut self, mntns: u32, tid: u32) {
        if self.held.contains_key(&mntns) || self.held.len() >= PINS_MAX {
            return;
        }
        let tries = self.tries.entry(mntns).or_default();
        if *tries >= PIN_TRIES {
            return;
        }
        *tries += 1;
        let Ok(pin) = File::open(format!("/proc/{tid}/ns/mnt")) else {
            return;
        };
        if pin.metadata().is_ok_and(|m| m.ino() == u64::from(mntns)) {
            self.tries.remove(&mntns);
            self.held.insert(mntns, pin);
        }
    }

    /// The pin of `mntns`, taken out.
    fn take(&mut self, mntns: u32) -> Option<File> {
        self.tries.remove(&mntns);
        self.held.remove(&mntns)
    }

    /// Lets `mntns` go, and forgets its tries (the number may come back as a new namespace).
    fn forget(&mut self, mntns: u32) {
        self.take(mntns);
    }

    fn clear(&mut self) {
        self.held.clear();
        self.tries.clear();
    }
}
