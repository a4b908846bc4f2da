//! The recording lifecycle as a chain of states, each step moving the status along:
//! [`Agent`] (starting) → [`Indexed`] (indexing) → [`Tracing`] (tracing) → [`Stopped`] →
//! [`Committing`] (committing) → [`Summary`] (done).
//!
//! Armed before the image is known (a pod's sidecar starts before the kubelet pulls the
//! workload's image): [`Agent::ready`] (armed) → [`Ready::arm`] (tracing) →
//! [`Armed`] (events buffered raw) → [`Armed::index`] → [`Tracing`], the buffer resolved first.
//!
//! A container not created yet is awaited [`Catching`](super::Catching) the namespaces runc
//! makes; once identified, [`Indexed::arm_caught`] or [`Ready::arm_caught`] go on with what the
//! target did since its namespace was made.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::image::{Image, IndexOptions, MergedView, Platform, index_image};
use crate::record::{Extras, RecordBuilder};
use crate::status::{State, StatusHandle};
use crate::tracer::{Event, EventStream, Tracer};
use recorder_common::EventKind;

use super::AgentError;
use super::catch::Caught;
use super::commit::{CommitOptions, commit};
use super::interp::ContainerRoot;
use super::mounts::MountTable;
use super::procs::{Namespaces, processes_in};
use super::resolve::{Decision, Resolver};
use super::source::ImageSource;
use super::stop::StopReason;
use super::summary::Summary;

/// How often the kernel's drop counters are copied to the status while tracing.
const DROPS_REFRESH: Duration = Duration::from_millis(500);

/// What is traced: a mount namespace and the mounts its processes see.
#[derive(Debug)]
pub struct Target {
    /// The mount namespace inode the filter is armed with.
    pub mntns: u32,
    /// Its mounts, whose content is excluded.
    pub mounts: MountTable,
    /// The container's root, to read what the kernel loads for an exec; `None` records no
    /// interpreters.
    pub root: Option<ContainerRoot>,
    /// The namespace itself, held open while armed: a namespace that dies frees its inode
    /// number, and a new namespace given the same number would pass the filter.
    pub pin: Option<OwnedFd>,
}

impl Target {
    /// The target of process `pid`, in mount namespace `mntns`: its mounts and root, with the
    /// namespace pinned.
    pub fn of_pid(mntns: u32, pid: u32) -> Result<Self, AgentError> {
        let vanished = |e: std::io::Error| AgentError::Target {
            target: format!("pid:{pid}"),
            message: format!("the process vanished: {e}"),
        };
        let mounts = MountTable::of_pid(pid)?;
        let pin = File::open(format!("/proc/{pid}/ns/mnt")).map_err(vanished)?;
        // The namespace may have changed between the caller's reading and the pin.
        let pinned = pin.metadata().map_err(vanished)?.ino();
        if pinned != u64::from(mntns) {
            return Err(AgentError::Target {
                target: format!("pid:{pid}"),
                message: format!("left mount namespace {mntns} (now in {pinned})"),
            });
        }
        let root = ContainerRoot::of_pid(pid).map_err(vanished)?;
        Ok(Self {
            mntns,
            mounts,
            root: Some(root),
            pin: Some(pin.into()),
        })
    }

