//! Liveness and readiness.
//!
//! `/healthz` answers as long as the process can serve HTTP. `/readyz` also
//! needs the database: load balancers stop sending webhooks to a node that
//! could only answer 503 anyway.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::time::Duration;

const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process serves HTTP", body = Object, example = json!({"status": "ok"}))))]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "Ready: the database answers", body = Object, example = json!({"ready": true, "checks": {"database": true}})), (status = 503, description = "Not ready", body = Object)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = tokio::time::timeout(READY_CHECK_TIMEOUT, state.store.ping())
        .await
        .unwrap_or(false);
    // A cluster node handing its slices over takes no new traffic.
    let draining = state
        .connections
        .cluster()
        .is_some_and(|link| link.is_draining());
    let status = if database && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": database && !draining,
            "checks": { "database": database, "draining": draining }
        })),
    )
}

/// `/healthz` and `/readyz` in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(healthz, readyz))]
pub(super) struct ApiDoc;
