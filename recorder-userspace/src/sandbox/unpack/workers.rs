//! Small regular files created on worker threads ([`Workers`]), in parallel across directories.
//!
//! Why: per file, the unpacker's kernel work is about `tar -xzf`'s, but it created every file on
//! the one thread that also inflates, hashes and indexes the layer, where `tar -xzf` inflates in
//! a second process (gzip) on another core: a cold `recorder run` of an image of 60,000 small
//! files took 1.5x `tar -xzf` of its layers (2.7 s against 1.84 s, 2 cores). Creating files in
//! different directories scales across cores (two `tar -xzf` of that layer into two dirs at once
//! take 1.3x one), creating them in one directory does not (its lock): so the files of one
//! directory all go to one worker, in the layer's order.
//!
//! The thread reading the tar does everything else as before (directories, links, nodes,
//! whiteouts, files larger than a chunk), and reads a small file's data, charging the budget, so
//! that the budget and stats stay exact. Before it touches a name a worker may not have created
//! yet (a duplicate, a hardlink's target, a whiteout, an entry replacing a file or a directory
//! with files pending, an entry below a pending file), it waits for every worker to finish what
//! it was given ([`Workers::touch`]): then it does what the sequential unpacker does, in the
//! same state.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use super::UnpackError;
use super::entry::Ctx;
use super::file::{FileAttrs, create_replacing, set_file_attrs, write_small};

/// Workers a layer gets at most: beyond the cores, threads only contend for them.
const MAX_WORKERS: usize = 4;

/// Files queued per worker: enough to ride out a slow file, few enough that the data held
/// (at most a chunk a file) stays small: 64 x 64 KiB x 4 workers = 16 MiB per layer at worst.
const QUEUE: usize = 64;

/// The workers a layer is unpacked with by default: one per core, at most [`MAX_WORKERS`];
/// with one core, none (every file is created inline).
pub(super) fn default_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// One small regular file to create.
pub(super) struct FileJob {
    /// The entry's position in the layer: the first failure in the layer's order is reported.
    pub(super) seq: u64,
    /// The entry's name, for errors.
    pub(super) entry: String,
    pub(super) parent: Arc<OwnedFd>,
    pub(super) name: OsString,
    pub(super) attrs: FileAttrs,
    /// The data, empty when the file is all hole.
    pub(super) data: Vec<u8>,
    /// The file's length.
    pub(super) len: u64,
}

enum Msg {
    File(Box<FileJob>),
    /// Acknowledged once every file sent before it is done.
    Sync(mpsc::Sender<()>),
}

/// What the workers and the reading thread share.
#[derive(Default)]
pub(super) struct Shared {
    /// Set by a worker's failure, or by the reading thread's: no more files are created.
    stop: AtomicBool,
    /// The failure of the earliest entry.
    error: Mutex<Option<(u64, UnpackError)>>,
    cancel: Option<Arc<AtomicBool>>,
}

impl Shared {
    pub(super) fn new(cancel: Option<Arc<AtomicBool>>) -> Self {
        Self {
            cancel,
            ..Self::default()
        }
    }

    fn fail(&self, seq: u64, error: UnpackError) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.error.lock()
            && slot.as_ref().is_none_or(|(first, _)| seq < *first)
        {
            *slot = Some((seq, error));
        }
    }
}

/// The workers of one layer, started at its first small file, and the names given to them
/// since they were last waited for.
pub(super) struct Workers<'scope, 'env> {
    scope: &'scope Scope<'scope, 'env>,
    shared: &'env Shared,
    count: usize,
    senders: Vec<SyncSender<Msg>>,
    handles: Vec<ScopedJoinHandle<'scope, ()>>,
    /// Paths (`a/b/c`) of the files given to workers since the last [`Workers::sync`].
    files: HashSet<Vec<u8>>,
    /// Their parent directories and those directories' ancestors.
    dirs: HashSet<Vec<u8>>,
}

impl<'scope, 'env> Workers<'scope, 'env> {
    /// `count` workers at most; with fewer than 2, [`Workers::enabled`] is false.
    pub(super) fn new(
        scope: &'scope Scope<'scope, 'env>,
        shared: &'env Shared,
        count: usize,
    ) -> Self {
        Self {
            scope,
            shared,
            count,
            senders: Vec::new(),
            handles: Vec::new(),
            files: HashSet::new(),
            dirs: HashSet::new(),
        }
    }

    /// Whether small files go to workers: with one core, a worker would only take turns with
    /// the reading thread.
    pub(super) fn enabled(&self) -> bool {
        self.count > 1
    }

    /// Waits for the workers before anything is done at `path`, when a file given to them may
    /// be at it, below it (a directory), or above it (a parent).
    pub(super) fn touch(&mut self, path: &[u8]) -> Result<(), UnpackError> {
        if self.files.is_empty() {
            return Ok(());
        }
        let above = path
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .any(|(i, _)| self.files.contains(&path[..i]));
        if above || self.files.contains(path) || self.dirs.contains(path) {
            self.sync()?;
        }
        Ok(())
    }

