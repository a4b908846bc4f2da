//! `recorder record`: find the target, index the image, arm, trace until a stop condition,
//! commit.

use crate::agent::procs::processes_in;
use crate::agent::{
    Agent, AgentError, Catching, Caught, CommitOptions, IndexFailure, Outcome, StopConditions,
    Target, Tracing,
};
use crate::containerd::{ArmTiming, ContainerPattern, ContainerdError, CreatedTask, TaskWatcher};
use crate::status::State;
use crate::tracer::{Tracer, mount_namespace_of};

use super::Recording;
use super::input::{Connection, ImageInput, Input};
use super::options::{Options, RecordPlan};
use super::target::TargetSpec;

/// The target, found before indexing so that a wrong one fails at once.
enum Found {
    /// A process and its mount namespace.
    Process { pid: Option<u32>, mntns: u32 },
    /// A subscription waiting for the container's task.
    Watching(Box<TaskWatcher>),
}

/// A filter armed on a created container, and whether it came in time.
struct ArmedOn {
    caught: Caught,
    /// The summary's warning and the late-armed container, when it came too late.
    late: Option<(String, String)>,
}

impl Recording {
    /// Records `plan`'s target until a stop condition, and commits the record.
    pub async fn record(
        &self,
        options: &Options,
        input: Input,
        plan: RecordPlan,
    ) -> Result<Outcome, AgentError> {
        let Input { image, containerd } = input;
        let connection = containerd.as_ref();
        match (&plan.target, image) {
            (TargetSpec::K8s { pod_uid, container }, _) => {
                let pattern = ContainerPattern::kubernetes(pod_uid, container);
                let connection = connection.ok_or_else(|| needs_containerd(&plan.target))?;
                self.record_pod(options, &plan, pattern, connection).await
            }
            (_, Some(image)) => self.record_found(options, &plan, image, connection).await,
            (_, None) => Err(AgentError::Target {
                target: plan.target.to_string(),
                message: "no image to record against".into(),
            }),
        }
    }

    async fn record_found(
        &self,
        options: &Options,
        plan: &RecordPlan,
        input: ImageInput,
        connection: Option<&Connection>,
    ) -> Result<Outcome, AgentError> {
        let target = &plan.target;
        let target_err = |message: String| AgentError::Target {
            target: target.to_string(),
            message,
        };
        // A container not created yet: the namespaces runc makes are caught from before the
        // subscription on, so the one the watcher reports is traced from its creation.
        let mut catching = match target {
            TargetSpec::ContainerName(_) => Some(Catching::start(Tracer::load(&options.tracer)?)?),
            _ => None,
        };
        let found = find(target, connection).await?;
        self.status.set_target(target.to_string());

        let agent = Agent::new(self.status.clone());
        let index = input.index_or_stop(agent, options.platform(), &self.stops);
        let indexed = match &mut catching {
            Some(catching) => catching.while_waiting(index).await??,
            None => index.await?,
        };
        self.stops.check()?;
        options.check_platform(indexed.image())?;
        if let (TargetSpec::Container(id), Some(connection)) = (target, connection) {
            let (image, _) = connection.client.container(id).await?;
            connection.check_container_image(id, &image).await?;
        }
        let commit = options.commit_options(connection, indexed.image().manifest_digest())?;
        let mut late_arm = None;
        let tracing = match found {
            Found::Process { pid, mntns } => {
                let tracer = Tracer::load(&options.tracer)?;
                let mount_pid = match pid {
                    Some(pid) => pid,
                    None => processes_in(mntns)
                        .map_err(|e| AgentError::TargetUnreadable {
                            target: target.to_string(),
                            op: "scanning /proc",
                            source: Box::new(e),
                        })?
                        .first()
                        .copied()
                        .ok_or_else(|| {
                            target_err("no process is in this mount namespace".into())
                        })?,
                };
                // Its error names the target already: wrapping it would say so twice.
                let pinned = Target::of_pid(mntns, mount_pid)?;
                indexed.arm(tracer, pinned)?
            }
            Found::Watching(mut watcher) => {
                self.status.set_state(State::Armed);
                let mut catching = catching
                    .ok_or_else(|| target_err("watched without catching namespaces".into()))?;
                tracing::info!(%target, "ready: waiting for a matching container to be created");
                let created = catching.created(&mut watcher, &self.stops).await?;
                // Pinned first: its mounts and root can only be read while it lives, and the
                // image check's two containerd round trips took long enough under load for a
                // short workload to exit before the pin (seen once in a suite run at load 10).
                let pinned = pin_created(&created, &mut catching)?;
                if let Some(connection) = connection {
                    connection
                        .check_container_image(&created.target.container_id, &created.image)
                        .await?;
                }
                let armed = arm_on(catching, &created, pinned)?;
                let mut tracing = indexed.arm_caught(armed.caught);
                if let Some((warning, container)) = armed.late {
                    tracing.warn(warning);
                    late_arm = Some(container);
                }
                tracing
            }
        };
        self.trace_and_commit(options, plan, tracing, &commit, late_arm)
            .await
    }

