//! Provider webhooks: Google push notifications, Microsoft Graph change and
//! lifecycle notifications.
//!
//! Every request is checked in this fixed order, and a failed check writes
//! nothing: the Graph validation handshake (answered before the other
//! checks, only while webhooks are on, only for a token of 1..=1024 bytes);
//! the webhooks flag (403); the body size (413); headers and JSON shape
//! (400); the channel or subscription (404, also for channels closed longer
//! than the grace period); the channel secret (401, compared in constant
//! time on SHA-256 digests); the allowlists in production mode (403). Then
//! the connection actor commits the notification — 2xx only after that (or
//! once it is recognised as a duplicate); 503 if the database is down.

use super::channel_cache::{ChannelRecord, LookupKey};
use super::errors::ApiError;
use super::AppState;
use crate::actors::SendError;
use crate::core::channels::CLOSED_GRACE;
use crate::core::decide::{ConnectionCommand, LifecycleEvent};
use crate::core::dedupe::DedupeKey;
use crate::core::ids::{CalendarProvider, ConnectionId};
use crate::core::settings::{flag_gate, webhook_gate, Flag};
use axum::body::{to_bytes, Body};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Webhook settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Largest accepted body (413 above). Default 64 KiB.
    pub body_limit: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            body_limit: 64 * 1024,
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/google", post(google))
        .route("/webhooks/graph", post(graph))
        .route("/webhooks/graph/lifecycle", post(graph_lifecycle))
        .route_layer(axum::middleware::from_fn(super::metrics::webhook_metrics))
}

/// What a notification resolved to.
struct Channel {
    connection_id: ConnectionId,
    channel_id: String,
}

fn reject(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

fn check_flag(state: &AppState) -> Result<(), ApiError> {
    flag_gate(&state.settings.current(), Flag::WebhooksEnabled).map_err(ApiError::from)
}

async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes, ApiError> {
    to_bytes(body, state.webhooks.body_limit)
        .await
        .map_err(|_| {
            reject(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("body larger than {} bytes", state.webhooks.body_limit),
            )
        })
}

/// Finds the channel, checks it is live (or recently closed) and that the
/// presented secret matches, then the allowlists.
async fn authenticate(
    state: &AppState,
    provider: CalendarProvider,
    lookup: Lookup<'_>,
    secret: &str,
) -> Result<Channel, ApiError> {
    let key = lookup.cache_key(provider);
    let record = match state.channels.get(&key) {
        Some(record) => record,
        None => {
            let record = load_channel(state, provider, &lookup).await?;
            state.channels.put(key, record.clone());
            record
        }
    };
    if record
        .closed_at
        .is_some_and(|at| at + CLOSED_GRACE < Utc::now())
    {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            "the channel was stopped",
        ));
    }
    let presented = crate::actors::channel_task::secret_digest(secret);
    if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
        return Err(reject(
            StatusCode::UNAUTHORIZED,
            "bad_channel_token",
            "channel token mismatch",
        ));
    }
    let connection_id = ConnectionId::from_uuid(record.connection_id);
    webhook_gate(&state.settings.current(), provider, connection_id).map_err(ApiError::from)?;
    Ok(Channel {
        connection_id,
        channel_id: record.channel_id,
    })
}

/// The channel a notification names, from the database. Unknown: 404.
async fn load_channel(
    state: &AppState,
    provider: CalendarProvider,
    lookup: &Lookup<'_>,
) -> Result<ChannelRecord, ApiError> {
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let (sql, key) = match lookup {
        Lookup::ChannelId(id) => (
            "SELECT connection_id, channel_id, secret_sha256, closed_at FROM channels \
             WHERE channel_id = $1 AND provider = $2",
            id,
        ),
        Lookup::ResourceId(id) => (
            "SELECT connection_id, channel_id, secret_sha256, closed_at FROM channels \
             WHERE resource_id = $1 AND provider = $2 ORDER BY closed_at NULLS FIRST LIMIT 1",
            id,
        ),
    };
    // Cached prepared statement: a lookup per uncached webhook.
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let row = client
        .query_opt(&statement, &[key, &provider.as_str()])
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let Some(row) = row else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "unknown_channel",
            "no such channel",
        ));
    };
    Ok(ChannelRecord {
        connection_id: row.get(0),
        channel_id: row.get(1),
        secret_sha256: row.get(2),
        closed_at: row.get(3),
    })
}