    /// The target of mount namespace `mntns`, held open by `pin`, whose processes may all have
    /// exited: its mounts and root are read from inside it, by a thread that enters it
    /// (`setns`, which needs CAP_SYS_ADMIN and CAP_SYS_CHROOT; a thread of its own, unshared
    /// from the process's root and working directory, as `setns` into a mount namespace
    /// requires of a multithreaded process).
    pub fn of_namespace(mntns: u32, pin: File) -> Result<Self, AgentError> {
        let failed = |message: String| AgentError::Target {
            target: format!("mntns:{mntns}"),
            message,
        };
        let entered = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<(Vec<u8>, ContainerRoot), String> {
                    // Opened before entering: inside, `/proc` is the container's (or nothing),
                    // where this thread has no pid. Its mountinfo shows the namespace the
                    // thread is in when read, relative to the thread's root.
                    let this_thread = File::open("/proc/thread-self")
                        .map_err(|e| format!("opening /proc/thread-self: {e}"))?;
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                        .map_err(|e| format!("unsharing the thread's root: {e}"))?;
                    nix::sched::setns(&pin, nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(|e| format!("entering the namespace: {e}"))?;
                    let mountinfo = nix::fcntl::openat(
                        &this_thread,
                        "mountinfo",
                        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .map_err(|e| format!("opening its mountinfo: {e}"))?;
                    let mut text = Vec::new();
                    std::io::Read::read_to_end(&mut File::from(mountinfo), &mut text)
                        .map_err(|e| format!("reading its mountinfo: {e}"))?;
                    let root = ContainerRoot::of_path(Path::new("/"))
                        .map_err(|e| format!("opening its root: {e}"))?;
                    Ok((text, root))
                })
                .join()
        });
        let (mountinfo, root) = entered
            .map_err(|_| failed("the thread entering the namespace panicked".into()))?
            .map_err(failed)?;
        let mounts = MountTable::parse(&mountinfo)
            .map_err(|line| failed(format!("its mountinfo is malformed at line {line}")))?;
        Ok(Self {
            mntns,
            mounts,
            root: Some(root),
            pin: Some(pin.into()),
        })
    }
}

/// A recording that has not started.
#[derive(Debug)]
pub struct Agent {
    status: StatusHandle,
}

impl Agent {
    /// A recording reporting to `status` (left in `starting`).
    pub fn new(status: StatusHandle) -> Self {
        Self { status }
    }

    /// Opens and indexes the image (state `indexing`).
    pub async fn index(
        self,
        source: ImageSource,
        platform: Platform,
    ) -> Result<Indexed, AgentError> {
        let described = source.to_string();
        self.index_with(described, move || source.open(&platform))
            .await
    }

    /// Indexes an image opened elsewhere, e.g. one read from containerd (state `indexing`);
    /// `described` names it in errors.
    pub async fn index_opened(
        self,
        image: Image,
        described: String,
    ) -> Result<Indexed, AgentError> {
        self.index_with(described, move || Ok(image)).await
    }

    async fn index_with(
        self,
        described: String,
        open: impl FnOnce() -> Result<Image, crate::image::ImageError> + Send + 'static,
    ) -> Result<Indexed, AgentError> {
        self.status.set_state(State::Indexing);
        let (image, view) = index_off_runtime(described, move || {
            open().map_err(|source| IndexFailure::Image(Box::new(source)))
        })
        .await?;
        self.status
            .set_manifest_digest(image.manifest_digest().to_string());
        Ok(Indexed {
            status: self.status,
            image,
            view,
        })
    }

    /// Ready to arm before any image is known (state `armed`). Call it once the tracer is
    /// loaded and the target's creation cannot be missed any more.
    pub fn ready(self) -> Ready {
        self.status.set_state(State::Armed);
        Ready {
            status: self.status,
        }
    }
}

/// Why opening an image for indexing failed: reading it, or something outside the image.
#[derive(Debug)]
pub enum IndexFailure {
    /// The image could not be read or indexed.
    Image(Box<crate::image::ImageError>),
    /// Something else, e.g. the connection the image is read through.
    Agent(AgentError),
}

impl From<AgentError> for IndexFailure {
    fn from(e: AgentError) -> Self {
        IndexFailure::Agent(e)
    }
}

/// Opens and indexes an image on a plain thread: a containerd-backed image blocks on its
/// reads, which it refuses to do on a thread that has a runtime context (a `spawn_blocking`
/// thread has one), and indexing a large image takes seconds.
async fn index_off_runtime(
    described: String,
    open: impl FnOnce() -> Result<Image, IndexFailure> + Send + 'static,
) -> Result<(Arc<Image>, Arc<MergedView>), AgentError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("index".into())
        .spawn(move || {
            let indexed = open().and_then(|image| {
                // The layers' bytes as stored (compressed), as the indexer counts them.
                let stored = image.layers().iter().map(|l| l.size).sum();
                let progress = crate::progress::Progress::bytes("indexing", stored);
                let options = IndexOptions {
                    progress: Some(progress.counter()),
                    ..IndexOptions::default()
                };
                let view = index_image(&image, &options)
                    .map_err(|source| IndexFailure::Image(Box::new(source)))?;
                Ok((image, view))
            });
            // The receiver is gone only if the recording was abandoned.
            let _ = tx.send(indexed);
        })
        .map_err(|source| AgentError::Io {
            op: "starting the indexing thread".into(),
            source,
        })?;
    let (image, view) = rx
        .await
        .map_err(|_| AgentError::Join("the indexing thread ended without an answer".into()))?
        .map_err(|failure| match failure {
            IndexFailure::Image(source) => AgentError::Image {
                image: described,
                source: *source,
            },
            IndexFailure::Agent(e) => e,
        })?;
    tracing::info!(
        manifest = %image.manifest_digest(),
        layers = image.layers().len(),
        entries = view.entry_count(),
        "image indexed"
    );
    Ok((Arc::new(image), Arc::new(view)))
}

