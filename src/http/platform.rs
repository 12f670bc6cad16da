//! The platform API: what the booking platform asks calsync.
//!
//! - `GET /v1/providers/{id}/busy?from=&to=` — busy intervals in a window;
//! - `POST /v1/providers/{id}/availability` — free slots: availability
//!   windows (or weekly working hours in a time zone) minus busy time and
//!   buffers, cut into slots;
//! - `POST /v1/availability` — the same for a group of providers: everyone
//!   free (`all`), anyone free (`any`) or at least N free.
//!
//! Every answer says how fresh it is: each connection's status, backoff and
//! re-authorisation state, and the last successful sync of each calendar —
//! so the platform can decide whether to trust or hedge the answer. Behind
//! a token with the `platform` scope (see [`super::auth`]).

use super::errors::ApiError;
use super::AppState;
use crate::core::availability::{
    expand_weekly, free_slots, weekly_free_slots, SlotSpec, WeeklyRule,
};
use crate::core::busy_reach::busy_reach;
use crate::core::decide::ConnectionCommand;
use crate::core::group_availability::{group_slots, GroupMode};
use crate::core::ids::BookingId;
use crate::core::interval::Interval;
use crate::core::outbound::{validate, Booking, BookingStatus};
use crate::core::tz::resolve_zone;
use crate::store::availability::{availability_inputs, busy_in, freshness, Freshness};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveTime, TimeDelta, Utc, Weekday};
use serde::Deserialize;
use serde_json::{json, Value};

/// A booking change from the platform: created, rescheduled, details
/// changed or cancelled — always the whole booking at a new version.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "booking_id": "b-1", "version": 1, "platform_provider_id": "stylist-7",
    "status": "confirmed", "start": "2026-12-08T10:00:00Z", "end": "2026-12-08T10:30:00Z",
    "time_zone": "Europe/Berlin", "title": "Haircut", "attendees": ["ana@example.com"]
}))]
struct BookingBody {
    booking_id: String,
    version: u64,
    platform_provider_id: String,
    #[schema(value_type = String, pattern = "^(confirmed|cancelled)$")]
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
#[utoipa::path(post, path = "/v1/bookings", tag = "platform", request_body = BookingBody, security(("bearer" = [])), responses((status = 200, description = "Every connection took the booking", body = Object), (status = 207, description = "Some refused (each says why)", body = Object), (status = 409, description = "None took it; a retry will not help", body = Object), crate::http::openapi::AuthErrors))]
async fn booking_changed(
    State(state): State<AppState>,
    body: Result<Json<BookingBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(b) = body.map_err(ApiError::from)?;
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
    // Every eligible connection gets the booking independently: one that
    // refuses (quarantined, full mailbox) never keeps it from the others.
    let outcomes = futures::future::join_all(targets.iter().map(|connection_id| {
        state.connections.command(
            *connection_id,
            ConnectionCommand::ApplyBooking(booking.clone()),
            uuid::Uuid::new_v4(),
        )
    }))
    .await;
    let mut routed = Vec::new();
    let (mut accepted, mut retryable) = (0usize, false);
    for (connection_id, outcome) in targets.iter().zip(outcomes) {
        routed.push(match outcome {
            Ok(ack) => {
                accepted += 1;
                json!({
                    "connection_id": connection_id,
                    "outcome": "accepted",
                    "applied": !ack.duplicate,
                    "stream_version": ack.version,
                })
            }
            Err(e) => {
                retryable |= e.is_retryable();
                json!({
                    "connection_id": connection_id,
                    "outcome": "refused",
                    "reason": e.code(),
                    "retryable": e.is_retryable(),
                    "message": e.to_string(),
                })
            }
        });
    }
    let refused = routed.len() - accepted;
    // 200: every connection has it; 207: some refused (each says why; a
    // retry of the same version is safe: the ones that have it ignore it);
    // none took it: 503 when a retry may help, else 409.
    let status = match (accepted, refused) {
        (_, 0) => StatusCode::OK,
        (0, _) if retryable => StatusCode::SERVICE_UNAVAILABLE,
        (0, _) => StatusCode::CONFLICT,
        _ => StatusCode::MULTI_STATUS,
    };
    let body = Json(json!({
        "booking_id": booking.booking_id,
        "version": booking.version,
        "accepted": accepted,
        "refused": refused,
        "routed_to": routed,
    }));
    let mut response = (status, body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    Ok(response)
}

/// Where a booking stands in every calendar it goes to, and why a write
/// that is owed waits (`waiting_for`: the gate that holds it).
#[utoipa::path(get, path = "/v1/bookings/{id}", tag = "platform", params(("id" = String, Path, description = "The booking id")), security(("bearer" = [])), responses((status = 200, description = "Where the booking stands in each calendar", body = Object), (status = 404, description = "`not_found`", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn booking_state(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut rows = crate::store::read_models::booking_events(&state.store, &id).await?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no booking {id}")));
    }
    for row in rows.iter_mut() {
        let owed = matches!(
            row["state"].as_str(),
            Some("pending" | "waiting" | "failed")
        );
        let connection = row["connection_id"]
            .as_str()
            .and_then(|c| crate::core::ids::ConnectionId::parse(c).ok());
        if let (true, Some(connection)) = (owed, connection) {
            let wait = state.connections.booking_wait(connection, &id).await;
            row["waiting_for"] = match wait {
                Ok(Some(w)) => json!(w.code()),
                Ok(None) => Value::Null,
                Err(e) => json!(e.code()),
            };
        }
    }
    Ok(Json(json!({ "booking_id": id, "calendars": rows })))
}