enum Lookup<'a> {
    ChannelId(&'a str),
    ResourceId(&'a str),
}

impl Lookup<'_> {
    fn cache_key(&self, provider: CalendarProvider) -> LookupKey {
        match self {
            Lookup::ChannelId(id) => (provider.as_str(), true, id.to_string()),
            Lookup::ResourceId(id) => (provider.as_str(), false, id.to_string()),
        }
    }
}

/// Commits one notification through its connection's actor. `Ok(true)`:
/// a duplicate of one already committed.
async fn commit(state: &AppState, channel: &Channel, key: DedupeKey) -> Result<bool, ApiError> {
    match state
        .connections
        .notify(
            channel.connection_id,
            key.as_str().to_string(),
            channel.channel_id.clone(),
        )
        .await
    {
        Ok(ack) => Ok(ack.duplicate),
        // A quarantined or removed connection must not make the provider
        // retry for hours: the notification is acknowledged and dropped.
        Err(SendError::Quarantined | SendError::Rejected(_)) => Ok(false),
        Err(e) => Err(ApiError::from(e)),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    let value = headers
        .get(name)
        .ok_or_else(|| ApiError::bad_request(format!("missing header {name}")))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::bad_request(format!("header {name} is not visible ASCII")))?;
    if value.is_empty() || value.len() > 1024 {
        return Err(ApiError::bad_request(format!(
            "header {name} must be 1..=1024 bytes"
        )));
    }
    Ok(value)
}

fn accepted(status: StatusCode, duplicate: bool) -> Response {
    if duplicate {
        let mut response = (
            StatusCode::OK,
            Json(json!({"status": "duplicate", "reason": "duplicate"})),
        )
            .into_response();
        response
            .extensions_mut()
            .insert(super::metrics::DuplicateWebhook);
        response
    } else {
        (status, Json(json!({"status": "accepted"}))).into_response()
    }
}

/// Google push: no body, everything in `X-Goog-*` headers.
#[utoipa::path(post, path = "/webhooks/google", tag = "webhooks", description = "Google push notification (X-Goog-Channel-* headers, no body). Authenticated by the channel token.", responses((status = 200, description = "Accepted (or a duplicate, dropped)", body = Object), (status = 400, description = "`bad_request`", body = crate::http::openapi::ErrorBody), (status = 401, description = "Not a channel of ours, or a wrong channel secret", body = crate::http::openapi::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::http::openapi::ErrorBody), (status = 503, description = "`unavailable`: the provider retries", body = crate::http::openapi::ErrorBody)))]
async fn google(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_flag(&state)?;
    let body = read_body(&state, body).await?;
    if !body.is_empty() {
        return Err(ApiError::bad_request(
            "Google calendar notifications carry no body",
        ));
    }
    let channel_id = header_str(&headers, "x-goog-channel-id")?;
    let number: u64 = header_str(&headers, "x-goog-message-number")?
        .parse()
        .map_err(|_| ApiError::bad_request("X-Goog-Message-Number is not a number"))?;
    let resource_state = header_str(&headers, "x-goog-resource-state")?;
    if !matches!(resource_state, "sync" | "exists" | "not_exists") {
        return Err(ApiError::bad_request("unknown X-Goog-Resource-State"));
    }
    header_str(&headers, "x-goog-resource-id")?;
    let token = headers
        .get("x-goog-channel-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let channel = match authenticate(
        &state,
        CalendarProvider::Google,
        Lookup::ChannelId(channel_id),
        token,
    )
    .await
    {
        Ok(channel) => channel,
        // Google sends `sync` as soon as `events.watch` succeeds, which can
        // be before calsync has committed the channel it just opened. The
        // message carries no change and Google only wants a 2xx: answer it
        // and write nothing, instead of a 404 at every channel opening.
        Err(e) if resource_state == "sync" && e.status == StatusCode::NOT_FOUND => {
            return Ok((StatusCode::OK, Json(json!({"status": "ignored"}))).into_response());
        }
        Err(e) => return Err(e),
    };
    let duplicate = commit(&state, &channel, DedupeKey::google(channel_id, number)).await?;
    Ok(accepted(StatusCode::OK, duplicate))
}

