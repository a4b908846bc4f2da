//! Waiting for a containerd call from synchronous code (a layer reader, a content store call):
//! one rule for every caller, so that the one runtime of the process drives the call.

use std::future::Future;
use std::io;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Why a call cannot be waited for on this thread.
const CURRENT_THREAD: &str = "containerd cannot be waited for from a current-thread runtime's \
     async code (that thread drives the call): use a multi-thread runtime, or a plain thread";

/// Runs `call` on `handle`'s runtime and waits for it. Allowed from a plain thread, a
/// `spawn_blocking` thread, and (through `block_in_place`, which hands the worker's tasks on)
/// anywhere in a multi-thread runtime; refused, rather than stalling or panicking as tokio
/// would, on a current-thread runtime, where this thread may be the one that drives `call`.
pub(crate) fn wait<F: Future>(handle: &Handle, call: F) -> io::Result<F::Output> {
    match Handle::try_current() {
        Err(_) => Ok(handle.block_on(call)),
        Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(call)))
        }
        Ok(_) => Err(io::Error::other(CURRENT_THREAD)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer() -> u32 {
        tokio::task::yield_now().await;
        42
    }

    #[test]
    fn waits_from_every_thread_of_a_multi_thread_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        // A plain thread, outside the runtime.
        assert_eq!(wait(&handle, answer()).unwrap(), 42);
        runtime.block_on(async {
            // Async code on the runtime.
            assert_eq!(wait(&Handle::current(), answer()).unwrap(), 42);
            // A spawn_blocking thread (the one the old guard refused).
            let h = Handle::current();
            let blocking = tokio::task::spawn_blocking(move || wait(&h, answer()).unwrap());
            assert_eq!(blocking.await.unwrap(), 42);
            // A spawned task.
            let h = Handle::current();
            let task = tokio::spawn(async move { wait(&h, answer()).unwrap() });
            assert_eq!(task.await.unwrap(), 42);
        });
    }

    #[test]
    fn a_current_thread_runtime_is_refused_not_stalled() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let error = wait(&Handle::current(), answer()).unwrap_err();
            assert!(error.to_string().contains("current-thread"), "{error}");
        });
    }
}