/// Ready to arm, with no image yet (state `armed`).
#[derive(Debug)]
pub struct Ready {
    status: StatusHandle,
}

impl Ready {
    /// Arms `tracer`'s filter on `target` at once; events are kept raw until the image is
    /// indexed (see [`Armed::index`]).
    pub fn arm(self, mut tracer: Tracer, target: Target) -> Result<Armed, AgentError> {
        let (events, start_ns) = arm_filter(&mut tracer, &target)?;
        tracing::info!(
            mntns = target.mntns,
            mounts = target.mounts.len(),
            "armed; the image is indexed next"
        );
        self.status.set_state(State::Tracing);
        Ok(Armed {
            status: self.status,
            tracer,
            events,
            target,
            start_ns,
            early: Vec::new(),
            warnings: Vec::new(),
        })
    }

    /// As [`Ready::arm`], on a target identified among caught namespaces: the filter is already
    /// armed, and what it did so far is resolved first once the image is indexed.
    pub fn arm_caught(self, caught: Caught) -> Armed {
        tracing::info!(
            mntns = caught.target.mntns,
            mounts = caught.target.mounts.len(),
            "armed; the image is indexed next"
        );
        Armed {
            status: self.status,
            tracer: caught.tracer,
            events: caught.events,
            target: caught.target,
            start_ns: caught.start_ns,
            early: caught.early,
            warnings: Vec::new(),
        }
    }
}

/// The filter is armed but the image is not indexed yet: events wait, undecided.
pub struct Armed {
    status: StatusHandle,
    tracer: Tracer,
    events: EventStream,
    target: Target,
    start_ns: u64,
    /// Events from before arming (see [`Ready::arm_caught`]).
    early: Vec<Event>,
    warnings: Vec<String>,
}

impl Armed {
    /// As [`Tracing::warn`]; carried over into the summary.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    /// Opens (with `open`, on a blocking thread) and indexes the image while taking the ring's
    /// events into a buffer, so the ring cannot overflow meanwhile; then resolves the buffer
    /// against the index, in arrival order, and goes on tracing. The state stays `tracing`.
    pub async fn index(
        self,
        described: String,
        open: impl FnOnce() -> Result<Image, IndexFailure> + Send + 'static,
    ) -> Result<Tracing, AgentError> {
        let Armed {
            status,
            tracer,
            mut events,
            target,
            start_ns,
            early,
            warnings,
        } = self;
        let mut buffered = early;
        buffered.reserve(4096);
        let indexing = index_off_runtime(described, open);
        tokio::pin!(indexing);
        let (image, view) = loop {
            tokio::select! {
                biased;
                indexed = &mut indexing => break indexed?,
                result = events.next_batch(&mut buffered) => { result?; }
            }
        };
        status.set_manifest_digest(image.manifest_digest().to_string());
        tracing::info!(
            buffered = buffered.len(),
            "resolving the events buffered while indexing"
        );
        let mut tracing = Tracing::new(status, image, view, tracer, events, target, start_ns);
        tracing.warnings = warnings;
        tracing.consume(&buffered);
        Ok(tracing)
    }
}

/// An indexed image, ready to trace.
#[derive(Debug)]
pub struct Indexed {
    status: StatusHandle,
    image: Arc<Image>,
    view: Arc<MergedView>,
}

