//! What a dead `recorder run --containerd` left in containerd: its task (still running: the
//! shim, not the recorder, is its parent), container, snapshot and lease. They carry the
//! [`OWNER_LABEL`] (the recorder's pid) and ids `recorder-run-PID-NANOS`; the lease also expires
//! on its own (`containerd.io/gc.expire`). The next run removes those of recorders that are no
//! longer alive before it creates its own.

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{ListContainersRequest, ListRequest as ListLeasesRequest};
use containerd_client::tonic::{Response, Status};
use tracing::{info, warn};

use super::client::Containerd;
use super::runner::{ContainerRun, RUN_PREFIX};

/// The label naming the pid of the recorder that made a run's lease, container and snapshot.
pub const OWNER_LABEL: &str = "dev.recorder.run.owner";

/// The pid of the recorder that made run `id`, from `recorder-run-PID-NANOS`.
pub fn owner_of(id: &str) -> Option<u32> {
    id.strip_prefix(RUN_PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether `pid` is a live recorder: a process of that pid whose program has this one's file
/// name (another build or version of the recorder counts; a recycled pid running anything else
/// does not keep a leftover alive).
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let name = |p: &str| {
        std::fs::read_link(format!("/proc/{p}/exe"))
            .ok()
            .and_then(|exe| exe.file_name().map(ToOwned::to_owned))
    };
    match (name(&pid.to_string()), name("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => false,
    }
}

/// The ids a list call returned; none (logged) when it failed.
fn listed<R, T>(
    what: &str,
    reply: Result<Response<R>, Status>,
    items: impl FnOnce(R) -> Vec<T>,
    id: impl Fn(T) -> String,
) -> impl Iterator<Item = String> {
    let items = match reply {
        Ok(reply) => items(reply.into_inner()),
        Err(s) => {
            warn!(status = %s.message(), "listing {what} for leftovers");
            Vec::new()
        }
    };
    items.into_iter().map(id)
}

impl Containerd {
    /// The runs of dead recorders in this namespace (their containers and leases), by id.
    /// Listing failures are logged, never fatal.
    pub async fn dead_runs(&self) -> Vec<String> {
        // Empty requests: no filter, every container and lease of the namespace.
        let containers = ContainersClient::new(self.channel())
            .list(self.request(ListContainersRequest::default()))
            .await;
        let leases = LeasesClient::new(self.channel())
            .list(self.request(ListLeasesRequest::default()))
            .await;
        let containers = listed("containers", containers, |r| r.containers, |c| c.id);
        let leases = listed("leases", leases, |r| r.leases, |l| l.id);
        let ids: std::collections::BTreeSet<String> = containers.chain(leases).collect();
        ids.into_iter()
            .filter(|id| owner_of(id).is_some_and(|pid| !alive(pid)))
            .collect()
    }

    /// Removes the runs of dead recorders in this namespace (task, container, snapshot,
    /// lease); returns their ids. Failures are logged, never fatal: a run of our own does not
    /// depend on them.
    pub async fn reclaim_dead_runs(&self) -> Vec<String> {
        let ids = self.dead_runs().await;
        for id in &ids {
            info!(
                container = id,
                pid = owner_of(id),
                "removing the leftovers of a dead recorder"
            );
            ContainerRun::adopt(self.clone(), id.clone()).remove().await;
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        for (id, want) in [
            ("recorder-run-123-456", Some(123)),
            ("recorder-run-7-1", Some(7)),
            ("recorder-run-x-1", None),
            ("other-123-456", None),
            ("recorder-run-", None),
        ] {
            assert_eq!(owner_of(id), want, "{id}");
        }
        assert!(alive(std::process::id()));
    }
}
