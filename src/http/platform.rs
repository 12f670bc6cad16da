//! The platform API: what the booking platform asks calsync.
//!
//! - `GET /v1/providers/{id}/busy?from=&to=` — busy intervals in a window;
//! - `POST /v1/providers/{id}/availability` — free slots: availability
//!   windows (or weekly working hours in a time zone) minus busy time and
//!   buffers, cut into slots.
//!
//! Every answer says how fresh it is: each connection's status, backoff and
//! re-authorisation state, and the last successful sync of each calendar —
//! so the platform can decide whether to trust or hedge the answer. Behind
//! the same bearer token as the admin API.

use super::errors::ApiError;
use super::AppState;
use crate::core::availability::{free_slots, weekly_free_slots, SlotSpec, WeeklyRule};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::BookingId;
use crate::core::interval::Interval;
use crate::core::outbound::{validate, Booking, BookingStatus};
use crate::core::tz::resolve_zone;
use crate::store::availability::{busy_in, freshness, Freshness};
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveTime, TimeDelta, Utc, Weekday};
use serde::Deserialize;
use serde_json::{json, Value};

/// A booking change from the platform: created, rescheduled, details
/// changed or cancelled — always the whole booking at a new version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BookingBody {
    booking_id: String,
    version: u64,
    platform_provider_id: String,
    status: BookingStatus,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    time_zone: String,
    title: String,
    #[serde(default)]
    attendees: Vec<String>,
}

/// Routes a booking change to every connection of its platform provider
/// that has a destination calendar, and answers once each has committed it.
async fn booking_changed(
    State(state): State<AppState>,
    body: Result<Json<BookingBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let booking = Booking {
        booking_id: BookingId::parse(b.booking_id)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        version: b.version,
        status: b.status,
        start: b.start,
        end: b.end,
        time_zone: b.time_zone,
        title: b.title,
        attendees: b.attendees,
    };
    validate(&booking).map_err(ApiError::bad_request)?;
    let targets =
        crate::store::read_models::booking_targets(&state.store, &b.platform_provider_id).await?;
    let mut routed = Vec::new();
    for connection_id in targets {
        let ack = state
            .connections
            .command(
                connection_id,
                ConnectionCommand::ApplyBooking(booking.clone()),
                uuid::Uuid::new_v4(),
            )
            .await?;
        routed.push(json!({
            "connection_id": connection_id,
            "applied": !ack.duplicate,
            "stream_version": ack.version,
        }));
    }
    Ok(Json(json!({
        "booking_id": booking.booking_id,
        "version": booking.version,
        "routed_to": routed,
    })))
}

/// Where a booking stands in every calendar it goes to.
async fn booking_state(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rows = crate::store::read_models::booking_events(&state.store, &id).await?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no booking {id}")));
    }
    Ok(Json(json!({ "booking_id": id, "calendars": rows })))
}

/// The longest window one request may cover.
const MAX_WINDOW_DAYS: i64 = 366;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/providers/{id}/busy", get(busy))
        .route("/v1/providers/{id}/availability", post(availability))
        .route("/v1/bookings", post(booking_changed))
        .route("/v1/bookings/{id}", get(booking_state))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::admin::require_admin,
        ))
}

#[derive(Debug, Deserialize)]
struct WindowQuery {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

fn window(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Interval, ApiError> {
    let w = Interval::new(from, to).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if to - from > TimeDelta::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::bad_request(format!(
            "window longer than {MAX_WINDOW_DAYS} days"
        )));
    }
    Ok(w)
}

fn fresh_json(freshness: &[Freshness]) -> Value {
    let degraded = freshness
        .iter()
        .any(|f| f.backoff_until.is_some() || f.needs_reauthorization || f.status != "active");
    json!({ "degraded": degraded, "connections": freshness })
}

async fn busy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<WindowQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let w = window(q.from, q.to)?;
    let busy = busy_in(&state.store, &id, w).await?;
    let fresh = freshness(&state.store, &id).await?;
    Ok(Json(json!({
        "platform_provider_id": id,
        "from": w.start(),
        "to": w.end(),
        "busy": busy,
        "freshness": fresh_json(&fresh),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AvailabilityRequest {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    slot_minutes: i64,
    #[serde(default)]
    step_minutes: Option<i64>,
    #[serde(default)]
    buffer_before_minutes: i64,
    #[serde(default)]
    buffer_after_minutes: i64,
    /// Explicit availability windows…
    #[serde(default)]
    windows: Option<Vec<WindowBody>>,
    /// …or weekly working hours in a time zone.
    #[serde(default)]
    weekly: Option<WeeklyBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeeklyBody {
    time_zone: String,
    rules: Vec<RuleBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    weekday: String,
    start: NaiveTime,
    end: NaiveTime,
}

fn minutes(name: &str, m: i64, min: i64) -> Result<TimeDelta, ApiError> {
    if !(min..=24 * 60).contains(&m) {
        return Err(ApiError::bad_request(format!(
            "{name} must be between {min} and 1440"
        )));
    }
    Ok(TimeDelta::minutes(m))
}

async fn availability(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AvailabilityRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let range = window(req.from, req.to)?;
    let length = minutes("slot_minutes", req.slot_minutes, 1)?;
    let step = minutes(
        "step_minutes",
        req.step_minutes.unwrap_or(req.slot_minutes),
        1,
    )?;
    let spec = SlotSpec::new(length).with_step(step).with_buffers(
        minutes("buffer_before_minutes", req.buffer_before_minutes, 0)?,
        minutes("buffer_after_minutes", req.buffer_after_minutes, 0)?,
    );
    // Busy time just outside the range still matters through the buffers.
    let reach = spec.buffer_before.max(spec.buffer_after);
    let busy_window = Interval::new(range.start() - reach, range.end() + reach)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let busy: Vec<Interval> = busy_in(&state.store, &id, busy_window)
        .await?
        .iter()
        .filter_map(|b| Interval::new(b.start, b.end).ok())
        .collect();
    let slots = match (req.windows, req.weekly) {
        (Some(windows), None) => {
            let windows = windows
                .iter()
                .map(|w| Interval::new(w.start, w.end))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let windows: Vec<Interval> = windows
                .iter()
                .filter_map(|w| w.intersection(&range))
                .collect();
            free_slots(&windows, &busy, &spec)
        }
        (None, Some(weekly)) => {
            let zone = resolve_zone(&weekly.time_zone)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let rules = weekly
                .rules
                .iter()
                .map(|r| {
                    r.weekday
                        .parse::<Weekday>()
                        .map(|d| (d, r.start, r.end))
                        .map_err(|_| ApiError::bad_request(format!("bad weekday {:?}", r.weekday)))
                })
                .collect::<Result<Vec<WeeklyRule>, _>>()?;
            weekly_free_slots(&rules, zone, range, &busy, &spec)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of \"windows\" or \"weekly\"",
            ))
        }
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fresh = freshness(&state.store, &id).await?;
    Ok(Json(json!({
        "platform_provider_id": id,
        "slots": slots,
        "busy_considered": busy.len(),
        "freshness": fresh_json(&fresh),
    })))
}
