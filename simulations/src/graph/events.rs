//! Events CRUD on `/me/events` and `/users/{upn}/events`: `transactionId`
//! dedupe, single-value extended properties and their `$filter`, If-Match.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::google::events::merge;
use crate::graph::errors::MErr;
use crate::graph::model::{not_found, parse_dttz, GraphState, Kind, MAccount, MEvent, OutZone};
use crate::graph::query::{a_path, encode_query, parse_expand, parse_ext_filter, render_with};
use crate::graph::subscriptions::{notify_change, ChangeType};
use crate::graph::{horizon, mailbox, prefer_headers};
use crate::rrule::Recurrence;
use crate::state::{lock, Shared};

const SERVER_FIELDS: &[&str] = &[
    "id",
    "@odata.etag",
    "@odata.context",
    "changeKey",
    "createdDateTime",
    "lastModifiedDateTime",
    "type",
    "seriesMasterId",
    "iCalUId",
    "originalStartTimeZone",
    "originalEndTimeZone",
];

fn strip(body: &mut Value) {
    if let Value::Object(m) = body {
        for k in SERVER_FIELDS {
            m.remove(*k);
        }
    }
}

pub fn account_mut<'a>(st: &'a mut GraphState, upn: &str) -> ApiResult<&'a mut MAccount> {
    st.accounts.get_mut(&upn.to_lowercase()).ok_or_else(|| {
        ApiError::new(
            404,
            "ErrorInvalidUser",
            format!("The requested user '{upn}' is invalid."),
        )
    })
}

pub fn account<'a>(st: &'a GraphState, upn: &str) -> ApiResult<&'a MAccount> {
    st.accounts.get(&upn.to_lowercase()).ok_or_else(|| {
        ApiError::new(
            404,
            "ErrorInvalidUser",
            format!("The requested user '{upn}' is invalid."),
        )
    })
}

/// Apply `body`'s times, all-day flag and recurrence to `ev`, validating them.
fn apply_times(ev: &mut MEvent, body: &Value) -> ApiResult<()> {
    let (start, zone, zone_name) = parse_dttz(&body["start"], "start")?;
    let (end_raw, end_zone, _) = parse_dttz(&body["end"], "end")?;
    // End is stored in the start zone so one zone describes the event.
    let end = crate::timefmt::local_to_utc(end_zone, end_raw)
        .with_timezone(&zone)
        .naive_local();
    let all_day = body["isAllDay"].as_bool().unwrap_or(false);
    if all_day && (start.time() != chrono::NaiveTime::MIN || end.time() != chrono::NaiveTime::MIN) {
        return Err(ApiError::new(400, "ErrorInvalidRequest",
            "Your request can't be completed. If the event is an all-day event, its start and end must be midnight in the same time zone."));
    }
    if end < start {
        return Err(ApiError::new(
            400,
            "ErrorInvalidRequest",
            "The end time of the event must be after its start time.",
        ));
    }
    let has_recurrence = body.get("recurrence").is_some_and(|r| !r.is_null());
    if has_recurrence {
        if ev.kind == Kind::Occurrence || ev.kind == Kind::Exception {
            return Err(ApiError::new(
                400,
                "ErrorInvalidRequest",
                "An occurrence cannot have a recurrence.",
            ));
        }
        Recurrence::from_graph(&body["recurrence"])
            .map_err(|m| ApiError::new(400, "ErrorInvalidRequest", m))?;
        ev.kind = Kind::SeriesMaster;
    } else if ev.kind == Kind::SeriesMaster {
        ev.kind = Kind::SingleInstance;
    }
    ev.start_wall = start;
    ev.end_wall = end;
    ev.zone = zone;
    ev.zone_name = zone_name;
    ev.all_day = all_day;
    Ok(())
}

fn new_change_key(shared: &Shared) -> String {
    format!("DwAAABYAAA{}", STANDARD.encode(shared.rng.bytes(12)))
}