/// Operator: try a failed booking's write again (every connection that has
/// it), with the same idempotency key.
pub async fn retry_booking(
    state: &AppState,
    id: &str,
) -> Result<Vec<(crate::core::ids::ConnectionId, usize)>, ApiError> {
    let rows = crate::store::read_models::booking_events(&state.store, id).await?;
    if rows.is_empty() {
        return Err(ApiError::not_found(format!("no booking {id}")));
    }
    let mut retried = Vec::new();
    for row in rows {
        let Some(connection) = row["connection_id"]
            .as_str()
            .and_then(|c| crate::core::ids::ConnectionId::parse(c).ok())
        else {
            continue;
        };
        let ack = state
            .connections
            .command(
                connection,
                ConnectionCommand::RetryBooking {
                    booking_id: id.to_string(),
                },
                uuid::Uuid::new_v4(),
            )
            .await?;
        retried.push((connection, ack.appended));
    }
    Ok(retried)
}

/// The longest window one request may cover.
const MAX_WINDOW_DAYS: i64 = 366;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/providers/{id}/busy", get(busy))
        .route("/v1/providers/{id}/availability", post(availability))
        .route("/v1/availability", post(group_availability))
        .route("/v1/bookings", post(booking_changed))
        .route("/v1/bookings/{id}", get(booking_state))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::admin::require_admin,
        ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct WindowQuery {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

pub(super) fn window(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Interval, ApiError> {
    let w = Interval::new(from, to).map_err(|e| ApiError::bad_request(format!("from/to: {e}")))?;
    if to - from > TimeDelta::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::bad_request(format!(
            "from/to: window longer than {MAX_WINDOW_DAYS} days"
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

#[utoipa::path(get, path = "/v1/providers/{id}/busy", tag = "platform", params(("id" = String, Path, description = "The platform provider id"), WindowQuery), security(("bearer" = [])), responses((status = 200, description = "Busy intervals in the window, with freshness", body = Object), crate::http::openapi::AuthErrors))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "from": "2026-12-08T00:00:00Z", "to": "2026-12-09T00:00:00Z", "slot_minutes": 30,
    "buffer_before_minutes": 10,
    "weekly": {"time_zone": "Europe/Berlin", "rules": [{"weekday": "tue", "start": "09:00:00", "end": "17:00:00"}]}
}))]
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WindowBody {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WeeklyBody {
    time_zone: String,
    rules: Vec<RuleBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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

/// A parsed availability request: the query range, how slots are cut, the
/// spans whose busy time can block a slot (the availability windows in the
/// range widened by the buffers: nights and weekends outside weekly hours
/// are not read) and where the availability comes from. Shared by the
/// single and the group endpoint.
struct SlotPlan {
    range: Interval,
    spec: SlotSpec,
    reach: Vec<Interval>,
    source: SlotSource,
}

enum SlotSource {
    Windows(Vec<Interval>),
    Weekly(Vec<WeeklyRule>, chrono_tz::Tz),
}

impl SlotPlan {
    fn parse(req: AvailabilityRequest) -> Result<Self, ApiError> {
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
        let source = match (req.windows, req.weekly) {
            (Some(windows), None) => {
                let windows = windows
                    .iter()
                    .map(|w| Interval::new(w.start, w.end))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                SlotSource::Windows(
                    windows
                        .iter()
                        .filter_map(|w| w.intersection(&range))
                        .collect(),
                )
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
                            .map_err(|_| {
                                ApiError::bad_request(format!("bad weekday {:?}", r.weekday))
                            })
                    })
                    .collect::<Result<Vec<WeeklyRule>, _>>()?;
                SlotSource::Weekly(rules, zone)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of \"windows\" or \"weekly\"",
                ))
            }
        };
        // Busy time just outside a window still matters through the buffers.
        let reach = match &source {
            SlotSource::Windows(windows) => busy_reach(windows, &spec),
            SlotSource::Weekly(rules, zone) => {
                busy_reach(&expand_weekly(rules, *zone, range), &spec)
            }
        };
        Ok(SlotPlan {
            range,
            spec,
            reach,
            source,
        })
    }

    /// The free slots left by `busy`.
    fn slots(&self, busy: &[Interval]) -> Result<Vec<Interval>, ApiError> {
        match &self.source {
            SlotSource::Windows(windows) => free_slots(windows, busy, &self.spec),
            SlotSource::Weekly(rules, zone) => {
                weekly_free_slots(rules, *zone, self.range, busy, &self.spec)
            }
        }
        .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

#[utoipa::path(post, path = "/v1/providers/{id}/availability", tag = "platform", params(("id" = String, Path, description = "The platform provider id")), request_body = AvailabilityRequest, security(("bearer" = [])), responses((status = 200, description = "Free slots, with freshness", body = Object), crate::http::openapi::AuthErrors))]
async fn availability(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AvailabilityRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(ApiError::from)?;
    let plan = SlotPlan::parse(req)?;
    let ids = [id];
    // One input per id, so `next` is this provider's.
    let input = availability_inputs(&state.store, &ids, &plan.reach)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let [id] = ids;
    let slots = plan.slots(&input.busy)?;
    Ok(Json(json!({
        "platform_provider_id": id,
        "slots": slots,
        "busy_considered": input.busy.len(),
        "freshness": fresh_json(&input.freshness),
    })))
}

/// The most providers one group request may name.
pub const MAX_GROUP_PROVIDERS: usize = 50;

/// `mode` of a group request: `"all"`, `"any"` or `{"at_least": N}`.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum ModeBody {
    All,
    Any,
    AtLeast(usize),
}

