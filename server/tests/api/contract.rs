//! API contract tests: definitions, runs, validation, errors, paging, events, OpenAPI.
