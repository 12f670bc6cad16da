//! events.insert / get / patch / update / delete, shared by the HTTP handlers
//! and the Rust control API (a control mutation behaves like a user edit).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::google::errors::GErr;
use crate::google::model::{horizon, parse_gtime, GCalendar, GEvent, GoogleState};
use crate::google::push;
use crate::state::{lock, Shared};

/// Client-chosen ids: base32hex characters (`a-v`, `0-9`), 5 to 1024 long.
pub fn valid_client_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.chars().all(|c| matches!(c, 'a'..='v' | '0'..='9'))
}

const SERVER_FIELDS: &[&str] = &[
    "kind", "etag", "id", "created", "updated", "htmlLink", "sequence",
];

fn strip_server_fields(body: &mut Value) {
    if let Value::Object(m) = body {
        for k in SERVER_FIELDS {
            m.remove(*k);
        }
    }
}

/// RFC 7386-style merge: objects merge recursively, `null` removes, arrays replace.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn validate(cal: &GCalendar, body: &Value, now: DateTime<Utc>, horizon_days: i64) -> ApiResult<()> {
    if !body.is_object() {
        return Err(ApiError::new(400, "parseError", "Parse Error"));
    }
    let tz = cal.tz();
    let start = parse_gtime(&body["start"], "start", tz)?;
    let end = parse_gtime(&body["end"], "end", tz)?;
    if end.instant(tz) < start.instant(tz) {
        return Err(
            ApiError::new(400, "timeRangeEmpty", "The specified time range is empty.")
                .domain("calendar"),
        );
    }
    if body["recurrence"].as_array().is_some_and(|a| !a.is_empty()) {
        let probe = GEvent {
            id: "probe".into(),
            body: body.clone(),
            seq: 0,
            deleted: false,
            created: now,
            updated: now,
            sequence: 0,
            vanished: false,
        };
        cal.instances(&probe, horizon(now, horizon_days))?;
    }
    Ok(())
}

fn check_if_match(cal: &GCalendar, ev: &GEvent, if_match: Option<&str>) -> ApiResult<()> {
    match if_match {
        Some(tag) if tag != "*" && tag != cal.etag(ev.seq, ev.updated) => {
            Err(ApiError::new(412, "conditionNotMet", "Precondition Failed")
                .at("header", "If-Match"))
        }
        _ => Ok(()),
    }
}

pub fn insert(
    shared: &Arc<Shared>,
    st: &mut GoogleState,
    cal_id: &str,
    mut body: Value,
) -> ApiResult<Value> {
    let now = shared.now();
    let requested = body.get("id").and_then(Value::as_str).map(str::to_string);
    let cal = st.calendar(cal_id)?;
    let id = match requested {
        Some(id) => {
            if !valid_client_id(&id) {
                return Err(ApiError::new(400, "invalid", "Invalid resource id value.")
                    .at("parameter", "id"));
            }
            // Ids of deleted events stay reserved.
            if cal.events.contains_key(&id) {
                return Err(ApiError::new(
                    409,
                    "duplicate",
                    "The requested identifier already exists.",
                ));
            }
            id
        }
        None => shared.rng.base32hex(26),
    };
    strip_server_fields(&mut body);
    validate(cal, &body, now, shared.config.recurrence_horizon_days)?;
    let seq = st.next_seq();
    let cal = st.calendar_mut(cal_id)?;
    let ev = GEvent {
        id: id.clone(),
        body,
        seq,
        deleted: false,
        created: now,
        updated: now,
        sequence: 0,
        vanished: false,
    };
    let rendered = cal.render(&ev);
    cal.events.insert(id, ev);
    cal.updated = now;
    push::notify_change(shared, st, cal_id);
    Ok(rendered)
}

pub fn get(shared: &Shared, st: &GoogleState, cal_id: &str, event_id: &str) -> ApiResult<Value> {
    let cal = st.calendar(cal_id)?;
    if let Some(ev) = cal.events.get(event_id) {
        return Ok(cal.render(ev));
    }
    cal.find_instance(
        event_id,
        horizon(shared.now(), shared.config.recurrence_horizon_days),
    )
    .map(|ev| cal.render(&ev))
    .ok_or_else(|| ApiError::new(404, "notFound", "Not Found"))
}

