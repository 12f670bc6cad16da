//! `calendarView` and `calendarView/delta`: occurrences in a window, delta
//! rounds with `@odata.nextLink` / `@odata.deltaLink`, `@removed` items
//! (also for changes outside the window), replays, 410 `SyncStateNotFound`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::graph::errors::MErr;
use crate::graph::events::account;
use crate::graph::model::{prefer_value, GraphState, MAccount, MEvent, OutZone};
use crate::graph::query::encode_query;
use crate::graph::{horizon, mailbox, prefer_headers};
use crate::opaque;
use crate::state::{lock, Shared};
use crate::timefmt::parse_iso_utc_default;

fn window(q: &HashMap<String, String>) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let missing = || {
        ApiError::new(400, "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.")
    };
    let get = |k: &str| {
        q.iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let start = get("startDateTime").ok_or_else(missing)?;
    let end = get("endDateTime").ok_or_else(missing)?;
    let parse = |v: &str| {
        parse_iso_utc_default(v).ok_or_else(|| {
            ApiError::new(
                400,
                "ErrorInvalidParameter",
                format!("The value '{v}' of parameter 'StartDateTime/EndDateTime' is invalid."),
            )
        })
    };
    let (s, e) = (parse(&start)?, parse(&end)?);
    if e - s > Duration::days(1825) {
        return Err(ApiError::new(
            400,
            "ErrorInvalidRequest",
            "The time window exceeds the maximum of 1825 days.",
        ));
    }
    Ok((s, e))
}

fn page_size(sh: &Shared, prefer: &[String], q: &HashMap<String, String>) -> usize {
    q.get("$top")
        .and_then(|t| t.parse().ok())
        .or_else(|| prefer_value(prefer, "odata.maxpagesize").and_then(|v| v.parse().ok()))
        .unwrap_or(sh.config.graph_page_size)
        .max(1)
}

fn overlaps(ev: &MEvent, s: DateTime<Utc>, e: DateTime<Utc>) -> bool {
    let (es, ee) = (ev.start_utc(), ev.end_utc());
    es < e && (ee > s || (ee == es && es >= s))
}

fn who(p: &HashMap<String, String>) -> String {
    p.get("upn")
        .map(|u| format!("users/{u}"))
        .unwrap_or_else(|| "me".into())
}

pub async fn calendar_view_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, MErr> {
    let upn = mailbox(&a, &p)?;
    let (s, e) = window(&q)?;
    let prefer = prefer_headers(&headers);
    let out = OutZone::from_prefer(&prefer);
    let top = page_size(&sh, &prefer, &q);
    let skip = q
        .get("$skip")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let st = lock(&sh.graph);
    let acct = account(&st, &upn)?;
    let cal = p
        .get("cal")
        .cloned()
        .unwrap_or_else(|| acct.default_calendar());
    let mut items: Vec<MEvent> = acct
        .view_items(Some(&cal), e.max(horizon(&sh)))
        .into_iter()
        .filter(|ev| !ev.deleted && overlaps(ev, s, e))
        .collect();
    items.sort_by(|a, b| (a.start_utc(), &a.id).cmp(&(b.start_utc(), &b.id)));
    let value: Vec<Value> = items
        .iter()
        .skip(skip)
        .take(top)
        .map(|ev| ev.render(&upn, &out))
        .collect();
    let mut resp = json!({ "@odata.context": format!("{}/$metadata#users('{upn}')/calendarView", sh.graph_base()) });
    // Moved in: `json!` would serialise the page's events into a copy.
    resp["value"] = Value::Array(value);
    if skip + top < items.len() {
        let mut next: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| *k != "$skip")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        next.sort();
        next.push(("$skip".into(), (skip + top).to_string()));
        let path = match p.get("cal") {
            Some(c) => format!("{}/calendars/{c}/calendarView", who(&p)),
            None => format!("{}/calendarView", who(&p)),
        };
        resp["@odata.nextLink"] = json!(format!(
            "{}/{path}?{}",
            sh.graph_base(),
            encode_query(&next)
        ));
    }
    Ok(Json(resp))
}

#[derive(Serialize, Deserialize, Clone)]
struct DeltaState {
    u: String,
    ws: i64,
    we: i64,
    /// Changes after this counter are reported (0 = initial round).
    since: u64,
    /// Counter when this round started; the next round starts from it.
    snap: u64,
    after: Option<String>,
    g: u64,
    /// When the deltaLink was issued (unix ms), for the optional token TTL.
    #[serde(default)]
    t: i64,
}

fn removed(id: &str) -> Value {
    json!({ "@odata.type": "#microsoft.graph.event", "id": id, "@removed": { "reason": "deleted" } })
}

fn gone() -> ApiError {
    ApiError::new(
        410,
        "SyncStateNotFound",
        "The sync state generation is not found; the sync state may have been deleted or expired.",
    )
}

