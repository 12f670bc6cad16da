//! JSON control API under `/control`: the same operations as the Rust API
//! (accounts, user-like mutations, faults, request log) for drills and for
//! the standalone `calsim` binary. Documented in README.md.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::ApiError;
use crate::faults::{FaultRule, NotificationFaults};
use crate::google::GoogleSim;
use crate::graph::{GraphSim, LifecycleEvent};
use crate::request_log::Provider;
use crate::scenario::{Scenario, ScenarioConfig};
use crate::state::{lock, Shared};
use crate::timefmt::parse_rfc3339;

type S = State<Arc<Shared>>;

struct CErr(ApiError);

impl From<ApiError> for CErr {
    fn from(e: ApiError) -> Self {
        CErr(e)
    }
}

impl IntoResponse for CErr {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(json!({ "error": { "status": self.0.status, "reason": self.0.reason, "message": self.0.message } }))).into_response()
    }
}

type R = Result<Response, CErr>;

fn ok(v: Value) -> R {
    Ok(Json(v).into_response())
}

fn done() -> R {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn google(sh: &Arc<Shared>) -> GoogleSim {
    GoogleSim { shared: sh.clone() }
}

fn graph(sh: &Arc<Shared>) -> GraphSim {
    GraphSim { shared: sh.clone() }
}

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/control/health", get(health))
        .route("/control/clock", get(clock))
        .route("/control/clock/advance", post(advance_clock))
        .route("/control/google/accounts", post(g_account))
        .route(
            "/control/google/accounts/{email}/calendars",
            post(g_calendar),
        )
        .route(
            "/control/google/accounts/{email}/calendars/{cal}/events",
            post(g_upsert),
        )
        .route(
            "/control/google/accounts/{email}/calendars/{cal}/events/{id}",
            patch(g_patch).delete(g_delete),
        )
        .route("/control/google/accounts/{email}/{action}", post(g_action))
        .route("/control/google/channels", get(g_channels))
        .route("/control/graph/accounts", post(m_account))
        .route("/control/graph/accounts/{upn}/calendars", post(m_calendar))
        .route("/control/graph/accounts/{upn}/events", post(m_upsert))
        .route(
            "/control/graph/accounts/{upn}/events/{id}",
            patch(m_patch).delete(m_delete),
        )
        .route("/control/graph/accounts/{upn}/{action}", post(m_action))
        .route("/control/graph/subscriptions", get(m_subscriptions))
        .route(
            "/control/graph/subscriptions/{id}/lifecycle",
            post(m_lifecycle),
        )
        .route(
            "/control/faults",
            get(faults_list).post(faults_add).delete(faults_clear),
        )
        .route("/control/faults/{id}", delete(faults_remove))
        .route(
            "/control/notification_faults/{provider}",
            put(notification_faults),
        )
        .route("/control/requests", get(requests))
        .route("/control/deliveries", get(deliveries))
        .route("/control/deliveries/replay", post(replay))
        .route("/control/log", delete(clear_log))
        .route("/control/scenario", post(scenario))
        .route("/control/scenario/mutations", post(scenario_mutations))
}

async fn health(State(sh): S) -> R {
    ok(json!({
        "ok": true,
        "google_base_url": sh.google_base(),
        "google_token_url": format!("{}/google/token", sh.origin),
        "graph_base_url": sh.graph_base(),
        "graph_token_url": format!("{}/graph/{{tenant}}/oauth2/v2.0/token", sh.origin),
        "control_url": format!("{}/control", sh.origin),
    }))
}

async fn clock(State(sh): S) -> R {
    ok(json!({ "now": sh.now().to_rfc3339() }))
}

#[derive(Deserialize)]
struct Advance {
    seconds: f64,
}