    /// Gives `job`, the file at `path`, to the worker of its parent directory.
    pub(super) fn dispatch(&mut self, job: FileJob, path: &[u8]) -> Result<(), UnpackError> {
        self.check()?;
        if self.senders.is_empty() {
            self.start();
        }
        let parent = path
            .iter()
            .rposition(|b| *b == b'/')
            .map_or(&path[..0], |i| &path[..i]);
        let mut hasher = std::hash::DefaultHasher::new();
        parent.hash(&mut hasher);
        let worker = (hasher.finish() % self.senders.len() as u64) as usize;
        if !parent.is_empty() && !self.dirs.contains(parent) {
            for (i, _) in parent.iter().enumerate().filter(|(_, b)| **b == b'/') {
                self.dirs.insert(parent[..i].to_vec());
            }
            self.dirs.insert(parent.to_vec());
        }
        self.files.insert(path.to_vec());
        let sent = self
            .senders
            .get(worker)
            .map(|s| s.send(Msg::File(Box::new(job))).is_ok());
        if sent != Some(true) {
            return Err(gone());
        }
        Ok(())
    }

    /// Waits until every file given to the workers is created.
    pub(super) fn sync(&mut self) -> Result<(), UnpackError> {
        let (ack, acks) = mpsc::channel();
        for sender in &self.senders {
            sender.send(Msg::Sync(ack.clone())).map_err(|_| gone())?;
        }
        drop(ack);
        for _ in &self.senders {
            acks.recv().map_err(|_| gone())?;
        }
        self.files.clear();
        self.dirs.clear();
        self.check()
    }

    /// Stops the workers, once they have created what they were given (or, after a failure or
    /// with `result` an error, without), and joins them. A worker's failure comes first in the
    /// layer's order, so it is the one returned.
    pub(super) fn finish<T>(mut self, result: Result<T, UnpackError>) -> Result<T, UnpackError> {
        if result.is_err() {
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        self.senders.clear();
        let mut panicked = false;
        for handle in self.handles.drain(..) {
            panicked |= handle.join().is_err();
        }
        let failed = self.shared.error.lock().ok().and_then(|mut e| e.take());
        if let Some((_, error)) = failed {
            return Err(error);
        }
        if panicked {
            return Err(gone());
        }
        result
    }

    /// A worker's failure, if one failed.
    fn check(&self) -> Result<(), UnpackError> {
        if self.shared.stop.load(Ordering::Relaxed) {
            // The worker's own error replaces this one in `finish`.
            return Err(UnpackError::Cancelled);
        }
        Ok(())
    }

    fn start(&mut self) {
        for _ in 0..self.count {
            let (sender, receiver) = mpsc::sync_channel(QUEUE);
            let shared = self.shared;
            self.handles
                .push(self.scope.spawn(move || work(&receiver, shared)));
            self.senders.push(sender);
        }
    }
}

/// An entry's path as the workers' bookkeeping knows it: its components joined by `/`.
pub(super) fn join(components: &[OsString]) -> Vec<u8> {
    components.join(OsStr::new("/")).into_vec()
}

/// The path of `name` beside `path` (in the same directory).
pub(super) fn sibling(path: &[u8], name: &[u8]) -> Vec<u8> {
    let dir = path.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
    [&path[..dir], name].concat()
}

/// A worker gone (it panicked): reported as an I/O error, not propagated as a panic.
fn gone() -> UnpackError {
    UnpackError::Io {
        entry: String::new(),
        op: "creating files on a worker thread",
        source: std::io::Error::other("the worker thread stopped"),
    }
}

fn work(receiver: &Receiver<Msg>, shared: &Shared) {
    for msg in receiver {
        let job = match msg {
            Msg::File(job) => job,
            Msg::Sync(ack) => {
                // The reading thread waits for it; gone, it needs no answer.
                let _ = ack.send(());
                continue;
            }
        };
        if shared.stop.load(Ordering::Relaxed) {
            continue;
        }
        if shared
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            shared.fail(job.seq, UnpackError::Cancelled);
            continue;
        }
        if let Err(e) = create(&job) {
            shared.fail(job.seq, e);
        }
    }
}

/// What the sequential unpacker does for a regular file, with the data already read.
fn create(job: &FileJob) -> Result<(), UnpackError> {
    let ctx = Ctx { entry: &job.entry };
    let file = create_replacing(&job.parent, &job.name, job.attrs.mode, &ctx)?;
    write_small(&file, &job.data, job.len, &ctx)?;
    set_file_attrs(&file, &job.attrs, &ctx)?;
    Ok(())
}