/// The stored event, materialising an instance of a series as an exception.
fn stored_or_instance(shared: &Shared, cal: &mut GCalendar, event_id: &str) -> ApiResult<GEvent> {
    if let Some(ev) = cal.events.get(event_id) {
        return Ok(ev.clone());
    }
    cal.find_instance(
        event_id,
        horizon(shared.now(), shared.config.recurrence_horizon_days),
    )
    .ok_or_else(|| ApiError::new(404, "notFound", "Not Found"))
}

fn times_changed(a: &Value, b: &Value) -> bool {
    a["start"] != b["start"] || a["end"] != b["end"] || a["recurrence"] != b["recurrence"]
}

/// PATCH (`replace = false`) or PUT (`replace = true`).
pub fn modify(
    shared: &Arc<Shared>,
    st: &mut GoogleState,
    cal_id: &str,
    event_id: &str,
    mut change: Value,
    if_match: Option<&str>,
    replace: bool,
) -> ApiResult<Value> {
    let now = shared.now();
    if !change.is_object() {
        return Err(ApiError::new(400, "parseError", "Parse Error"));
    }
    let seq = st.next_seq();
    let cal = st.calendar_mut(cal_id)?;
    let current = stored_or_instance(shared, cal, event_id)?;
    let reviving = change["status"] == "confirmed";
    if current.deleted && !reviving {
        return Err(ApiError::new(410, "deleted", "Resource has been deleted"));
    }
    check_if_match(cal, &current, if_match)?;
    strip_server_fields(&mut change);
    if let Some(t) = current.body.get("eventType") {
        if change.get("eventType").is_some_and(|c| c != t) {
            return Err(ApiError::new(
                400,
                "eventTypeRestriction",
                "The event type cannot be changed.",
            ));
        }
    }
    let mut body = if replace {
        let mut b = change;
        // An instance keeps its link to the series whatever the client sends.
        for k in ["recurringEventId", "originalStartTime"] {
            if let (Value::Object(m), Some(v)) = (&mut b, current.body.get(k)) {
                m.insert(k.to_string(), v.clone());
            }
        }
        b
    } else {
        let mut b = current.body.clone();
        merge(&mut b, &change);
        b
    };
    if let Value::Object(m) = &mut body {
        if current.deleted {
            m.insert("status".into(), json!("confirmed"));
        }
    }
    validate(cal, &body, now, shared.config.recurrence_horizon_days)?;
    let sequence = current.sequence + i64::from(times_changed(&current.body, &body));
    let ev = GEvent {
        id: current.id.clone(),
        body,
        seq,
        deleted: false,
        created: current.created,
        updated: now,
        sequence,
        vanished: false,
    };
    let hz = horizon(now, shared.config.recurrence_horizon_days);
    cancel_vanished_instances(cal, &current, &ev, seq, now, hz);
    let rendered = cal.render(&ev);
    cal.events.insert(ev.id.clone(), ev);
    cal.updated = now;
    push::notify_change(shared, st, cal_id);
    Ok(rendered)
}

/// When a series is edited (moved, shortened, made single), instances that
/// no longer exist get cancelled tombstones, so incremental sync tells
/// clients to drop them — as Google does.
fn cancel_vanished_instances(
    cal: &mut GCalendar,
    before: &GEvent,
    after: &GEvent,
    seq: u64,
    now: DateTime<Utc>,
    hz: DateTime<Utc>,
) {
    if !GCalendar::is_master(before) {
        return;
    }
    let old = cal.instances(before, hz).unwrap_or_default();
    let new: Vec<String> = if GCalendar::is_master(after) {
        cal.instances(after, hz)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, ..)| id)
            .collect()
    } else {
        Vec::new()
    };
    // Instances that come back (series moved back) lose their tombstone.
    for id in &new {
        if cal.events.get(id).is_some_and(|e| e.vanished) {
            cal.events.remove(id);
        }
    }
    for (id, orig, start, end) in old {
        if new.contains(&id) || cal.events.contains_key(&id) {
            continue;
        }
        let mut tomb = cal.instance_event(before, &id, &orig, &start, &end);
        tomb.vanished = true;
        tomb.deleted = true;
        tomb.seq = seq;
        tomb.updated = now;
        if let Value::Object(m) = &mut tomb.body {
            m.insert("status".into(), json!("cancelled"));
        }
        cal.events.insert(id, tomb);
    }
}