impl Indexed {
    /// The image.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// Arms `tracer`'s filter on `target` and starts recording (state `tracing`).
    pub fn arm(self, mut tracer: Tracer, target: Target) -> Result<Tracing, AgentError> {
        let (events, start_ns) = arm_filter(&mut tracer, &target)?;
        tracing::info!(
            mntns = target.mntns,
            mounts = target.mounts.len(),
            "tracing"
        );
        self.status.set_state(State::Tracing);
        Ok(Tracing::new(
            self.status,
            self.image,
            self.view,
            tracer,
            events,
            target,
            start_ns,
        ))
    }

    /// As [`Indexed::arm`], on a target identified among caught namespaces: the filter is
    /// already armed, and what the target did so far is recorded first.
    pub fn arm_caught(self, caught: Caught) -> Tracing {
        tracing::info!(
            mntns = caught.target.mntns,
            mounts = caught.target.mounts.len(),
            early = caught.early.len(),
            "tracing"
        );
        self.status.set_state(State::Tracing);
        let mut tracing = Tracing::new(
            self.status,
            self.image,
            self.view,
            caught.tracer,
            caught.events,
            caught.target,
            caught.start_ns,
        );
        tracing.consume(&caught.early);
        tracing
    }
}

/// The filter is armed; events become record entries.
pub struct Tracing {
    status: StatusHandle,
    image: Arc<Image>,
    tracer: Tracer,
    events: EventStream,
    resolver: Resolver,
    record: RecordBuilder,
    start_ns: u64,
    /// The armed namespace and those its tasks made.
    namespaces: Namespaces,
    root: Option<ContainerRoot>,
    // Held, never read: see Target::pin. Nested namespaces are pinned the same way.
    _pin: Option<OwnedFd>,
    nested_pins: Vec<OwnedFd>,
    /// Image files the kernel loads to exec an image file, by the executed file.
    interpreters: HashMap<Vec<u8>, Vec<(Vec<u8>, usize)>>,
    warnings: Vec<String>,
}

impl Tracing {
    fn new(
        status: StatusHandle,
        image: Arc<Image>,
        view: Arc<MergedView>,
        tracer: Tracer,
        events: EventStream,
        target: Target,
        start_ns: u64,
    ) -> Self {
        Tracing {
            record: RecordBuilder::new(image.manifest_digest().to_string()),
            resolver: Resolver::new(view, target.mounts),
            namespaces: Namespaces::new(target.mntns),
            root: target.root,
            _pin: target.pin,
            nested_pins: Vec::new(),
            interpreters: HashMap::new(),
            warnings: Vec::new(),
            status,
            image,
            tracer,
            events,
            start_ns,
        }
    }

    /// The image being recorded.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// The mount namespaces being recorded: the armed one, and every one its tasks make while
    /// traced (for `--until-exit`).
    pub fn namespaces(&self) -> Namespaces {
        self.namespaces.clone()
    }

