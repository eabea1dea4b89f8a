//! Engine tests: retries, timeouts, cancellation, crash safety, shutdown, cross-process events.