pub fn delete(
    shared: &Arc<Shared>,
    st: &mut GoogleState,
    cal_id: &str,
    event_id: &str,
    if_match: Option<&str>,
) -> ApiResult<()> {
    let now = shared.now();
    let seq = st.next_seq();
    let cal = st.calendar_mut(cal_id)?;
    let current = stored_or_instance(shared, cal, event_id)?;
    if current.deleted {
        return Err(ApiError::new(410, "deleted", "Resource has been deleted"));
    }
    check_if_match(cal, &current, if_match)?;
    let is_master = GCalendar::is_master(&current);
    let mut ev = current;
    ev.deleted = true;
    ev.seq = seq;
    ev.updated = now;
    if let Value::Object(m) = &mut ev.body {
        m.insert("status".into(), json!("cancelled"));
    }
    cal.events.insert(ev.id.clone(), ev);
    if is_master {
        // Deleting a series deletes its exceptions too.
        let prefix = format!("{event_id}_");
        for (id, e) in cal.events.iter_mut() {
            if id.starts_with(&prefix) && !e.deleted {
                e.deleted = true;
                e.seq = seq;
                e.updated = now;
            }
        }
    }
    cal.updated = now;
    push::notify_change(shared, st, cal_id);
    Ok(())
}

pub fn json_body(body: Result<Json<Value>, JsonRejection>) -> ApiResult<Value> {
    body.map(|Json(v)| v)
        .map_err(|_| ApiError::new(400, "parseError", "Parse Error"))
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub async fn insert_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path(cal): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, GErr> {
    let body = json_body(body)?;
    let mut st = lock(&sh.google);
    let cal_id = st.calendar_id(&acct, &cal)?;
    Ok(Json(insert(&sh, &mut st, &cal_id, body)?))
}

pub async fn get_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path((cal, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, GErr> {
    let st = lock(&sh.google);
    let cal_id = st.calendar_id(&acct, &cal)?;
    let ev = get(&sh, &st, &cal_id, &id)?;
    // Conditional GET: an unchanged etag answers 304 with no body.
    let etag = ev["etag"].as_str().unwrap_or_default();
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(Json(ev).into_response())
}

pub async fn patch_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path((cal, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, GErr> {
    let body = json_body(body)?;
    let mut st = lock(&sh.google);
    let cal_id = st.calendar_id(&acct, &cal)?;
    Ok(Json(modify(
        &sh,
        &mut st,
        &cal_id,
        &id,
        body,
        if_match(&headers).as_deref(),
        false,
    )?))
}

pub async fn update_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path((cal, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, GErr> {
    let body = json_body(body)?;
    let mut st = lock(&sh.google);
    let cal_id = st.calendar_id(&acct, &cal)?;
    Ok(Json(modify(
        &sh,
        &mut st,
        &cal_id,
        &id,
        body,
        if_match(&headers).as_deref(),
        true,
    )?))
}

pub async fn delete_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path((cal, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, GErr> {
    let mut st = lock(&sh.google);
    let cal_id = st.calendar_id(&acct, &cal)?;
    delete(&sh, &mut st, &cal_id, &id, if_match(&headers).as_deref())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /users/me/calendarList` (minimal): the account's calendars.
pub async fn calendar_list_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
) -> Result<Json<Value>, GErr> {
    let st = lock(&sh.google);
    let mut items = Vec::new();
    for c in st
        .calendars
        .values()
        .filter(|c| c.owner.eq_ignore_ascii_case(&acct))
    {
        let mut m = Map::new();
        m.insert("kind".into(), json!("calendar#calendarListEntry"));
        m.insert("id".into(), json!(c.id));
        m.insert("summary".into(), json!(c.summary));
        m.insert("timeZone".into(), json!(c.time_zone));
        m.insert("accessRole".into(), json!("owner"));
        m.insert("primary".into(), json!(c.id.eq_ignore_ascii_case(&acct)));
        items.push(Value::Object(m));
    }
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(Json(
        json!({ "kind": "calendar#calendarList", "items": items }),
    ))
}
