//! `builtin:sleep` `{"durationMs"}`: waits, giving up as soon as the run is canceled; used to
//! exercise timeouts, cancellation and worker concurrency.
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{
    EntryPoint, JobError, JobResult, JobRunContext, Problem, SLEEP, checked_params, field,
};

pub(super) struct Sleep;

pub(super) fn check(params: &Map<String, Value>, problems: &mut Vec<Problem>) {
    if field(params, "durationMs")
        .and_then(Value::as_u64)
        .is_none()
    {
        problems.push((
            "/durationMs".to_string(),
            "must be a non-negative integer".to_string(),
        ));
    }
}

#[async_trait::async_trait]
impl EntryPoint for Sleep {
    fn name(&self) -> &'static str {
        SLEEP
    }

    fn check(&self, params: &Map<String, Value>, problems: &mut Vec<Problem>) {
        check(params, problems)
    }

    async fn execute(&self, ctx: JobRunContext) -> JobResult {
        let params = checked_params(SLEEP, &ctx.parameters)?;
        let duration_ms = field(params, "durationMs")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        ctx.log.info(format!("sleeping for {duration_ms} ms"));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(duration_ms)) => Ok(json!({"sleptMs": duration_ms})),
            () = ctx.cancel.cancelled() => Err(JobError::Canceled),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entrypoints::test_ctx;
    use std::time::Instant;

    #[tokio::test]
    async fn sleeps() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (ctx, _rx) = test_ctx(json!({"durationMs": 10}), dir.path());
        assert_eq!(Sleep.execute(ctx).await, Ok(json!({"sleptMs": 10})));
    }

    #[tokio::test]
    async fn cancel_stops_the_sleep_early() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (ctx, _rx) = test_ctx(json!({"durationMs": 60_000}), dir.path());
        let cancel = ctx.cancel.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move { Sleep.execute(ctx).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("finishes quickly")
            .expect("task ran");
        assert_eq!(result, Err(JobError::Canceled));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn bad_parameters_are_fatal() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (ctx, _rx) = test_ctx(json!({"durationMs": "soon"}), dir.path());
        assert!(matches!(Sleep.execute(ctx).await, Err(JobError::Fatal(_))));
    }
}
