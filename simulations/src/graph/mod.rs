//! Microsoft Graph calendar simulator (subset): token endpoint, events CRUD,
//! calendarView + delta, getSchedule, subscriptions with webhook delivery,
//! and Outlook's per-mailbox concurrency limit.
//!
//! `GraphSim` is the Rust control API; its mutations run the same code as
//! the HTTP API (new changeKey, delta visibility, change notifications).

pub mod auth;
pub mod delta;
pub mod errors;
pub mod events;
pub mod limiter;
pub mod model;
pub mod query;
pub mod schedule;
pub mod settings;
pub mod subscriptions;

use axum::http::{HeaderMap, Method};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::auth::GrantState;
use crate::error::{ApiError, ApiResult};
use crate::gate::{graph_gate, Authed};
use crate::state::{lock, Shared};
use model::{MAccount, MCalendar, OutZone};
pub use subscriptions::{LifecycleEvent, Subscription};

/// Credentials of a simulated Microsoft 365 mailbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GraphAccount {
    pub upn: String,
    pub user_id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

/// Logical endpoint name used by fault rules and the request log.
pub fn classify(method: &Method, path: &str) -> &'static str {
    let p = path.strip_prefix("/graph").unwrap_or(path);
    let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
    let m = method.as_str();
    if let [_, "oauth2", "v2.0", "token"] = segs.as_slice() {
        return "token";
    }
    if let [_, "oauth2", "v2.0", "authorize"] = segs.as_slice() {
        return "authorize";
    }
    let rest: &[&str] = match segs.as_slice() {
        ["v1.0", "me", rest @ ..] => rest,
        ["v1.0", "users", _, rest @ ..] => rest,
        ["v1.0", "subscriptions"] => {
            return if m == "POST" {
                "subscriptions.create"
            } else {
                "subscriptions.list"
            }
        }
        ["v1.0", "subscriptions", _] => {
            return match m {
                "PATCH" => "subscriptions.renew",
                "DELETE" => "subscriptions.delete",
                _ => "subscriptions.get",
            }
        }
        ["v1.0", "subscriptions", _, "reauthorize"] => return "subscriptions.reauthorize",
        _ => return "unknown",
    };
    match (m, rest) {
        ("GET", ["events"])
        | ("GET", ["calendars", _, "events"])
        | ("GET", ["calendar", "events"]) => "events.list",
        ("POST", ["events"])
        | ("POST", ["calendars", _, "events"])
        | ("POST", ["calendar", "events"]) => "events.create",
        ("GET", ["events", _]) => "events.get",
        ("PATCH", ["events", _]) => "events.update",
        ("DELETE", ["events", _]) => "events.delete",
        (_, ["calendars"]) => "calendars.list",
        (_, ["calendarView"]) | (_, ["calendars", _, "calendarView"]) => "calendarView",
        (_, ["calendarView", "delta"]) => "delta",
        (_, ["calendar", "getSchedule"]) => "getSchedule",
        ("GET", ["mailboxSettings"]) | ("GET", ["mailboxSettings", "timeZone"]) => {
            "mailboxSettings"
        }
        _ => "unknown",
    }
}

/// Mailbox named in a `/users/{upn}/...` path.
pub fn mailbox_of(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["graph", "v1.0", "users", upn, ..] => Some(upn.replace("%40", "@").to_lowercase()),
        _ => None,
    }
}

/// The mailbox a request targets; `/users/{upn}` must be the caller's own.
pub fn mailbox(a: &Authed, p: &HashMap<String, String>) -> ApiResult<String> {
    match p.get("upn") {
        Some(u) if !u.eq_ignore_ascii_case(&a.0) => Err(ApiError::new(
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )),
        _ => Ok(a.0.to_lowercase()),
    }
}

