//! The caught namespaces' buffers: each caught namespace with the namespaces its tasks made
//! and their events, sorted as the ring delivers them, bounded.

use std::collections::{HashMap, HashSet};

use recorder_common::{EventKind, MNTNS_CAUGHT};

use crate::tracer::Event;

/// Events kept for one caught namespace before its buffer is given up (the target's is
/// identified within tens of milliseconds of its creation: runc's setup, then containerd's
/// report; a namespace that fills this is a busy container that is not the target).
const TREE_EVENTS_MAX: usize = 1 << 16;

/// Events kept across all caught namespaces.
const ALL_EVENTS_MAX: usize = 1 << 18;

/// Caught namespaces, each with the namespaces its tasks made, and their events.
#[derive(Debug, Default)]
pub(super) struct Trees {
    /// Namespace → the caught namespace it belongs to.
    pub(super) roots: HashMap<u32, u32>,
    pub(super) trees: HashMap<u32, Tree>,
    /// Namespaces taken out of the filter: reported again, they go back in.
    pub(super) removed: HashSet<u32>,
    /// Every namespace the kernel reported putting in the filter.
    pub(super) filtered: HashSet<u32>,
    pub(super) buffered: usize,
}

#[derive(Debug)]
pub(super) struct Tree {
    /// When the kernel caught it.
    pub(super) made_ns: u64,
    /// It and the namespaces its tasks made.
    pub(super) namespaces: Vec<u32>,
    pub(super) events: Vec<Event>,
    /// More events came than are kept: the buffer was given up.
    pub(super) overflowed: bool,
}

impl Trees {
    /// Files one event; returns a namespace to put back into the filter.
    pub(super) fn sort(&mut self, event: Event) -> Option<u32> {
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
    pub(super) fn root_of_process(&self, pid: u32) -> Option<u32> {
        self.trees
            .iter()
            .find(|(_, tree)| tree.events.iter().any(|e| e.tgid == pid))
            .map(|(&root, _)| root)
    }

    /// Takes the tree of caught namespace `mntns` out, if it is one.
    pub(super) fn take(&mut self, mntns: u32) -> Option<Tree> {
        if self.roots.get(&mntns) != Some(&mntns) {
            return None;
        }
        let tree = self.trees.remove(&mntns)?;
        self.roots.retain(|_, root| *root != mntns);
        self.buffered -= tree.events.len();
        Some(tree)
    }

    /// Drops the tree whose root had this number, and this number's place in any tree.
    pub(super) fn forget(&mut self, mntns: u32) {
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
