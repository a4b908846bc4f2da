//! Finding the process to trace: a running container's task (`container:ID`), or the next
//! task created for a matching container (`container-name:PATTERN`), delivered before the
//! task is started so that the filter can be armed before the workload runs.
//!
//! What runs when, with containerd 1.6 and runc 1.1 (`ctr run`): Containers.Create publishes
//! `/containers/create`; Tasks.Create starts the shim, which runs `runc create`. runc's init
//! process enters the container's new mount namespace, sets up the rootfs and runs the
//! `createRuntime`, `createContainer` and `prestart` hooks, then blocks on its exec fifo; the
//! shim then publishes `/tasks/create` with that process's pid. Tasks.Start runs `runc start`:
//! the `startContainer` hooks run in the container, then the entrypoint is executed.
//!
//! Measured here with a hook of each kind logging its time and mount namespace: `prestart`,
//! `createRuntime` and (runc 1.1 runs it at create) `poststart` run in the host's mount
//! namespace; `createContainer` runs in the container's about 60 ms before the shim stamps
//! `/tasks/create`; `startContainer` and then the entrypoint run about 30 ms after it.
//!
//! So a filter armed on `/tasks/create` sees the `startContainer` hooks, the entrypoint's
//! execve and everything after, if it is armed in time: the event travels asynchronously
//! (shim → containerd → subscriber) while the client goes on to call Start, so arming on it
//! came after the start about once in 30 runs under load. `record` therefore has the kernel
//! catch every mount namespace runc makes while it waits ([`crate::agent::Catching`]) and only
//! identifies the target through this watcher; [`CreatedTask::arm_timing`] still tells, for a
//! namespace that was not caught (another runtime), whether the process was still held by runc
//! (its init still named `runc:[2:INIT]`), so a late arm is reported rather than silently
//! losing the first reads.

use std::collections::HashMap;
use std::time::Duration;

use containerd_client::events::{ContainerCreate, TaskCreate};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    GetContainerRequest, GetRequest, PublishRequest, SubscribeRequest,
};
use containerd_client::tonic::Code;
use containerd_client::tonic::codec::Streaming;
use containerd_client::types::Envelope;
use containerd_client::types::v1::Status as TaskStatus;
use prost::Message;
use tracing::{debug, info};

use super::client::Containerd;
use super::error::{ContainerdError, GrpcStatus, Result};
use super::pattern::ContainerPattern;
use crate::tracer::mount_namespace_of;

const TOPIC_CONTAINER_CREATE: &str = "/containers/create";
const TOPIC_TASK_CREATE: &str = "/tasks/create";

/// Published by the watcher itself to learn that its subscription is live (see
/// [`Containerd::watch_tasks`]); other subscribers of the namespace see it too.
const TOPIC_WATCHING: &str = "/recorder/watching";

/// How often, and how many times, the watcher publishes [`TOPIC_WATCHING`] until its own
/// subscription delivers one.
const PING_INTERVAL: Duration = Duration::from_millis(50);
const PING_ATTEMPTS: u32 = 200;

/// What runc's init process calls itself until it executes the container's entrypoint.
const RUNC_INIT_COMM: &str = "runc:[2:INIT]";

/// A container's task: the process to trace and its mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTarget {
    /// The container id.
    pub container_id: String,
    /// The task's init process, in the host's pid namespace.
    pub pid: u32,
    /// The inode of its mount namespace (the filter's key); 0 when a created task's process
    /// had exited before it was reported.
    pub mntns: u32,
}

/// A task just created for a container matching the watched pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTask {
    /// The task's process and mount namespace.
    pub target: TaskTarget,
    /// The container's image name, empty if it has none.
    pub image: String,
}

/// A task creation the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// A task of a matching container.
    Matching(CreatedTask),
    /// A task of another container: its init process, in the host's pid namespace.
    Other {
        /// The container id.
        container_id: String,
        /// The task's init process.
        pid: u32,
    },
}

/// Whether a filter was armed before the container's entrypoint ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmTiming {
    /// The process was still runc's init, waiting to be started: nothing after
    /// `createContainer` hooks was missed.
    BeforeStart,
    /// The entrypoint was already executing (or had exited): its first reads may be missing.
    AfterStart,
}