/// Longest validation token echoed. Graph's are opaque strings of a few
/// dozen to a few hundred characters; anything far longer is not Graph.
pub const MAX_VALIDATION_TOKEN: usize = 1024;

/// A validation token calsync will echo: 1..=[`MAX_VALIDATION_TOKEN`]
/// bytes, no control characters (the echo is a reflected string: keep it
/// short and inert).
fn sane_validation_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_VALIDATION_TOKEN && !token.chars().any(char::is_control)
}

/// The Graph validation handshake: echo the token as plain text that no
/// browser may sniff into anything else, before the other checks (Graph
/// gives the endpoint 10 s and no credentials) but only while webhooks are
/// on (no channel can be opened otherwise) and only for a sane token (400).
fn handshake(
    state: &AppState,
    query: &HashMap<String, String>,
) -> Option<Result<Response, ApiError>> {
    let token = query.get("validationToken")?;
    Some(handshake_answer(state, token))
}

fn handshake_answer(state: &AppState, token: &str) -> Result<Response, ApiError> {
    check_flag(state)?;
    if !sane_validation_token(token) {
        return Err(ApiError::bad_request(format!(
            "validationToken must be 1..={MAX_VALIDATION_TOKEN} bytes without control characters"
        )));
    }
    Ok(echo(token))
}

fn echo(token: &str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        token.to_owned(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct GraphBatch {
    value: Vec<GraphNotification>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphNotification {
    subscription_id: String,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    change_type: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    resource_data: Option<GraphResourceData>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GraphResourceData {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "@odata.etag")]
    etag: Option<String>,
}

/// The secret part of Graph's `clientState` (`<channel id>:<secret>`, see
/// `providers::graph::client_state`).
fn graph_secret(n: &GraphNotification) -> &str {
    n.client_state
        .as_deref()
        .and_then(crate::providers::graph::split_client_state)
        .map(|(_, secret)| secret)
        .unwrap_or("")
}

fn parse_batch(body: &[u8]) -> Result<GraphBatch, ApiError> {
    let batch: GraphBatch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid notification JSON: {e}")))?;
    if batch.value.is_empty() || batch.value.len() > 1000 {
        return Err(ApiError::bad_request(
            "value must hold 1..=1000 notifications",
        ));
    }
    for n in &batch.value {
        if n.subscription_id.is_empty() || n.subscription_id.len() > 256 {
            return Err(ApiError::bad_request(
                "subscriptionId must be 1..=256 bytes",
            ));
        }
        // Control characters (NUL above all) are never in a real id, and
        // PostgreSQL text cannot hold NUL: refuse them here, as bad input.
        let fields = [
            Some(n.subscription_id.as_str()),
            n.client_state.as_deref(),
            n.change_type.as_deref(),
            n.resource.as_deref(),
        ];
        if fields
            .into_iter()
            .flatten()
            .any(|f| f.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(
                "control characters in a notification field",
            ));
        }
    }
    Ok(batch)
}

/// What a change notification is about, once its shape is checked.
#[derive(Debug, PartialEq, Eq)]
struct Change<'a> {
    change_type: &'a str,
    resource: &'a str,
    /// `resourceData.@odata.etag`, else `resourceData.id`: what tells two
    /// changes of one event apart.
    version: &'a str,
}

/// The change types of Outlook event subscriptions (`shared/PROVIDERS.md`
/// §3).
const CHANGE_TYPES: [&str; 3] = ["created", "updated", "deleted"];

