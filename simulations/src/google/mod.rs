//! Google Calendar v3 simulator (subset): OAuth token endpoint, events CRUD,
//! incremental sync, freeBusy, watch channels with push delivery.
//!
//! `GoogleSim` is the Rust control API: every mutation goes through the same
//! code as the HTTP API, so it bumps etags, shows up in incremental sync and
//! fires push notifications exactly like a user edit in the real calendar.

pub mod auth;
pub mod errors;
pub mod events;
pub mod freebusy;
pub mod model;
pub mod push;
pub mod sync;

use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::GrantState;
use crate::error::{ApiError, ApiResult};
use crate::gate::google_gate;
use crate::state::{lock, Shared};
use model::{GAccount, GCalendar};
pub use push::Channel;

/// Credentials of a simulated Google account (what calsync stores after consent).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GoogleAccount {
    pub email: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
}

/// Logical endpoint name used by fault rules and the request log.
pub fn classify(method: &Method, path: &str) -> &'static str {
    let p = path.strip_prefix("/google").unwrap_or(path);
    let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("POST", ["token"]) => "token",
        ("GET", ["authorize"]) => "authorize",
        ("POST", ["revoke"]) => "revoke",
        (_, ["calendar", "v3", "freeBusy"]) => "freeBusy",
        (_, ["calendar", "v3", "channels", "stop"]) => "channels.stop",
        (_, ["calendar", "v3", "users", "me", "calendarList"]) => "calendarList.list",
        ("GET", ["calendar", "v3", "calendars", _, "events"]) => "events.list",
        ("POST", ["calendar", "v3", "calendars", _, "events"]) => "events.insert",
        ("POST", ["calendar", "v3", "calendars", _, "events", "watch"]) => "events.watch",
        ("GET", ["calendar", "v3", "calendars", _, "events", _, "instances"]) => "events.instances",
        ("GET", ["calendar", "v3", "calendars", _, "events", _]) => "events.get",
        ("PATCH", ["calendar", "v3", "calendars", _, "events", _]) => "events.patch",
        ("PUT", ["calendar", "v3", "calendars", _, "events", _]) => "events.update",
        ("DELETE", ["calendar", "v3", "calendars", _, "events", _]) => "events.delete",
        _ => "unknown",
    }
}

pub fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let v3 = "/google/calendar/v3";
    Router::new()
        .route("/google/token", post(auth::token_h))
        .route("/google/authorize", get(auth::authorize_h))
        .route("/google/revoke", post(auth::revoke_h))
        .route(&format!("{v3}/freeBusy"), post(freebusy::query_h))
        .route(
            &format!("{v3}/users/me/calendarList"),
            get(events::calendar_list_h),
        )
        .route(
            &format!("{v3}/calendars/{{cal}}/events"),
            get(sync::list_h).post(events::insert_h),
        )
        .route(
            &format!("{v3}/calendars/{{cal}}/events/watch"),
            post(push::watch_h),
        )
        .route(
            &format!("{v3}/calendars/{{cal}}/events/{{id}}"),
            get(events::get_h)
                .patch(events::patch_h)
                .put(events::update_h)
                .delete(events::delete_h),
        )
        .route(
            &format!("{v3}/calendars/{{cal}}/events/{{id}}/instances"),
            get(sync::instances_h),
        )
        .route(&format!("{v3}/channels/stop"), post(push::stop_h))
        .layer(from_fn_with_state(shared, google_gate))
}

/// Rust control API of the Google simulator. Cheap to clone.
#[derive(Clone)]
pub struct GoogleSim {
    pub(crate) shared: Arc<Shared>,
}

impl GoogleSim {
    /// Registers an OAuth app for the authorization-code flow.
    pub fn register_app(&self, client_id: &str, client_secret: &str) {
        lock(&self.shared.google)
            .code_flow
            .apps
            .insert(client_id.to_string(), client_secret.to_string());
    }

    /// What the next visitor of the consent screen does.
    pub fn set_consent(&self, consent: crate::code_flow::Consent) {
        lock(&self.shared.google).code_flow.consent = consent;
    }

    /// Create an account (calendar `primary` in UTC) or, if it exists, issue
    /// it a fresh refresh token.
    pub fn create_account(&self, email: &str) -> GoogleAccount {
        self.create_account_in(email, "UTC")
    }

