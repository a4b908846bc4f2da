//! The recording's pure core: a batch of events to decisions, record entries and counters.
//! No kernel and no /proc: [`Tracing`](super::Tracing) feeds it the ring's events and the
//! container's root, pins the namespaces it reports, and mirrors its counters on the status
//! handle; the summary's numbers are the core's.

use std::collections::HashMap;

use recorder_common::EventKind;

use super::interp::ContainerRoot;
use super::resolve::{Decision, Resolver};
use crate::record::{Extras, RecordBuilder};
use crate::status::Counters;
use crate::tracer::Event;

/// What the kernel loads to exec a program: the interpreter its `#!` names, that one's ELF
/// loader. The one thing the core reads outside itself, behind a trait so that its tests need
/// no container.
pub trait Loaders {
    /// The absolute paths the kernel loads to exec the absolute path `program`.
    fn loaders(&self, program: &[u8]) -> Vec<Vec<u8>>;
}

impl Loaders for ContainerRoot {
    fn loaders(&self, program: &[u8]) -> Vec<Vec<u8>> {
        self.interpreters(program)
    }
}

/// What one batch changed.
#[derive(Debug, Default)]
pub struct Consumed<'a> {
    /// What to add to the counters (`lost` stays 0: the kernel counts those).
    pub counters: Counters,
    /// Mount namespaces a traced task made, which the kernel added to the filter.
    pub namespaces: Vec<&'a Event>,
}

/// Events to record entries, with the counts of what became of them.
#[derive(Debug)]
pub struct Core {
    resolver: Resolver,
    record: RecordBuilder,
    /// The moment of arming, from which the record's time offsets count.
    start_ns: u64,
    /// Image files the kernel loads to exec an image file, by the executed file.
    interpreters: HashMap<Vec<u8>, Vec<(Vec<u8>, usize)>>,
    counters: Counters,
}

impl Core {
    /// A core resolving through `resolver` into a record of image `manifest`, armed at
    /// `start_ns` (CLOCK_MONOTONIC).
    pub fn new(resolver: Resolver, manifest: String, start_ns: u64) -> Self {
        Core {
            resolver,
            record: RecordBuilder::new(manifest),
            start_ns,
            interpreters: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// The record so far.
    pub fn record(&self) -> &RecordBuilder {
        &self.record
    }

    /// Every count so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The record and the counts.
    pub fn into_parts(self) -> (RecordBuilder, Counters) {
        (self.record, self.counters)
    }

    /// Turns a batch into record entries and counts; `loaders` (none: no interpreters are
    /// recorded) names what an exec loads.
    pub fn consume<'a>(
        &mut self,
        batch: &'a [Event],
        loaders: Option<&dyn Loaders>,
    ) -> Consumed<'a> {
        let mut out = Consumed::default();
        let delta = &mut out.counters;
        delta.events = batch.len() as u64;
        for event in batch {
            if event.kind == EventKind::MntNs {
                out.namespaces.push(event);
                continue;
            }
            if !event.succeeded() {
                delta.failed_opens += 1;
                continue;
            }
            let offset_ns = event.ts_ns.saturating_sub(self.start_ns);
            let extras = |kind: &str| Extras {
                offset_ns: Some(offset_ns),
                pid: Some(event.tgid),
                comm: Some(event.comm.clone()),
                kind: Some(kind.to_owned()),
            };
            // In the order the kernel opens them, as fanotify reports them: a script, the
            // interpreter its `#!` names (the file the kernel runs), then that one's loader.
            if event.script_file {
                // The script, named by the kernel through the fd it was run by.
                let decision = self.resolver.decide(event);
                self.apply(decision, extras("exec"), delta);
                continue;
            }
            if event.script && !event.script_named {
                let decision = self.resolver.decide_script(event);
                self.apply(decision, extras("exec"), delta);
            }
            let decision = self.resolver.decide(event);
            let kind = match (event.is_exec(), event.script) {
                (true, true) => "interpreter",
                (true, false) => "exec",
                (false, _) => "open",
            };
            let executed = match (&decision, event.is_exec()) {
                (Decision::Record { path, .. }, true) => Some(path.clone()),
                _ => None,
            };
            self.apply(decision, extras(kind), delta);
            if let Some(path) = executed {
                for (interp, layer) in self.interpreters_of(&path, loaders) {
                    let decision = Decision::Record {
                        path: interp,
                        layer,
                    };
                    self.apply(decision, extras("interpreter"), delta);
                }
            }
        }
        add(&mut self.counters, delta);
        out
    }

