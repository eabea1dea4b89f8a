//! The domain's value types: the states of runs and steps, what started a run, the kinds of
//! jobs, the retry policy. They are part of the API's contract too (the `wire` crate re-exports
//! them), and their spelling is also how the database stores them.
use serde::{Deserialize, Serialize};
#[cfg(feature = "openapi")]
use utoipa::ToSchema;

macro_rules! value_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:tt),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(ToSchema))]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The value as written on the wire and stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Parses the wire spelling (exact, lower-case).
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
            /// The accepted spellings, for error messages.
            pub fn expected() -> String {
                [$($text),+].join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

value_enum!(
    /// What kind of job a definition describes.
    JobType { Batch = "batch", ServiceTriggered = "service-triggered", Manual = "manual" }
);
value_enum!(
    /// Life-cycle state of a job run.
    RunStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Canceled = "canceled",
        Expired = "expired",
    }
);
value_enum!(
    /// What started a run.
    Trigger { Manual = "manual", Workflow = "workflow", Schedule = "schedule", Event = "event" }
);
value_enum!(
    /// How the delay between attempts grows.
    RetryStrategy { None = "none", Fixed = "fixed", Exponential = "exponential" }
);
value_enum!(
    /// Randomisation applied to a retry delay.
    Jitter { None = "none", Full = "full", Equal = "equal" }
);

impl RunStatus {
    /// A run in a terminal state never changes again (except by a retry, which makes a new run).
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

/// Retry policy of a job definition (every field present on the wire).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// 1..10; 1 means no retry.
    pub max_attempts: u32,
    pub strategy: RetryStrategy,
    pub initial_delay_ms: u64,
    pub max_delay_ms: u64,
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            strategy: RetryStrategy::None,
            initial_delay_ms: 1000,
            max_delay_ms: 60_000,
            jitter: Jitter::None,
        }
    }
}

value_enum!(
    /// Health of a registered service, kept current by polling its `healthPath`.
    ServiceStatus {
        Healthy = "healthy",
        Degraded = "degraded",
        Unhealthy = "unhealthy",
        Unknown = "unknown",
    }
);

value_enum!(
    /// Life-cycle state of a workflow run.
    WorkflowRunStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Canceled = "canceled",
    }
);

impl WorkflowRunStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            WorkflowRunStatus::Pending | WorkflowRunStatus::Running
        )
    }
}

value_enum!(
    /// Life-cycle state of one step of a workflow run.
    StepRunStatus {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Skipped = "skipped",
        Canceled = "canceled",
    }
);

impl StepRunStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, StepRunStatus::Pending | StepRunStatus::Running)
    }
}