pub fn prefer_headers(h: &HeaderMap) -> Vec<String> {
    h.get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

pub fn horizon(sh: &Shared) -> DateTime<Utc> {
    sh.now() + Duration::days(sh.config.recurrence_horizon_days)
}

pub fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let mut r = Router::new();
    for who in ["/graph/v1.0/me", "/graph/v1.0/users/{upn}"] {
        r = r
            .route(
                &format!("{who}/events"),
                get(events::list_h).post(events::create_h),
            )
            .route(
                &format!("{who}/events/{{id}}"),
                get(events::get_h)
                    .patch(events::patch_h)
                    .delete(events::delete_h),
            )
            .route(who, get(events::user_h))
            .route(&format!("{who}/calendars"), get(events::calendars_h))
            .route(
                &format!("{who}/calendars/{{cal}}/events"),
                get(events::list_h).post(events::create_h),
            )
            .route(
                &format!("{who}/calendar/events"),
                get(events::list_h).post(events::create_h),
            )
            .route(&format!("{who}/calendarView"), get(delta::calendar_view_h))
            .route(
                &format!("{who}/calendars/{{cal}}/calendarView"),
                get(delta::calendar_view_h),
            )
            .route(&format!("{who}/calendarView/delta"), get(delta::delta_h))
            .route(
                &format!("{who}/calendar/getSchedule"),
                post(schedule::get_schedule_h),
            )
            .route(
                &format!("{who}/mailboxSettings"),
                get(settings::mailbox_settings_h),
            )
            .route(
                &format!("{who}/mailboxSettings/timeZone"),
                get(settings::time_zone_h),
            );
    }
    r.route(
        "/graph/v1.0/subscriptions",
        get(subscriptions::list_h).post(subscriptions::create_h),
    )
    .route(
        "/graph/v1.0/subscriptions/{id}",
        get(subscriptions::get_h)
            .patch(subscriptions::renew_h)
            .delete(subscriptions::delete_h),
    )
    .route(
        "/graph/v1.0/subscriptions/{id}/reauthorize",
        post(subscriptions::reauthorize_h),
    )
    .route("/graph/{tenant}/oauth2/v2.0/token", post(auth::token_h))
    .route(
        "/graph/{tenant}/oauth2/v2.0/authorize",
        axum::routing::get(auth::authorize_h),
    )
    .layer(from_fn_with_state(shared, graph_gate))
}

/// Rust control API of the Graph simulator. Cheap to clone.
#[derive(Clone)]
pub struct GraphSim {
    pub(crate) shared: Arc<Shared>,
}

impl GraphSim {
    /// Registers an OAuth app for the authorization-code flow.
    pub fn register_app(&self, client_id: &str, client_secret: &str) {
        lock(&self.shared.graph)
            .code_flow
            .apps
            .insert(client_id.to_string(), client_secret.to_string());
    }

    /// What the next visitor of the consent screen does.
    pub fn set_consent(&self, consent: crate::code_flow::Consent) {
        lock(&self.shared.graph).code_flow.consent = consent;
    }

    /// Create a mailbox (with its default `Calendar`, in zone `UTC`) or, if
    /// it exists, issue it a fresh refresh token.
    pub fn create_account(&self, upn: &str) -> GraphAccount {
        self.create_account_in(upn, "UTC")
    }

    /// Like `create_account`, with the mailbox's zone (what
    /// `mailboxSettings.timeZone` answers; Windows or IANA name, kept as
    /// given) set to `time_zone` when the mailbox is new.
    pub fn create_account_in(&self, upn: &str, time_zone: &str) -> GraphAccount {
        let sh = &self.shared;
        let key = upn.to_lowercase();
        let mut st = lock(&sh.graph);
        if !st.accounts.contains_key(&key) {
            let cal_id = format!("AAMkCAL{}", sh.rng.alnum(40));
            st.accounts.insert(
                key.clone(),
                MAccount {
                    upn: upn.to_string(),
                    user_id: sh.rng.uuid().to_string(),
                    tenant_id: sh.rng.uuid().to_string(),
                    client_id: sh.rng.uuid().to_string(),
                    client_secret: format!("sim~{}", sh.rng.alnum(34)),
                    calendars: vec![MCalendar {
                        id: cal_id,
                        name: "Calendar".into(),
                        is_default: true,
                    }],
                    events: BTreeMap::new(),
                    delta_generation: 0,
                    time_zone: time_zone.to_string(),
                },
            );
        }
        let (upn, user_id, tenant_id, client_id, client_secret) = match st.accounts.get(&key) {
            Some(a) => (
                a.upn.clone(),
                a.user_id.clone(),
                a.tenant_id.clone(),
                a.client_id.clone(),
                a.client_secret.clone(),
            ),
            None => Default::default(),
        };
        let refresh_token = st.tokens.issue_refresh(&upn, &client_id, "0.AXEA", &sh.rng);
        GraphAccount {
            upn,
            user_id,
            tenant_id,
            client_id,
            client_secret,
            refresh_token,
        }
    }

    /// Change the mailbox's zone, as a user would in Outlook's settings.
    pub fn set_mailbox_zone(&self, upn: &str, time_zone: &str) -> ApiResult<()> {
        let mut st = lock(&self.shared.graph);
        events::account_mut(&mut st, upn)?.time_zone = time_zone.to_string();
        Ok(())
    }

    /// The mailbox's zone (`mailboxSettings.timeZone`), if the mailbox exists.
    pub fn mailbox_zone(&self, upn: &str) -> Option<String> {
        let st = lock(&self.shared.graph);
        st.accounts
            .get(&upn.to_lowercase())
            .map(|a| a.time_zone.clone())
    }

