//! `events.watch`, `channels.stop` and notification delivery: a `sync`
//! message (#1) when the channel opens, then `exists` with increasing but
//! non-consecutive message numbers, empty body, `X-Goog-*` headers.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::delivery::{enqueue, Outgoing};
use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::google::errors::GErr;
use crate::google::events::json_body;
use crate::google::model::GoogleState;
use crate::request_log::Provider;
use crate::state::{lock, Shared};
use crate::timefmt::rfc1123;

#[derive(Clone, Debug, Serialize)]
pub struct Channel {
    pub id: String,
    pub resource_id: String,
    pub resource_uri: String,
    pub calendar_id: String,
    pub account: String,
    pub address: String,
    pub token: Option<String>,
    pub expiration: DateTime<Utc>,
    pub message_number: u64,
    pub stopped: bool,
    /// Notifications still to send after `channels.stop` (notification fault).
    pub after_stop: u32,
}

fn invalid(msg: &str) -> ApiError {
    ApiError::new(400, "invalid", msg.to_string())
}

/// Plain http is accepted only on loopback (simulator-only relaxation).
pub fn check_address(addr: &str) -> bool {
    if addr.starts_with("https://") {
        return true;
    }
    addr.strip_prefix("http://").is_some_and(|rest| {
        rest.starts_with("127.0.0.1") || rest.starts_with("localhost") || rest.starts_with("[::1]")
    })
}

fn message(shared: &Shared, ch: &Channel, state: &str) -> Outgoing {
    let mut headers = vec![
        ("X-Goog-Channel-ID".to_string(), ch.id.clone()),
        (
            "X-Goog-Message-Number".to_string(),
            ch.message_number.to_string(),
        ),
        ("X-Goog-Resource-ID".to_string(), ch.resource_id.clone()),
        ("X-Goog-Resource-State".to_string(), state.to_string()),
        ("X-Goog-Resource-URI".to_string(), ch.resource_uri.clone()),
        (
            "X-Goog-Channel-Expiration".to_string(),
            rfc1123(ch.expiration),
        ),
        (
            "User-Agent".to_string(),
            "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)".to_string(),
        ),
    ];
    if let Some(t) = &ch.token {
        headers.push(("X-Goog-Channel-Token".to_string(), t.clone()));
    }
    Outgoing {
        provider: Provider::Google,
        kind: state.to_string(),
        subject: ch.id.clone(),
        target: ch.address.clone(),
        headers,
        body: None,
        timeout: std::time::Duration::from_millis(shared.config.google_push_timeout_ms),
    }
}

/// Something in the calendar changed: one `exists` per live channel.
pub fn notify_change(shared: &Arc<Shared>, st: &mut GoogleState, cal_id: &str) {
    let now = shared.now();
    let mut ids: Vec<String> = st
        .channels
        .values()
        .filter(|c| {
            c.calendar_id == cal_id && (!c.stopped || c.after_stop > 0) && c.expiration > now
        })
        .map(|c| c.id.clone())
        .collect();
    ids.sort();
    for id in ids {
        if let Some(ch) = st.channels.get_mut(&id) {
            if ch.stopped {
                ch.after_stop = ch.after_stop.saturating_sub(1);
            }
            // Numbers increase but are not consecutive, as in production.
            ch.message_number += shared.rng.range(2, 37);
            let out = message(shared, ch, "exists");
            enqueue(shared, out);
        }
    }
}

fn parse_expiration(v: &Value) -> ApiResult<Option<DateTime<Utc>>> {
    let ms = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid("Invalid expiration value."))?;
    Ok(Utc.timestamp_millis_opt(ms).single())
}

/// A validated `events.watch` request body.
struct WatchRequest {
    id: String,
    address: String,
    token: Option<String>,
    expiration: DateTime<Utc>,
}