async fn advance_clock(State(sh): S, Json(b): Json<Advance>) -> R {
    sh.advance_clock(chrono::Duration::milliseconds((b.seconds * 1000.0) as i64));
    ok(json!({ "now": sh.now().to_rfc3339() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewGoogleAccount {
    email: String,
    time_zone: Option<String>,
}

async fn g_account(State(sh): S, Json(b): Json<NewGoogleAccount>) -> R {
    ok(to_json(&google(&sh).create_account_in(
        &b.email,
        b.time_zone.as_deref().unwrap_or("UTC"),
    )))
}

async fn g_calendar(State(sh): S, Path(email): Path<String>, Json(b): Json<Value>) -> R {
    let summary = b["summary"].as_str().unwrap_or("Calendar");
    let tz = b["timeZone"].as_str().unwrap_or("UTC");
    ok(json!({ "id": google(&sh).create_calendar(&email, summary, tz)? }))
}

async fn g_upsert(
    State(sh): S,
    Path((email, cal)): Path<(String, String)>,
    Json(b): Json<Value>,
) -> R {
    ok(google(&sh).upsert_event(&email, &cal, b)?)
}

async fn g_patch(
    State(sh): S,
    Path((email, cal, id)): Path<(String, String, String)>,
    Json(b): Json<Value>,
) -> R {
    ok(google(&sh).patch_event(&email, &cal, &id, b)?)
}

async fn g_delete(State(sh): S, Path((email, cal, id)): Path<(String, String, String)>) -> R {
    google(&sh).delete_event(&email, &cal, &id)?;
    done()
}

async fn g_action(State(sh): S, Path((email, action)): Path<(String, String)>) -> R {
    let g = google(&sh);
    match action.as_str() {
        "invalidate_sync_tokens" => g.invalidate_sync_tokens(&email),
        "revoke_grant" => g.revoke_grant(&email),
        "expire_access_tokens" => g.expire_access_tokens(&email),
        _ => return Err(ApiError::new(404, "notFound", format!("Unknown action {action}")).into()),
    }
    done()
}

async fn g_channels(State(sh): S) -> R {
    ok(to_json(&google(&sh).channels()))
}

async fn m_account(State(sh): S, Json(b): Json<Value>) -> R {
    let upn = b["upn"]
        .as_str()
        .ok_or_else(|| ApiError::new(400, "invalid", "upn is required"))?;
    let zone = b["timeZone"].as_str().unwrap_or("UTC");
    ok(to_json(&graph(&sh).create_account_in(upn, zone)))
}

async fn m_calendar(State(sh): S, Path(upn): Path<String>, Json(b): Json<Value>) -> R {
    let name = b["name"].as_str().unwrap_or("Calendar");
    ok(json!({ "id": graph(&sh).create_calendar(&upn, name)? }))
}

async fn m_upsert(State(sh): S, Path(upn): Path<String>, Json(b): Json<Value>) -> R {
    ok(graph(&sh).upsert_event(&upn, b)?)
}

async fn m_patch(State(sh): S, Path((upn, id)): Path<(String, String)>, Json(b): Json<Value>) -> R {
    ok(graph(&sh).update_event(&upn, &id, b)?)
}

async fn m_delete(State(sh): S, Path((upn, id)): Path<(String, String)>) -> R {
    graph(&sh).delete_event(&upn, &id)?;
    done()
}

async fn m_action(State(sh): S, Path((upn, action)): Path<(String, String)>) -> R {
    let g = graph(&sh);
    match action.as_str() {
        "invalidate_delta_tokens" => g.invalidate_delta_tokens(&upn),
        "revoke_grant" => g.revoke_grant(&upn),
        "expire_refresh_tokens" => g.expire_refresh_tokens(&upn),
        "expire_access_tokens" => g.expire_access_tokens(&upn),
        _ => return Err(ApiError::new(404, "notFound", format!("Unknown action {action}")).into()),
    }
    done()
}

async fn m_subscriptions(State(sh): S) -> R {
    ok(to_json(&graph(&sh).subscriptions()))
}

#[derive(Deserialize)]
struct Lifecycle {
    event: LifecycleEvent,
}

async fn m_lifecycle(State(sh): S, Path(id): Path<String>, Json(b): Json<Lifecycle>) -> R {
    graph(&sh).send_lifecycle(&id, b.event)?;
    done()
}

async fn faults_list(State(sh): S) -> R {
    let v: Vec<Value> = sh
        .faults
        .list()
        .into_iter()
        .map(|(id, r)| json!({ "id": id, "rule": r }))
        .collect();
    ok(json!(v))
}

async fn faults_add(State(sh): S, Json(rule): Json<FaultRule>) -> R {
    ok(json!({ "id": sh.faults.add(rule) }))
}

async fn faults_clear(State(sh): S) -> R {
    sh.faults.clear();
    done()
}

async fn faults_remove(State(sh): S, Path(id): Path<u64>) -> R {
    if sh.faults.remove(id) {
        done()
    } else {
        Err(ApiError::new(404, "notFound", format!("No fault {id}")).into())
    }
}

async fn notification_faults(
    State(sh): S,
    Path(provider): Path<Provider>,
    Json(f): Json<NotificationFaults>,
) -> R {
    sh.faults.set_notification_faults(provider, f);
    done()
}

async fn requests(State(sh): S, Query(q): Query<HashMap<String, String>>) -> R {
    let since: Option<DateTime<Utc>> = match q.get("since") {
        Some(s) => Some(
            parse_rfc3339(s)
                .ok_or_else(|| ApiError::new(400, "invalid", "since must be RFC 3339"))?,
        ),
        None => None,
    };
    let provider = q.get("provider").cloned();
    let account = q.get("account").cloned();
    let v: Vec<Value> = sh
        .log
        .requests()
        .into_iter()
        .filter(|r| since.is_none_or(|t| r.at >= t))
        .filter(|r| {
            provider
                .as_ref()
                .is_none_or(|p| to_json(&r.provider) == p.as_str())
        })
        .filter(|r| {
            account.as_ref().is_none_or(|a| {
                r.account
                    .as_ref()
                    .is_some_and(|x| x.eq_ignore_ascii_case(a))
            })
        })
        .map(|r| to_json(&r))
        .collect();
    ok(json!(v))
}

async fn deliveries(State(sh): S) -> R {
    ok(to_json(&sh.log.deliveries()))
}

#[derive(Deserialize)]
struct Replay {
    subject: Option<String>,
    count: usize,
}

async fn replay(State(sh): S, Json(b): Json<Replay>) -> R {
    let queued = crate::delivery::replay(&sh, b.subject.as_deref(), b.count);
    ok(json!({ "queued": queued }))
}

async fn clear_log(State(sh): S) -> R {
    sh.log.clear();
    done()
}

async fn scenario(State(sh): S, Json(cfg): Json<ScenarioConfig>) -> R {
    let sc = Arc::new(Scenario::new(cfg));
    let summary = sc.populate(&google(&sh), &graph(&sh));
    *lock(&sh.scenario) = Some(sc);
    ok(to_json(&summary))
}

#[derive(Deserialize)]
struct Mutations {
    count: usize,
}

/// Apply `count` user-like changes to the last populated scenario, at its rate.
async fn scenario_mutations(State(sh): S, Json(m): Json<Mutations>) -> R {
    let sc = lock(&sh.scenario).clone();
    let Some(sc) = sc else {
        return Err(ApiError::new(409, "noScenario", "POST /control/scenario first").into());
    };
    let labels = sc.run(&google(&sh), &graph(&sh), m.count).await;
    ok(json!({ "applied": labels }))
}
