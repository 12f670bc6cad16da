//! Admin routes for feature flags, allowlists and production mode, behind
//! the same bearer-token check as the rest of the admin API.
//!
//! Every change goes through [`SettingsHandle::apply`], so it is an event on
//! the `settings` stream (who, why, when) and reaches the other nodes by
//! their polling. The actor recorded is `admin-api:<token name>` for a
//! scoped token (the auth layer sets `X-Calsync-Actor` to it, whatever the
//! caller sent); with the shared token, which names no person, it is
//! `admin-api`, refined by the caller's optional `X-Calsync-Actor` header.

use super::admin::require_admin;
use super::errors::ApiError;
use super::AppState;
use crate::core::ids::{CalendarProvider, ConnectionId};
use crate::core::settings::{Actor, Flag, Refusal, SettingsCommand, SettingsState, Toggle};
use crate::settings::{Applied, SettingsError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// Request bodies are a flag and a sentence: anything bigger is a mistake.
const MAX_BODY: usize = 4096;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/flags", get(list_flags))
        .route("/admin/flags/{flag}", put(set_flag))
        .route("/admin/production", put(set_production))
        .route("/admin/allowlist", get(list_allowlist))
        .route(
            "/admin/allowlist/providers/{provider}",
            post(allow_provider).delete(unlist_provider),
        )
        .route(
            "/admin/allowlist/connections/{id}",
            post(allow_connection).delete(unlist_connection),
        )
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true, "reason": "nightly jobs back"}))]
struct SetToggle {
    enabled: bool,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "launch"}))]
struct Reason {
    #[serde(default)]
    reason: String,
}

/// Parses a JSON body; an empty body is `T::default()` when `T` allows it.
fn parse_body<T: DeserializeOwned>(body: &Bytes, empty: Option<T>) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {MAX_BODY} bytes"),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        if let Some(value) = empty {
            return Ok(value);
        }
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn actor(headers: &HeaderMap) -> Result<Actor, ApiError> {
    let who = headers
        .get("x-calsync-actor")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Calsync-Actor must be printable text"))
        })
        .transpose()?;
    let name = match who {
        Some(who) => format!("admin-api:{who}"),
        None => "admin-api".to_string(),
    };
    Actor::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn toggle_json(t: &Toggle) -> Value {
    match &t.last_change {
        Some(c) => json!({
            "enabled": t.enabled,
            "changed_by": c.by,
            "changed_at": c.at,
            "reason": c.reason,
        }),
        None => {
            json!({ "enabled": t.enabled, "changed_by": null, "changed_at": null, "reason": null })
        }
    }
}

/// The flags and production mode as the admin API and the CLI show them.
pub fn flags_json(s: &SettingsState) -> Value {
    let flags: serde_json::Map<String, Value> = Flag::ALL
        .iter()
        .map(|f| (f.as_str().to_string(), toggle_json(&s.flag(*f))))
        .collect();
    json!({
        "version": s.version,
        "flags": flags,
        "production_mode": toggle_json(&s.production_mode),
    })
}

/// The allowlists as the admin API and the CLI show them.
pub fn allowlist_json(s: &SettingsState) -> Value {
    let providers: Vec<Value> = s
        .providers
        .iter()
        .map(|(p, c)| json!({ "provider": p, "added_by": c.by, "added_at": c.at, "reason": c.reason }))
        .collect();
    let connections: Vec<Value> = s
        .connections
        .iter()
        .map(|(id, c)| {
            json!({ "connection_id": id, "added_by": c.by, "added_at": c.at, "reason": c.reason })
        })
        .collect();
    json!({
        "version": s.version,
        "production_mode": s.production(),
        "enforced": s.production(),
        "providers": providers,
        "connections": connections,
    })
}

async fn apply(
    state: &AppState,
    headers: &HeaderMap,
    command: SettingsCommand,
) -> Result<Applied, ApiError> {
    let actor = actor(headers)?;
    Ok(state.settings.apply(command, actor).await?)
}

#[utoipa::path(get, path = "/admin/flags", tag = "settings", security(("bearer" = [])), responses((status = 200, description = "Every flag and production mode", body = Object), crate::http::openapi::AuthErrors))]
async fn list_flags(State(state): State<AppState>) -> Json<Value> {
    Json(flags_json(&state.settings.current()))
}

#[utoipa::path(get, path = "/admin/allowlist", tag = "settings", security(("bearer" = [])), responses((status = 200, description = "The allowlists", body = Object), crate::http::openapi::AuthErrors))]
async fn list_allowlist(State(state): State<AppState>) -> Json<Value> {
    Json(allowlist_json(&state.settings.current()))
}

