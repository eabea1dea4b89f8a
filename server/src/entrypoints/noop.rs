//! `builtin:noop`: succeeds at once with its parameters as the result; the smallest possible job,
//! for smoke tests and wiring checks.
use super::{EntryPoint, JobResult, JobRunContext};

pub(super) struct Noop;

#[async_trait::async_trait]
impl EntryPoint for Noop {
    fn name(&self) -> &'static str {
        super::NOOP
    }

    /// Echoes whatever it gets, objects or not.
    fn problems(&self, _params: &serde_json::Value) -> Vec<super::Problem> {
        Vec::new()
    }

    async fn execute(&self, ctx: JobRunContext) -> JobResult {
        Ok(ctx.parameters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entrypoints::test_ctx;
    use serde_json::json;

    #[tokio::test]
    async fn echoes_parameters() {
        let dir = tempfile::TempDir::new().expect("tempdir");
        let params = json!({"a": 1, "b": ["x", null]});
        let (ctx, _rx) = test_ctx(params.clone(), dir.path());
        assert_eq!(Noop.execute(ctx).await, Ok(params));
    }
}