fn parse_watch(
    shared: &Shared,
    st: &GoogleState,
    body: &Value,
    now: DateTime<Utc>,
) -> ApiResult<WatchRequest> {
    let id = body["id"].as_str().unwrap_or_default().to_string();
    if id.is_empty() {
        return Err(ApiError::new(400, "required", "Required channel id.").at("parameter", "id"));
    }
    if id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_+/=".contains(c))
    {
        return Err(invalid(
            "Invalid channel id: at most 64 characters of [A-Za-z0-9-_+/=].",
        ));
    }
    if st.channels.contains_key(&id) {
        return Err(ApiError::new(
            400,
            "channelIdNotUnique",
            format!("Channel id {id} not unique"),
        ));
    }
    if !matches!(body["type"].as_str(), Some("web_hook") | Some("webhook")) {
        return Err(invalid("Unknown channel type."));
    }
    let address = body["address"].as_str().unwrap_or_default().to_string();
    if !check_address(&address) {
        return Err(ApiError::new(
            400,
            "push.webhookUrlNotHttps",
            format!("WebHook callback must be HTTPS: {address}"),
        ));
    }
    let token = body["token"].as_str().map(str::to_string);
    if token.as_ref().is_some_and(|t| t.len() > 256) {
        return Err(invalid("Channel token too long (max 256 characters)."));
    }
    // The more restrictive of the requested expiration, params.ttl and the server maximum.
    let max_ttl = shared.config.google_channel_ttl_secs;
    let ttl = match &body["params"]["ttl"] {
        Value::String(s) => s.parse::<i64>().map_err(|_| invalid("Invalid ttl."))?,
        Value::Number(n) => n.as_i64().ok_or_else(|| invalid("Invalid ttl."))?,
        _ => max_ttl,
    }
    .min(max_ttl);
    let mut expiration = now + Duration::seconds(ttl);
    if let Some(requested) = parse_expiration(&body["expiration"])? {
        expiration = expiration.min(requested);
    }
    Ok(WatchRequest {
        id,
        address,
        token,
        expiration,
    })
}

pub fn watch(
    shared: &Arc<Shared>,
    st: &mut GoogleState,
    account: &str,
    cal_param: &str,
    body: &Value,
) -> ApiResult<Value> {
    let cal_id = st.calendar_id(account, cal_param)?;
    let req = parse_watch(shared, st, body, shared.now())?;
    let cal = st.calendar(&cal_id)?;
    let ch = Channel {
        id: req.id.clone(),
        resource_id: cal.resource_id.clone(),
        resource_uri: format!(
            "{}/calendars/{}/events?alt=json",
            shared.google_base(),
            cal_param
        ),
        calendar_id: cal_id,
        account: account.to_string(),
        address: req.address,
        token: req.token.clone(),
        expiration: req.expiration,
        message_number: 1,
        stopped: false,
        after_stop: 0,
    };
    // The sync message is queued before the response is sent, so it may arrive first.
    enqueue(shared, message(shared, &ch, "sync"));
    let mut out = json!({
        "kind": "api#channel",
        "id": ch.id,
        "resourceId": ch.resource_id,
        "resourceUri": ch.resource_uri,
        "expiration": ch.expiration.timestamp_millis().to_string(),
    });
    if let Some(t) = req.token {
        out["token"] = json!(t);
    }
    st.channels.insert(req.id, ch);
    Ok(out)
}

pub fn stop(shared: &Shared, st: &mut GoogleState, account: &str, body: &Value) -> ApiResult<()> {
    let id = body["id"].as_str().unwrap_or_default();
    let resource_id = body["resourceId"].as_str().unwrap_or_default();
    match st.channels.get_mut(id) {
        Some(ch)
            if ch.resource_id == resource_id
                && ch.account.eq_ignore_ascii_case(account)
                && !ch.stopped =>
        {
            ch.stopped = true;
            ch.after_stop = shared
                .faults
                .notification_faults(Provider::Google)
                .after_stop;
            Ok(())
        }
        _ => Err(ApiError::new(
            404,
            "notFound",
            format!("Channel '{id}' not found for project 'calsim'"),
        )),
    }
}

pub async fn watch_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path(cal): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, GErr> {
    let body = json_body(body)?;
    let mut st = lock(&sh.google);
    Ok(Json(watch(&sh, &mut st, &acct, &cal, &body)?))
}

pub async fn stop_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, GErr> {
    let body = json_body(body)?;
    let mut st = lock(&sh.google);
    stop(&sh, &mut st, &acct, &body)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
