//! `builtin:fail` `{"message"?, "succeedOnAttempt"?}`: fails with a retryable error, optionally
//! succeeding from a given attempt on; for alert drills and retry tests.
use serde_json::{Map, Value, json};

use super::{
    EntryPoint, FAIL, JobError, JobResult, JobRunContext, Problem, check_string, checked_params,
    field,
};

pub(super) struct Fail;

pub(super) fn check(params: &Map<String, Value>, problems: &mut Vec<Problem>) {
    check_string(params, "message", false, problems);
    if let Some(value) = field(params, "succeedOnAttempt")
        && value.as_u64().is_none_or(|n| n == 0)
    {
        problems.push((
            "/succeedOnAttempt".to_string(),
            "must be a positive integer".to_string(),
        ));
    }
}

#[async_trait::async_trait]
impl EntryPoint for Fail {
    fn name(&self) -> &'static str {
        FAIL
    }

    fn check(&self, params: &Map<String, Value>, problems: &mut Vec<Problem>) {
        check(params, problems)
    }

    async fn execute(&self, ctx: JobRunContext) -> JobResult {
        let params = checked_params(FAIL, &ctx.parameters)?;
        ctx.log
            .info(format!("attempt {} of {}", ctx.attempt, ctx.max_attempts));
        let succeed_on = field(params, "succeedOnAttempt").and_then(Value::as_u64);
        let attempt = u64::try_from(ctx.attempt).unwrap_or(0);
        if succeed_on.is_some_and(|n| attempt >= n) {
            ctx.log.info("succeeding as asked");
            return Ok(json!({"attempt": ctx.attempt}));
        }
        let message = field(params, "message")
            .and_then(Value::as_str)
            .unwrap_or("builtin:fail failed as asked");
        Err(JobError::Retryable(message.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entrypoints::test_ctx;

    #[tokio::test]
    async fn fails_until_the_given_attempt() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let params = json!({"message": "boom", "succeedOnAttempt": 2});
        let (mut ctx, _rx) = test_ctx(params, dir.path());
        assert_eq!(
            Fail.execute(ctx.clone()).await,
            Err(JobError::Retryable("boom".to_string()))
        );
        ctx.attempt = 2;
        assert_eq!(Fail.execute(ctx.clone()).await, Ok(json!({"attempt": 2})));
        ctx.attempt = 3;
        assert_eq!(Fail.execute(ctx).await, Ok(json!({"attempt": 3})));
    }

    #[tokio::test]
    async fn default_message() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let (ctx, mut rx) = test_ctx(json!({}), dir.path());
        assert_eq!(
            Fail.execute(ctx).await,
            Err(JobError::Retryable(
                "builtin:fail failed as asked".to_string()
            ))
        );
        let lines = crate::entrypoints::drain_log(&mut rx);
        assert!(lines.iter().any(|l| l.message.contains("attempt 1 of 3")));
    }
}
