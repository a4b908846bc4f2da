//! [`Tracing`]: the filter is armed; the ring's events go through the [`Core`] into the
//! record, the namespaces traced tasks make are pinned, and the counters are mirrored on the
//! status until a stop condition.

use std::fs::File;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use crate::image::{Image, MergedView};
use crate::status::StatusHandle;
use crate::tracer::{Event, EventStream, Tracer};

use super::AgentError;
use super::core::{Core, Loaders};
use super::interp::ContainerRoot;
use super::procs::{Namespaces, processes_in};
use super::resolve::Resolver;
use super::session::Target;
use super::stop::StopReason;
use super::stopped::Stopped;

/// How often the kernel's loss counters are copied to the status while tracing.
const LOST_REFRESH: Duration = Duration::from_millis(500);

/// The filter is armed; events become record entries.
pub struct Tracing {
    status: StatusHandle,
    image: Arc<Image>,
    tracer: Tracer,
    events: EventStream,
    core: Core,
    /// The armed namespace and those its tasks made.
    namespaces: Namespaces,
    root: Option<ContainerRoot>,
    // Held, never read: see Target::pin. Nested namespaces are pinned the same way.
    _pin: Option<OwnedFd>,
    nested_pins: Vec<OwnedFd>,
    pub(super) warnings: Vec<String>,
}

impl Tracing {
    pub(super) fn new(
        status: StatusHandle,
        image: Arc<Image>,
        view: Arc<MergedView>,
        tracer: Tracer,
        events: EventStream,
        target: Target,
        start_ns: u64,
    ) -> Self {
        Tracing {
            core: Core::new(
                Resolver::new(view, target.mounts),
                image.manifest_digest().to_string(),
                start_ns,
            ),
            namespaces: Namespaces::new(target.mntns),
            root: target.root,
            _pin: target.pin,
            nested_pins: Vec::new(),
            warnings: Vec::new(),
            status,
            image,
            tracer,
            events,
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
        let mut refresh = tokio::time::interval(LOST_REFRESH);
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
                    self.status.set_lost(self.lost()?);
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
        let lost = self.lost()?;
        self.status.set_lost(lost);
        tracing::info!(%reason, lost, "tracing stopped");
        let (record, mut counters) = self.core.into_parts();
        counters.lost = lost;
        Ok(Stopped {
            status: self.status,
            record,
            counters,
            reason,
            warnings: self.warnings,
            kernel: (self.tracer, self.events),
        })
    }

    /// Events that never became a decision: the kernel's losses and undecodable records.
    fn lost(&self) -> Result<u64, AgentError> {
        Ok(self.tracer.counters()?.lost() + self.events.undecodable())
    }

    /// Turns a batch into record entries and counters (mirrored on the status once per
    /// batch), and pins the namespaces the batch reports.
    pub(super) fn consume(&mut self, batch: &[Event]) {
        if batch.is_empty() {
            return;
        }
        let root = self.root.as_ref().map(|r| r as &dyn Loaders);
        let consumed = self.core.consume(batch, root);
        let c = &consumed.counters;
        self.status.add_events(c.events);
        self.status.add_recorded_paths(c.recorded_paths);
        self.status.add_failed_opens(c.failed_opens);
        for (label, n) in &c.excluded {
            self.status.add_excluded(label, *n);
        }
        for event in consumed.namespaces {
            join_namespace(
                &mut self.nested_pins,
                &self.namespaces,
                &mut self.tracer,
                event,
            );
        }
    }
}

/// A traced task made mount namespace `event.mntns`, which the kernel has added to the
/// filter: pin it (a namespace that dies frees its inode number for reuse by an unrelated one)
/// through a task inside it, and count its processes for `--until-exit`. One that can no
/// longer be pinned is gone already, and leaves the filter.
fn join_namespace(
    pins: &mut Vec<OwnedFd>,
    namespaces: &Namespaces,
    tracer: &mut Tracer,
    event: &Event,
) {
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
            pins.push(fd);
            namespaces.insert(mntns);
        }
        None => {
            tracing::debug!(mntns, "nested mount namespace gone before it was pinned");
            if let Err(error) = tracer.remove_target(mntns) {
                tracing::warn!(error = %crate::errors::Chain(&error), mntns, "removing a vanished namespace from the filter");
            }
        }
    }
}
