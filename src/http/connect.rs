//! Connecting a calendar through the provider's consent screen: the OAuth
//! authorization-code flow with PKCE (the decisions are
//! [`crate::core::connect`]; this is the shell).
//!
//! - `POST /v1/connect/{google|microsoft}` (platform scope) stores a state
//!   (by its hash, single use, expiring) with the PKCE verifier and answers
//!   the provider's authorize URL;
//! - `GET /oauth/{provider}/callback` (no token: the state is the
//!   credential) consumes the state under `SELECT … FOR UPDATE`, exchanges
//!   the code with the verifier, reads the account and its calendars, seals
//!   the grant, creates the connection (its primary calendar blocks time
//!   and receives bookings) and redirects to the return URL with
//!   `connection_id=…` — or with `error=…`, nothing created;
//! - `GET` / `PUT /v1/connections/{id}/calendars`: the offered calendars
//!   with their `blocking` / `booking_target` flags, and the pick.

use super::auth::Caller;
use super::errors::ApiError;
use super::AppState;
use crate::core::connect::{
    self, CallbackParams, ConnectError, ConnectProvider, OfferedCalendar, Pick, Pkce, ProviderApp,
    StoredState,
};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use crate::providers::{AuthSession, ProviderEndpoints};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// How long a user has between `POST /v1/connect/…` and the callback.
pub const STATE_TTL_MINUTES: i64 = 15;

/// One provider app, configured once (`[connect.google]`,
/// `[connect.microsoft]`).
#[derive(Debug, Clone)]
pub struct ConnectApp {
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub authorize_url: String,
    pub token_url: String,
    /// The provider's API base (calendarList, `/me`), as the sync uses.
    pub api_base: String,
}

/// What the connect flow needs: calsync's public base URL (the redirect
/// URI is `{public_base}/oauth/{provider}/callback`) and the apps.
#[derive(Debug, Clone)]
pub struct ConnectSetup {
    pub public_base: String,
    pub google: Option<ConnectApp>,
    pub microsoft: Option<ConnectApp>,
    pub state_ttl: TimeDelta,
    pub http: reqwest::Client,
}

impl ConnectSetup {
    pub fn new(
        public_base: &str,
        google: Option<ConnectApp>,
        microsoft: Option<ConnectApp>,
    ) -> ConnectSetup {
        ConnectSetup {
            public_base: public_base.trim_end_matches('/').to_string(),
            google,
            microsoft,
            state_ttl: TimeDelta::minutes(STATE_TTL_MINUTES),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    /// From the `[connect]` section: `None` when no app is configured.
    pub fn from_config(
        file: &crate::config::FileConnect,
        public_url: Option<&str>,
        endpoints: &ProviderEndpoints,
    ) -> anyhow::Result<Option<ConnectSetup>> {
        if file.google.is_none() && file.microsoft.is_none() {
            return Ok(None);
        }
        let Some(base) = public_url else {
            anyhow::bail!("[connect] needs public_url (the redirect URI is {{public_url}}/oauth/{{provider}}/callback)");
        };
        let google = file.google.as_ref().map(|g| ConnectApp {
            client_id: g.client_id.clone(),
            client_secret: g.client_secret.clone(),
            scopes: g
                .scopes
                .clone()
                .unwrap_or_else(|| vec!["https://www.googleapis.com/auth/calendar".into()]),
            authorize_url: g
                .authorize_url
                .clone()
                .unwrap_or_else(|| "https://accounts.google.com/o/oauth2/v2/auth".into()),
            token_url: g
                .token_url
                .clone()
                .unwrap_or_else(|| endpoints.google_token.clone()),
            api_base: endpoints.google_api.clone(),
        });
        let microsoft = file.microsoft.as_ref().map(|m| {
            let tenant = m.tenant.clone().unwrap_or_else(|| "common".into());
            ConnectApp {
                client_id: m.client_id.clone(),
                client_secret: m.client_secret.clone(),
                scopes: m.scopes.clone().unwrap_or_else(|| {
                    vec![
                        "offline_access".into(),
                        "User.Read".into(),
                        "Calendars.ReadWrite".into(),
                    ]
                }),
                authorize_url: m.authorize_url.clone().unwrap_or_else(|| {
                    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize")
                }),
                token_url: m.token_url.clone().unwrap_or_else(|| {
                    format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
                }),
                api_base: endpoints.graph_api.clone(),
            }
        });
        Ok(Some(ConnectSetup::new(base, google, microsoft)))
    }

    fn app(&self, provider: ConnectProvider) -> Option<&ConnectApp> {
        match provider {
            ConnectProvider::Google => self.google.as_ref(),
            ConnectProvider::Microsoft => self.microsoft.as_ref(),
        }
    }

    fn redirect_uri(&self, provider: ConnectProvider) -> String {
        format!("{}/oauth/{}/callback", self.public_base, name(provider))
    }
}

fn name(provider: ConnectProvider) -> &'static str {
    match provider {
        ConnectProvider::Google => "google",
        ConnectProvider::Microsoft => "microsoft",
    }
}

pub fn routes(state: AppState) -> Router<AppState> {
    let platform = Router::new()
        .route("/v1/connect/{provider}", post(start))
        .route(
            "/v1/connections/{id}/calendars",
            get(calendars).put(pick_calendars),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::auth::require_scope,
        ));
    platform.route("/oauth/{provider}/callback", get(callback))
}

