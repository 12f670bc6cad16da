//! `GET /metrics`: the Prometheus scrape endpoint, served from memory. No
//! admin token (put it on `--admin-listen` to keep it off the internet):
//! Prometheus scrapes it, and it carries no connection ids or secrets
//! (labels are bounded sets, see `crate::metrics`).

use super::errors::ErrorCode;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::time::Instant;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Renders memory only: the database gauges are kept fresh by the
/// background refresher (`crate::metrics::refresh::spawn`), so a scrape
/// never takes a database connection.
#[utoipa::path(get, path = "/metrics", tag = "operator", responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let handle = crate::metrics::install();
    crate::metrics::refresh::from_memory(Some(&state.connections), Some(&state.settings));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// Put in a webhook response's extensions to count it as a duplicate
/// (`response.extensions_mut().insert(DuplicateWebhook)`).
#[derive(Debug, Clone, Copy)]
pub struct DuplicateWebhook;

/// Middleware for the webhook routes: counts every webhook by provider and
/// outcome and times its answer, whatever path the handler took. Layer it
/// with `.route_layer(axum::middleware::from_fn(metrics::webhook_metrics))`.
pub async fn webhook_metrics(request: Request, next: Next) -> Response {
    let provider = webhook_provider(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    let outcome = webhook_outcome(&response);
    crate::metrics::webhook_received(provider, outcome);
    crate::metrics::webhook_duration(provider, outcome, started.elapsed());
    response
}

fn webhook_provider(path: &str) -> &'static str {
    if path.starts_with("/webhooks/google") {
        "google"
    } else if path.starts_with("/webhooks/graph") {
        "microsoft"
    } else {
        "other"
    }
}

/// `accepted`, `duplicate`, or the rejection reason (see
/// `crate::metrics::webhook_received`), from the error code when the
/// handler set one and from the status otherwise.
fn webhook_outcome(response: &Response) -> &'static str {
    let status = response.status();
    if status.is_success() {
        return match response.extensions().get::<DuplicateWebhook>() {
            Some(_) => "duplicate",
            None => "accepted",
        };
    }
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    match (code, status) {
        (Some("payload_too_large"), _) | (_, StatusCode::PAYLOAD_TOO_LARGE) => "too_large",
        (Some("unknown_channel"), _) => "unknown_channel",
        (Some("webhooks_disabled"), _) => "disabled",
        (Some("provider_not_allowlisted" | "connection_not_allowlisted"), _) => "not_allowlisted",
        (Some("busy"), _) => "busy",
        (Some("quarantined"), _) => "quarantined",
        (Some("not_found"), _) => "unknown_connection",
        (_, StatusCode::BAD_REQUEST) => "bad_request",
        (_, StatusCode::UNAUTHORIZED) => "unauthorized",
        (_, StatusCode::FORBIDDEN) => "forbidden",
        (_, StatusCode::NOT_FOUND) => "unknown_channel",
        (_, StatusCode::SERVICE_UNAVAILABLE) => "unavailable",
        _ => "rejected",
    }
}

/// `/metrics` in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics))]
pub(super) struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::errors::ApiError;

    fn outcome_of(response: Response) -> &'static str {
        webhook_outcome(&response)
    }

    #[test]
    fn webhook_outcomes_come_from_codes_and_statuses() {
        assert_eq!(outcome_of(StatusCode::OK.into_response()), "accepted");
        let mut dup = StatusCode::OK.into_response();
        dup.extensions_mut().insert(DuplicateWebhook);
        assert_eq!(outcome_of(dup), "duplicate");
        let err = |status, code| ApiError::new(status, code, "m").into_response();
        assert_eq!(
            outcome_of(err(StatusCode::UNAUTHORIZED, "bad_channel_token")),
            "unauthorized"
        );
        assert_eq!(
            outcome_of(err(StatusCode::FORBIDDEN, "webhooks_disabled")),
            "disabled"
        );
        assert_eq!(
            outcome_of(err(StatusCode::NOT_FOUND, "unknown_channel")),
            "unknown_channel"
        );
        assert_eq!(
            outcome_of(ApiError::unavailable("db down").into_response()),
            "unavailable"
        );
        assert_eq!(
            outcome_of(StatusCode::PAYLOAD_TOO_LARGE.into_response()),
            "too_large"
        );
        assert_eq!(webhook_provider("/webhooks/graph/lifecycle"), "microsoft");
    }
}