    /// Notes something that makes the record less trustworthy without failing it (e.g. the
    /// filter armed after the workload started): logged now, listed in the summary.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    /// Records until `stop` completes, then takes every event already in the ring, so that
    /// nothing the kernel delivered before the stop is lost.
    pub async fn run(
        mut self,
        stop: impl Future<Output = StopReason>,
    ) -> Result<Stopped, AgentError> {
        tokio::pin!(stop);
        let mut batch = Vec::with_capacity(4096);
        let mut refresh = tokio::time::interval(DROPS_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let namespaces = self.namespaces.clone();
        let reason = loop {
            tokio::select! {
                biased;
                reason = &mut stop => break reason,
                result = self.events.next_batch(&mut batch) => {
                    result?;
                    self.consume(&batch);
                    batch.clear();
                }
                _ = refresh.tick() => {
                    let lost = self.tracer.counters()?.lost() + self.events.undecodable();
                    self.status.set_drops(lost);
                }
                () = namespaces.drain_requested() => {
                    self.events.drain(&mut batch);
                    self.consume(&batch);
                    batch.clear();
                    namespaces.drained();
                }
            }
        };
        // Disarm first, so the ring only holds what came before the stop, then take it all.
        self.tracer.clear_targets()?;
        self.events.drain(&mut batch);
        self.consume(&batch);
        let lost = self.tracer.counters()?.lost() + self.events.undecodable();
        self.status.set_drops(lost);
        tracing::info!(%reason, lost, "tracing stopped");
        Ok(Stopped {
            status: self.status,
            record: self.record,
            reason,
            lost,
            warnings: self.warnings,
            kernel: (self.tracer, self.events),
        })
    }

    /// Turns a batch into record entries and counters; counters go to the status once per batch.
    fn consume(&mut self, batch: &[Event]) {
        if batch.is_empty() {
            return;
        }
        let (mut recorded, mut failed) = (0, 0);
        let mut excluded: BTreeMap<String, u64> = BTreeMap::new();
        for event in batch {
            if event.kind == EventKind::MntNs {
                self.join_namespace(event);
                continue;
            }
            if !event.succeeded() {
                failed += 1;
                continue;
            }
            let offset_ns = event.ts_ns.saturating_sub(self.start_ns);
            let extras = |kind: &str| Extras {
                offset_ns: Some(offset_ns),
                pid: Some(event.tgid),
                comm: Some(event.comm.clone()),
                kind: Some(kind.to_owned()),
            };
            let mut exclude = |why: &super::Exclusion| {
                let label = why.label();
                match excluded.get_mut(label) {
                    Some(n) => *n += 1,
                    None => {
                        excluded.insert(label.to_owned(), 1);
                    }
                }
            };
            // In the order the kernel opens them, as fanotify reports them: a script, the
            // interpreter its `#!` names (the file the kernel runs), then that one's loader.
            if event.script_file {
                // The script, named by the kernel through the fd it was run by.
                match self.resolver.decide(event) {
                    Decision::Record { path, layer } => {
                        if self.record.push_with(&path, Some(layer), extras("exec")) {
                            recorded += 1;
                        }
                    }
                    Decision::Exclude(why) => exclude(&why),
                }
                continue;
            }
            if event.script && !event.script_named {
                match self.resolver.decide_script(event) {
                    Decision::Record { path, layer } => {
                        if self.record.push_with(&path, Some(layer), extras("exec")) {
                            recorded += 1;
                        }
                    }
                    Decision::Exclude(why) => exclude(&why),
                }
            }
            match self.resolver.decide(event) {
                Decision::Record { path, layer } => {
                    let kind = match (event.is_exec(), event.script) {
                        (true, true) => "interpreter",
                        (true, false) => "exec",
                        (false, _) => "open",
                    };
                    if self.record.push_with(&path, Some(layer), extras(kind)) {
                        recorded += 1;
                    }
                    if event.is_exec() {
                        for (interp, layer) in self.interpreters_of(&path) {
                            if self
                                .record
                                .push_with(&interp, Some(layer), extras("interpreter"))
                            {
                                recorded += 1;
                            }
                        }
                    }
                }
                Decision::Exclude(why) => exclude(&why),
            }
        }
        self.status.add_events(batch.len() as u64);
        self.status.add_recorded_paths(recorded);
        self.status.add_failed_opens(failed);
        for (label, n) in excluded {
            self.status.add_excluded(&label, n);
        }
    }
}

impl Tracing {
    /// A traced task made mount namespace `event.mntns`, which the kernel has added to the
    /// filter: pin it (a namespace that dies frees its inode number for reuse by an unrelated
    /// one) through a task inside it, and count its processes for `--until-exit`. One that can
    /// no longer be pinned is gone already, and leaves the filter.
    fn join_namespace(&mut self, event: &Event) {
        let mntns = event.mntns;
        let pinned = std::iter::once(event.tgid)
            .chain(processes_in(mntns).unwrap_or_default())
            .find_map(|pid| {
                let file = File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
                let ino = file.metadata().ok()?.ino();
                (ino == u64::from(mntns)).then(|| OwnedFd::from(file))
            });
        match pinned {
            Some(fd) => {
                tracing::info!(
                    mntns,
                    from = event.ret,
                    pid = event.tgid,
                    "nested mount namespace traced"
                );
                self.nested_pins.push(fd);
                self.namespaces.insert(mntns);
            }
            None => {
                tracing::debug!(mntns, "nested mount namespace gone before it was pinned");
                if let Err(error) = self.tracer.remove_target(mntns) {
                    tracing::warn!(%error, mntns, "removing a vanished namespace from the filter");
                }
            }
        }
    }

