//! `freebusy.query`: merged busy intervals per calendar, per-calendar errors,
//! `timeRangeEmpty`, and the undocumented `timeRangeTooLong` threshold.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Map, Value};
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::gate::Authed;
use crate::google::errors::GErr;
use crate::google::events::json_body;
use crate::google::model::{GCalendar, GoogleState, Row};
use crate::state::{lock, Shared};
use crate::timefmt::{google_datetime_in, google_instant, parse_rfc3339, resolve_zone};

/// The busy rule of PROVIDERS.md §4: skip cancelled, transparent,
/// declined-by-self, working-location and birthday events.
pub fn blocks_time(item: &Value) -> bool {
    if item["status"] == "cancelled" || item["transparency"] == "transparent" {
        return false;
    }
    if matches!(
        item["eventType"].as_str(),
        Some("workingLocation") | Some("birthday")
    ) {
        return false;
    }
    let declined = item["attendees"].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x["self"] == true && x["responseStatus"] == "declined")
    });
    !declined
}

pub fn busy_intervals(
    cal: &GCalendar,
    min: DateTime<Utc>,
    max: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = cal
        .rows(true, max)
        .iter()
        .filter(|r: &&Row| !r.deleted && blocks_time(&r.item))
        .filter_map(|r| Some((r.start?, r.end?)))
        .filter(|(s, e)| *s < max && *e > min)
        .map(|(s, e)| (s.max(min), e.min(max)))
        .collect();
    spans.sort();
    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

fn time_param(body: &Value, k: &str) -> ApiResult<DateTime<Utc>> {
    let v = body[k].as_str().ok_or_else(|| {
        ApiError::new(400, "required", format!("Missing {k} parameter.")).at("parameter", k)
    })?;
    parse_rfc3339(v).ok_or_else(|| {
        ApiError::new(400, "invalid", format!("Invalid {k} value.")).at("parameter", k)
    })
}

pub fn query(shared: &Shared, st: &GoogleState, account: &str, body: &Value) -> ApiResult<Value> {
    let min = time_param(body, "timeMin")?;
    let max = time_param(body, "timeMax")?;
    if max <= min {
        return Err(
            ApiError::new(400, "timeRangeEmpty", "The specified time range is empty.")
                .domain("calendar")
                .at("parameter", "timeMax"),
        );
    }
    if max - min > Duration::days(shared.config.google_freebusy_max_days) {
        return Err(ApiError::new(
            400,
            "timeRangeTooLong",
            "The requested time range is too long.",
        )
        .domain("calendar")
        .at("parameter", "timeMax"));
    }
    for (k, max) in [("calendarExpansionMax", 50), ("groupExpansionMax", 100)] {
        if body[k].as_i64().is_some_and(|n| n > max || n < 1) {
            return Err(ApiError::new(
                400,
                "invalid",
                format!("Invalid value for {k}: must be between 1 and {max}."),
            )
            .at("parameter", k));
        }
    }
    let out_tz = body["timeZone"].as_str().and_then(resolve_zone);
    let fmt = |t: DateTime<Utc>| match out_tz {
        Some(tz) => google_datetime_in(tz, t),
        None => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    let mut calendars = Map::new();
    let items = body["items"].as_array().cloned().unwrap_or_default();
    for (i, item) in items.iter().enumerate() {
        let Some(id) = item["id"].as_str() else {
            continue;
        };
        let entry = if i >= 50 {
            json!({ "busy": [], "errors": [ { "domain": "global", "reason": "tooManyCalendarsRequested" } ] })
        } else {
            let key = if id == "primary" {
                account.to_lowercase()
            } else {
                id.to_string()
            };
            match st.calendars.get(&key) {
                Some(cal) => {
                    let busy: Vec<Value> = busy_intervals(cal, min, max)
                        .into_iter()
                        .map(|(s, e)| json!({ "start": fmt(s), "end": fmt(e) }))
                        .collect();
                    json!({ "busy": busy })
                }
                None => {
                    json!({ "busy": [], "errors": [ { "domain": "global", "reason": "notFound" } ] })
                }
            }
        };
        calendars.insert(id.to_string(), entry);
    }
    Ok(json!({
        "kind": "calendar#freeBusy",
        "timeMin": google_instant(min),
        "timeMax": google_instant(max),
        "calendars": calendars,
    }))
}

pub async fn query_h(
    State(sh): State<Arc<Shared>>,
    Extension(Authed(acct)): Extension<Authed>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, GErr> {
    let body = json_body(body)?;
    let st = lock(&sh.google);
    Ok(Json(query(&sh, &st, &acct, &body)?))
}
