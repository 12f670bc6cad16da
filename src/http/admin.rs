//! The admin API: everything that is not a provider webhook or a health
//! check needs `Authorization: Bearer <token>` with the `admin` scope
//! (`drills` for `/admin/drill/*`; see [`super::auth`]). Without the shared
//! token and without any scoped token the admin API is closed (403).

use super::errors::ApiError;
use super::AppState;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/connections", get(list).post(create))
        .route("/admin/connections/{id}", get(show))
        .route(
            "/admin/connections/{id}/credentials",
            axum::routing::put(credentials),
        )
        .route("/admin/connections/{id}/{action}", post(act))
        .route("/admin/bookings/{id}/retry", post(retry_booking))
        .route("/admin/actors", get(actors))
        .route("/admin/status", get(status))
        .route("/admin/drill/kill", post(drill_kill))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Every admin route needs the path's scope (see [`super::auth`]).
pub(super) use super::auth::require_scope as require_admin;

fn parse_id(id: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "platform_provider_id": "stylist-7", "provider": "google", "account": "ana@example.com",
    "calendars": ["primary"], "destination_calendar": "primary"
}))]
pub struct CreateConnection {
    pub id: Option<Uuid>,
    pub platform_provider_id: String,
    pub provider: String,
    pub account: String,
    #[serde(default)]
    pub calendars: Vec<String>,
    pub destination_calendar: Option<String>,
    /// Selected calendars shared as free/busy only (synced through the
    /// provider's free/busy query instead of event by event).
    #[serde(default)]
    pub free_busy_calendars: Vec<String>,
}

impl CreateConnection {
    /// Parses the request into a connection id and a command.
    pub fn into_command(self) -> Result<(ConnectionId, ConnectionCommand), ApiError> {
        let bad = |e: crate::core::ids::InvalidId| ApiError::bad_request(e.to_string());
        let calendars = self
            .calendars
            .into_iter()
            .map(CalendarId::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let command = ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse(self.platform_provider_id)
                .map_err(bad)?,
            provider: CalendarProvider::parse(&self.provider).map_err(bad)?,
            account: ExternalAccount::parse(self.account).map_err(bad)?,
            calendars,
            destination_calendar: self
                .destination_calendar
                .map(CalendarId::parse)
                .transpose()
                .map_err(bad)?,
        };
        let id = self
            .id
            .map(ConnectionId::from_uuid)
            .unwrap_or_else(ConnectionId::new_random);
        Ok((id, command))
    }
}

#[utoipa::path(post, path = "/admin/connections", tag = "admin", request_body = CreateConnection, security(("bearer" = [])), responses((status = 201, description = "Created (paused until credentials are stored)", body = Object), crate::http::openapi::AuthErrors))]
async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateConnection>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(ApiError::from)?;
    let free_busy = body
        .free_busy_calendars
        .iter()
        .map(|c| CalendarId::parse(c.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (id, command) = body.into_command()?;
    let mut ack = state
        .connections
        .command(id, command, Uuid::new_v4())
        .await?;
    if !free_busy.is_empty() {
        ack = state
            .connections
            .command(
                id,
                ConnectionCommand::SetFreeBusyOnly {
                    calendars: free_busy,
                },
                Uuid::new_v4(),
            )
            .await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "connection_id": id, "version": ack.version })),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"client_id": "app-123", "client_secret": "s3cret", "refresh_token": "1//refresh"}))]
struct CredentialsBody {
    client_id: String,
    client_secret: String,
    refresh_token: String,
}

/// Stores a connection's OAuth grant. The body never reaches a log.
#[utoipa::path(put, path = "/admin/connections/{id}/credentials", tag = "admin", params(("id" = String, Path, description = "The connection id (UUID)")), request_body = CredentialsBody, security(("bearer" = [])), responses((status = 200, description = "Sealed and stored", body = Object), crate::http::openapi::AuthErrors))]
async fn credentials(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<CredentialsBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let Json(body) = body.map_err(ApiError::from)?;
    for (name, value) in [
        ("client_id", &body.client_id),
        ("client_secret", &body.client_secret),
        ("refresh_token", &body.refresh_token),
    ] {
        if value.is_empty() || value.len() > 4096 || value.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "{name} must be 1..=4096 printable bytes"
            )));
        }
    }
    let session = crate::providers::AuthSession {
        client_id: body.client_id,
        client_secret: body.client_secret,
        refresh_token: body.refresh_token,
        access_token: None,
        access_expires_at: None,
        refresh_token_rotated: false,
        access_token_refreshed: false,
    };
    let ack = state.connections.save_credentials(id, &session).await?;
    Ok(Json(json!({ "connection_id": id, "version": ack.version })))
}

/// `POST /admin/bookings/{id}/retry`: a failed booking is written again.
#[utoipa::path(post, path = "/admin/bookings/{id}/retry", tag = "admin", params(("id" = String, Path, description = "The booking id")), security(("bearer" = [])), responses((status = 200, description = "Retried on every connection that has it", body = Object), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn retry_booking(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let retried = super::platform::retry_booking(&state, &id).await?;
    let connections: Vec<Value> = retried
        .iter()
        .map(|(c, appended)| json!({"connection_id": c, "retried": *appended > 0}))
        .collect();
    Ok(Json(
        json!({ "booking_id": id, "connections": connections }),
    ))
}