impl From<ModeBody> for GroupMode {
    fn from(m: ModeBody) -> Self {
        match m {
            ModeBody::All => GroupMode::All,
            ModeBody::Any => GroupMode::Any,
            ModeBody::AtLeast(n) => GroupMode::AtLeast(n),
        }
    }
}

/// Takes a required field out of a group request's JSON object, naming it
/// when it is missing or malformed.
fn take_field<T: serde::de::DeserializeOwned>(
    body: &mut serde_json::Map<String, Value>,
    name: &str,
) -> Result<T, ApiError> {
    let value = body
        .remove(name)
        .ok_or_else(|| ApiError::bad_request(format!("{name}: missing")))?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
}

/// `POST /v1/availability`: the slots of a group of platform providers —
/// everyone free (`all`), anyone free (`any`, each slot listing who) or at
/// least N free — from the same windows / weekly hours, buffers and slot
/// options as the single-provider endpoint, with each provider's freshness.
#[utoipa::path(post, path = "/v1/availability", tag = "platform", request_body = GroupAvailabilityRequest, security(("bearer" = [])), responses((status = 200, description = "Slots of the group, with each provider's freshness", body = Object), crate::http::openapi::AuthErrors))]
async fn group_availability(
    State(state): State<AppState>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(ApiError::from)?;
    let Value::Object(mut body) = body else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let ids: Vec<String> = take_field(&mut body, "platform_provider_ids")?;
    let mode: ModeBody = take_field(&mut body, "mode")?;
    // The rest is exactly the single endpoint's request.
    let req: AvailabilityRequest = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "platform_provider_ids: give at least one provider",
        ));
    }
    if ids.len() > MAX_GROUP_PROVIDERS {
        return Err(ApiError::bad_request(format!(
            "platform_provider_ids: at most {MAX_GROUP_PROVIDERS} providers, got {}",
            ids.len()
        )));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(ApiError::bad_request(format!(
                "platform_provider_ids[{i}]: {id:?} is listed twice"
            )));
        }
    }
    GroupMode::from(mode)
        .required(ids.len())
        .map_err(|e| ApiError::bad_request(format!("mode: {e}")))?;
    let plan = SlotPlan::parse(req)?;

    let mut per_provider = Vec::with_capacity(ids.len());
    let mut providers = Vec::with_capacity(ids.len());
    let mut degraded = false;
    // Every provider's rows in one pipelined batch on one connection.
    let inputs = availability_inputs(&state.store, &ids, &plan.reach).await?;
    for (i, (id, input)) in ids.iter().zip(&inputs).enumerate() {
        if input.freshness.is_empty() {
            return Err(ApiError::bad_request(format!(
                "platform_provider_ids[{i}]: unknown provider {id:?} (no live connection)"
            )));
        }
        per_provider.push(plan.slots(&input.busy)?);
        let fresh = fresh_json(&input.freshness);
        degraded |= fresh["degraded"] == json!(true);
        providers.push(json!({
            "platform_provider_id": id,
            "busy_considered": input.busy.len(),
            "freshness": fresh,
        }));
    }
    let slots = group_slots(&per_provider, mode.into())
        .map_err(|e| ApiError::bad_request(format!("mode: {e}")))?;
    let slots: Vec<Value> = slots
        .iter()
        .map(|s| {
            let free: Vec<&String> = s.free.iter().filter_map(|&i| ids.get(i)).collect();
            json!({ "start": s.slot.start(), "end": s.slot.end(), "free": free })
        })
        .collect();
    Ok(Json(json!({
        "platform_provider_ids": ids,
        "mode": mode,
        "slots": slots,
        "degraded": degraded,
        "providers": providers,
    })))
}

