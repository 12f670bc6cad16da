//! `events.list`: full sync with paging, incremental sync with `syncToken`,
//! `nextSyncToken` only on the last page, 410 `fullSyncRequired`.

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::google::errors::GErr;
use crate::google::model::{horizon, GCalendar, GoogleState, Row};
use crate::opaque;
use crate::state::{lock, Shared};
use crate::timefmt::{google_instant, parse_rfc3339};

#[derive(Serialize, Deserialize)]
struct SyncToken {
    c: String,
    s: u64,
    g: u64,
    /// Issued at (unix ms), for the optional token TTL.
    #[serde(default)]
    t: i64,
}

#[derive(Serialize, Deserialize)]
struct PageToken {
    /// Sort key of the last item served.
    a: String,
    /// Change counter when the listing started: becomes `nextSyncToken`.
    s: u64,
}

#[derive(Default)]
pub struct ListParams {
    sync_token: Option<String>,
    page_token: Option<String>,
    max_results: usize,
    single_events: bool,
    show_deleted: Option<bool>,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
    updated_min: Option<DateTime<Utc>>,
    order_by: Option<String>,
    q: Option<String>,
    ical_uid: Option<String>,
    private_props: Vec<(String, String)>,
    shared_props: Vec<(String, String)>,
    event_types: Vec<String>,
    /// Set by `events.instances`: only instances of this series.
    series: Option<String>,
    /// `timeZone`: the zone date-times are answered in.
    time_zone: Option<chrono_tz::Tz>,
}

fn bad(param: &str, msg: &str) -> ApiError {
    ApiError::new(400, "invalid", msg.to_string()).at("parameter", param)
}

fn parse_bool(k: &str, v: &str) -> ApiResult<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(k, &format!("Invalid boolean value for {k}."))),
    }
}

fn parse_time(k: &str, v: &str) -> ApiResult<DateTime<Utc>> {
    parse_rfc3339(v).ok_or_else(|| bad(k, &format!("Bad Request: invalid {k}")))
}

fn parse_prop(k: &str, v: &str) -> ApiResult<(String, String)> {
    v.split_once('=')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| bad(k, &format!("Invalid value for {k}: expected name=value.")))
}

/// Sync tokens cannot be combined with these restrictions.
const NOT_WITH_SYNC_TOKEN: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

pub fn parse_params(raw: &[(String, String)]) -> ApiResult<ListParams> {
    let mut p = ListParams {
        max_results: 250,
        ..Default::default()
    };
    for (k, v) in raw {
        match k.as_str() {
            "syncToken" => p.sync_token = Some(v.clone()),
            "pageToken" => p.page_token = Some(v.clone()),
            "maxResults" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad(k, "Invalid value for maxResults."))?;
                if n == 0 {
                    return Err(bad(k, "Invalid value for maxResults."));
                }
                p.max_results = n.min(2500);
            }
            "singleEvents" => p.single_events = parse_bool(k, v)?,
            "showDeleted" => p.show_deleted = Some(parse_bool(k, v)?),
            "timeMin" => p.time_min = Some(parse_time(k, v)?),
            "timeMax" => p.time_max = Some(parse_time(k, v)?),
            "updatedMin" => p.updated_min = Some(parse_time(k, v)?),
            "orderBy" => {
                if v != "startTime" && v != "updated" {
                    return Err(bad(k, "Invalid value for orderBy."));
                }
                p.order_by = Some(v.clone())
            }
            "q" => p.q = Some(v.to_lowercase()),
            "iCalUID" => p.ical_uid = Some(v.clone()),
            "privateExtendedProperty" => p.private_props.push(parse_prop(k, v)?),
            "sharedExtendedProperty" => p.shared_props.push(parse_prop(k, v)?),
            "eventTypes" => p.event_types.push(v.clone()),
            "timeZone" => {
                p.time_zone = Some(
                    crate::timefmt::resolve_zone(v)
                        .ok_or_else(|| bad(k, &format!("Invalid time zone: {v}")))?,
                )
            }
            _ => {}
        }
    }
    if p.sync_token.is_some() {
        if let Some((k, _)) = raw
            .iter()
            .find(|(k, _)| NOT_WITH_SYNC_TOKEN.contains(&k.as_str()))
        {
            return Err(bad(
                k,
                &format!("The parameter {k} cannot be used with syncToken."),
            ));
        }
        if p.show_deleted == Some(false) {
            return Err(bad(
                "showDeleted",
                "showDeleted=false cannot be used with syncToken.",
            ));
        }
    }
    if p.order_by.as_deref() == Some("startTime") && !p.single_events {
        return Err(bad(
            "orderBy",
            "The requested ordering is not available for the particular query.",
        ));
    }
    if let (Some(a), Some(b)) = (p.time_min, p.time_max) {
        if b <= a {
            return Err(
                ApiError::new(400, "timeRangeEmpty", "The specified time range is empty.")
                    .domain("calendar")
                    .at("parameter", "timeMax"),
            );
        }
    }
    Ok(p)
}