    /// Like `create_account`, with the primary calendar in `time_zone` (IANA).
    pub fn create_account_in(&self, email: &str, time_zone: &str) -> GoogleAccount {
        let sh = &self.shared;
        let key = email.to_lowercase();
        let mut st = lock(&sh.google);
        if !st.accounts.contains_key(&key) {
            let n = st.accounts.len() + 1;
            let account = GAccount {
                email: email.to_string(),
                client_id: format!(
                    "{n}{}.apps.googleusercontent.com",
                    sh.rng.range(100_000, 999_999)
                ),
                client_secret: format!("GOCSPX-{}", sh.rng.alnum(28)),
                calendars: vec![key.clone()],
            };
            st.accounts.insert(key.clone(), account);
            st.calendars
                .insert(key.clone(), new_calendar(sh, &key, email, email, time_zone));
        }
        let account = st.accounts.get(&key).cloned();
        let account = account.unwrap_or_else(|| GAccount {
            email: email.to_string(),
            client_id: String::new(),
            client_secret: String::new(),
            calendars: Vec::new(),
        });
        let refresh_token =
            st.tokens
                .issue_refresh(&account.email, &account.client_id, "1//", &sh.rng);
        GoogleAccount {
            email: account.email,
            client_id: account.client_id,
            client_secret: account.client_secret,
            refresh_token,
        }
    }

    /// A secondary calendar; returns its id (`...@group.calendar.google.com`).
    pub fn create_calendar(
        &self,
        email: &str,
        summary: &str,
        time_zone: &str,
    ) -> ApiResult<String> {
        let sh = &self.shared;
        let mut st = lock(&sh.google);
        let key = email.to_lowercase();
        if !st.accounts.contains_key(&key) {
            return Err(ApiError::new(
                404,
                "notFound",
                format!("No account {email}"),
            ));
        }
        let id = format!("{}@group.calendar.google.com", sh.rng.base32hex(26));
        st.calendars
            .insert(id.clone(), new_calendar(sh, &id, &key, summary, time_zone));
        if let Some(a) = st.accounts.get_mut(&key) {
            a.calendars.push(id.clone());
        }
        Ok(id)
    }