/// The body of `POST /v1/availability`: the single endpoint's request plus
/// the group (documentation only: the handler splits the object itself).
#[allow(dead_code)]
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "platform_provider_ids": ["stylist-7", "stylist-8"],
    "mode": {"at_least": 1},
    "from": "2026-12-08T00:00:00Z", "to": "2026-12-09T00:00:00Z",
    "slot_minutes": 30,
    "windows": [{"start": "2026-12-08T09:00:00Z", "end": "2026-12-08T17:00:00Z"}]
}))]
struct GroupAvailabilityRequest {
    platform_provider_ids: Vec<String>,
    mode: ModeBody,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    slot_minutes: i64,
    #[serde(default)]
    step_minutes: Option<i64>,
    #[serde(default)]
    buffer_before_minutes: i64,
    #[serde(default)]
    buffer_after_minutes: i64,
    #[serde(default)]
    windows: Option<Vec<WindowBody>>,
    #[serde(default)]
    weekly: Option<WeeklyBody>,
}

/// The platform API in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(booking_changed, booking_state, busy, availability, group_availability),
    components(schemas(
        BookingBody,
        AvailabilityRequest,
        GroupAvailabilityRequest,
        WindowBody,
        WeeklyBody,
        RuleBody,
        ModeBody
    ))
)]
pub(super) struct ApiDoc;