#[utoipa::path(put, path = "/admin/flags/{flag}", tag = "settings", params(("flag" = String, Path, description = "sync_enabled, jobs_enabled or webhooks_enabled")), request_body = SetToggle, security(("bearer" = [])), responses((status = 200, description = "Set", body = Object), (status = 404, description = "`not_found`: no such flag", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn set_flag(
    State(state): State<AppState>,
    Path(flag): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let flag = Flag::parse(&flag).map_err(|e| ApiError::not_found(e.to_string()))?;
    let SetToggle { enabled, reason } = parse_body(&body, None)?;
    let command = SettingsCommand::SetFlag {
        flag,
        enabled,
        reason,
    };
    let applied = apply(&state, &headers, command).await?;
    Ok(Json(json!({
        "flag": flag,
        "enabled": enabled,
        "version": applied.version,
        "appended": applied.appended,
    })))
}

#[utoipa::path(put, path = "/admin/production", tag = "settings", request_body = SetToggle, security(("bearer" = [])), responses((status = 200, description = "Set", body = Object), crate::http::openapi::AuthErrors))]
async fn set_production(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let SetToggle { enabled, reason } = parse_body(&body, None)?;
    let command = SettingsCommand::SetProductionMode { enabled, reason };
    let applied = apply(&state, &headers, command).await?;
    Ok(Json(json!({
        "production_mode": enabled,
        "version": applied.version,
        "appended": applied.appended,
    })))
}

fn parse_provider(p: &str) -> Result<CalendarProvider, ApiError> {
    CalendarProvider::parse(p).map_err(|e| ApiError::not_found(e.to_string()))
}

fn parse_connection(id: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn listing(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    command: impl FnOnce(String) -> SettingsCommand,
    subject: Value,
) -> Result<Json<Value>, ApiError> {
    let Reason { reason } = parse_body(body, Some(Reason::default()))?;
    let applied = apply(state, headers, command(reason)).await?;
    let mut out = subject;
    out["version"] = json!(applied.version);
    out["appended"] = json!(applied.appended);
    Ok(Json(out))
}

#[utoipa::path(post, path = "/admin/allowlist/providers/{provider}", tag = "settings", params(("provider" = String, Path, description = "google or microsoft")), request_body(content = Option<Reason>, description = "Optional: why"), security(("bearer" = [])), responses((status = 200, description = "Allowlisted", body = Object), crate::http::openapi::AuthErrors))]
async fn allow_provider(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let provider = parse_provider(&provider)?;
    let command = |reason| SettingsCommand::AllowProvider { provider, reason };
    let subject = json!({ "provider": provider, "allowlisted": true });
    listing(&state, &headers, &body, command, subject).await
}

#[utoipa::path(delete, path = "/admin/allowlist/providers/{provider}", tag = "settings", params(("provider" = String, Path, description = "google or microsoft")), request_body(content = Option<Reason>, description = "Optional: why"), security(("bearer" = [])), responses((status = 200, description = "Unlisted", body = Object), crate::http::openapi::AuthErrors))]
async fn unlist_provider(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let provider = parse_provider(&provider)?;
    let command = |reason| SettingsCommand::UnlistProvider { provider, reason };
    let subject = json!({ "provider": provider, "allowlisted": false });
    listing(&state, &headers, &body, command, subject).await
}

#[utoipa::path(post, path = "/admin/allowlist/connections/{id}", tag = "settings", params(("id" = String, Path, description = "The connection id (UUID)")), request_body(content = Option<Reason>, description = "Optional: why"), security(("bearer" = [])), responses((status = 200, description = "Allowlisted", body = Object), crate::http::openapi::AuthErrors))]
async fn allow_connection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let connection_id = parse_connection(&id)?;
    let command = |reason| SettingsCommand::AllowConnection {
        connection_id,
        reason,
    };
    let subject = json!({ "connection_id": connection_id, "allowlisted": true });
    listing(&state, &headers, &body, command, subject).await
}

#[utoipa::path(delete, path = "/admin/allowlist/connections/{id}", tag = "settings", params(("id" = String, Path, description = "The connection id (UUID)")), request_body(content = Option<Reason>, description = "Optional: why"), security(("bearer" = [])), responses((status = 200, description = "Unlisted", body = Object), crate::http::openapi::AuthErrors))]
async fn unlist_connection(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let connection_id = parse_connection(&id)?;
    let command = |reason| SettingsCommand::UnlistConnection {
        connection_id,
        reason,
    };
    let subject = json!({ "connection_id": connection_id, "allowlisted": false });
    listing(&state, &headers, &body, command, subject).await
}

impl From<SettingsError> for ApiError {
    fn from(err: SettingsError) -> Self {
        let message = err.to_string();
        match err {
            SettingsError::Rejected(_) => ApiError::bad_request(message),
            SettingsError::Store(e) => ApiError::from(e),
            SettingsError::Contended { .. } => ApiError::unavailable(message),
            SettingsError::Undecodable { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

/// A closed gate is a 403 naming the rule, so callers (and drills) can tell
/// a disabled entry point from a missing allowlist entry.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, refusal.code(), refusal.to_string())
    }
}

/// Flags and allowlists in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_flags,
        list_allowlist,
        set_flag,
        set_production,
        allow_provider,
        unlist_provider,
        allow_connection,
        unlist_connection
    ),
    components(schemas(SetToggle, Reason))
)]
pub(super) struct ApiDoc;