/// A subscription to task creations of matching containers, see [`Containerd::watch_tasks`].
pub struct TaskWatcher {
    client: Containerd,
    pattern: ContainerPattern,
    events: Streaming<Envelope>,
    // Verdicts for containers seen on `/containers/create`, so the match is ready when the
    // task arrives and arming is not delayed by a Containers.Get.
    seen: HashMap<String, Option<String>>,
}

impl Containerd {
    /// The running task of container `id`.
    pub async fn container_task(&self, id: &str) -> Result<TaskTarget> {
        let process = TasksClient::new(self.channel())
            .get(self.request(GetRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            }))
            .await;
        let process = match process {
            Ok(r) => r.into_inner().process,
            Err(s) if s.code() == Code::NotFound => {
                // Tell a missing container from one that exists without a task.
                self.container(id).await?;
                return Err(ContainerdError::NoTask { id: id.to_owned() });
            }
            Err(s) => return Err(self.rpc_error("Tasks.Get", s)),
        };
        let process = process.ok_or_else(|| ContainerdError::NoTask { id: id.to_owned() })?;
        if process.status == TaskStatus::Stopped as i32 || process.pid == 0 {
            return Err(ContainerdError::NoTask { id: id.to_owned() });
        }
        let pid = process.pid;
        let mntns = mount_namespace_of(pid).map_err(|_| ContainerdError::Exited {
            id: id.to_owned(),
            pid,
        })?;
        Ok(TaskTarget {
            container_id: id.to_owned(),
            pid,
            mntns,
        })
    }

    /// Subscribes to task creations in this namespace of containers matching `pattern`. The
    /// subscription is live when this returns: containers started afterwards are not missed.
    pub async fn watch_tasks(&self, pattern: ContainerPattern) -> Result<TaskWatcher> {
        let ns = self.namespace();
        let filters = [TOPIC_CONTAINER_CREATE, TOPIC_TASK_CREATE, TOPIC_WATCHING]
            .iter()
            .map(|topic| format!("topic==\"{topic}\",namespace==\"{ns}\""))
            .collect();
        let mut events_client = EventsClient::new(self.channel());
        let subscribe = events_client.subscribe(SubscribeRequest { filters });
        tokio::pin!(subscribe);
        // containerd sends a subscription's response headers with its first event, and the
        // call does not return before them. Publishing our own event until it comes back both
        // completes the call and proves that the subscription is registered.
        let mut ticks = tokio::time::interval(PING_INTERVAL);
        let mut pings = 0;
        let events = loop {
            tokio::select! {
                reply = &mut subscribe => {
                    break reply.map_err(|s| self.rpc_error("Events.Subscribe", s))?.into_inner();
                }
                _ = ticks.tick() => {
                    if pings == PING_ATTEMPTS {
                        return Err(ContainerdError::EventsEnded {
                            address: self.address().to_owned(),
                            message: "the subscription delivered none of the watcher's own events",
                        });
                    }
                    pings += 1;
                    self.publish_watching().await?;
                }
            }
        };
        info!(%pattern, namespace = ns, "watching for containers");
        Ok(TaskWatcher {
            client: self.clone(),
            pattern,
            events,
            seen: HashMap::new(),
        })
    }

    async fn publish_watching(&self) -> Result<()> {
        let event = prost_types::Any {
            type_url: "containerd.events.ContainerCreate".into(),
            value: ContainerCreate::default().encode_to_vec(),
        };
        EventsClient::new(self.channel())
            .publish(self.request(PublishRequest {
                topic: TOPIC_WATCHING.into(),
                event: Some(event),
            }))
            .await
            .map_err(|s| self.rpc_error("Events.Publish", s))?;
        Ok(())
    }

    /// A container's image name and labels.
    pub async fn container(&self, id: &str) -> Result<(String, HashMap<String, String>)> {
        let reply = ContainersClient::new(self.channel())
            .get(self.request(GetContainerRequest { id: id.to_owned() }))
            .await
            .map_err(|s| {
                self.get_error("Containers.Get", s, || ContainerdError::ContainerNotFound {
                    id: id.to_owned(),
                    namespace: self.namespace().to_owned(),
                })
            })?
            .into_inner();
        let c = reply
            .container
            .ok_or_else(|| ContainerdError::ContainerNotFound {
                id: id.to_owned(),
                namespace: self.namespace().to_owned(),
            })?;
        Ok((c.image, c.labels))
    }
}

