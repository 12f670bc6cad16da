//! Provider-neutral error raised by the simulated APIs' core logic. The HTTP
//! layer renders it in the provider's own shape (Google `errors[]` or Graph
//! `error.code`); the Rust control API returns it as is.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("{status} {reason}: {message}")]
pub struct ApiError {
    pub status: u16,
    /// Google `reason` or Graph `code`.
    pub reason: String,
    pub message: String,
    /// Google `domain` (ignored for Graph).
    pub domain: String,
    /// Google `location` of the offending parameter/header, if any.
    pub location: Option<Box<(String, String)>>,
    /// Seconds for a `Retry-After` header, if any (fractional allowed).
    pub retry_after: Option<f64>,
}

impl ApiError {
    pub fn new(status: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.to_string(),
            message: message.into(),
            domain: "global".to_string(),
            location: None,
            retry_after: None,
        }
    }

    pub fn domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_string();
        self
    }

    pub fn at(mut self, location_type: &str, location: &str) -> Self {
        self.location = Some(Box::new((location_type.to_string(), location.to_string())));
        self
    }

    pub fn retry_after(mut self, secs: Option<f64>) -> Self {
        self.retry_after = secs;
        self
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// What an error body needs from the simulator that renders it: its own
/// request-id counter and its clock. The gate scopes each request in its
/// simulator's context, so two simulators in one process (seeds of the
/// deterministic simulation run side by side) never share a counter and
/// error bodies carry the simulator's (possibly virtual) time.
#[derive(Clone, Debug)]
pub struct ResponseContext {
    pub ids: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub now: chrono::DateTime<chrono::Utc>,
}

tokio::task_local! {
    static RESPONSE: ResponseContext;
}

/// Runs `f` with `ctx` as the context error bodies are rendered in.
pub async fn scoped<F: std::future::Future>(ctx: ResponseContext, f: F) -> F::Output {
    RESPONSE.scope(ctx, f).await
}

/// Request/trace ids in error bodies: a counter formatted as a UUID, so
/// runs stay reproducible (no OS randomness in responses). Per simulator
/// inside a request; process-wide outside one.
pub fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = RESPONSE
        .try_with(|c| c.ids.fetch_add(1, Ordering::Relaxed))
        .unwrap_or_else(|_| COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// The time error bodies report: the simulator's clock inside a request.
pub fn response_now() -> chrono::DateTime<chrono::Utc> {
    RESPONSE
        .try_with(|c| c.now)
        .unwrap_or_else(|_| chrono::Utc::now())
}