    /// Another calendar in the mailbox; returns its id.
    pub fn create_calendar(&self, upn: &str, name: &str) -> ApiResult<String> {
        let sh = &self.shared;
        let mut st = lock(&sh.graph);
        let acct = events::account_mut(&mut st, upn)?;
        let id = format!("AAMkCAL{}", sh.rng.alnum(40));
        acct.calendars.push(MCalendar {
            id: id.clone(),
            name: name.into(),
            is_default: false,
        });
        Ok(id)
    }

    /// Create an event in the default calendar (body in Graph's shape).
    pub fn create_event(&self, upn: &str, body: Value) -> ApiResult<Value> {
        self.create_event_in(upn, None, body)
    }

    pub fn create_event_in(
        &self,
        upn: &str,
        calendar_id: Option<&str>,
        body: Value,
    ) -> ApiResult<Value> {
        let sh = &self.shared;
        let legacy = legacy_zone(&body);
        let mut st = lock(&sh.graph);
        let (mut ev, _) = events::create(sh, &mut st, upn, calendar_id, body)?;
        if legacy.is_some() {
            ev = set_legacy_zone(&mut st, upn, &ev.id, legacy)?;
        }
        Ok(ev.render(upn, &OutZone::utc()))
    }

    /// Create, or update when `body.id` names an existing event.
    pub fn upsert_event(&self, upn: &str, body: Value) -> ApiResult<Value> {
        match body.get("id").and_then(Value::as_str).map(str::to_string) {
            Some(id) if self.get_event(upn, &id).is_ok() => self.update_event(upn, &id, body),
            _ => self.create_event(upn, body),
        }
    }

    pub fn update_event(&self, upn: &str, id: &str, patch: Value) -> ApiResult<Value> {
        let sh = &self.shared;
        let legacy = legacy_zone(&patch);
        let mut st = lock(&sh.graph);
        let mut ev = events::update(sh, &mut st, upn, id, patch, None)?;
        if legacy.is_some() {
            ev = set_legacy_zone(&mut st, upn, &ev.id, legacy)?;
        }
        Ok(ev.render(upn, &OutZone::utc()))
    }

    pub fn delete_event(&self, upn: &str, id: &str) -> ApiResult<()> {
        let sh = &self.shared;
        let mut st = lock(&sh.graph);
        events::delete(sh, &mut st, upn, id, None)
    }

    /// Delete one occurrence of a series, by its original start.
    pub fn cancel_occurrence(
        &self,
        upn: &str,
        master_id: &str,
        start: DateTime<Utc>,
    ) -> ApiResult<()> {
        self.delete_event(upn, &model::occurrence_id(master_id, start))
    }

    /// Same as `cancel_occurrence` (name shared with `GoogleSim`).
    pub fn cancel_instance(
        &self,
        upn: &str,
        master_id: &str,
        start: DateTime<Utc>,
    ) -> ApiResult<()> {
        self.cancel_occurrence(upn, master_id, start)
    }

    pub fn get_event(&self, upn: &str, id: &str) -> ApiResult<Value> {
        let sh = &self.shared;
        let st = lock(&sh.graph);
        let acct = events::account(&st, upn)?;
        acct.find(id, horizon(sh))
            .filter(|e| !e.deleted)
            .map(|e| e.render(upn, &OutZone::utc()))
            .ok_or_else(model::not_found)
    }