impl TaskWatcher {
    /// Waits for the next task created for a matching container and returns its process and
    /// mount namespace. Arm the filter with it, then call [`CreatedTask::arm_timing`].
    pub async fn next(&mut self) -> Result<CreatedTask> {
        loop {
            if let Watched::Matching(created) = self.next_task().await? {
                return Ok(created);
            }
        }
    }

    /// Waits for the next task created for any container: a matching one as in
    /// [`TaskWatcher::next`], another with its process, so that what was prepared for it can
    /// be dropped.
    pub async fn next_task(&mut self) -> Result<Watched> {
        loop {
            let envelope = match self.events.message().await {
                Ok(Some(e)) => e,
                Ok(None) => {
                    return Err(ContainerdError::EventsEnded {
                        address: self.client.address().to_owned(),
                        message: "the subscription closed",
                    });
                }
                Err(s) => {
                    return Err(ContainerdError::EventsFailed {
                        address: self.client.address().to_owned(),
                        status: GrpcStatus(s),
                    });
                }
            };
            let Some(any) = envelope.event else { continue };
            match envelope.topic.as_str() {
                TOPIC_CONTAINER_CREATE => {
                    let Ok(ev) = ContainerCreate::decode(any.value.as_slice()) else {
                        debug!(type_url = any.type_url, "undecodable container event");
                        continue;
                    };
                    let verdict = self.verdict(&ev.id).await;
                    self.seen.insert(ev.id, verdict);
                }
                TOPIC_TASK_CREATE => {
                    let Ok(ev) = TaskCreate::decode(any.value.as_slice()) else {
                        debug!(type_url = any.type_url, "undecodable task event");
                        continue;
                    };
                    let verdict = match self.seen.remove(&ev.container_id) {
                        Some(v) => v,
                        None => self.verdict(&ev.container_id).await,
                    };
                    let pid = ev.pid;
                    let Some(image) = verdict else {
                        return Ok(Watched::Other {
                            container_id: ev.container_id,
                            pid,
                        });
                    };
                    // 0 when the process has exited already (or is not in our pid namespace):
                    // the namespace catch may still know it (agent::Catching::exited_target).
                    let mntns = match crate::procfs::MntNs::of_pid(pid) {
                        Ok(ns) => u32::try_from(ns.inode()).unwrap_or(0),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                        Err(source) => {
                            return Err(ContainerdError::Unreadable {
                                id: ev.container_id,
                                pid,
                                source,
                            });
                        }
                    };
                    info!(
                        container = ev.container_id,
                        pid, mntns, "matching task created"
                    );
                    return Ok(Watched::Matching(CreatedTask {
                        target: TaskTarget {
                            container_id: ev.container_id,
                            pid,
                            mntns,
                        },
                        image,
                    }));
                }
                _ => {}
            }
        }
    }

    /// `Some(image)` if the container matches the pattern. A container deleted before it
    /// could be looked up does not match: there is nothing left to trace.
    async fn verdict(&self, id: &str) -> Option<String> {
        match self.client.container(id).await {
            Ok((image, labels)) => self.pattern.matches(id, &image, &labels).then_some(image),
            Err(e) => {
                debug!(container = id, error = %crate::errors::Chain(&e), "container vanished before matching");
                None
            }
        }
    }
}

impl CreatedTask {
    /// Whether the container's process had not started yet; call it right after arming.
    pub fn arm_timing(&self) -> ArmTiming {
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.target.pid));
        let still_held = comm.is_ok_and(|c| c.trim_end() == RUNC_INIT_COMM)
            && mount_namespace_of(self.target.pid).is_ok_and(|ns| ns == self.target.mntns);
        if still_held {
            ArmTiming::BeforeStart
        } else {
            ArmTiming::AfterStart
        }
    }
}
