//! A one-shot "begin the commit" signal shared between the server and the agent.

use std::sync::Arc;
use tokio::sync::watch;

/// Fired by `POST /stop`; the agent awaits [`StopSignal::triggered`] to begin committing.
///
/// Cloning gives another handle to the same signal. Once fired it stays fired.
#[derive(Clone, Debug)]
pub struct StopSignal {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for StopSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl StopSignal {
    /// A signal that has not fired yet.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Fires the signal; returns `true` if this call was the one that fired it.
    pub fn trigger(&self) -> bool {
        self.tx
            .send_if_modified(|fired| !std::mem::replace(fired, true))
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Completes once the signal has fired (at once if it already has).
    pub async fn triggered(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_once_and_wakes_waiters() {
        let stop = StopSignal::new();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.triggered().await }
        });
        assert!(!stop.is_triggered());
        assert!(stop.trigger());
        assert!(!stop.trigger());
        waiter.await.unwrap();
        stop.triggered().await;
        assert!(stop.is_triggered());
    }
}
