//! Small regular files created on worker threads ([`Workers`]), in parallel across directories.
//!
//! Why: per file, the unpacker's kernel work is about `tar -xzf`'s, but it created every file on
//! the one thread that also inflates, hashes and indexes the layer, where `tar -xzf` inflates in
//! a second process (gzip) on another core: a cold `recorder run` of an image of 60,000 small
//! files took 1.5x `tar -xzf` of its layers (2.7 s against 1.84 s, 2 cores). Creating files in
//! different directories scales across cores (two `tar -xzf` of that layer into two dirs at once
//! take 1.3x one), creating them in one directory does not (its lock): so a directory's files
//! go to one worker while it has some of them to make, and a directory met afresh to the
//! worker with the fewest files to make ([`Workers::route`]). Files go in batches: one by one,
//! waking the worker cost more than a second thread saved. Unpacking that image's 60,000-file
//! layer (gzip) alone: 1.37 s without workers, 1.25 s with 2 (medians of 3 interleaved runs,
//! 2 cores that other sessions kept busy, load 1.4-1.6: the workers were preempted more than
//! they waited).
//!
//! The thread reading the tar does everything else as before (directories, links, nodes,
//! whiteouts, files larger than a chunk), and reads a small file's data, charging the budget, so
//! that the budget and stats stay exact. Before it touches a name a worker may not have created
//! yet (a duplicate, a hardlink's target, a whiteout, an entry replacing a file or a directory
//! with files pending, an entry below a pending file), it waits for every worker to finish what
//! it was given ([`Workers::touch`]): then it does what the sequential unpacker does, in the
//! same state.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use super::UnpackError;
use super::entry::Ctx;
use super::file::{FileAttrs, create_replacing, set_file_attrs, write_small};

/// Workers a layer gets at most: beyond the cores, threads only contend for them.
const MAX_WORKERS: usize = 4;

/// Files sent to a worker at once. One at a time, the worker drained its queue faster than
/// the reading thread filled it, so every file woke it: waking and sleeping took 17% of the
/// CPU samples (perf, 60,000 files), and 2 workers were slower than none.
const BATCH: usize = 64;

/// Data in a batch before it is sent, whatever its count.
const BATCH_BYTES: usize = 256 << 10;

/// Batches queued per worker besides the one it works on. The reading thread blocks on a full
/// queue: with 2, it blocked on one worker's while the other's ran dry (the sched_switch trace
/// showed a core idle each time it blocked), and a cold run of the 60,000-file image took
/// 2.04 s against 1.70 s with 16 (medians of 4 interleaved runs). The data held stays bounded:
/// at most (16 + 2) x 256 KiB a worker, 18 MiB a layer.
const QUEUE: usize = 16;

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
    Files(Vec<FileJob>),
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
    /// Files each worker has made (or failed to).
    done: Vec<AtomicU64>,
}

impl Shared {
    /// For at most `workers` workers.
    pub(super) fn new(cancel: Option<Arc<AtomicBool>>, workers: usize) -> Self {
        Self {
            cancel,
            done: (0..workers).map(|_| AtomicU64::new(0)).collect(),
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
    /// Files given to each worker so far.
    sent: Vec<u64>,
    /// Per directory, the worker its last file went to, and that file's number there.
    routes: HashMap<Vec<u8>, (usize, u64)>,
    /// Each worker's batch being filled, and its data's size.
    batches: Vec<(Vec<FileJob>, usize)>,
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
            sent: Vec::new(),
            routes: HashMap::new(),
            batches: Vec::new(),
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
        let worker = self.route(parent);
        if !parent.is_empty() && !self.dirs.contains(parent) {
            for (i, _) in parent.iter().enumerate().filter(|(_, b)| **b == b'/') {
                self.dirs.insert(parent[..i].to_vec());
            }
            self.dirs.insert(parent.to_vec());
        }
        self.files.insert(path.to_vec());
        let Some((batch, bytes)) = self.batches.get_mut(worker) else {
            return Err(gone());
        };
        *bytes += job.data.len();
        batch.push(job);
        if batch.len() >= BATCH || *bytes >= BATCH_BYTES {
            self.send(worker)?;
        }
        Ok(())
    }

    /// The worker for a file in `parent`: the one it went to last while that one still has
    /// files of it to make (one directory's files on one thread: creating files in one
    /// directory takes its lock), else the one with the fewest files to make. A fixed worker
    /// a directory (a hash of its path) left 2 workers with 52% and 34% of the samples on
    /// the 60-directory layer (perf), the busier one setting the pace.
    fn route(&mut self, parent: &[u8]) -> usize {
        let done = |w: usize| {
            self.shared
                .done
                .get(w)
                .map_or(0, |d| d.load(Ordering::Acquire))
        };
        let last = self.routes.get(parent).copied();
        let worker = match last {
            Some((w, ticket)) if done(w) < ticket => w,
            _ => (0..self.sent.len())
                .min_by_key(|&w| self.sent[w].saturating_sub(done(w)))
                .unwrap_or(0),
        };
        let ticket = match self.sent.get_mut(worker) {
            Some(sent) => {
                *sent += 1;
                *sent
            }
            None => 0,
        };
        match self.routes.get_mut(parent) {
            Some(route) => *route = (worker, ticket),
            None => {
                self.routes.insert(parent.to_vec(), (worker, ticket));
            }
        }
        worker
    }

    /// Sends worker `i` its batch.
    fn send(&mut self, i: usize) -> Result<(), UnpackError> {
        let (Some((batch, bytes)), Some(sender)) = (self.batches.get_mut(i), self.senders.get(i))
        else {
            return Err(gone());
        };
        if batch.is_empty() {
            return Ok(());
        }
        *bytes = 0;
        let batch = std::mem::replace(batch, Vec::with_capacity(BATCH));
        sender.send(Msg::Files(batch)).map_err(|_| gone())
    }

    /// Waits until every file given to the workers is created.
    pub(super) fn sync(&mut self) -> Result<(), UnpackError> {
        for i in 0..self.senders.len() {
            self.send(i)?;
        }
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
        let result = result.and_then(|value| {
            for i in 0..self.senders.len() {
                self.send(i)?;
            }
            Ok(value)
        });
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
        for i in 0..self.count.min(self.shared.done.len()) {
            let (sender, receiver) = mpsc::sync_channel(QUEUE);
            let shared = self.shared;
            self.handles
                .push(self.scope.spawn(move || work(&receiver, shared, i)));
            self.senders.push(sender);
            self.sent.push(0);
            self.batches.push((Vec::with_capacity(BATCH), 0));
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

fn work(receiver: &Receiver<Msg>, shared: &Shared, me: usize) {
    let Some(done) = shared.done.get(me) else {
        return;
    };
    for msg in receiver {
        let jobs = match msg {
            Msg::Files(jobs) => jobs,
            Msg::Sync(ack) => {
                // The reading thread waits for it; gone, it needs no answer.
                let _ = ack.send(());
                continue;
            }
        };
        for job in jobs {
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
            if shared
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
            {
                shared.fail(job.seq, UnpackError::Cancelled);
                break;
            }
            if let Err(e) = create(&job) {
                shared.fail(job.seq, e);
            }
            done.fetch_add(1, Ordering::Release);
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