    /// Records a pod's container: subscribe and load the tracer (then `armed`), arm as soon as
    /// the container's task is created (`buffering`), index the image meanwhile, trace
    /// (`tracing`), commit.
    async fn record_pod(
        &self,
        options: &Options,
        plan: &RecordPlan,
        pattern: ContainerPattern,
        connection: &Connection,
    ) -> Result<Outcome, AgentError> {
        self.status.set_target(plan.target.to_string());
        let tracer = Tracer::load(&options.tracer)?;
        // Caught from before the subscription on: see record_found().
        let mut catching = Catching::start(tracer)?;
        let mut watcher = connection.client.watch_tasks(pattern).await?;
        let ready = Agent::new(self.status.clone()).ready();
        tracing::info!(target = %plan.target, "ready: waiting for a matching container to be created");
        let created = catching.created(&mut watcher, &self.stops).await?;
        let pinned = pin_created(&created, &mut catching)?;
        let armed_on = arm_on(catching, &created, pinned)?;
        let mut buffering = ready.arm_caught(armed_on.caught);
        let mut late_arm = None;
        if let Some((warning, container)) = armed_on.late {
            buffering.warn(warning);
            late_arm = Some(container);
        }
        // The container's image is the one actually run: a record resolved against another
        // image's layers would be wrong.
        connection
            .check_container_image(&created.target.container_id, &created.image)
            .await?;
        // The kubelet pulled the image before creating the container: it is there now.
        let resolved = connection
            .client
            .resolve_image(&connection.reference)
            .await?;
        let source = connection.source();
        let described = format!("{} (containerd)", connection.reference);
        let platform = options.platform();
        let tracing = buffering
            .index(described, move || {
                source
                    .open_image(&resolved, &platform)
                    .map_err(|e| IndexFailure::Agent(e.into()))
            })
            .await?;
        options.check_platform(tracing.image())?;
        let commit = options.commit_options(Some(connection), tracing.image().manifest_digest())?;
        self.trace_and_commit(options, plan, tracing, &commit, late_arm)
            .await
    }
}

impl Recording {
    /// Traces until a stop condition, and commits.
    async fn trace_and_commit(
        &self,
        options: &Options,
        plan: &RecordPlan,
        tracing: Tracing,
        commit: &CommitOptions,
        late_arm: Option<String>,
    ) -> Result<Outcome, AgentError> {
        let conditions = stop_conditions(options, plan.until_exit.then(|| tracing.namespaces()));
        let stopped = tracing.run(conditions.wait(&self.stops)).await?;
        let summary = self.commit(options, stopped, commit, None).await?;
        Ok(Outcome {
            summary,
            late_arm,
            workload: None,
        })
    }
}

