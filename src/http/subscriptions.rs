//! `/v1/subscriptions` — push subscriptions of the platform feed.
//!
//! - `POST /v1/subscriptions` `{"url", "types"?: [..], "after"?: cursor | "now" | "start"}`
//!   → 201 with the subscription and its `secret`, shown this once;
//! - `GET /v1/subscriptions`, `GET /v1/subscriptions/{id}` — status,
//!   cursor, failures, dead-letter state (never the secret);
//! - `DELETE /v1/subscriptions/{id}` — deliveries stop, the secret is erased;
//! - `POST /v1/subscriptions/{id}/replay` `{"cursor"}` — restart deliveries
//!   from a cursor (how an operator un-parks a dead-lettered subscription).
//!
//! Behind the admin bearer token.

use super::errors::ApiError;
use super::AppState;
use crate::core::platform_events::PlatformEventType;
use crate::core::subscription::SubscriptionState;
use crate::feed::subscriptions::{self, SubscriptionError};
use crate::feed::FeedCursor;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Url(_) | SubscriptionError::Cursor(_) => {
                ApiError::bad_request(e.to_string())
            }
            SubscriptionError::NotFound(_) => ApiError::not_found(e.to_string()),
            SubscriptionError::Store(s) => s.into(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    url: String,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default)]
    after: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    cursor: String,
}

fn view(id: Uuid, s: &SubscriptionState) -> Value {
    json!({
        "id": id,
        "url": s.url,
        "types": s.types,
        "status": s.status(),
        "cursor": s.cursor,
        "delivered_events": s.delivered_events,
        "attempts": s.attempts,
        "failing_since": s.failing_since,
        "retry_at": s.retry_at,
        "last_error": s.last_error,
        "dead_since": s.dead_since,
    })
}

async fn cursor_of(state: &AppState, text: Option<&str>) -> Result<FeedCursor, ApiError> {
    match text {
        None | Some("now") => Ok(crate::feed::head(&state.store).await?),
        Some("start") => Ok(FeedCursor::START),
        Some(c) => FeedCursor::decode(c).map_err(|e| ApiError::bad_request(e.to_string())),
    }
}

#[utoipa::path(post, path = "/v1/subscriptions", tag = "platform", request_body = CreateBody, security(("bearer" = [])), responses((status = 201, description = "The subscription, with its signing secret (shown only here)", body = Object), (status = 400, description = "`bad_request`: a bad URL (https outside loopback), type or cursor", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body.map_err(ApiError::from)?;
    let types = b
        .types
        .iter()
        .map(|t| t.parse::<PlatformEventType>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let after = cursor_of(&state, b.after.as_deref()).await?;
    let created = subscriptions::create(&state.store, &b.url, types, after).await?;
    let mut body = view(created.id, &created.state);
    body["secret"] = json!(created.secret);
    Ok((StatusCode::CREATED, Json(body)))
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "platform", security(("bearer" = [])), responses((status = 200, description = "Every live subscription and its delivery state", body = Object), crate::http::openapi::AuthErrors))]
async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for id in subscriptions::ids(&state.store).await? {
        let s = subscriptions::load(&state.store, id).await?;
        if !s.deleted {
            out.push(view(id, &s));
        }
    }
    Ok(Json(json!({ "subscriptions": out })))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no subscription {id}")))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "platform", params(("id" = String, Path, description = "The subscription id")), security(("bearer" = [])), responses((status = 200, description = "The subscription and its delivery state", body = Object), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let s = subscriptions::load(&state.store, id).await?;
    Ok(Json(view(id, &s)))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "platform", params(("id" = String, Path, description = "The subscription id")), security(("bearer" = [])), responses((status = 204, description = "Deleted: no further deliveries"), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    subscriptions::delete(&state.store, parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/replay", tag = "platform", params(("id" = String, Path, description = "The subscription id")), request_body = ReplayBody, security(("bearer" = [])), responses((status = 200, description = "Deliveries restart from the cursor (also lifts a dead letter)", body = Object), (status = 400, description = "`bad_request`: a bad cursor", body = crate::http::openapi::ErrorBody), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ReplayBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let Json(b) = body.map_err(ApiError::from)?;
    let cursor = cursor_of(&state, Some(&b.cursor)).await?;
    let s = subscriptions::replay(&state.store, id, cursor).await?;
    Ok(Json(view(id, &s)))
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create, list, show, delete, replay),
    components(schemas(CreateBody, ReplayBody))
)]
pub(super) struct ApiDoc;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/subscriptions", post(create).get(list))
        .route("/v1/subscriptions/{id}", get(show).delete(delete))
        .route("/v1/subscriptions/{id}/replay", post(replay))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::admin::require_admin,
        ))
}