/// Create; returns the event and whether it is new (false = `transactionId` replay).
pub fn create(
    shared: &Arc<Shared>,
    st: &mut GraphState,
    upn: &str,
    calendar: Option<&str>,
    mut body: Value,
) -> ApiResult<(MEvent, bool)> {
    if !body.is_object() {
        return Err(ApiError::new(
            400,
            "RequestBodyRead",
            "Cannot read the request body.",
        ));
    }
    strip(&mut body);
    let now = shared.now();
    let seq = st.seq + 1;
    let acct = account_mut(st, upn)?;
    if let Some(tid) = body.get("transactionId").and_then(Value::as_str) {
        if let Some(existing) = acct
            .events
            .values()
            .find(|e| !e.deleted && e.body["transactionId"] == tid)
        {
            return Ok((existing.clone(), false));
        }
    }
    let calendar_id = match calendar {
        Some(c) if acct.calendars.iter().any(|x| x.id == c) => c.to_string(),
        Some(_) => return Err(not_found()),
        None => acct.default_calendar(),
    };
    let id = format!(
        "AAMkAD{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(shared.rng.bytes(30))
    );
    let mut ev = MEvent {
        id: id.clone(),
        calendar_id,
        body: Value::Null,
        kind: Kind::SingleInstance,
        series_master_id: None,
        start_wall: now.naive_utc(),
        end_wall: now.naive_utc(),
        zone: chrono_tz::UTC,
        zone_name: "UTC".into(),
        legacy_zone: None,
        all_day: false,
        seq,
        deleted: false,
        created: now,
        modified: now,
        change_key: new_change_key(shared),
        ical_uid: format!(
            "040000008200E00074C5B7101A82E008{}",
            hex_upper(&shared.rng.bytes(24))
        ),
        vanished: false,
    };
    apply_times(&mut ev, &body)?;
    ev.body = body;
    acct.events.insert(id.clone(), ev.clone());
    st.seq = seq;
    notify_change(shared, st, upn, &ev, ChangeType::Created);
    Ok((ev, true))
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn check_if_match(ev: &MEvent, if_match: Option<&str>) -> ApiResult<()> {
    match if_match {
        Some(t) if t != "*" && t.trim_start_matches("W/") != ev.etag().trim_start_matches("W/") => Err(ApiError::new(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
        )),
        _ => Ok(()),
    }
}

pub fn update(
    shared: &Arc<Shared>,
    st: &mut GraphState,
    upn: &str,
    id: &str,
    mut patch: Value,
    if_match: Option<&str>,
) -> ApiResult<MEvent> {
    if !patch.is_object() {
        return Err(ApiError::new(
            400,
            "RequestBodyRead",
            "Cannot read the request body.",
        ));
    }
    strip(&mut patch);
    if let Value::Object(m) = &mut patch {
        // transactionId cannot be changed after creation.
        m.remove("transactionId");
    }
    let now = shared.now();
    let seq = st.seq + 1;
    let hz = horizon(shared);
    let change_key = new_change_key(shared);
    let acct = account_mut(st, upn)?;
    let mut ev = acct
        .find(id, hz)
        .filter(|e| !e.deleted)
        .ok_or_else(not_found)?;
    check_if_match(&ev, if_match)?;
    let before = ev.clone();
    if ev.kind == Kind::Occurrence {
        ev.kind = Kind::Exception;
    }
    let mut body = ev.body.clone();
    // Merge onto the current times, so a patch without start/end keeps them.
    if let Value::Object(m) = &mut body {
        m.insert("start".into(), json!({ "dateTime": crate::timefmt::graph_wall(ev.start_wall), "timeZone": ev.zone_name }));
        m.insert("end".into(), json!({ "dateTime": crate::timefmt::graph_wall(ev.end_wall), "timeZone": ev.zone_name }));
        m.insert("isAllDay".into(), json!(ev.all_day));
    }
    if patch.get("start").is_some_and(|s| !s.is_null()) {
        // Saving new times writes a real zone again.
        ev.legacy_zone = None;
    }
    merge(&mut body, &patch);
    apply_times(&mut ev, &body)?;
    ev.body = body;
    ev.seq = seq;
    ev.modified = now;
    ev.change_key = change_key;
    remove_vanished_occurrences(acct, &before, &ev, seq, now, hz);
    acct.events.insert(ev.id.clone(), ev.clone());
    st.seq = seq;
    notify_change(shared, st, upn, &ev, ChangeType::Updated);
    Ok(ev)
}

/// When a series is edited (moved, shortened, made single), occurrences that
/// no longer exist become deleted exceptions, so delta reports them removed.
fn remove_vanished_occurrences(
    acct: &mut MAccount,
    before: &MEvent,
    after: &MEvent,
    seq: u64,
    now: DateTime<Utc>,
    hz: DateTime<Utc>,
) {
    if before.kind != Kind::SeriesMaster {
        return;
    }
    let new: Vec<String> = if after.kind == Kind::SeriesMaster {
        acct.occurrences(after, hz)
            .into_iter()
            .map(|o| o.id)
            .collect()
    } else {
        Vec::new()
    };
    // Occurrences that come back (series moved back) lose their tombstone.
    for id in &new {
        if acct.events.get(id).is_some_and(|e| e.vanished) {
            acct.events.remove(id);
        }
    }
    for mut occ in acct.occurrences(before, hz) {
        if new.contains(&occ.id) || acct.events.contains_key(&occ.id) {
            continue;
        }
        occ.vanished = true;
        occ.kind = Kind::Exception;
        occ.deleted = true;
        occ.seq = seq;
        occ.modified = now;
        acct.events.insert(occ.id.clone(), occ);
    }
}

pub fn delete(
    shared: &Arc<Shared>,
    st: &mut GraphState,
    upn: &str,
    id: &str,
    if_match: Option<&str>,
) -> ApiResult<()> {
    let now = shared.now();
    let seq = st.seq + 1;
    let hz = horizon(shared);
    let acct = account_mut(st, upn)?;
    let mut ev = acct
        .find(id, hz)
        .filter(|e| !e.deleted)
        .ok_or_else(not_found)?;
    check_if_match(&ev, if_match)?;
    if ev.kind == Kind::Occurrence {
        ev.kind = Kind::Exception;
    }
    ev.deleted = true;
    ev.seq = seq;
    ev.modified = now;
    if ev.kind == Kind::SeriesMaster {
        for e in acct.events.values_mut() {
            if e.series_master_id.as_deref() == Some(id) {
                e.deleted = true;
                e.seq = seq;
            }
        }
    }
    acct.events.insert(ev.id.clone(), ev.clone());
    st.seq = seq;
    notify_change(shared, st, upn, &ev, ChangeType::Deleted);
    Ok(())
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn body_of(b: Result<Json<Value>, JsonRejection>) -> ApiResult<Value> {
    b.map(|Json(v)| v)
        .map_err(|_| ApiError::new(400, "RequestBodyRead", "Cannot read the request body."))
}

pub async fn create_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, MErr> {
    let upn = mailbox(&a, &p)?;
    let body = body_of(body)?;
    let out = OutZone::from_prefer(&prefer_headers(&headers));
    let mut st = lock(&sh.graph);
    let (ev, _) = create(&sh, &mut st, &upn, p.get("cal").map(String::as_str), body)?;
    let mut v = ev.render(&upn, &out);
    v["@odata.context"] = json!(format!(
        "{}/$metadata#users('{upn}')/events/$entity",
        sh.graph_base()
    ));
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn get_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let out = OutZone::from_prefer(&prefer_headers(&headers));
    let st = lock(&sh.graph);
    let acct = account(&st, &upn)?;
    let id = p.get("id").cloned().unwrap_or_default();
    let ev = acct
        .find(&id, horizon(&sh))
        .filter(|e| !e.deleted)
        .ok_or_else(not_found)?;
    let mut v = render_with(&ev, &upn, &out, &parse_expand(q.get("$expand")));
    v["@odata.context"] = json!(format!(
        "{}/$metadata#users('{upn}')/events/$entity",
        sh.graph_base()
    ));
    Ok(Json(v))
}

pub async fn list_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let prefer = prefer_headers(&headers);
    let out = OutZone::from_prefer(&prefer);
    let filter = q.get("$filter").map(|f| parse_ext_filter(f)).transpose()?;
    let expand = parse_expand(q.get("$expand"));
    let top = q
        .get("$top")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(sh.config.graph_page_size)
        .max(1);
    let skip = q
        .get("$skip")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let st = lock(&sh.graph);
    let acct = account(&st, &upn)?;
    // `/calendar/events` is the default calendar; `/events` the whole mailbox.
    let calendar = match p.get("cal") {
        Some(c) => Some(c.clone()),
        None if uri.path().ends_with("/calendar/events") => Some(acct.default_calendar()),
        None => None,
    };
    let items: Vec<&MEvent> = acct
        .events
        .values()
        .filter(|e| !e.deleted && matches!(e.kind, Kind::SingleInstance | Kind::SeriesMaster))
        .filter(|e| calendar.as_ref().is_none_or(|c| *c == e.calendar_id))
        .filter(|e| {
            filter
                .as_ref()
                .is_none_or(|(id, v)| e.has_extended_property(id, v))
        })
        .collect();
    let page: Vec<Value> = items
        .iter()
        .skip(skip)
        .take(top)
        .map(|e| render_with(e, &upn, &out, &expand))
        .collect();
    let mut resp = json!({ "@odata.context": format!("{}/$metadata#users('{upn}')/events", sh.graph_base()), "value": page });
    if skip + top < items.len() {
        let mut next: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "$skip")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        next.push(("$skip".into(), (skip + top).to_string()));
        resp["@odata.nextLink"] = json!(format!(
            "{}{}?{}",
            sh.origin,
            a_path(&p),
            encode_query(&next)
        ));
    }
    Ok(Json(resp))
}