    /// Records a decision's path (counted when new) or counts its exclusion.
    fn apply(&mut self, decision: Decision, extras: Extras, delta: &mut Counters) {
        match decision {
            Decision::Record { path, layer } => {
                if self.record.push_with(&path, Some(layer), extras) {
                    delta.recorded_paths += 1;
                }
            }
            Decision::Exclude(why) => {
                *delta.excluded.entry(why.label().to_owned()).or_default() += 1;
            }
        }
    }

    /// The image files the kernel loads to exec the image file `path`, cached per program.
    fn interpreters_of(
        &mut self,
        path: &[u8],
        loaders: Option<&dyn Loaders>,
    ) -> Vec<(Vec<u8>, usize)> {
        if let Some(known) = self.interpreters.get(path) {
            return known.clone();
        }
        let Some(loaders) = loaders else {
            return Vec::new();
        };
        let mut absolute = Vec::with_capacity(path.len() + 1);
        absolute.push(b'/');
        absolute.extend_from_slice(path);
        let found: Vec<(Vec<u8>, usize)> = loaders
            .loaders(&absolute)
            .iter()
            .filter_map(|interp| match self.resolver.decide_path(interp) {
                Decision::Record { path, layer } => Some((path.clone(), *layer)),
                Decision::Exclude(_) => None,
            })
            .collect();
        self.interpreters.insert(path.to_vec(), found.clone());
        found
    }
}