fn connect_error(e: ConnectError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string())
}

fn setup(state: &AppState) -> Result<&Arc<ConnectSetup>, ApiError> {
    state.connect.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "connect_not_configured",
            "no provider app is configured ([connect.google] / [connect.microsoft])",
        )
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"platform_provider_id": "stylist-7", "return_url": "https://platform.example/connected"}))]
struct StartConnect {
    /// The platform's provider the new connection belongs to.
    platform_provider_id: String,
    /// Where the user lands afterwards, with `connection_id=…` or
    /// `error=…&error_description=…` appended.
    return_url: String,
    /// The account the user must consent with (sent as `login_hint`);
    /// another account ends in `error=wrong_account`, nothing created.
    #[serde(default)]
    account: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"authorize_url": "https://accounts.google.com/o/oauth2/v2/auth?client_id=…", "expires_at": "2026-12-07T10:15:00Z"}))]
struct StartedConnect {
    /// Send the user here.
    authorize_url: String,
    /// The state is refused after this.
    expires_at: DateTime<Utc>,
}

/// Starts a connect flow: the provider's authorize URL for the user.
#[utoipa::path(post, path = "/v1/connect/{provider}", tag = "connect", params(("provider" = String, Path, description = "google or microsoft")), request_body = StartConnect, security(("bearer" = [])), responses((status = 200, description = "The authorize URL and when its state expires", body = StartedConnect), (status = 404, description = "`connect_not_configured`: no app for this provider", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn start(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    caller: Option<Extension<Caller>>,
    body: Result<Json<StartConnect>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<StartedConnect>, ApiError> {
    let setup = setup(&state)?;
    let provider = ConnectProvider::parse(&provider).map_err(connect_error)?;
    let Json(body) = body.map_err(ApiError::from)?;
    let app = setup.app(provider).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "connect_not_configured",
            format!("no [connect.{}] app is configured", name(provider)),
        )
    })?;
    let pp = PlatformProviderId::parse(body.platform_provider_id)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let return_url = connect::validate_return_url(&body.return_url).map_err(connect_error)?;
    let pkce = Pkce::from_random(rand::random());
    let state_value = connect::state_from(rand::random());
    let url = connect::authorize_url_for(
        provider,
        &ProviderApp {
            client_id: app.client_id.clone(),
            authorize_endpoint: app.authorize_url.clone(),
            scopes: app.scopes.clone(),
        },
        &setup.redirect_uri(provider),
        &state_value,
        &pkce,
        body.account.as_deref(),
    )
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let expires_at = Utc::now() + setup.state_ttl;
    let created_by = caller.map(|c| c.0.name).unwrap_or_default();
    let client = state.store.pool().get().await.map_err(store_error)?;
    client
        .execute(
            "INSERT INTO oauth_states (state_hash, provider, platform_provider_id, return_url, \
             pkce_verifier, created_by, expires_at, expected_account) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &crate::core::tokens::hash(&state_value),
                &name(provider),
                &pp.as_str(),
                &return_url.as_str(),
                &pkce.verifier,
                &created_by,
                &expires_at,
                &body.account,
            ],
        )
        .await
        .map_err(store_error)?;
    Ok(Json(StartedConnect {
        authorize_url: url.to_string(),
        expires_at,
    }))
}

fn store_error(e: impl Into<crate::store::StoreError>) -> ApiError {
    ApiError::from(e.into())
}

/// A state row as the callback reads it.
struct StateRow {
    provider: String,
    platform_provider_id: String,
    return_url: String,
    verifier: String,
    expected_account: Option<String>,
    stored: StoredState,
}