/// The stop conditions of `options`, and `--until-exit`'s namespaces.
pub(super) fn stop_conditions(
    options: &Options,
    until_exit: Option<crate::agent::procs::Namespaces>,
) -> StopConditions {
    StopConditions {
        period: options.period,
        until_exit,
    }
}

fn needs_containerd(target: &TargetSpec) -> AgentError {
    AgentError::Target {
        target: target.to_string(),
        message: "needs --containerd".into(),
    }
}

async fn find(target: &TargetSpec, containerd: Option<&Connection>) -> Result<Found, AgentError> {
    let client = || {
        containerd
            .map(|c| &c.client)
            .ok_or_else(|| needs_containerd(target))
    };
    Ok(match target {
        TargetSpec::Pid(pid) => Found::Process {
            pid: Some(*pid),
            mntns: mount_namespace_of(*pid).map_err(|e| AgentError::TargetUnreadable {
                target: target.to_string(),
                op: "reading its mount namespace",
                source: Box::new(e),
            })?,
        },
        TargetSpec::Mntns(n) => Found::Process {
            pid: None,
            mntns: *n,
        },
        TargetSpec::Container(id) => {
            let task = client()?.container_task(id).await?;
            Found::Process {
                pid: Some(task.pid),
                mntns: task.mntns,
            }
        }
        // Subscribed before indexing: a container started meanwhile is not missed.
        TargetSpec::ContainerName(pattern) => {
            Found::Watching(Box::new(client()?.watch_tasks(pattern.clone()).await?))
        }
        // Recording::record takes k8s targets to record_pod; only a bug lands here.
        TargetSpec::K8s { .. } => {
            return Err(AgentError::Target {
                target: target.to_string(),
                message: "a k8s: target is recorded by record_pod".into(),
            });
        }
    })
}

/// The created task's target, pinned; for a task whose process has exited already, its caught
/// namespace's; or why it is gone.
fn pin_created(created: &CreatedTask, catching: &mut Catching) -> Result<Target, AgentError> {
    let task = &created.target;
    match Target::of_pid(task.mntns, task.pid) {
        Ok(pinned) => Ok(pinned),
        // Gone, or exiting: a zombie's /proc/PID is still there, but reading its mountinfo
        // fails with EINVAL (seen once in a suite run, a container whose command exits at
        // once). Either way the namespace caught at its creation stands for it.
        Err(e) => catching.exited_target(task).ok_or_else(|| {
            if std::path::Path::new(&format!("/proc/{}", task.pid)).exists() {
                e
            } else {
                ContainerdError::Exited {
                    id: task.container_id.clone(),
                    pid: task.pid,
                }
                .into()
            }
        }),
    }
}

/// Stops catching and arms on the created task, `pinned`, and says whether the filter came in
/// time.
fn arm_on(
    catching: Catching,
    created: &CreatedTask,
    pinned: Target,
) -> Result<ArmedOn, AgentError> {
    let task = &created.target;
    let caught = catching.identify(pinned)?;
    let late = late_arm_warning(caught.in_time(), created)
        .map(|warning| (warning, format!("container {}", task.container_id)));
    Ok(ArmedOn { caught, late })
}

/// Whether the filter was armed on `created` before its entrypoint ran: logged, or the
/// warning to put in the summary.
fn late_arm_warning(caught_in_time: bool, created: &CreatedTask) -> Option<String> {
    let task = &created.target;
    if caught_in_time {
        tracing::info!(
            container = task.container_id,
            pid = task.pid,
            "armed before the container started: traced since runc made its mount namespace"
        );
        return None;
    }
    match created.arm_timing() {
        ArmTiming::BeforeStart => {
            tracing::info!(
                container = task.container_id,
                pid = task.pid,
                "armed before the container started"
            );
            None
        }
        ArmTiming::AfterStart => Some(format!(
            "container {} had started before the filter was armed: its first reads may be \
             missing from the record",
            task.container_id
        )),
    }
}