/// Adds `delta` to `total`.
fn add(total: &mut Counters, delta: &Counters) {
    total.events += delta.events;
    total.recorded_paths += delta.recorded_paths;
    total.failed_opens += delta.failed_opens;
    total.lost += delta.lost;
    for (label, n) in &delta.excluded {
        *total.excluded.entry(label.clone()).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::agent::MountTable;
    use crate::image::{EntryKind, LayerIndexBuilder, MergedView};
    use crate::tracer::event::{AT_FDCWD, FileGap, OpenedFile};

    /// The root filesystem's device in the mount table below (0:1).
    const ROOT_DEV: u64 = 1;
    const S_IFREG: u32 = 0o100_644;
    const OVERLAYFS_MAGIC: u64 = 0x794c_7630;

    fn core() -> Core {
        let mut b = LayerIndexBuilder::new();
        for (name, kind) in [
            ("bin/", EntryKind::Dir),
            ("bin/sh", EntryKind::File),
            ("bin/app", EntryKind::File),
            ("etc/", EntryKind::Dir),
            ("etc/passwd", EntryKind::File),
            ("lib/", EntryKind::Dir),
            ("lib/ld.so", EntryKind::File),
        ] {
            b.add(name.as_bytes(), kind, 0, None, None).unwrap();
        }
        let mounts = MountTable::parse(
            b"1 0 0:1 / / rw - overlay o rw\n3 1 8:1 /h/hosts /etc/hosts rw - ext4 d rw\n",
        )
        .unwrap();
        let view = Arc::new(MergedView::new(vec![b.finish()]));
        Core::new(Resolver::new(view, mounts), "sha256:m".into(), 1_000)
    }

    /// A successful open (or exec) of `path` in the image at `ts_ns`.
    fn event(kind: EventKind, path: &str, ts_ns: u64) -> Event {
        Event {
            kind,
            tgid: 7,
            tid: 7,
            mntns: 4026531840,
            dirfd: AT_FDCWD,
            flags: 0,
            ret: 3,
            ts_ns,
            comm: "app".into(),
            path: path.as_bytes().to_vec(),
            path_unreadable: false,
            dir: None,
            dir_unresolved: false,
            file: Some(OpenedFile {
                path: path.as_bytes().to_vec(),
                dev: ROOT_DEV,
                ino: 1,
                mnt_id: 1,
                mode: S_IFREG,
                magic: OVERLAYFS_MAGIC,
            }),
            file_gap: FileGap::None,
            script: false,
            script_file: false,
            script_named: false,
        }
    }

    fn open(path: &str) -> Event {
        event(EventKind::Openat, path, 2_000)
    }

    fn failed(path: &str) -> Event {
        Event {
            ret: -2,
            file: None,
            ..open(path)
        }
    }

    fn host_file(path: &str) -> Event {
        let mut e = open(path);
        if let Some(f) = &mut e.file {
            f.dev = (8 << 8) | 1;
            f.mnt_id = 3;
        }
        e
    }

    fn namespace() -> Event {
        Event {
            kind: EventKind::MntNs,
            mntns: 99,
            ..failed("")
        }
    }

    /// A program's loaders, as the container's root would name them.
    struct Fixed;

    impl Loaders for Fixed {
        fn loaders(&self, program: &[u8]) -> Vec<Vec<u8>> {
            match program {
                b"/bin/app" => vec![b"/lib/ld.so".to_vec(), b"/lib/missing.so".to_vec()],
                _ => Vec::new(),
            }
        }
    }

    /// The companion's lines: each entry's path, kind and offset.
    fn companion(core: &Core) -> Vec<crate::record::CompanionLine> {
        core.record()
            .companion_bytes()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    fn paths(core: &Core) -> Vec<(String, String)> {
        companion(core)
            .into_iter()
            .map(|c| (c.path, c.extras.kind.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn events_become_entries_and_counts() {
        struct Case {
            name: &'static str,
            batch: Vec<Event>,
            entries: Vec<(&'static str, &'static str)>,
            recorded: u64,
            failed: u64,
            excluded: Vec<(&'static str, u64)>,
            namespaces: usize,
        }
        let cases = [
            Case {
                name: "an open is recorded once, however often it is seen",
                batch: vec![open("/etc/passwd"), open("/etc/passwd")],
                entries: vec![("etc/passwd", "open")],
                recorded: 1,
                failed: 0,
                excluded: vec![],
                namespaces: 0,
            },
            Case {
                name: "a failed open is counted, not recorded",
                batch: vec![failed("/etc/shadow")],
                entries: vec![],
                recorded: 0,
                failed: 1,
                excluded: vec![],
                namespaces: 0,
            },
            Case {
                name: "a file of a bind mount is excluded by its mount",
                batch: vec![host_file("/h/hosts")],
                entries: vec![],
                recorded: 0,
                failed: 0,
                excluded: vec![("bind", 1)],
                namespaces: 0,
            },
            Case {
                name: "an exec brings its loaders that the image has, in the kernel's order",
                batch: vec![event(EventKind::Execve, "/bin/app", 3_000)],
                entries: vec![("bin/app", "exec"), ("lib/ld.so", "interpreter")],
                recorded: 2,
                failed: 0,
                excluded: vec![],
                namespaces: 0,
            },
            Case {
                name: "a new mount namespace goes to the shell",
                batch: vec![namespace(), open("/bin/sh")],
                entries: vec![("bin/sh", "open")],
                recorded: 1,
                failed: 0,
                excluded: vec![],
                namespaces: 1,
            },
        ];
        for case in cases {
            let mut core = core();
            let consumed = core.consume(&case.batch, Some(&Fixed));
            let c = &consumed.counters;
            assert_eq!(c.events, case.batch.len() as u64, "{}", case.name);
            assert_eq!(c.recorded_paths, case.recorded, "{}", case.name);
            assert_eq!(c.failed_opens, case.failed, "{}", case.name);
            let excluded: Vec<(&str, u64)> =
                c.excluded.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            assert_eq!(excluded, case.excluded, "{}", case.name);
            assert_eq!(consumed.namespaces.len(), case.namespaces, "{}", case.name);
            let got = paths(&core);
            let got: Vec<(&str, &str)> =
                got.iter().map(|(p, k)| (p.as_str(), k.as_str())).collect();
            assert_eq!(got, case.entries, "{}", case.name);
            // The whole count is the batch's, the first time.
            assert_eq!(core.counters(), &consumed.counters, "{}", case.name);
        }
    }

    #[test]
    fn counts_add_up_over_batches_and_offsets_count_from_arming() {
        let mut core = core();
        core.consume(&[open("/etc/passwd"), failed("/x")], None);
        core.consume(&[open("/etc/passwd"), host_file("/h/hosts")], None);
        let c = core.counters();
        assert_eq!((c.events, c.recorded_paths, c.failed_opens), (4, 1, 1));
        assert_eq!(c.excluded.get("bind"), Some(&1));
        let offsets: Vec<Option<u64>> = companion(&core)
            .iter()
            .map(|c| c.extras.offset_ns)
            .collect();
        assert_eq!(offsets, vec![Some(1_000)]);
    }

    #[test]
    fn without_loaders_an_exec_is_recorded_alone() {
        let mut core = core();
        core.consume(&[event(EventKind::Execve, "/bin/app", 3_000)], None);
        assert_eq!(
            paths(&core),
            vec![("bin/app".to_owned(), "exec".to_owned())]
        );
    }
}
