//! The recording lifecycle as a chain of states, each step moving the status along:
//! [`Agent`] (starting) → [`Indexed`] (indexing) → [`Tracing`] (tracing) → [`Stopped`] →
//! [`Committing`] (committing) → [`Summary`] (done).
//!
//! Armed before the image is known (a pod's sidecar starts before the kubelet pulls the
//! workload's image): [`Agent::ready`] (armed) → [`Ready::arm_caught`] (buffering: events
//! held raw) → [`Buffering::index`] → [`Tracing`] (tracing), the buffer resolved first.
//!
//! A container not created yet is awaited [`Catching`](super::Catching) the namespaces runc
//! makes; once identified, [`Indexed::arm_caught`] or [`Ready::arm_caught`] go on with what the
//! target did since its namespace was made.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use crate::image::{Image, IndexCache, IndexOptions, MergedView, Platform, index_image};
use crate::status::{State, StatusHandle};
use crate::tracer::{Event, EventStream, Tracer};

use super::AgentError;
use super::catch::Caught;
use super::interp::ContainerRoot;
use super::mounts::MountTable;
use super::source::ImageSource;
use super::tracing::Tracing;

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
        let vanished = |source| AgentError::Vanished {
            target: format!("pid:{pid}"),
            source,
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
        // A failed step: its name, and its error as the cause.
        type Step = (&'static str, Box<dyn std::error::Error + Send + Sync>);
        fn step<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
            op: &'static str,
        ) -> impl FnOnce(E) -> Step {
            move |e| (op, e.into())
        }
        let entered = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<(Vec<u8>, ContainerRoot), Step> {
                    // Opened before entering: inside, `/proc` is the container's (or nothing),
                    // where this thread has no pid. Its mountinfo shows the namespace the
                    // thread is in when read, relative to the thread's root.
                    let this_thread = File::open("/proc/thread-self")
                        .map_err(step("opening /proc/thread-self"))?;
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                        .map_err(step("unsharing the thread's root"))?;
                    nix::sched::setns(&pin, nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(step("entering the namespace"))?;
                    let mountinfo = nix::fcntl::openat(
                        &this_thread,
                        "mountinfo",
                        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .map_err(step("opening its mountinfo"))?;
                    let mut text = Vec::new();
                    std::io::Read::read_to_end(&mut File::from(mountinfo), &mut text)
                        .map_err(step("reading its mountinfo"))?;
                    let root =
                        ContainerRoot::of_path(Path::new("/")).map_err(step("opening its root"))?;
                    Ok((text, root))
                })
                .join()
        });
        let (mountinfo, root) = entered
            .map_err(|_| failed("the thread entering the namespace panicked".into()))?
            .map_err(|(op, source)| AgentError::TargetUnreadable {
                target: format!("mntns:{mntns}"),
                op,
                source,
            })?;
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
    pub(super) status: StatusHandle,
    pub(super) index_cache: Option<IndexCache>,
}

impl Agent {
    /// A recording reporting to `status` (left in `starting`).
    pub fn new(status: StatusHandle) -> Self {
        Self {
            status,
            index_cache: None,
        }
    }

    /// Indexes through `cache`: stored layer indexes are used, new ones stored.
    pub fn index_cache(mut self, cache: Option<IndexCache>) -> Self {
        self.index_cache = cache;
        self
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
        let (image, view) = index_off_runtime(described, self.index_cache, move || {
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

/// Opens and indexes an image on a blocking thread: a containerd-backed image blocks on its
/// reads, and indexing a large image takes seconds. A stop meanwhile drops this future; the
/// thread, which writes nothing, ends with the runtime's background shutdown.
/// The options to index `image` with (from and into `cache`), and the "indexing" bar over its
/// layers' bytes as stored (compressed), as the indexer counts them: keep it while indexing.
pub(super) fn indexing(
    image: &Image,
    cache: Option<IndexCache>,
) -> (crate::progress::Progress, IndexOptions) {
    let stored = image.layers().iter().map(|l| l.size).sum();
    let progress = crate::progress::Progress::bytes("indexing", stored);
    let options = IndexOptions {
        progress: Some(progress.counter()),
        cache,
        ..IndexOptions::default()
    };
    (progress, options)
}

async fn index_off_runtime(
    described: String,
    cache: Option<IndexCache>,
    open: impl FnOnce() -> Result<Image, IndexFailure> + Send + 'static,
) -> Result<(Arc<Image>, Arc<MergedView>), AgentError> {
    let task = tokio::task::spawn_blocking(move || {
        open().and_then(|image| {
            let (_progress, options) = indexing(&image, cache);
            let view = index_image(&image, &options)
                .map_err(|source| IndexFailure::Image(Box::new(source)))?;
            Ok((image, view))
        })
    });
    let (image, view) = task
        .await
        .map_err(AgentError::Join)?
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
        from_index_cache = view.layers().iter().filter(|l| l.stats().from_cache).count(),
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
    /// Goes on with a target identified among caught namespaces (state `buffering`): the
    /// filter is already armed on it; its events are kept raw until the image is indexed (see
    /// [`Buffering::index`]), and what it did so far is resolved first.
    pub fn arm_caught(self, caught: Caught) -> Buffering {
        tracing::info!(
            mntns = caught.target.mntns,
            mounts = caught.target.mounts.len(),
            "armed; the image is indexed next"
        );
        self.status.set_state(State::Buffering);
        Buffering {
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
pub struct Buffering {
    status: StatusHandle,
    tracer: Tracer,
    events: EventStream,
    target: Target,
    start_ns: u64,
    /// Events from before arming (see [`Ready::arm_caught`]).
    early: Vec<Event>,
    warnings: Vec<String>,
}

impl Buffering {
    /// As [`Tracing::warn`]; carried over into the summary.
    pub fn warn(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    /// Opens (with `open`, on a blocking thread) and indexes the image while taking the ring's
    /// events into a buffer, so the ring cannot overflow meanwhile; then resolves the buffer
    /// against the index, in arrival order, and goes on tracing (state `tracing`).
    pub async fn index(
        self,
        described: String,
        open: impl FnOnce() -> Result<Image, IndexFailure> + Send + 'static,
    ) -> Result<Tracing, AgentError> {
        let Buffering {
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
        let indexing = index_off_runtime(described, None, open);
        tokio::pin!(indexing);
        let (image, view) = loop {
            tokio::select! {
                biased;
                indexed = &mut indexing => break indexed?,
                result = events.next_batch(&mut buffered) => { result?; }
            }
        };
        status.set_manifest_digest(image.manifest_digest().to_string());
        status.set_state(State::Tracing);
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
    pub(super) status: StatusHandle,
    pub(super) image: Arc<Image>,
    pub(super) view: Arc<MergedView>,
}

impl Indexed {
    /// The image.
    pub fn image(&self) -> &Arc<Image> {
        &self.image
    }

    /// Its merged view.
    pub fn view(&self) -> &Arc<MergedView> {
        &self.view
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