fn props_match(item: &Value, scope: &str, wanted: &[(String, String)]) -> bool {
    wanted
        .iter()
        .all(|(k, v)| item["extendedProperties"][scope][k].as_str() == Some(v.as_str()))
}

fn keep(p: &ListParams, incremental: bool, r: &Row) -> bool {
    if incremental {
        return true;
    }
    if r.deleted && !p.show_deleted.unwrap_or(false) {
        return false;
    }
    if let (Some(min), Some(end)) = (p.time_min, r.end) {
        if end <= min {
            return false;
        }
    }
    if let (Some(max), Some(start)) = (p.time_max, r.start) {
        if start >= max {
            return false;
        }
    }
    if let Some(u) = p.updated_min {
        if r.updated < u {
            return false;
        }
    }
    let item = &r.item;
    if let Some(q) = &p.q {
        let text = ["summary", "description", "location"]
            .iter()
            .filter_map(|k| item[*k].as_str())
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        if !text.contains(q.as_str()) {
            return false;
        }
    }
    if let Some(uid) = &p.ical_uid {
        if item["iCalUID"].as_str() != Some(uid.as_str()) {
            return false;
        }
    }
    props_match(item, "private", &p.private_props) && props_match(item, "shared", &p.shared_props)
}

fn sort_key(p: &ListParams, r: &Row) -> String {
    match p.order_by.as_deref() {
        Some("startTime") => {
            let s = r
                .start
                .map(|t| t.format("%Y%m%dT%H%M%S").to_string())
                .unwrap_or_default();
            format!("{s}|{}", r.id)
        }
        Some("updated") => format!("{}|{}", r.updated.format("%Y%m%dT%H%M%S%.6f"), r.id),
        _ => r.id.clone(),
    }
}

/// The change counter a `syncToken` stands for; 410 when it no longer holds.
fn since_of(
    shared: &Shared,
    cal: &GCalendar,
    p: &ListParams,
    now: DateTime<Utc>,
) -> ApiResult<Option<u64>> {
    let Some(t) = &p.sync_token else {
        return Ok(None);
    };
    let tok: SyncToken =
        opaque::decode(t).ok_or_else(|| bad("syncToken", "Invalid sync token value."))?;
    let expired = shared
        .config
        .google_sync_token_ttl_secs
        .is_some_and(|ttl| now.timestamp_millis() - tok.t > ttl * 1000);
    if tok.c != cal.id || tok.g != cal.token_generation || expired {
        return Err(ApiError::new(
            410,
            "fullSyncRequired",
            "Sync token is no longer valid, a full sync is required.",
        )
        .domain("calendar"));
    }
    Ok(Some(tok.s))
}

fn check_updated_min(shared: &Shared, p: &ListParams, now: DateTime<Utc>) -> ApiResult<()> {
    if let (Some(u), Some(days)) = (p.updated_min, shared.config.google_updated_min_max_days) {
        if u < now - chrono::Duration::days(days) {
            return Err(ApiError::new(
                410,
                "updatedMinTooLongAgo",
                "The requested minimum modification time lies too far in the past.",
            )
            .domain("calendar"));
        }
    }
    Ok(())
}