pub async fn patch_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let body = body_of(body)?;
    let out = OutZone::from_prefer(&prefer_headers(&headers));
    let mut st = lock(&sh.graph);
    let id = p.get("id").cloned().unwrap_or_default();
    let ev = update(&sh, &mut st, &upn, &id, body, if_match(&headers).as_deref())?;
    Ok(Json(ev.render(&upn, &out)))
}

pub async fn delete_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, MErr> {
    let upn = mailbox(&a, &p)?;
    let mut st = lock(&sh.graph);
    let id = p.get("id").cloned().unwrap_or_default();
    delete(&sh, &mut st, &upn, &id, if_match(&headers).as_deref())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /me` (or `/users/{upn}`), minimal: who the token belongs to
/// (what a client reads after the code flow).
pub async fn user_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let st = lock(&sh.graph);
    account(&st, &upn)?;
    Ok(Json(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity",
        "id": format!("user-{}", upn.to_lowercase()),
        "userPrincipalName": upn,
        "mail": upn,
    })))
}

pub async fn calendars_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let st = lock(&sh.graph);
    let acct = account(&st, &upn)?;
    let value: Vec<Value> = acct
        .calendars
        .iter()
        .map(|c| {
            json!({ "id": c.id, "name": c.name, "isDefaultCalendar": c.is_default, "canEdit": true,
                         "owner": { "name": upn, "address": upn } })
        })
        .collect();
    Ok(Json(json!({ "value": value })))
}