    /// Every live stored event (singles, masters, exceptions), rendered in
    /// UTC as `events.get` would.
    pub fn stored_events(&self, upn: &str) -> Vec<Value> {
        let st = lock(&self.shared.graph);
        st.accounts
            .get(&upn.to_lowercase())
            .map(|a| {
                a.events
                    .values()
                    .filter(|e| !e.deleted)
                    .map(|e| e.render(upn, &OutZone::utc()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Live stored events of one calendar (`None` or `primary`: the
    /// default calendar), rendered in UTC.
    pub fn stored_events_in(&self, upn: &str, calendar_id: Option<&str>) -> Vec<Value> {
        let st = lock(&self.shared.graph);
        st.accounts
            .get(&upn.to_lowercase())
            .map(|a| {
                let calendar = match calendar_id {
                    None | Some("primary") => a.default_calendar(),
                    Some(c) => c.to_string(),
                };
                a.events
                    .values()
                    .filter(|e| !e.deleted && e.calendar_id == calendar)
                    .map(|e| e.render(upn, &OutZone::utc()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (id, `transactionId`) of every live stored event, without rendering
    /// them: cheap enough to check after every step of a long simulation.
    pub fn live_transaction_ids(&self, upn: &str) -> Vec<(String, Option<String>)> {
        let st = lock(&self.shared.graph);
        st.accounts
            .get(&upn.to_lowercase())
            .map(|a| {
                a.events
                    .values()
                    .filter(|e| !e.deleted)
                    .map(|e| {
                        let tag = e.body.get("transactionId").and_then(|t| t.as_str());
                        (e.id.clone(), tag.map(str::to_string))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Calls `f` with the id and `transactionId` of each live stored
    /// event, in `live_transaction_ids`' order, copying nothing.
    pub fn visit_live_transaction_ids(&self, upn: &str, mut f: impl FnMut(&str, Option<&str>)) {
        let st = lock(&self.shared.graph);
        if let Some(a) = st.accounts.get(&upn.to_lowercase()) {
            for e in a.events.values().filter(|e| !e.deleted) {
                f(&e.id, e.body.get("transactionId").and_then(|t| t.as_str()));
            }
        }
    }

    /// Number of live (non-deleted) stored events: singles and masters.
    pub fn event_count(&self, upn: &str) -> usize {
        let st = lock(&self.shared.graph);
        st.accounts
            .get(&upn.to_lowercase())
            .map(|a| {
                a.events
                    .values()
                    .filter(|e| !e.deleted && e.kind != model::Kind::Exception)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Every delta token of the mailbox now answers 410 `SyncStateNotFound`.
    pub fn invalidate_delta_tokens(&self, upn: &str) {
        let mut st = lock(&self.shared.graph);
        if let Some(a) = st.accounts.get_mut(&upn.to_lowercase()) {
            a.delta_generation += 1;
        }
    }

    /// Same as `invalidate_delta_tokens` (name shared with `GoogleSim`).
    pub fn invalidate_sync_tokens(&self, upn: &str) {
        self.invalidate_delta_tokens(upn)
    }

    /// Revoke consent: refresh → AADSTS50173, API → 401, and the mailbox's
    /// subscriptions get `reauthorizationRequired`.
    pub fn revoke_grant(&self, upn: &str) {
        let sh = &self.shared;
        let mut st = lock(&sh.graph);
        st.tokens.end_grants(upn, GrantState::Revoked);
        let ids: Vec<String> = st
            .subscriptions
            .values()
            .filter(|s| s.mailbox.eq_ignore_ascii_case(upn))
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            let _ =
                subscriptions::lifecycle(sh, &mut st, &id, LifecycleEvent::ReauthorizationRequired);
        }
    }

    /// Refresh tokens expire by inactivity (AADSTS700082).
    pub fn expire_refresh_tokens(&self, upn: &str) {
        lock(&self.shared.graph)
            .tokens
            .end_grants(upn, GrantState::Expired);
    }

    pub fn expire_access_tokens(&self, upn: &str) {
        lock(&self.shared.graph)
            .tokens
            .expire_access(upn, self.shared.now());
    }

    /// Every access token issued to the account that is still known
    /// (expired ones included; revoked ones are forgotten).
    pub fn access_tokens(&self, upn: &str) -> Vec<String> {
        lock(&self.shared.graph).tokens.access_tokens_of(upn)
    }

    pub fn subscriptions(&self) -> Vec<Subscription> {
        let st = lock(&self.shared.graph);
        let mut v: Vec<Subscription> = st.subscriptions.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Send a lifecycle notification (and apply its effect).
    pub fn send_lifecycle(&self, subscription_id: &str, event: LifecycleEvent) -> ApiResult<()> {
        let sh = &self.shared;
        let mut st = lock(&sh.graph);
        subscriptions::lifecycle(sh, &mut st, subscription_id, event)
    }

    /// Requests currently in flight for a mailbox (limiter view).
    pub fn in_flight(&self, upn: &str) -> usize {
        self.shared.limiter.in_flight(upn)
    }
}

/// A control-API body may set `originalStartTimeZone` (read-only in the
/// real API) to make an event such as desktop Outlook leaves behind: a
/// legacy custom zone (`"tzone://Microsoft/Custom"`) or none (`null`). The
/// event's times stay in `start.timeZone`; only what clients see of its zone
/// changes.
fn legacy_zone(body: &Value) -> Option<Value> {
    let value = body.get("originalStartTimeZone")?;
    let shown = |v: &Value| v.is_null() || v.is_string();
    shown(value).then(|| value.clone())
}

fn set_legacy_zone(
    st: &mut model::GraphState,
    upn: &str,
    id: &str,
    legacy: Option<Value>,
) -> ApiResult<model::MEvent> {
    let acct = events::account_mut(st, upn)?;
    let ev = acct.events.get_mut(id).ok_or_else(model::not_found)?;
    ev.legacy_zone = legacy;
    Ok(ev.clone())
}

/// Id of one occurrence of a series (what calendarView/delta return).
pub fn occurrence_id(master_id: &str, start: DateTime<Utc>) -> String {
    model::occurrence_id(master_id, start)
}