/// A change notification's shape (`shared/PROVIDERS.md` §3): `changeType`
/// a comma list of `created`, `updated`, `deleted` (nothing empty, nothing
/// else), a non-empty `resource`, and `resourceData` with a non-empty `id`.
/// Lifecycle notifications have a schema of their own
/// ([`graph_lifecycle`]).
fn change_shape(n: &GraphNotification) -> Result<Change<'_>, ApiError> {
    let change_type = n
        .change_type
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("changeType missing"))?;
    if !change_type.split(',').all(|t| CHANGE_TYPES.contains(&t)) {
        return Err(ApiError::bad_request(
            "changeType must be a comma list of created, updated, deleted",
        ));
    }
    let resource = n
        .resource
        .as_deref()
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("resource missing"))?;
    let data = n
        .resource_data
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("resourceData missing"))?;
    let id = data
        .id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::bad_request("resourceData.id missing"))?;
    Ok(Change {
        change_type,
        resource,
        version: data.etag.as_deref().filter(|e| !e.is_empty()).unwrap_or(id),
    })
}

#[utoipa::path(post, path = "/webhooks/graph", tag = "webhooks", description = "Microsoft Graph change notifications; answers `validationToken` as text/plain.", request_body(content = Object, description = "Graph notification collection"), params(("validationToken" = Option<String>, Query, description = "Subscription validation")), responses((status = 200, description = "Accepted (or a duplicate, dropped)", body = Object), (status = 400, description = "`bad_request`", body = crate::http::openapi::ErrorBody), (status = 401, description = "Not a channel of ours, or a wrong channel secret", body = crate::http::openapi::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::http::openapi::ErrorBody), (status = 503, description = "`unavailable`: the provider retries", body = crate::http::openapi::ErrorBody)))]
async fn graph(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(answer) = handshake(&state, &query) {
        return answer;
    }
    check_flag(&state)?;
    let body = read_body(&state, body).await?;
    let batch = parse_batch(&body)?;
    // Check every shape, then authenticate every notification, before
    // committing any: one bad notification refuses the batch.
    let changes = batch
        .value
        .iter()
        .map(change_shape)
        .collect::<Result<Vec<_>, _>>()?;
    let mut work = Vec::with_capacity(batch.value.len());
    for (n, change) in batch.value.iter().zip(&changes) {
        let channel = authenticate(
            &state,
            CalendarProvider::Microsoft,
            Lookup::ResourceId(&n.subscription_id),
            graph_secret(n),
        )
        .await?;
        let key = DedupeKey::graph(
            &n.subscription_id,
            change.change_type,
            change.resource,
            change.version,
        );
        work.push((channel, key));
    }
    let mut all_duplicates = true;
    for (channel, key) in &work {
        all_duplicates &= commit(&state, channel, key.clone()).await?;
    }
    Ok(accepted(StatusCode::ACCEPTED, all_duplicates))
}

#[utoipa::path(post, path = "/webhooks/graph/lifecycle", tag = "webhooks", description = "Microsoft Graph lifecycle notifications.", request_body(content = Object, description = "Graph lifecycle notification collection"), params(("validationToken" = Option<String>, Query, description = "Subscription validation")), responses((status = 200, description = "Accepted (or a duplicate, dropped)", body = Object), (status = 400, description = "`bad_request`", body = crate::http::openapi::ErrorBody), (status = 401, description = "Not a channel of ours, or a wrong channel secret", body = crate::http::openapi::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::http::openapi::ErrorBody), (status = 503, description = "`unavailable`: the provider retries", body = crate::http::openapi::ErrorBody)))]
async fn graph_lifecycle(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(answer) = handshake(&state, &query) {
        return answer;
    }
    check_flag(&state)?;
    let body = read_body(&state, body).await?;
    let batch = parse_batch(&body)?;
    let mut work = Vec::new();
    for n in &batch.value {
        let event = match n.lifecycle_event.as_deref() {
            Some("reauthorizationRequired") => LifecycleEvent::ReauthorizationRequired,
            Some("subscriptionRemoved") => LifecycleEvent::SubscriptionRemoved,
            Some("missed") => LifecycleEvent::Missed,
            _ => return Err(ApiError::bad_request("unknown lifecycleEvent")),
        };
        let channel = authenticate(
            &state,
            CalendarProvider::Microsoft,
            Lookup::ResourceId(&n.subscription_id),
            graph_secret(n),
        )
        .await?;
        work.push((channel, event));
    }
    for (channel, event) in work {
        let command = ConnectionCommand::ChannelLifecycle {
            channel_id: channel.channel_id.clone(),
            event,
        };
        match state
            .connections
            .command(channel.connection_id, command, Uuid::new_v4())
            .await
        {
            Ok(_) | Err(SendError::Quarantined | SendError::Rejected(_)) => {}
            Err(e) => return Err(ApiError::from(e)),
        }
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response())
}