/// The provider sends the user back here.
#[utoipa::path(get, path = "/oauth/{provider}/callback", tag = "connect", params(("provider" = String, Path, description = "google or microsoft"), ("state" = Option<String>, Query, description = "The state calsync issued"), ("code" = Option<String>, Query, description = "The authorization code"), ("error" = Option<String>, Query, description = "The provider's error, e.g. access_denied")), responses((status = 302, description = "To the return URL with `connection_id` or `error` (`access_denied`, `replayed_state`, `expired_state`, `missing_code`, `token_exchange_failed`, `account_unreadable`, `wrong_account`, `create_failed`)"), (status = 400, description = "`bad_state`: unknown state, no return URL to go back to", body = crate::http::openapi::ErrorBody)))]
async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let setup = setup(&state)?.clone();
    let provider = ConnectProvider::parse(&provider).map_err(connect_error)?;
    let state_value = q.get("state").cloned().unwrap_or_default();
    let params = CallbackParams {
        code: q.get("code").cloned(),
        error: q.get("error").cloned(),
    };
    let row = consume_state(&state, provider, &state_value).await?;
    let judged = connect::judge_callback(row.as_ref().map(|r| &r.stored), &params, Utc::now());
    // No row: nothing says where to send the user back to.
    let Some(row) = row else {
        return Err(connect_error(
            judged.err().unwrap_or(ConnectError::BadState),
        ));
    };
    let return_url = connect::validate_return_url(&row.return_url).map_err(connect_error)?;
    let outcome = match judged {
        Ok(code) => finish(&state, &setup, provider, &row, &code).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        tracing::info!(
            provider = name(provider),
            error = e.code(),
            "connect flow ended without a connection"
        );
    }
    let to = match &outcome {
        Ok(id) => connect::finish_url(&return_url, Ok(&id.to_string())),
        Err(e) => connect::finish_url(&return_url, Err(e)),
    };
    Ok((StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response())
}

/// Reads the state row under `FOR UPDATE` and marks it used in the same
/// transaction (whatever the callback carries: a state is single use). A
/// row of another provider is no row.
async fn consume_state(
    state: &AppState,
    provider: ConnectProvider,
    state_value: &str,
) -> Result<Option<StateRow>, ApiError> {
    if state_value.is_empty() {
        return Ok(None);
    }
    let mut client = state.store.pool().get().await.map_err(store_error)?;
    let tx = client.transaction().await.map_err(store_error)?;
    let hash = crate::core::tokens::hash(state_value);
    let found = tx
        .query_opt(
            "SELECT provider, platform_provider_id, return_url, pkce_verifier, expires_at, \
             used_at IS NOT NULL, expected_account FROM oauth_states WHERE state_hash = $1 FOR UPDATE",
            &[&hash],
        )
        .await
        .map_err(store_error)?;
    let row = found
        .map(|r| StateRow {
            provider: r.get(0),
            platform_provider_id: r.get(1),
            return_url: r.get(2),
            verifier: r.get(3),
            expected_account: r.get(6),
            stored: StoredState {
                expires_at: r.get(4),
                used: r.get(5),
            },
        })
        .filter(|r| r.provider == name(provider));
    if row.as_ref().is_some_and(|r| !r.stored.used) {
        tx.execute(
            "UPDATE oauth_states SET used_at = now() WHERE state_hash = $1",
            &[&hash],
        )
        .await
        .map_err(store_error)?;
    }
    tx.commit().await.map_err(store_error)?;
    Ok(row)
}

/// Exchanges the code, reads the account, seals the grant and creates the
/// connection; on any failure nothing stays behind.
async fn finish(
    state: &AppState,
    setup: &ConnectSetup,
    provider: ConnectProvider,
    row: &StateRow,
    code: &str,
) -> Result<ConnectionId, ConnectError> {
    let app = setup.app(provider).ok_or_else(|| {
        ConnectError::TokenExchangeFailed("the app is no longer configured".into())
    })?;
    let redirect_uri = setup.redirect_uri(provider);
    let failed = |e: String| ConnectError::TokenExchangeFailed(e);
    let response = setup
        .http
        .post(&app.token_url)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", row.verifier.as_str()),
        ])
        .send()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?;
    let status = response.status();
    let grant: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(failed(format!(
            "HTTP {} {}",
            status.as_u16(),
            grant["error"].as_str().unwrap_or("")
        )));
    }
    let (Some(access), Some(refresh)) = (
        grant["access_token"].as_str(),
        grant["refresh_token"].as_str(),
    ) else {
        return Err(failed("no access and refresh token in the answer".into()));
    };
    let expires_in = grant["expires_in"].as_i64().unwrap_or(0);
    let (account, offered) = read_account(setup, provider, app, access).await?;
    connect::check_account(row.expected_account.as_deref(), &account)?;

    let id = ConnectionId::new_random();
    let session = AuthSession {
        client_id: app.client_id.clone(),
        client_secret: app.client_secret.clone(),
        refresh_token: refresh.to_string(),
        access_token: Some(access.to_string()),
        access_expires_at: Some(Utc::now() + TimeDelta::seconds(expires_in)),
        refresh_token_rotated: false,
        access_token_refreshed: false,
    };
    let created = create(state, id, provider, row, &account, &offered, &session).await;
    if let Err(e) = created {
        undo(state, id).await;
        return Err(e);
    }
    Ok(id)
}

