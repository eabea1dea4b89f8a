//! The OpenAPI document (`GET /api/openapi.json`): the operations it lists, the query
//! parameter sets of the lists, and [`ServerWideResponses`], which documents on every
//! operation what the layers around the handlers can answer (the `Host` check, the auth
//! middleware, the body limit and the JSON extractor, the offset bound, the request timeout, a
//! panic or a database error). Handlers document only their own answers; the response bodies
//! are the envelope types of the `wire` crate (`Data<T>`, `Page<T>`, `ErrorResponse`) that the
//! handlers return, so the document cannot drift from the bytes.
use axum::Json;
use utoipa::{
    IntoParams, Modify, OpenApi, ToSchema,
    openapi::{
        Ref, RefOr,
        header::HeaderBuilder,
        path::{Operation, PathItem},
        response::{Response, ResponseBuilder},
        schema::{ObjectBuilder, Type},
        security::SecurityRequirement,
    },
};
use wire::ErrorResponse;

use super::{auth, auth::SecurityAddon, jobs, metrics, secrets, stream, workflows};
use domain::auth::{always_open, rule_for};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard API",
        description = "Jobs and workflows orchestrator. Wire format of AppHub's catalog API: camelCase JSON; successes as {\"data\": ...}, lists as {\"data\": [...], \"meta\": {limit, offset, total, nextCursor}}; errors as {\"error\": {code, message, details: [{path, message}]}}. Every operation documents every status it can answer, including those of the layers in front of it (401/403 only when operator tokens are configured)."
    ),
    paths(
        jobs::list_jobs,
        jobs::create_job,
        jobs::get_job,
        jobs::patch_job,
        jobs::delete_job,
        jobs::job_versions,
        jobs::run_job,
        jobs::job_runs,
        jobs::all_runs,
        jobs::get_run,
        jobs::patch_run,
        jobs::retry_run,
        workflows::list_workflows,
        workflows::create_workflow,
        workflows::get_workflow,
        workflows::patch_workflow,
        workflows::delete_workflow,
        workflows::workflow_versions,
        workflows::run_workflow,
        workflows::workflow_runs,
        workflows::all_workflow_runs,
        workflows::get_workflow_run,
        workflows::workflow_run_steps,
        workflows::patch_workflow_run,
        workflows::retry_workflow_run,
        workflows::rerun_workflow_run,
        workflows::list_services,
        workflows::create_service,
        workflows::get_service,
        workflows::patch_service,
        secrets::list_secrets,
        secrets::put_secret,
        secrets::get_secret,
        secrets::delete_secret,
        stream::events,
        stream::logs,
        super::health,
        super::ready,
        openapi_json,
        auth::list_audit_logs,
        metrics::api_metrics,
        metrics::prometheus,
    ),
    components(schemas(
        wire::ErrorResponse,
        wire::ErrorBody,
        wire::ErrorDetail,
        wire::ListMeta,
        wire::EventMessage,
        stream::SseEvent,
        wire::RunStatus,
        wire::JobType,
        wire::Trigger,
        wire::RetryStrategy,
        wire::Jitter,
        wire::WorkflowRunStatus,
        wire::StepRunStatus,
        wire::StepAttempt,
        wire::ServiceStatus,
    )),
    modifiers(&SecurityAddon, &ServerWideResponses)
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`: this API's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

// ---- Query parameters (what `jobs::paging`, `jobs::run_filter` and the other parsers read;
// any other query parameter of a list is a 400) ----

/// `limit`, `offset`, `cursor`: the paging of every list (`jobs::paging`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Paging {
    /// Rows per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
    /// Rows to skip, at most `--max-list-offset` (10000 by default; deeper pages by `cursor`).
    offset: Option<u64>,
    /// `meta.nextCursor` of the previous page (stable while new rows arrive).
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<String>,
}

/// `limit`, `offset`, `cursor` of the version lists, whose cursor is a version number.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct VersionPaging {
    /// Rows per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
    /// Rows to skip, at most `--max-list-offset` (10000 by default).
    offset: Option<u64>,
    /// `meta.nextCursor` of the previous page: the versions below this one.
    #[param(minimum = 1, maximum = 2147483647)]
    cursor: Option<i32>,
}

/// `limit` and `offset` only (lists that do not page by cursor).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct OffsetPaging {
    /// Rows per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u64>,
    /// Rows to skip, at most `--max-list-offset` (10000 by default).
    offset: Option<u64>,
}

/// `q`: text search.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Search {
    /// Substring searched in the rows' names and identifiers.
    q: Option<String>,
}

/// `status` of job run lists.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunStatusFilter {
    /// Comma-separated statuses: pending, running, succeeded, failed, canceled, expired.
    status: Option<String>,
}

/// `status` of workflow run lists.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WorkflowRunStatusFilter {
    /// Comma-separated statuses: pending, running, succeeded, failed, canceled.
    status: Option<String>,
}

/// `status` of the service list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ServiceStatusFilter {
    /// Comma-separated statuses: healthy, degraded, unhealthy, unknown.
    status: Option<String>,
}

// ---- Responses of the layers around the handlers ----

/// A shared response in `components.responses`: its name, status and description.
struct Shared {
    name: &'static str,
    status: &'static str,
    description: &'static str,
    retry_after: bool,
}

const BAD_REQUEST: Shared = Shared {
    name: "BadRequest",
    status: "400",
    description: "invalid_request (a malformed or non-object body, an unknown or malformed query parameter, an offset past --max-list-offset, a malformed path parameter), invalid_parameters or invalid_definition: `details` lists every problem with a JSON pointer",
    retry_after: false,
};
const UNAUTHORIZED: Shared = Shared {
    name: "Unauthorized",
    status: "401",
    description: "missing_token or invalid_token (with WWW-Authenticate: Bearer); only when operator tokens are configured",
    retry_after: false,
};
const FORBIDDEN: Shared = Shared {
    name: "Forbidden",
    status: "403",
    description: "forbidden: the token lacks the scope this request needs (named in the message), or a cookie-carried write came from another site",
    retry_after: false,
};
const NOT_FOUND: Shared = Shared {
    name: "NotFound",
    status: "404",
    description: "not_found: nothing is stored under this path's slug, id or key (or the path names no route)",
    retry_after: false,
};
const PAYLOAD_TOO_LARGE: Shared = Shared {
    name: "PayloadTooLarge",
    status: "413",
    description: "payload_too_large: the body is larger than --max-body-bytes (1 MiB by default)",
    retry_after: false,
};
const UNSUPPORTED_MEDIA_TYPE: Shared = Shared {
    name: "UnsupportedMediaType",
    status: "415",
    description: "unsupported_media_type: a non-empty body must be JSON with Content-Type: application/json",
    retry_after: false,
};
const MISDIRECTED: Shared = Shared {
    name: "MisdirectedRequest",
    status: "421",
    description: "host_not_allowed: the Host header names a host this server does not answer to (see --allowed-hosts)",
    retry_after: false,
};
const INTERNAL: Shared = Shared {
    name: "InternalError",
    status: "500",
    description: "internal_error: the database could not be reached, or a handler failed; the cause is in the server log",
    retry_after: false,
};
const UNAVAILABLE: Shared = Shared {
    name: "Unavailable",
    status: "503",
    description: "timeout: the response did not start within --request-timeout-ms (a write may or may not have happened); Retry-After says when to try again",
    retry_after: true,
};

const SHARED: &[Shared] = &[
    BAD_REQUEST,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    MISDIRECTED,
    INTERNAL,
    UNAVAILABLE,
];

/// The response a page (a path outside `/api`) gives a read without a valid token when
/// tokens are configured: a redirect to the sign-in page.
const SIGN_IN: &str = "SignIn";

fn error_response(shared: &Shared) -> Response {
    let mut builder = ResponseBuilder::new()
        .description(shared.description)
        .content(
            "application/json",
            utoipa::openapi::content::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorResponse::name())))
                .build(),
        );
    let integer = || ObjectBuilder::new().schema_type(Type::Integer).build();
    let string = || ObjectBuilder::new().schema_type(Type::String).build();
    if shared.retry_after {
        builder = builder.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(integer())
                .description(Some("seconds to wait before trying again"))
                .build(),
        );
    }
    if shared.status == "401" {
        builder = builder.header(
            "WWW-Authenticate",
            HeaderBuilder::new().schema(string()).build(),
        );
    }
    builder.build()
}

/// Documents on every operation the answers of the layers in front of its handler, so no
/// handler can forget them:
/// - 421 (the `Host` check), 500 (a database error or a panic), 503 `timeout` (the request
///   timeout) everywhere;
/// - under `/api`: 400 (the offset bound applies to any request, and path and query
///   parameters are parsed by every handler that takes them);
/// - 401 where the auth middleware can refuse (every operation but `/api/health` and
///   `/api/ready`: writes need their scope and reads any valid token when tokens are
///   configured); a page answers a read without a valid token with a 303 to `/sign-in`
///   instead; 403 where a scope is needed (the rule table) and on every write (the
///   cross-site check of cookie-carried writes);
/// - 404 on operations with path parameters (nothing under that name, or an empty segment
///   that names no route);
/// - 413 and 415 on operations with a request body (the body limit, the JSON extractor).
///
/// Reads that need a token when tokens are configured are marked with the bearer scheme
/// (the writes' scopes are set by [`SecurityAddon`]).
pub struct ServerWideResponses;

impl Modify for ServerWideResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for shared in SHARED {
            components
                .responses
                .insert(shared.name.to_string(), RefOr::T(error_response(shared)));
        }
        components.responses.insert(
            SIGN_IN.to_string(),
            RefOr::T(
                ResponseBuilder::new()
                    .description("the pages' answer to a read without a valid token when tokens are configured: Location: /sign-in?next=...")
                    .header(
                        "Location",
                        HeaderBuilder::new()
                            .schema(ObjectBuilder::new().schema_type(Type::String).build())
                            .build(),
                    )
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations_mut(item) {
                add_server_wide(path, method, op);
            }
        }
    }
}

fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", item.get.as_mut()),
        ("PUT", item.put.as_mut()),
        ("POST", item.post.as_mut()),
        ("DELETE", item.delete.as_mut()),
        ("PATCH", item.patch.as_mut()),
        ("HEAD", item.head.as_mut()),
        ("OPTIONS", item.options.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

fn add_server_wide(path: &str, method: &str, op: &mut Operation) {
    let api = path.starts_with("/api/");
    let safe = matches!(method, "GET" | "HEAD" | "OPTIONS");
    let has_body = op.request_body.is_some();
    let has_path_params = path.contains('{');
    let mut add = |status: &str, name: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    if api {
        add(BAD_REQUEST.status, BAD_REQUEST.name);
    }
    if !always_open(path) {
        let rule = rule_for(method, path);
        if api {
            add(UNAUTHORIZED.status, UNAUTHORIZED.name);
        } else {
            add("303", SIGN_IN);
        }
        if rule.is_some() || !safe {
            add(FORBIDDEN.status, FORBIDDEN.name);
        }
    }
    if has_path_params {
        add(NOT_FOUND.status, NOT_FOUND.name);
    }
    if has_body {
        add(PAYLOAD_TOO_LARGE.status, PAYLOAD_TOO_LARGE.name);
        add(UNSUPPORTED_MEDIA_TYPE.status, UNSUPPORTED_MEDIA_TYPE.name);
    }
    add(MISDIRECTED.status, MISDIRECTED.name);
    add(INTERNAL.status, INTERNAL.name);
    add(UNAVAILABLE.status, UNAVAILABLE.name);
    // Reads need any valid token when tokens are configured (unless --public-reads); the
    // writes' scopes were set by `SecurityAddon`.
    if op.security.is_none() && !always_open(path) {
        op.security = Some(vec![SecurityRequirement::new::<_, _, &str>("bearer", [])]);
    }
}
