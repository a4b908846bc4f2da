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

use super::AgentError;
use super::session::{Target, monotonic_ns};
use super::stop::Stops;

/// Events kept for one caught namespace before its buffer is given up (the target's is
/// identified within tens of milliseconds of its creation: runc's setup, then containerd's
/// report; a namespace that fills this is a busy container that is not the target).
const TREE_EVENTS_MAX: usize = 1 << 16;

/// Events kept across all caught namespaces.
const ALL_EVENTS_MAX: usize = 1 << 18;

/// Caught namespaces held open at once (one file descriptor each); more are not pinned.
const PINS_MAX: usize = 256;

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
    pins: HashMap<u32, File>,
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
            pins: HashMap::new(),
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
        let pin = self.pins.remove(&root)?;
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
                    error = %e,
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
        self.pins.remove(&mntns);
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
                self.pins.remove(&mntns);
            }
            let rejoin = self.trees.sort(event);
            // Pinned through the first of its tasks still alive when its event is read: runc's
            // stage that made it exits within milliseconds, its init lives on.
            if self.trees.roots.get(&mntns) == Some(&mntns) && !self.pins.contains_key(&mntns) {
                pin(&mut self.pins, mntns, tid);
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

/// Holds caught namespace `mntns` open in `pins`, through task `tid`, so that it outlives a
/// container that exits before it is identified. Best effort: a task already gone, or one no
/// longer in `mntns`, pins nothing (the namespace's next event tries again).
fn pin(pins: &mut HashMap<u32, File>, mntns: u32, tid: u32) {
    if pins.len() >= PINS_MAX {
        return;
    }
    let Ok(pin) = File::open(format!("/proc/{tid}/ns/mnt")) else {
        return;
    };
    if pin.metadata().is_ok_and(|m| m.ino() == u64::from(mntns)) {
        pins.insert(mntns, pin);
    }
}

/// Caught namespaces, each with the namespaces its tasks made, and their events.
#[derive(Debug, Default)]
struct Trees {
    /// Namespace → the caught namespace it belongs to.
    roots: HashMap<u32, u32>,
    trees: HashMap<u32, Tree>,
    /// Namespaces taken out of the filter: reported again, they go back in.
    removed: HashSet<u32>,
    /// Every namespace the kernel reported putting in the filter.
    filtered: HashSet<u32>,
    buffered: usize,
}

#[derive(Debug)]
struct Tree {
    /// When the kernel caught it.
    made_ns: u64,
    /// It and the namespaces its tasks made.
    namespaces: Vec<u32>,
    events: Vec<Event>,
    /// More events came than are kept: the buffer was given up.
    overflowed: bool,
}

impl Trees {
    /// Files one event; returns a namespace to put back into the filter.
    fn sort(&mut self, event: Event) -> Option<u32> {
        let mntns = event.mntns;
        let mut rejoin = None;
        if event.kind == EventKind::MntNs {
            self.filtered.insert(mntns);
            rejoin = self.removed.remove(&mntns).then_some(mntns);
            if event.flags & MNTNS_CAUGHT != 0 {
                // A new container's namespace; whatever had this number before is gone.
                self.forget(mntns);
                self.roots.insert(mntns, mntns);
                self.trees.insert(
                    mntns,
                    Tree {
                        made_ns: event.ts_ns,
                        namespaces: vec![mntns],
                        events: Vec::new(),
                        // Put back after a removal: its first events may be lost.
                        overflowed: rejoin.is_some(),
                    },
                );
                return rejoin;
            }
            // Made by a task of a caught namespace (`ret` is where it came from).
            self.roots.remove(&mntns);
            let root = self.roots.get(&(event.ret as u32)).copied()?;
            self.roots.insert(mntns, root);
            if let Some(tree) = self.trees.get_mut(&root) {
                tree.namespaces.push(mntns);
                if rejoin.is_some() {
                    // Its namespace was out of the filter for a moment: not whole.
                    self.buffered -= tree.events.len();
                    tree.events = Vec::new();
                    tree.overflowed = true;
                }
            }
        }
        let root = *self.roots.get(&mntns)?;
        let tree = self.trees.get_mut(&root)?;
        if tree.overflowed {
            return rejoin;
        }
        if tree.events.len() >= TREE_EVENTS_MAX || self.buffered >= ALL_EVENTS_MAX {
            tracing::debug!(
                mntns = root,
                "a caught namespace's buffer is full: given up"
            );
            self.buffered -= tree.events.len();
            tree.events = Vec::new();
            tree.overflowed = true;
            return rejoin;
        }
        tree.events.push(event);
        self.buffered += 1;
        rejoin
    }

    /// The caught namespace in whose tree process `pid` ran (its tasks' events name it).
    fn root_of_process(&self, pid: u32) -> Option<u32> {
        self.trees
            .iter()
            .find(|(_, tree)| tree.events.iter().any(|e| e.tgid == pid))
            .map(|(&root, _)| root)
    }

    /// Takes the tree of caught namespace `mntns` out, if it is one.
    fn take(&mut self, mntns: u32) -> Option<Tree> {
        if self.roots.get(&mntns) != Some(&mntns) {
            return None;
        }
        let tree = self.trees.remove(&mntns)?;
        self.roots.retain(|_, root| *root != mntns);
        self.buffered -= tree.events.len();
        Some(tree)
    }

    /// Drops the tree whose root had this number, and this number's place in any tree.
    fn forget(&mut self, mntns: u32) {
        if self.take(mntns).is_none() {
            self.roots.remove(&mntns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracer::event::FileGap;

    fn event(kind: EventKind, mntns: u32, comm: &str, ret: i64, flags: u64) -> Event {
        Event {
            kind,
            tgid: 1,
            tid: 1,
            mntns,
            dirfd: -100,
            flags,
            ret,
            ts_ns: 7,
            comm: comm.into(),
            path: Vec::new(),
            path_unreadable: false,
            dir: None,
            dir_unresolved: false,
            file: None,
            file_gap: FileGap::None,
            script: false,
            script_file: false,
            script_named: false,
        }
    }
    fn caught(mntns: u32) -> Event {
        event(EventKind::MntNs, mntns, "runc:[1:CHILD]", 1, MNTNS_CAUGHT)
    }
    fn nested(mntns: u32, from: u32) -> Event {
        event(EventKind::MntNs, mntns, "app", i64::from(from), 0)
    }
    fn open(mntns: u32, comm: &str) -> Event {
        event(EventKind::Openat, mntns, comm, 3, 0)
    }

    /// A case: its name, events in ring order, the root taken, the comms of its tree's events.
    type Case = (&'static str, Vec<Event>, u32, Option<Vec<&'static str>>);

    #[test]
    fn events_are_sorted_by_the_caught_namespace_they_belong_to() {
        let cases: Vec<Case> = vec![
            (
                "uncaught namespaces are not kept",
                vec![open(5, "a")],
                5,
                None,
            ),
            (
                "a caught namespace keeps its events in order",
                vec![caught(5), open(5, "a"), open(6, "x"), open(5, "b")],
                5,
                Some(vec!["a", "b"]),
            ),
            (
                "a namespace its task made belongs to it",
                vec![caught(5), nested(9, 5), open(9, "n"), open(5, "a")],
                5,
                Some(vec!["app", "n", "a"]),
            ),
            (
                "a number reused by a new caught namespace starts afresh",
                vec![caught(5), open(5, "old"), caught(5), open(5, "new")],
                5,
                Some(vec!["new"]),
            ),
            (
                "a nested number reused as a caught one leaves its old tree",
                vec![caught(5), nested(9, 5), caught(9), open(9, "c")],
                5,
                Some(vec!["app"]),
            ),
            (
                "a nested namespace is not a tree of its own",
                vec![caught(5), nested(9, 5)],
                9,
                None,
            ),
        ];
        for (name, events, root, want) in cases {
            let mut trees = Trees::default();
            for e in events {
                assert_eq!(trees.sort(e), None, "{name}");
            }
            let got = trees
                .take(root)
                .map(|t| t.events.iter().map(|e| e.comm.clone()).collect::<Vec<_>>());
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
            assert!(trees.roots.values().all(|&r| r != root), "{name}");
        }
    }

    #[test]
    fn a_removed_namespace_reported_again_goes_back_into_the_filter_and_its_tree_is_not_whole() {
        let mut trees = Trees::default();
        trees.removed.insert(9);
        assert_eq!(trees.sort(caught(5)), None);
        trees.sort(open(5, "a"));
        assert_eq!(trees.sort(nested(9, 5)), Some(9));
        // Once only.
        assert_eq!(trees.sort(nested(9, 5)), None);
        assert!(trees.take(5).unwrap().overflowed);
        trees.removed.insert(6);
        assert_eq!(trees.sort(caught(6)), Some(6));
        assert!(trees.take(6).unwrap().overflowed);
    }

    #[test]
    fn every_number_the_kernel_filtered_is_remembered_even_after_its_tree_is_gone() {
        let mut trees = Trees::default();
        for e in [caught(5), nested(9, 5), caught(5)] {
            trees.sort(e);
        }
        // 9's tree was started afresh under 5: 9 is in no tree, but still in the filter.
        assert_eq!(trees.roots.get(&9), None);
        assert_eq!(trees.filtered, HashSet::from([5, 9]));
    }

    #[test]
    fn a_full_buffer_is_given_up_and_counted_out() {
        let mut trees = Trees::default();
        trees.sort(caught(5));
        for _ in 0..TREE_EVENTS_MAX + 3 {
            trees.sort(open(5, "busy"));
        }
        assert_eq!(trees.buffered, 0);
        let tree = trees.take(5).unwrap();
        assert!(tree.overflowed);
        assert!(tree.events.is_empty());
    }
}