async fn read_account(
    setup: &ConnectSetup,
    provider: ConnectProvider,
    app: &ConnectApp,
    access: &str,
) -> Result<(String, Vec<OfferedCalendar>), ConnectError> {
    let get = |path: &'static str| {
        let url = format!("{}{path}", app.api_base);
        let request = setup.http.get(url).bearer_auth(access);
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| ConnectError::AccountUnreadable(e.without_url().to_string()))?;
            if !response.status().is_success() {
                let status = response.status().as_u16();
                // The provider's error code, for the description (never a token).
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let code = body["error"]["code"]
                    .as_str()
                    .or_else(|| body["error"]["status"].as_str())
                    .unwrap_or("");
                return Err(ConnectError::AccountUnreadable(format!(
                    "{path}: HTTP {status} {code}"
                )));
            }
            response
                .json::<Value>()
                .await
                .map_err(|e| ConnectError::AccountUnreadable(e.without_url().to_string()))
        }
    };
    match provider {
        ConnectProvider::Google => connect::google_calendars(&get("/users/me/calendarList").await?),
        ConnectProvider::Microsoft => {
            connect::graph_calendars(&get("/me").await?, &get("/me/calendars").await?)
        }
    }
}

async fn create(
    state: &AppState,
    id: ConnectionId,
    provider: ConnectProvider,
    row: &StateRow,
    account: &str,
    offered: &[OfferedCalendar],
    session: &AuthSession,
) -> Result<(), ConnectError> {
    let failed = |e: String| ConnectError::CreateFailed(e);
    let vault = state
        .connections
        .credential_vault()
        .ok_or_else(|| failed("no credential vault configured".into()))?;
    vault
        .save(&state.store, id, session)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|e| failed(e.to_string()))?;
    for c in offered {
        client
            .execute(
                "INSERT INTO connection_offered_calendars \
                 (connection_id, calendar_id, name, is_primary, can_write) VALUES ($1, $2, $3, $4, $5)",
                &[&id.as_uuid(), &c.calendar_id, &c.name, &c.primary, &c.can_write],
            )
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    let (blocking, target) = connect::initial_selection(offered);
    let bad = |e: crate::core::ids::InvalidId| failed(e.to_string());
    let command = ConnectionCommand::Create {
        platform_provider_id: PlatformProviderId::parse(row.platform_provider_id.clone())
            .map_err(bad)?,
        provider: match provider {
            ConnectProvider::Google => CalendarProvider::Google,
            ConnectProvider::Microsoft => CalendarProvider::Microsoft,
        },
        account: ExternalAccount::parse(account).map_err(bad)?,
        calendars: blocking
            .into_iter()
            .map(CalendarId::parse)
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        destination_calendar: target.map(CalendarId::parse).transpose().map_err(bad)?,
    };
    state
        .connections
        .command(id, command, Uuid::new_v4())
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(())
}

/// Removes what a failed create left: the sealed grant and the offered
/// calendars (the connection itself was not created).
async fn undo(state: &AppState, id: ConnectionId) {
    let Ok(client) = state.store.pool().get().await else {
        tracing::warn!(connection_id = %id, "connect: could not remove a failed connection's grant");
        return;
    };
    for sql in [
        "DELETE FROM credentials WHERE connection_id = $1",
        "DELETE FROM connection_offered_calendars WHERE connection_id = $1",
    ] {
        if let Err(e) = client.execute(sql, &[&id.as_uuid()]).await {
            tracing::warn!(connection_id = %id, error = %e, "connect: cleanup failed");
        }
    }
}