#[utoipa::path(post, path = "/admin/connections/{id}/{action}", tag = "admin", params(("id" = String, Path, description = "The connection id (UUID)"), ("action" = String, Path, description = "pause, resume, remove or unquarantine")), security(("bearer" = [])), responses((status = 200, description = "Done", body = Object), (status = 404, description = "`not_found`: no such action", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let command = match action.as_str() {
        "pause" => ConnectionCommand::Pause {
            reason: "operator".into(),
        },
        "resume" => ConnectionCommand::Resume,
        "remove" => ConnectionCommand::Remove {
            reason: "operator".into(),
        },
        "unquarantine" => {
            state
                .connections
                .lift_quarantine(id)
                .await
                .map_err(ApiError::unavailable)?;
            return Ok(Json(json!({ "connection_id": id, "quarantined": false })));
        }
        other => return Err(ApiError::not_found(format!("no action {other:?}"))),
    };
    let ack = state
        .connections
        .command(id, command, Uuid::new_v4())
        .await?;
    Ok(Json(
        json!({ "connection_id": id, "version": ack.version, "appended": ack.appended }),
    ))
}

#[utoipa::path(get, path = "/admin/connections", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Every connection", body = [Object]), crate::http::openapi::AuthErrors))]
async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(
        crate::store::read_models::connections(&state.store, None).await?,
    )))
}

#[utoipa::path(get, path = "/admin/connections/{id}", tag = "admin", params(("id" = String, Path, description = "The connection id (UUID)")), security(("bearer" = [])), responses((status = 200, description = "One connection and its actor", body = Object), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let mut rows = crate::store::read_models::connections(&state.store, Some(id)).await?;
    let mut row = rows
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("no connection {id}")))?;
    row["actor"] = json!({
        "active": state.connections.is_active(id),
        "incarnation": state.connections.incarnation(id),
    });
    Ok(Json(row))
}

#[utoipa::path(get, path = "/admin/actors", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "This node's actor counts", body = Object), crate::http::openapi::AuthErrors))]
async fn actors(State(state): State<AppState>) -> Json<Value> {
    Json(json!(state.connections.stats()))
}

/// What `calsync status --json` prints, plus this node's actor view.
#[utoipa::path(get, path = "/admin/status", tag = "admin", security(("bearer" = [])), responses((status = 200, description = "Per-connection health and this node's actor view", body = Object), crate::http::openapi::AuthErrors))]
async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = crate::store::status::load(&state.store, None).await?;
    let connections: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let id = ConnectionId::from_uuid(row.connection_id);
            let mut value = json!(row);
            value["actor"] = json!({
                "active": state.connections.is_active(id),
                "incarnation": state.connections.incarnation(id),
                "restarts": state.connections.restarts_of(id),
            });
            value
        })
        .collect();
    Ok(Json(json!({
        "generated_at": chrono::Utc::now(),
        "actors": state.connections.stats(),
        "connections": connections,
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"random": 2, "mode": "kill"}))]
struct KillRequest {
    connection: Option<String>,
    random: Option<usize>,
    /// "kill" (ractor kill, default) or "panic" (panic inside the handler).
    #[serde(default)]
    mode: Option<String>,
}

#[utoipa::path(post, path = "/admin/drill/kill", tag = "drills", request_body = KillRequest, security(("bearer" = [])), responses((status = 200, description = "Killed actors", body = Object), (status = 403, description = "`drills_disabled`, or the token lacks the `drills` scope", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn drill_kill(
    State(state): State<AppState>,
    body: Result<Json<KillRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    if !state.drills_enabled {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "drills_disabled",
            "drill hooks are off: start serve with --enable-drills (CALSYNC_DRILLS_ENABLED=true)",
        ));
    }
    let Json(req) = body.map_err(ApiError::from)?;
    let panic = match req.mode.as_deref() {
        None | Some("kill") => false,
        Some("panic") => true,
        Some(other) => return Err(ApiError::bad_request(format!("unknown mode {other:?}"))),
    };
    let killed: Vec<ConnectionId> = match (req.connection, req.random) {
        (Some(id), None) => {
            let id = parse_id(&id)?;
            let hit = if panic {
                state.connections.panic(id)
            } else {
                state.connections.kill(id)
            };
            hit.then_some(id).into_iter().collect()
        }
        (None, Some(n)) => state.connections.kill_random(n),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"connection\" or \"random\"",
            ))
        }
    };
    Ok(Json(
        json!({ "killed": killed, "stats": state.connections.stats() }),
    ))
}

/// The admin API in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create,
        credentials,
        retry_booking,
        act,
        list,
        show,
        actors,
        status,
        drill_kill
    ),
    components(schemas(CreateConnection, CredentialsBody, KillRequest))
)]
pub(super) struct ApiDoc;