/// The webhook routes in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(google, graph, graph_lifecycle))]
pub(super) struct ApiDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_echoes_the_decoded_token_as_inert_plain_text() {
        let r = echo("a b<&>");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn only_sane_validation_tokens_are_echoed() {
        assert!(sane_validation_token("a b<&>"));
        assert!(sane_validation_token(&"x".repeat(MAX_VALIDATION_TOKEN)));
        assert!(!sane_validation_token(""));
        assert!(!sane_validation_token(
            &"x".repeat(MAX_VALIDATION_TOKEN + 1)
        ));
        assert!(!sane_validation_token("a\r\nSet-Cookie: x"));
        assert!(!sane_validation_token("a\u{0}b"));
    }

    #[test]
    fn graph_batches_must_be_well_formed() {
        assert!(parse_batch(b"{").is_err());
        assert!(parse_batch(br#"{"value": []}"#).is_err());
        assert!(parse_batch(br#"{"value": [{"subscriptionId": ""}]}"#).is_err());
        assert!(parse_batch(br#"{"value": [{"subscriptionId": 5}]}"#).is_err());
        assert!(parse_batch(br#"{"value": [{"subscriptionId": "a\u0000b"}]}"#).is_err());
        assert!(
            parse_batch(br#"{"value": [{"subscriptionId": "s", "changeType": "updated"}]}"#)
                .is_ok()
        );
    }

    fn shape(notification: serde_json::Value) -> Result<(String, String, String), String> {
        let body = json!({ "value": [notification] }).to_string();
        let batch = parse_batch(body.as_bytes()).map_err(|e| format!("{e:?}"))?;
        change_shape(&batch.value[0])
            .map(|c| {
                (
                    c.change_type.to_owned(),
                    c.resource.to_owned(),
                    c.version.to_owned(),
                )
            })
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn change_notifications_must_have_the_documented_shape() {
        let good = || {
            json!({ "subscriptionId": "s", "clientState": "c:x", "changeType": "updated",
                    "resource": "Users/u/Events/AAMk1",
                    "resourceData": { "@odata.etag": "W/\"1\"", "id": "AAMk1" } })
        };
        assert_eq!(
            shape(good()),
            Ok((
                "updated".into(),
                "Users/u/Events/AAMk1".into(),
                "W/\"1\"".into()
            ))
        );
        for change_type in [
            "created",
            "deleted",
            "created,updated,deleted",
            "updated,updated",
        ] {
            let mut n = good();
            n["changeType"] = json!(change_type);
            assert!(shape(n).is_ok(), "{change_type}");
        }
        let mut no_etag = good();
        no_etag["resourceData"] = json!({ "id": "AAMk1" });
        assert_eq!(shape(no_etag).unwrap().2, "AAMk1");
        let bad: Vec<(&str, serde_json::Value)> = vec![
            ("changeType", json!("exploded")),
            ("changeType", json!("")),
            ("changeType", json!(",")),
            ("changeType", json!("updated,")),
            ("changeType", json!("created,,deleted")),
            ("changeType", json!("Updated")),
            ("changeType", json!(" updated")),
            ("changeType", json!(null)),
            ("resource", json!("")),
            ("resource", json!(null)),
            ("resourceData", json!(null)),
            ("resourceData", json!({})),
            ("resourceData", json!({ "id": "" })),
            ("resourceData", json!({ "@odata.etag": "W/\"1\"" })),
        ];
        for (field, value) in bad {
            let mut n = good();
            n[field] = value.clone();
            assert!(shape(n).is_err(), "{field} = {value}");
        }
        for field in ["changeType", "resource", "resourceData"] {
            let mut n = good();
            n.as_object_mut().unwrap().remove(field);
            assert!(shape(n).is_err(), "without {field}");
        }
    }
}