/// A calendar in the picker.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct PickerCalendar {
    calendar_id: String,
    name: String,
    primary: bool,
    can_write: bool,
    /// Its busy time blocks the provider.
    blocking: bool,
    /// Bookings are written to it.
    booking_target: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"connection_id": "5f0c…", "calendars": [
    {"calendar_id": "primary", "name": "ana@example.com", "primary": true, "can_write": true, "blocking": true, "booking_target": true}
]}))]
struct Picker {
    connection_id: String,
    calendars: Vec<PickerCalendar>,
}

async fn offered_of(state: &AppState, id: ConnectionId) -> Result<Vec<OfferedCalendar>, ApiError> {
    let client = state.store.pool().get().await.map_err(store_error)?;
    let rows = client
        .query(
            "SELECT calendar_id, name, is_primary, can_write FROM connection_offered_calendars \
             WHERE connection_id = $1 ORDER BY is_primary DESC, calendar_id",
            &[&id.as_uuid()],
        )
        .await
        .map_err(store_error)?;
    Ok(rows
        .iter()
        .map(|r| OfferedCalendar {
            calendar_id: r.get(0),
            name: r.get(1),
            primary: r.get(2),
            can_write: r.get(3),
        })
        .collect())
}

async fn picker(state: &AppState, id: ConnectionId) -> Result<Picker, ApiError> {
    let profile = state
        .connections
        .inspect(id)
        .await?
        .profile
        .ok_or_else(|| ApiError::not_found(format!("no connection {id}")))?;
    let offered = offered_of(state, id).await?;
    let calendars = offered
        .into_iter()
        .map(|c| PickerCalendar {
            blocking: profile
                .calendars
                .iter()
                .any(|s| s.as_str() == c.calendar_id),
            booking_target: profile
                .destination_calendar
                .as_ref()
                .is_some_and(|d| d.as_str() == c.calendar_id),
            calendar_id: c.calendar_id,
            name: c.name,
            primary: c.primary,
            can_write: c.can_write,
        })
        .collect();
    Ok(Picker {
        connection_id: id.to_string(),
        calendars,
    })
}

fn parse_id(id: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The calendars the account offered and which of them are in use.
#[utoipa::path(get, path = "/v1/connections/{id}/calendars", tag = "connect", params(("id" = String, Path, description = "The connection id (UUID)")), security(("bearer" = [])), responses((status = 200, description = "The offered calendars with their flags (empty for connections made without the connect flow)", body = Picker), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn calendars(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Picker>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(picker(&state, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PickBody {
    calendar_id: String,
    #[serde(default)]
    blocking: bool,
    #[serde(default)]
    booking_target: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"calendars": [
    {"calendar_id": "primary", "blocking": true, "booking_target": true},
    {"calendar_id": "team@group.calendar.google.com", "blocking": true}
]}))]
struct PickRequest {
    /// Calendars left out neither block nor receive bookings.
    calendars: Vec<PickBody>,
}

/// Picks which offered calendars block time and which receives bookings.
#[utoipa::path(put, path = "/v1/connections/{id}/calendars", tag = "connect", params(("id" = String, Path, description = "The connection id (UUID)")), request_body = PickRequest, security(("bearer" = [])), responses((status = 200, description = "The picker after the change", body = Picker), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn pick_calendars(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<PickRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Picker>, ApiError> {
    let id = parse_id(&id)?;
    let Json(body) = body.map_err(ApiError::from)?;
    // The connection must exist (404) before its picks are judged.
    picker(&state, id).await?;
    let offered = offered_of(&state, id).await?;
    let picks: Vec<Pick> = body
        .calendars
        .into_iter()
        .map(|p| Pick {
            calendar_id: p.calendar_id,
            blocking: p.blocking,
            booking_target: p.booking_target,
        })
        .collect();
    let (blocking, target) = connect::pick_calendars(&offered, &picks)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let bad = |e: crate::core::ids::InvalidId| ApiError::bad_request(e.to_string());
    let command = ConnectionCommand::SelectCalendars {
        calendars: blocking
            .into_iter()
            .map(CalendarId::parse)
            .collect::<Result<_, _>>()
            .map_err(bad)?,
        destination_calendar: target.map(CalendarId::parse).transpose().map_err(bad)?,
    };
    state
        .connections
        .command(id, command, Uuid::new_v4())
        .await?;
    Ok(Json(picker(&state, id).await?))
}

/// The connect flow in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(start, callback, calendars, pick_calendars),
    components(schemas(
        StartConnect,
        StartedConnect,
        Picker,
        PickerCalendar,
        PickRequest,
        PickBody
    ))
)]
pub(super) struct ApiDoc;
