//! A created run from start to removal: start, wait, kill, the workload's output, and
//! removing the task, container, snapshot and lease.

use std::future::Future;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::RemoveSnapshotRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    DeleteContainerRequest, DeleteRequest as DeleteLeaseRequest, DeleteTaskRequest, KillRequest,
    StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use tracing::{debug, info, warn};

use super::{ContainerRun, KILL_TIMEOUT, Made, RunError, SNAPSHOTTER};
use crate::containerd::stdio::Forwarding;

impl ContainerRun {
    /// Lets runc's init execute the workload (Tasks.Start).
    pub async fn start(&self) -> Result<(), RunError> {
        let c = &self.client;
        TasksClient::new(c.channel())
            .start(c.request(StartRequest {
                container_id: self.id.clone(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| c.rpc_error("Tasks.Start", s))?;
        info!(container = self.id, "task started");
        Ok(())
    }

    /// A future that resolves to the task's exit status (Tasks.Wait); it owns what it needs,
    /// so it can be spawned.
    pub fn wait(&self) -> impl Future<Output = Result<u32, RunError>> + Send + 'static {
        let c = self.client.clone();
        let id = self.id.clone();
        async move {
            let reply = TasksClient::new(c.channel())
                .wait(c.request(WaitRequest {
                    container_id: id,
                    exec_id: String::new(),
                }))
                .await
                .map_err(|s| c.rpc_error("Tasks.Wait", s))?;
            Ok(reply.into_inner().exit_status)
        }
    }

    /// Sends SIGKILL to the task's init; with its own pid namespace, that ends them all.
    pub async fn kill(&self) -> Result<(), RunError> {
        let c = &self.client;
        let killed = TasksClient::new(c.channel())
            .kill(c.request(KillRequest {
                container_id: self.id.clone(),
                exec_id: String::new(),
                signal: libc::SIGKILL as u32,
                all: false,
            }))
            .await;
        match killed {
            // Already gone: nothing to kill.
            Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => Ok(()),
            Err(s) => Err(c.rpc_error("Tasks.Kill", s).into()),
            Ok(_) => Ok(()),
        }
    }

    /// Starts relaying the workload's stdout to ours (to our stderr if `stdout_to_stderr`)
    /// and its stderr to ours, live; [`Forwarding::finish`] waits for the end of both.
    pub fn forward_output(&mut self, stdout_to_stderr: bool) -> Forwarding {
        self.stdio
            .take()
            .map_or_else(Forwarding::none, |stdio| stdio.forward(stdout_to_stderr))
    }

    /// Removes the task (killing it if it still runs), the container, the snapshot and the
    /// lease, in that order. Failures are logged, and the rest still removed.
    pub async fn remove(mut self) {
        let _progress = crate::progress::Progress::spinner("removing the container");
        let c = self.client.clone();
        let id = self.id.clone();
        if self.made.task {
            if let Err(error) = self.kill().await {
                warn!(error = %crate::errors::Chain(&error), container = id, "killing the task");
            }
            // A task can only be deleted once it has exited.
            match tokio::time::timeout(KILL_TIMEOUT, self.wait()).await {
                Ok(Ok(status)) => debug!(container = id, status, "task exited"),
                Ok(Err(error)) => {
                    debug!(error = %crate::errors::Chain(&error), container = id, "waiting for the task")
                }
                Err(_) => warn!(
                    container = id,
                    "the task did not exit {KILL_TIMEOUT:?} after SIGKILL"
                ),
            }
        }
        // Each call is made only for what was made (a future does nothing until awaited).
        let mut tasks = TasksClient::new(c.channel());
        let task = c.request(DeleteTaskRequest {
            container_id: id.clone(),
        });
        let call = tasks.delete(task);
        removal(&mut self.made.task, "Tasks.Delete", &id, call).await;
        let mut containers = ContainersClient::new(c.channel());
        let container = c.request(DeleteContainerRequest { id: id.clone() });
        let call = containers.delete(container);
        removal(&mut self.made.container, "Containers.Delete", &id, call).await;
        let mut snapshots = SnapshotsClient::new(c.channel());
        let snapshot = c.request(RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: id.clone(),
        });
        let call = snapshots.remove(snapshot);
        removal(&mut self.made.snapshot, "Snapshots.Remove", &id, call).await;
        let mut leases = LeasesClient::new(c.channel());
        let lease = c.request(DeleteLeaseRequest {
            id: id.clone(),
            sync: false,
        });
        let call = leases.delete(lease);
        removal(&mut self.made.lease, "Leases.Delete", &id, call).await;
        info!(container = id, "container removed");
    }
}

impl Drop for ContainerRun {
    fn drop(&mut self) {
        // Removal is async and cannot run here: say what is left, rather than leak silently.
        let Made {
            lease,
            snapshot,
            container,
            task,
        } = self.made;
        if lease || snapshot || container || task {
            warn!(
                container = self.id,
                "dropped without remove(): the task, container, snapshot or lease may remain"
            );
        }
    }
}

/// Makes the `call` that removes an object of run `id` if `made` says it was made (a future does
/// nothing until awaited), logs how it went, and marks it removed.
async fn removal<T>(
    made: &mut bool,
    call: &'static str,
    id: &str,
    call_future: impl Future<Output = Result<T, containerd_client::tonic::Status>>,
) {
    if !std::mem::take(made) {
        return;
    }
    match call_future.await {
        Ok(_) => debug!(call, container = id, "removed"),
        Err(s) if s.code() == Code::NotFound => debug!(call, container = id, "already gone"),
        Err(s) => warn!(
            call,
            container = id,
            status = %crate::containerd::client::status_text(&s),
            "removal failed"
        ),
    }
}
