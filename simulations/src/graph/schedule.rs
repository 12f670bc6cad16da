//! `getSchedule`: free/busy of up to 20 mailboxes over < 62 days, with the
//! `availabilityView` digit string and per-schedule errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::graph::errors::MErr;
use crate::graph::model::{parse_dttz, GraphState, MEvent, OutZone};
use crate::graph::{horizon, mailbox, prefer_headers};
use crate::state::{lock, Shared};
use crate::timefmt::{graph_wall, local_to_utc};

/// Availability digit and its precedence when items overlap in one slot.
fn digit(show_as: &str) -> (char, u8) {
    match show_as.to_ascii_lowercase().as_str() {
        "oof" => ('3', 4),
        "busy" => ('2', 3),
        "tentative" => ('1', 2),
        "workingelsewhere" => ('4', 1),
        _ => ('0', 0),
    }
}

fn blocks(ev: &MEvent) -> bool {
    let show = ev.body["showAs"].as_str().unwrap_or("busy");
    !ev.deleted
        && !show.eq_ignore_ascii_case("free")
        && ev.body["isCancelled"] != true
        && ev.body["responseStatus"]["response"] != "declined"
}

fn instant(v: &Value, field: &str) -> ApiResult<DateTime<Utc>> {
    let (wall, tz, _) = parse_dttz(v, field)?;
    Ok(local_to_utc(tz, wall))
}

pub fn schedule(sh: &Shared, st: &GraphState, body: &Value, out: &OutZone) -> ApiResult<Value> {
    let schedules: Vec<String> = body["schedules"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if schedules.is_empty() {
        return Err(ApiError::new(
            400,
            "ErrorInvalidParameter",
            "The parameter 'schedules' is required.",
        ));
    }
    if schedules.len() > 20 {
        return Err(ApiError::new(
            400,
            "ErrorInvalidParameter",
            "The number of schedules requested exceeds the limit of 20.",
        ));
    }
    let start = instant(&body["startTime"], "startTime")?;
    let end = instant(&body["endTime"], "endTime")?;
    if end <= start {
        return Err(ApiError::new(
            400,
            "ErrorInvalidParameter",
            "The end time must be after the start time.",
        ));
    }
    if end - start >= Duration::days(62) {
        return Err(ApiError::new(400, "ErrorTimeIntervalTooBig", "The requested time duration specified is too long. The duration must be less than 62 days."));
    }
    let interval = body["availabilityViewInterval"].as_i64().unwrap_or(30);
    if !(5..=1440).contains(&interval) {
        return Err(ApiError::new(
            400,
            "ErrorInvalidParameter",
            "availabilityViewInterval must be between 5 and 1440.",
        ));
    }
    let slot = Duration::minutes(interval);
    let slots = ((end - start).num_minutes() + interval - 1) / interval;
    let mut value = Vec::new();
    for id in schedules {
        let Some(acct) = st.accounts.get(&id.to_lowercase()) else {
            value.push(json!({ "scheduleId": id, "availabilityView": "",
                "error": { "message": format!("The user '{id}' could not be found."), "responseCode": "ErrorMailRecipientNotFound" } }));
            continue;
        };
        let cal = acct.default_calendar();
        let mut items: Vec<MEvent> = acct
            .view_items(Some(&cal), end.max(horizon(sh)))
            .into_iter()
            .filter(|e| blocks(e) && e.start_utc() < end && e.end_utc() > start)
            .collect();
        items.sort_by_key(|e| e.start_utc());
        let view: String = (0..slots)
            .map(|i| {
                let (s, e) = (start + slot * i as i32, start + slot * (i as i32 + 1));
                items
                    .iter()
                    .filter(|ev| ev.start_utc() < e && ev.end_utc() > s)
                    .map(|ev| digit(ev.body["showAs"].as_str().unwrap_or("busy")))
                    .max_by_key(|d| d.1)
                    .map(|d| d.0)
                    .unwrap_or('0')
            })
            .collect();
        let wall = |t: DateTime<Utc>| json!({ "dateTime": graph_wall(t.with_timezone(&out.tz).naive_local()), "timeZone": out.name });
        let schedule_items: Vec<Value> = items
            .iter()
            .map(|ev| {
                json!({
                    "isPrivate": ev.body["sensitivity"] == "private",
                    "status": ev.body["showAs"].as_str().unwrap_or("busy"),
                    "subject": ev.body["subject"].as_str().unwrap_or(""),
                    "location": ev.body["location"]["displayName"].as_str().unwrap_or(""),
                    "start": wall(ev.start_utc()),
                    "end": wall(ev.end_utc()),
                })
            })
            .collect();
        value.push(json!({
            "scheduleId": id,
            "availabilityView": view,
            "scheduleItems": schedule_items,
            "workingHours": { "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                "startTime": "08:00:00.0000000", "endTime": "17:00:00.0000000", "timeZone": { "name": "UTC" } },
        }));
    }
    Ok(
        json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.scheduleInformation)", "value": value }),
    )
}

pub async fn get_schedule_h(
    State(sh): State<Arc<Shared>>,
    Extension(a): Extension<Authed>,
    Path(p): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, MErr> {
    mailbox(&a, &p)?;
    let body = body
        .map(|Json(v)| v)
        .map_err(|_| ApiError::new(400, "RequestBodyRead", "Cannot read the request body."))?;
    let out = OutZone::from_prefer(&prefer_headers(&headers));
    let st = lock(&sh.graph);
    Ok(Json(schedule(&sh, &st, &body, &out)?))
}
