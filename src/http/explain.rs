//! `GET /v1/providers/{id}/explain?from=&to=`: why a platform provider is
//! busy (or not) in a window — each busy interval with its source and the
//! rule that made it, each event the rules ignored with the reason, and how
//! fresh each calendar's data is. Admin scope, like the rest of `/v1`.

use super::errors::ApiError;
use super::AppState;
use crate::store::availability::freshness;
use crate::store::explain::{busy_explained, ignored_in};
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(explain))]
pub(super) struct ApiDoc;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/providers/{id}/explain", get(explain))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::admin::require_admin,
        ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WindowQuery {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[utoipa::path(get, path = "/v1/providers/{id}/explain", tag = "platform", params(("id" = String, Path, description = "The platform provider id"), WindowQuery), security(("bearer" = [])), responses((status = 200, description = "Busy intervals with their source and rule, ignored events with the reason, and each calendar's freshness", body = Object), (status = 400, description = "`bad_request`: a bad or too long window", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn explain(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let w = super::platform::window(q.from, q.to)?;
    Ok(Json(answer(&state, &id, w).await?))
}

/// The explain document (also what the troubleshooter page renders).
pub async fn answer(
    state: &AppState,
    platform_provider_id: &str,
    w: crate::core::interval::Interval,
) -> Result<Value, ApiError> {
    let busy = busy_explained(&state.store, platform_provider_id, w).await?;
    let ignored = ignored_in(&state.store, platform_provider_id, w).await?;
    let mut calendars = Vec::new();
    for f in freshness(&state.store, platform_provider_id).await? {
        let status = crate::store::status::load(&state.store, Some(f.connection_id)).await?;
        for c in status.into_iter().flat_map(|s| s.calendars) {
            calendars.push(json!({
                "connection_id": f.connection_id,
                "provider": f.provider,
                "connection_status": f.status,
                "calendar_id": c.calendar_id,
                "last_successful_sync": c.last_success_at,
                "status": c.status,
                "failures": c.failures,
                "retry_at": c.retry_at,
                "last_error": c.last_error,
            }));
        }
    }
    Ok(json!({
        "platform_provider_id": platform_provider_id,
        "from": w.start(),
        "to": w.end(),
        "busy": busy,
        "ignored": ignored,
        "freshness": calendars,
    }))
}