/// Matching rows in listing order, after the page token's position.
fn matching_rows(
    shared: &Shared,
    cal: &GCalendar,
    p: &ListParams,
    since: Option<u64>,
    after: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<(String, Row)> {
    let until = p
        .time_max
        .unwrap_or_else(|| horizon(now, shared.config.recurrence_horizon_days));
    let mut rows: Vec<(String, Row)> = cal
        .rows_changed_after(p.single_events, until, since)
        .into_iter()
        .filter(|r| since.is_none_or(|s| r.seq > s))
        .filter(|r| keep(p, since.is_some(), r))
        .filter(|r| {
            p.series
                .as_ref()
                .is_none_or(|m| r.item["recurringEventId"] == m.as_str())
        })
        .filter(|r| {
            p.event_types.is_empty()
                || p.event_types
                    .iter()
                    .any(|t| r.item["eventType"] == t.as_str())
        })
        .map(|r| (sort_key(p, &r), r))
        .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Listings that may end with a `nextSyncToken`.
fn offers_sync_token(p: &ListParams) -> bool {
    p.series.is_none()
        && p.q.is_none()
        && p.ical_uid.is_none()
        && p.updated_min.is_none()
        && p.order_by.is_none()
        && p.private_props.is_empty()
        && p.shared_props.is_empty()
}

pub fn list(shared: &Shared, st: &GoogleState, cal_id: &str, p: &ListParams) -> ApiResult<Value> {
    let now = shared.now();
    let cal = st.calendar(cal_id)?;
    let since = since_of(shared, cal, p, now)?;
    check_updated_min(shared, p, now)?;
    let page: Option<PageToken> = match &p.page_token {
        None => None,
        Some(t) => {
            Some(opaque::decode(t).ok_or_else(|| bad("pageToken", "Invalid page token value."))?)
        }
    };
    let snap = page.as_ref().map(|pt| pt.s).unwrap_or(st.seq);
    let mut rows = matching_rows(
        shared,
        cal,
        p,
        since,
        page.as_ref().map(|pt| pt.a.as_str()),
        now,
    );
    // Real pages may hold fewer items than maxResults (even none) while more follow.
    let mut page_size = p.max_results;
    if shared.rng.chance(shared.config.google_short_page_rate) {
        page_size = shared.rng.range(0, p.max_results.saturating_sub(1) as u64) as usize;
    }
    let more = rows.len() > page_size;
    rows.truncate(page_size);
    let items: Vec<Value> = rows
        .iter()
        .map(|(_, r)| {
            if r.deleted && (since.is_some() || r.item["recurringEventId"].is_null()) {
                r.tombstone.clone()
            } else {
                in_zone(r.item.clone(), p.time_zone)
            }
        })
        .collect();
    let zone_name = p
        .time_zone
        .map(|z| z.name().to_string())
        .unwrap_or_else(|| cal.time_zone.clone());
    let mut out = json!({
        "kind": "calendar#events",
        "etag": format!("\"{snap}\""),
        "summary": cal.summary,
        "description": "",
        "updated": google_instant(cal.updated),
        "timeZone": zone_name,
        "accessRole": "owner",
        "defaultReminders": [],
    });
    // Moved in: `json!` would serialise the page's items into a copy.
    out["items"] = Value::Array(items);
    if more {
        // An empty short page keeps the previous position.
        let last = rows
            .last()
            .map(|(k, _)| k.clone())
            .or_else(|| page.as_ref().map(|pt| pt.a.clone()))
            .unwrap_or_default();
        out["nextPageToken"] = json!(opaque::encode(&PageToken { a: last, s: snap }));
    } else if offers_sync_token(p) {
        let tok = SyncToken {
            c: cal.id.clone(),
            s: snap,
            g: cal.token_generation,
            t: now.timestamp_millis(),
        };
        out["nextSyncToken"] = json!(opaque::encode(&tok));
    }
    Ok(out)
}

pub async fn list_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path(cal): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, GErr> {
    let p = parse_params(&raw)?;
    let st = lock(&sh.google);
    let cal_id = st.calendar_id(&acct, &cal)?;
    Ok(Json(list(&sh, &st, &cal_id, &p)?))
}

/// Re-express an item's date-times in the `timeZone` the list asked for.
fn in_zone(mut item: Value, tz: Option<chrono_tz::Tz>) -> Value {
    let Some(tz) = tz else { return item };
    for key in ["start", "end", "originalStartTime"] {
        let at = item[key]["dateTime"].as_str().and_then(parse_rfc3339);
        if let Some(at) = at {
            item[key]["dateTime"] = json!(crate::timefmt::google_datetime_in(tz, at));
        }
    }
    item
}

/// `GET /calendars/{cal}/events/{id}/instances`: the series' instances
/// (exceptions included), in start order, paged, without sync tokens.
pub async fn instances_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    Path((cal, id)): Path<(String, String)>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, GErr> {
    let allowed = [
        "maxResults",
        "pageToken",
        "showDeleted",
        "timeMin",
        "timeMax",
        "timeZone",
    ];
    let raw: Vec<(String, String)> = raw
        .into_iter()
        .filter(|(k, _)| allowed.contains(&k.as_str()))
        .collect();
    let mut p = parse_params(&raw)?;
    p.single_events = true;
    p.order_by = Some("startTime".into());
    p.series = Some(id.clone());
    let st = lock(&sh.google);
    let cal_id = st.calendar_id(&acct, &cal)?;
    match st.calendar(&cal_id)?.events.get(&id) {
        Some(m) if m.deleted => {
            return Err(ApiError::new(410, "deleted", "Resource has been deleted").into())
        }
        Some(m) if crate::google::model::GCalendar::is_master(m) => {}
        _ => return Err(ApiError::new(404, "notFound", "Not Found").into()),
    }
    let mut out = list(&sh, &st, &cal_id, &p)?;
    if let Value::Object(m) = &mut out {
        m.remove("nextSyncToken");
    }
    Ok(Json(out))
}
