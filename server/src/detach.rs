//! Work that a dropped request must not cut short.
//!
//! axum drops a handler's future when its client disconnects. Anything after a commit in that
//! future (starting an attempt stored already claimed, publishing the change, enqueueing, the
//! audit entry) would then never happen, and the committed state would wait for a lease or a
//! recovery sweep to notice. Such work runs on a task of its own: the caller still waits for its
//! outcome, but leaving does not cancel it.
use std::future::Future;

/// Runs `work` on a task of its own and waits for it. Dropping the returned future does not stop
/// `work`: it runs to its end. A panic in `work` is resumed in the caller.
pub async fn uncancellable<F>(work: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime that is shutting down cancels a task; nothing waits for this one then.
        Err(e) => panic!("uncancellable work was cancelled by the runtime: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
        time::Duration,
    };

    use super::uncancellable;

    /// The caller gives up (as a request whose client disconnected does); the work still ends.
    #[tokio::test]
    async fn work_outlives_a_caller_that_gives_up() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let caller = uncancellable(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let gave_up = tokio::time::timeout(Duration::from_millis(5), caller).await;
        assert!(gave_up.is_err(), "the caller should have given up first");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(done.load(Ordering::SeqCst), "the work was cut short");
    }
}