fn utc(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// 410 whose `Location` is a fresh round over the same window.
fn gone_with_restart(sh: &Shared, p: &HashMap<String, String>, s: &DeltaState) -> Response {
    let restart = format!(
        "{}/{}/calendarView/delta?startDateTime={}&endDateTime={}&$deltatoken=",
        sh.graph_base(),
        who(p),
        utc(s.ws).format("%Y-%m-%dT%H:%M:%SZ"),
        utc(s.we).format("%Y-%m-%dT%H:%M:%SZ"),
    );
    let mut resp = MErr(gone()).into_response();
    if let Ok(v) = HeaderValue::from_str(&restart) {
        resp.headers_mut().insert("Location", v);
    }
    resp
}

/// Where this request stands: a new round, the next page, or the next round.
/// `Err(response)` is the 400/410 to send.
fn delta_state(
    sh: &Shared,
    st: &GraphState,
    acct: &MAccount,
    p: &HashMap<String, String>,
    q: &HashMap<String, String>,
) -> Result<DeltaState, Box<Response>> {
    // An empty `$deltatoken` (the 410 `Location`) starts a fresh round.
    let delta_token = q.get("$deltatoken").filter(|t| !t.is_empty());
    let token = delta_token.or_else(|| q.get("$skiptoken").filter(|t| !t.is_empty()));
    let Some(tok) = token else {
        let (ws, we) = window(q).map_err(|e| Box::new(MErr(e).into_response()))?;
        return Ok(DeltaState {
            u: acct.upn.to_lowercase(),
            ws: ws.timestamp(),
            we: we.timestamp(),
            since: 0,
            snap: st.seq,
            after: None,
            g: acct.delta_generation,
            t: 0,
        });
    };
    let mut s: DeltaState =
        opaque::decode(tok).ok_or_else(|| Box::new(MErr(gone()).into_response()))?;
    let expired = delta_token.is_some()
        && sh
            .config
            .graph_delta_token_ttl_secs
            .is_some_and(|ttl| sh.now().timestamp_millis() - s.t > ttl * 1000);
    if !s.u.eq_ignore_ascii_case(&acct.upn) || s.g != acct.delta_generation || expired {
        return Err(Box::new(gone_with_restart(sh, p, &s)));
    }
    if delta_token.is_some() {
        s.snap = st.seq;
        s.after = None;
    }
    Ok(s)
}

/// One page of the round: items changed since `state.since`, after `state.after`.
/// Returns the items and the id of the last one if more remain.
fn delta_page(
    sh: &Shared,
    acct: &MAccount,
    state: &DeltaState,
    out: &OutZone,
    size: usize,
) -> (Vec<Value>, Option<String>) {
    let (ws, we) = (utc(state.ws), utc(state.we));
    let cal = acct.default_calendar();
    let mut items: Vec<MEvent> = acct
        .view_items_changed_after(Some(&cal), we.max(horizon(sh)), Some(state.since))
        .into_iter()
        .filter(|ev| {
            state
                .after
                .as_ref()
                .is_none_or(|a| ev.id.as_str() > a.as_str())
        })
        .collect();
    items.sort_by(|a, b| a.id.cmp(&b.id));
    let mut value = Vec::new();
    let mut last_id = None;
    let mut served = 0usize;
    for ev in &items {
        let item = if !ev.deleted && overlaps(ev, ws, we) {
            ev.render(&acct.upn.to_lowercase(), out)
        } else if state.since == 0 {
            // The initial round lists what exists in the window, nothing else.
            continue;
        } else {
            // Out-of-window changes are reported as removals too (real Graph does this).
            removed(&ev.id)
        };
        if served == size {
            return (value, last_id);
        }
        if sh.rng.chance(sh.config.graph_delta_repeat_rate) {
            value.push(item.clone());
        }
        value.push(item);
        served += 1;
        last_id = Some(ev.id.clone());
    }
    (value, None)
}

pub async fn delta_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, MErr> {
    let upn = mailbox(&a, &p)?;
    let prefer = prefer_headers(&headers);
    let out = OutZone::from_prefer(&prefer);
    let size = page_size(&sh, &prefer, &q);
    let st = lock(&sh.graph);
    let acct = account(&st, &upn)?;
    let state = match delta_state(&sh, &st, acct, &p, &q) {
        Ok(s) => s,
        Err(resp) => return Ok(*resp),
    };
    let base = format!("{}/{}/calendarView/delta", sh.graph_base(), who(&p));
    let context = format!("{}/$metadata#Collection(event)", sh.graph_base());
    // Real delta pages can be empty while more follow: clients must keep going.
    if sh
        .rng
        .chance(sh.config.graph_delta_empty_page_rate.min(0.9))
    {
        let next = format!("{base}?$skiptoken={}", opaque::encode(&state));
        return Ok(Json(
            json!({ "@odata.context": context, "value": [], "@odata.nextLink": next }),
        )
        .into_response());
    }
    let (value, more_after) = delta_page(&sh, acct, &state, &out, size);
    let mut resp = json!({ "@odata.context": context });
    resp["value"] = Value::Array(value);
    if let Some(after) = more_after {
        let next = DeltaState {
            after: Some(after),
            ..state
        };
        resp["@odata.nextLink"] = json!(format!("{base}?$skiptoken={}", opaque::encode(&next)));
    } else {
        let next = DeltaState {
            since: state.snap,
            snap: 0,
            after: None,
            t: sh.now().timestamp_millis(),
            ..state
        };
        resp["@odata.deltaLink"] = json!(format!("{base}?$deltatoken={}", opaque::encode(&next)));
    }
    Ok(Json(resp).into_response())
}