    /// The image files the kernel loads to exec the image file `path`, cached per program.
    fn interpreters_of(&mut self, path: &[u8]) -> Vec<(Vec<u8>, usize)> {
        if let Some(known) = self.interpreters.get(path) {
            return known.clone();
        }
        let Some(root) = &self.root else {
            return Vec::new();
        };
        let mut absolute = Vec::with_capacity(path.len() + 1);
        absolute.push(b'/');
        absolute.extend_from_slice(path);
        let found: Vec<(Vec<u8>, usize)> = root
            .interpreters(&absolute)
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

/// Tracing has stopped; the record is complete in memory.
#[derive(Debug)]
pub struct Stopped {
    status: StatusHandle,
    record: RecordBuilder,
    reason: StopReason,
    lost: u64,
    warnings: Vec<String>,
    /// Disarmed but still attached, with its ring: detaching and unmapping wait for the kernel
    /// (about 260 ms measured), so they happen after the commit, off the critical path.
    kernel: (Tracer, EventStream),
}

impl Stopped {
    /// The record so far.
    pub fn record(&self) -> &RecordBuilder {
        &self.record
    }

    /// Why tracing stopped.
    pub fn reason(&self) -> &StopReason {
        &self.reason
    }

    /// Starts writing out (state `committing`).
    pub fn begin_commit(self) -> Committing {
        self.status.set_state(State::Committing);
        Committing { inner: self }
    }
}

/// The record is being written out.
#[derive(Debug)]
pub struct Committing {
    inner: Stopped,
}

/// How long a commit may take before the record is saved to a fallback file instead: records
/// are megabytes at most, so only a store that stopped answering takes this long.
pub const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Committing {
    /// As [`Committing::commit`], on a blocking thread so that the runtime, and the status
    /// socket served on it, keep answering meanwhile. After `timeout` it stops waiting: the
    /// record is saved to a fallback file, and the commit is reported as timed out.
    pub async fn commit_off_runtime(
        self,
        opts: &CommitOptions,
        timeout: std::time::Duration,
    ) -> Result<Summary, AgentError> {
        let status = self.inner.status.clone();
        let bytes = self.inner.record.to_bytes();
        let owned = opts.clone();
        let task = tokio::task::spawn_blocking(move || self.commit(&owned));
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(AgentError::Join(join.to_string())),
            Err(_) => {
                let kept = super::commit::keep_fallback(&opts.fallback_dir, &bytes);
                let error = super::CommitError::TimedOut {
                    after: timeout,
                    kept,
                };
                status.fail(&error);
                Err(error.into())
            }
        }
    }

    /// Writes the record (state `done` with its digest, or `failed` naming where it was kept).
    pub fn commit(self, opts: &CommitOptions) -> Result<Summary, AgentError> {
        let Stopped {
            status,
            record,
            reason,
            lost,
            warnings,
            kernel,
        } = self.inner;
        let committed = commit(&record, opts);
        // Nothing depends on the detach finishing; if the process exits first, the kernel
        // detaches as it closes the program fds.
        std::thread::spawn(move || drop(kernel));
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                status.fail(&e);
                return Err(e.into());
            }
        };
        status.set_record_digest(committed.record.to_string());
        status.set_state(State::Done);
        let counters = status.counters();
        Ok(Summary {
            stopped: reason,
            events: counters.events,
            recorded: counters.recorded_paths,
            failed: counters.failed_opens,
            excluded: counters.excluded,
            lost,
            warnings,
            committed,
        })
    }
}

/// Takes the tracer's event stream and arms its filter on `target`; returns the stream and the
/// moment of arming, from which the record's time offsets count.
fn arm_filter(tracer: &mut Tracer, target: &Target) -> Result<(EventStream, u64), AgentError> {
    let events = tracer.take_events()?.ok_or(AgentError::StreamTaken)?;
    tracer.add_target(target.mntns)?;
    Ok((events, monotonic_ns()))
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the events' timestamps.
pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