    /// Insert, or fully replace when `event.id` already exists (a user edit).
    pub fn upsert_event(&self, email: &str, calendar_id: &str, event: Value) -> ApiResult<Value> {
        let sh = &self.shared;
        let mut st = lock(&sh.google);
        let cal = st.calendar_id(email, calendar_id)?;
        let existing = event
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| {
                st.calendars
                    .get(&cal)
                    .is_some_and(|c| c.events.get(*id).is_some_and(|e| !e.deleted))
            })
            .map(str::to_string);
        match existing {
            Some(id) => events::modify(sh, &mut st, &cal, &id, event, None, true),
            None => events::insert(sh, &mut st, &cal, event),
        }
    }

    pub fn patch_event(
        &self,
        email: &str,
        calendar_id: &str,
        event_id: &str,
        patch: Value,
    ) -> ApiResult<Value> {
        let sh = &self.shared;
        let mut st = lock(&sh.google);
        let cal = st.calendar_id(email, calendar_id)?;
        events::modify(sh, &mut st, &cal, event_id, patch, None, false)
    }

    pub fn delete_event(&self, email: &str, calendar_id: &str, event_id: &str) -> ApiResult<()> {
        let sh = &self.shared;
        let mut st = lock(&sh.google);
        let cal = st.calendar_id(email, calendar_id)?;
        events::delete(sh, &mut st, &cal, event_id, None)
    }

    /// Cancel one instance of a recurring series (leaves a cancelled exception).
    pub fn cancel_instance(
        &self,
        email: &str,
        calendar_id: &str,
        master_id: &str,
        original_start: DateTime<Utc>,
    ) -> ApiResult<()> {
        self.delete_event(email, calendar_id, &instance_id(master_id, original_start))
    }

    pub fn get_event(&self, email: &str, calendar_id: &str, event_id: &str) -> ApiResult<Value> {
        let sh = &self.shared;
        let st = lock(&sh.google);
        let cal = st.calendar_id(email, calendar_id)?;
        events::get(sh, &st, &cal, event_id)
    }

    /// Every stored event (including tombstones), rendered as `events.get` would.
    pub fn stored_events(&self, email: &str, calendar_id: &str) -> ApiResult<Vec<Value>> {
        let st = lock(&self.shared.google);
        let cal = st.calendar(&st.calendar_id(email, calendar_id)?)?;
        Ok(cal.events.values().map(|e| cal.render(e)).collect())
    }

    /// The ids of the calendar's live (not cancelled) events, without
    /// rendering them: cheap enough to check after every step of a
    /// long simulation.
    pub fn live_event_ids(&self, email: &str, calendar_id: &str) -> ApiResult<Vec<String>> {
        let st = lock(&self.shared.google);
        let cal = st.calendar(&st.calendar_id(email, calendar_id)?)?;
        Ok(cal
            .events
            .values()
            .filter(|e| !e.deleted && e.body["status"] != "cancelled")
            .map(|e| e.id.clone())
            .collect())
    }

    /// Calls `f` with the id of each of the calendar's live (not
    /// cancelled) events, in `live_event_ids`' order, copying nothing: the
    /// simulation checks every calendar after every step.
    pub fn visit_live_event_ids(
        &self,
        email: &str,
        calendar_id: &str,
        mut f: impl FnMut(&str),
    ) -> ApiResult<()> {
        let st = lock(&self.shared.google);
        let cal = st.calendar(&st.calendar_id(email, calendar_id)?)?;
        for e in cal
            .events
            .values()
            .filter(|e| !e.deleted && e.body["status"] != "cancelled")
        {
            f(&e.id);
        }
        Ok(())
    }

    /// [`visit_live_event_ids`](Self::visit_live_event_ids) of the ids that
    /// start with `prefix` only, found by range instead of by a scan.
    pub fn visit_live_event_ids_with_prefix(
        &self,
        email: &str,
        calendar_id: &str,
        prefix: &str,
        mut f: impl FnMut(&str),
    ) -> ApiResult<()> {
        use std::ops::Bound;
        let st = lock(&self.shared.google);
        let cal = st.calendar(&st.calendar_id(email, calendar_id)?)?;
        for e in cal
            .events
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .map(|(_, e)| e)
            .take_while(|e| e.id.starts_with(prefix))
            .filter(|e| !e.deleted && e.body["status"] != "cancelled")
        {
            f(&e.id);
        }
        Ok(())
    }

    /// Every sync token of every calendar of the account now answers 410.
    pub fn invalidate_sync_tokens(&self, email: &str) {
        let mut st = lock(&self.shared.google);
        for c in st
            .calendars
            .values_mut()
            .filter(|c| c.owner.eq_ignore_ascii_case(email))
        {
            c.token_generation += 1;
        }
    }

    /// Refresh → `invalid_grant`; access tokens stop working (401).
    pub fn revoke_grant(&self, email: &str) {
        lock(&self.shared.google)
            .tokens
            .end_grants(email, GrantState::Revoked);
    }

    /// Access tokens of the account expire now (next API call → 401).
    pub fn expire_access_tokens(&self, email: &str) {
        lock(&self.shared.google)
            .tokens
            .expire_access(email, self.shared.now());
    }

    /// Every access token issued to the account that is still known
    /// (expired ones included; revoked ones are forgotten).
    pub fn access_tokens(&self, email: &str) -> Vec<String> {
        lock(&self.shared.google).tokens.access_tokens_of(email)
    }

    pub fn channels(&self) -> Vec<Channel> {
        let st = lock(&self.shared.google);
        let mut v: Vec<Channel> = st.channels.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Calendar ids of an account.
    pub fn calendars(&self, email: &str) -> Vec<String> {
        lock(&self.shared.google)
            .accounts
            .get(&email.to_lowercase())
            .map(|a| a.calendars.clone())
            .unwrap_or_default()
    }
}

/// Instance id of a timed occurrence: `<masterId>_<YYYYMMDDTHHMMSSZ>`.
pub fn instance_id(master_id: &str, original_start: DateTime<Utc>) -> String {
    format!("{master_id}_{}", original_start.format("%Y%m%dT%H%M%SZ"))
}

fn new_calendar(sh: &Shared, id: &str, owner: &str, summary: &str, time_zone: &str) -> GCalendar {
    GCalendar {
        id: id.to_string(),
        owner: owner.to_lowercase(),
        summary: summary.to_string(),
        time_zone: time_zone.to_string(),
        events: BTreeMap::new(),
        token_generation: 0,
        resource_id: sh.rng.alnum(27),
        updated: sh.now(),
    }
}
