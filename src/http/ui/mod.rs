//! `/ui`: the troubleshooter, a few server-rendered pages for operators —
//! connections with per-calendar health, a provider's week with every busy
//! block explained and every ignored event with its reason, a connection's
//! recent log with correlation ids, the last validation report — and the
//! operator actions (resync, pause/resume, lift a quarantine, retry a failed
//! booking write), each behind a confirmation page and audited.
//!
//! Admin scope: sign in with the admin token (a form; see [`session`]).
//! No build step: minijinja templates compiled into the binary, auto-escaped,
//! no JavaScript.

mod session;
pub mod week;

use super::errors::ApiError;
use super::AppState;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::ConnectionId;
use crate::core::interval::Interval;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use minijinja::{context, Environment};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::OnceLock;
use uuid::Uuid;

/// Where `/ui/validate` looks for the last report when
/// `CALSYNC_VALIDATE_REPORT` is not set (where CI's `calsync validate`
/// writes its Markdown).
pub const DEFAULT_VALIDATE_REPORT: &str = "/tmp/calsync-validate.md";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/connections", get(connections))
        .route("/ui/connections/{id}/log", get(connection_log))
        .route("/ui/connections/{id}/confirm/{action}", get(confirm))
        .route("/ui/connections/{id}/act/{action}", post(act))
        .route("/ui/bookings/{id}/confirm-retry", get(confirm_retry))
        .route("/ui/bookings/{id}/retry", post(retry))
        .route("/ui/providers/{id}/week", get(week_page))
        .route("/ui/validate", get(validate_page))
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    (
        "connections.html",
        include_str!("templates/connections.html"),
    ),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("week.html", include_str!("templates/week.html")),
    ("log.html", include_str!("templates/log.html")),
    ("validate.html", include_str!("templates/validate.html")),
];

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // A broken template shows as a 500 on its page (and fails the
            // unit test that renders every page).
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "ui template does not compile");
            }
        }
        env
    })
}

fn render(name: &str, ctx: minijinja::Value) -> Result<Html<String>, ApiError> {
    templates()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "template",
                format!("page {name}: {e:#}"),
            )
        })
}

/// The signed-in session of this request, if any.
fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let token = state.admin_token.as_deref()?;
    let value = session::from_cookies(
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )?;
    session::valid(token, &value, Utc::now()).then_some(value)
}

/// The session, or the way to the sign-in page.
fn require(state: &AppState, headers: &HeaderMap) -> Result<String, Redirect> {
    signed_in(state, headers).ok_or_else(|| Redirect::to("/ui/login"))
}

/// The form's CSRF value matches the session's.
fn check_csrf(session: &str, form: &HashMap<String, String>) -> Result<(), ApiError> {
    let given = form.get("csrf").map(String::as_str).unwrap_or("");
    if session::token_matches(&session::csrf(session), given) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "the form is stale or not from this page: reload and try again",
        ))
    }
}

fn page(session: &str, title: &str, flash: Option<&str>) -> minijinja::Value {
    context! { signed_in => true, csrf => session::csrf(session), title => title, flash => flash }
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers) {
        Some(_) => Redirect::to("/ui/connections").into_response(),
        None => Redirect::to("/ui/login").into_response(),
    }
}

async fn login_page(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.admin_token.is_none() {
        return Err(disabled());
    }
    Ok(render("login.html", context! { title => "Sign in" })?.into_response())
}

fn disabled() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "admin_disabled",
        "the admin API and /ui are disabled: set CALSYNC_ADMIN_TOKEN",
    )
}

async fn login(
    State(state): State<AppState>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let token = state.admin_token.as_deref().ok_or_else(disabled)?;
    let given = form.get("token").map(String::as_str).unwrap_or("");
    if !session::token_matches(token, given) {
        tracing::warn!(target: "calsync::audit", actor = "ui", action = "sign_in", outcome = "refused");
        let html = render(
            "login.html",
            context! { title => "Sign in", error => "That is not the admin token." },
        )?;
        return Ok((StatusCode::UNAUTHORIZED, html).into_response());
    }
    tracing::info!(target: "calsync::audit", actor = "ui", action = "sign_in", outcome = "ok");
    let value = session::issue(token, Utc::now());
    let cookie = format!(
        "{}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        session::COOKIE,
        session::SESSION_HOURS * 3600
    );
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/ui/connections"),
    )
        .into_response())
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Ok(s) = require(&state, &headers) else {
        return Ok(Redirect::to("/ui/login").into_response());
    };
    check_csrf(&s, &form)?;
    let cookie = format!(
        "{}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0",
        session::COOKIE
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/ui/login")).into_response())
}

fn age(d: Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[derive(Deserialize)]
struct Flash {
    done: Option<String>,
}

async fn connections(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(flash): Query<Flash>,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    let now = Utc::now();
    let rows = crate::store::status::load(&state.store, None).await?;
    let failed = failed_bookings(&state).await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            let calendars: Vec<Value> = r
                .calendars
                .iter()
                .map(|c| {
                    json!({
                        "calendar_id": c.calendar_id,
                        "status": c.status,
                        "failures": c.failures,
                        "synced": c.last_success_at.map_or("never".into(), |t| format!("{} ago", age(now - t))),
                        "retry": c.retry_at.filter(|t| *t > now).map_or("-".into(), |t| format!("in {}", age(t - now))),
                        "last_error": c.last_error,
                        "channel": match (&c.channel_error, c.channel_failures) {
                            (Some(e), n) if n > 0 => format!("failing ({n}): {e}"),
                            _ => "ok".to_string(),
                        },
                    })
                })
                .collect();
            json!({
                "connection_id": r.connection_id,
                "platform_provider_id": r.platform_provider_id,
                "provider": r.provider,
                "status": r.status,
                "error_count": r.error_count,
                "last_error": r.last_error,
                "last_error_age": r.last_error_at.map_or("at an unknown time".into(), |t| format!("{} ago", age(now - t))),
                "backoff_for": r.backoff_until.filter(|t| *t > now).map(|t| age(t - now)),
                "quarantine_reason": r.quarantine_reason,
                "pause_reason": r.pause_reason,
                "channel": r.channel_expires_at.map_or("no open channel".into(), |t| {
                    if t > now { format!("in {}", age(t - now)) } else { "EXPIRED".into() }
                }),
                "failed_bookings": r.failed_bookings,
                "failed": failed.get(&r.connection_id).cloned().unwrap_or_default(),
                "calendars": calendars,
            })
        })
        .collect();
    let flash = flash.done.map(|d| format!("Done: {d}."));
    let ctx = context! { connections => list, ..page(&s, "Connections", flash.as_deref()) };
    Ok(render("connections.html", ctx)?.into_response())
}

/// Failed booking ids per connection.
async fn failed_bookings(state: &AppState) -> Result<HashMap<Uuid, Vec<String>>, ApiError> {
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(crate::store::StoreError::from)?;
    let rows = client
        .query(
            "SELECT connection_id, booking_id FROM booking_events WHERE state = 'failed' \
             ORDER BY booking_id",
            &[],
        )
        .await
        .map_err(crate::store::StoreError::from)?;
    let mut out: HashMap<Uuid, Vec<String>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}

/// The actions a connection offers: (label, what it does).
fn action(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "resync" => ("Resync", "Sync every calendar of this connection now."),
        "pause" => (
            "Pause",
            "Stop all provider calls of this connection until resumed.",
        ),
        "resume" => ("Resume", "Let this connection call its provider again."),
        "unquarantine" => (
            "Lift quarantine",
            "Start this connection's actor again after the supervisor gave up on it.",
        ),
        _ => return None,
    })
}

fn parse_connection(id: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(id).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    let id = parse_connection(&id)?;
    let (label, what) =
        action(&name).ok_or_else(|| ApiError::not_found(format!("no action {name:?}")))?;
    Ok(render(
        "confirm.html",
        context! {
            signed_in => true, csrf => session::csrf(&s), title => label, label => label,
            what => format!("{what} Connection {id}."),
            action => format!("/ui/connections/{id}/act/{name}"),
        },
    )?
    .into_response())
}

async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    check_csrf(&s, &form)?;
    let id = parse_connection(&id)?;
    let (label, _) =
        action(&name).ok_or_else(|| ApiError::not_found(format!("no action {name:?}")))?;
    let correlation = Uuid::new_v4();
    let command = match name.as_str() {
        "resync" => Some(ConnectionCommand::RequestSync),
        "pause" => Some(ConnectionCommand::Pause {
            reason: "operator (ui)".into(),
        }),
        "resume" => Some(ConnectionCommand::Resume),
        _ => None,
    };
    match command {
        Some(command) => {
            state.connections.command(id, command, correlation).await?;
        }
        None => state
            .connections
            .lift_quarantine(id)
            .await
            .map_err(ApiError::unavailable)?,
    }
    tracing::info!(
        target: "calsync::audit",
        actor = "ui",
        action = name.as_str(),
        connection_id = %id,
        correlation_id = %correlation,
        "operator action"
    );
    let done = format!("{label} of {id} (correlation id {correlation})");
    Ok(Redirect::to(&format!("/ui/connections?done={}", urlencode(&done))).into_response())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn confirm_retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    Ok(render(
        "confirm.html",
        context! {
            signed_in => true, csrf => session::csrf(&s), title => "Retry booking write",
            label => "Retry booking write",
            what => format!("Write booking {id} to its calendars again, with the same idempotency key."),
            action => format!("/ui/bookings/{}/retry", urlencode(&id)),
        },
    )?
    .into_response())
}

async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    check_csrf(&s, &form)?;
    let retried = super::platform::retry_booking(&state, &id).await?;
    tracing::info!(
        target: "calsync::audit",
        actor = "ui",
        action = "retry_booking",
        booking_id = id.as_str(),
        connections = retried.len(),
        "operator action"
    );
    let done = format!("retry of booking {id} on {} connection(s)", retried.len());
    Ok(Redirect::to(&format!("/ui/connections?done={}", urlencode(&done))).into_response())
}

async fn connection_log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    let id = parse_connection(&id)?;
    let events = state.store.last_events(Some(&id.stream()), 100).await?;
    let rows: Vec<Value> = events
        .iter()
        .rev()
        .map(|e| {
            json!({
                "version": e.version,
                "at": e.committed_at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                "event_type": e.event_type,
                "correlation_id": e.metadata.correlation_id,
                "payload": truncate(&e.payload, 300),
            })
        })
        .collect();
    Ok(render(
        "log.html",
        context! {
            signed_in => true, csrf => session::csrf(&s), title => "Connection log",
            connection_id => id.to_string(), events => rows,
        },
    )?
    .into_response())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[derive(Deserialize)]
struct WeekQuery {
    start: Option<NaiveDate>,
}

async fn week_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    query: Result<Query<WeekQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let start = q.start.unwrap_or_else(|| {
        let today = Utc::now().date_naive();
        today - Duration::days(today.weekday().num_days_from_monday() as i64)
    });
    let from: DateTime<Utc> = start
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| ApiError::bad_request("start: not a day"))?
        .and_utc();
    let window = Interval::new(from, from + Duration::days(7))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let busy = crate::store::explain::busy_explained(&state.store, &provider, window).await?;
    let ignored = crate::store::explain::ignored_in(&state.store, &provider, window).await?;
    let explained = super::explain::answer(&state, &provider, window).await?;
    let colours = week::colours(&busy);
    let when = |s: Option<DateTime<Utc>>, e: Option<DateTime<Utc>>| match (s, e) {
        (Some(s), Some(e)) => format!(
            "{} – {}",
            s.format("%a %d %b %H:%M"),
            e.format("%a %d %b %H:%M")
        ),
        _ => "times unknown".to_string(),
    };
    let busy_rows: Vec<Value> = busy
        .iter()
        .map(|b| json!({"when": when(Some(b.start), Some(b.end)), "rule": b.rule, "source": b.source}))
        .collect();
    let ignored_rows: Vec<Value> = ignored
        .iter()
        .map(|i| json!({"when": when(i.start, i.end), "reason": i.reason, "booking_id": i.booking_id, "source": i.source}))
        .collect();
    let bookings = provider_bookings(&state, &provider).await?;
    Ok(render(
        "week.html",
        context! {
            signed_in => true, csrf => session::csrf(&s), title => format!("Week of {provider}"),
            provider => provider, start => start.to_string(),
            previous => (start - Duration::days(7)).to_string(),
            next => (start + Duration::days(7)).to_string(),
            days => week::lay_out(start, &busy, &ignored),
            sources => week::legend(&colours),
            busy => busy_rows, ignored => ignored_rows, bookings => bookings,
            freshness => explained["freshness"].clone(),
        },
    )?
    .into_response())
}

async fn provider_bookings(state: &AppState, provider: &str) -> Result<Vec<Value>, ApiError> {
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(crate::store::StoreError::from)?;
    let rows = client
        .query(
            "SELECT b.booking_id, b.state, b.external_event_id, b.connection_id, b.last_error \
             FROM booking_events b JOIN connections c USING (connection_id) \
             WHERE c.platform_provider_id = $1 ORDER BY b.booking_id LIMIT 200",
            &[&provider],
        )
        .await
        .map_err(crate::store::StoreError::from)?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "booking_id": r.get::<_, String>(0),
                "state": r.get::<_, String>(1),
                "external_event_id": r.get::<_, Option<String>>(2),
                "connection_id": r.get::<_, Uuid>(3),
                "last_error": r.get::<_, Option<String>>(4),
            })
        })
        .collect())
}

async fn validate_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let s = match require(&state, &headers) {
        Ok(s) => s,
        Err(r) => return Ok(r.into_response()),
    };
    let path = std::env::var("CALSYNC_VALIDATE_REPORT")
        .unwrap_or_else(|_| DEFAULT_VALIDATE_REPORT.to_string());
    let (report, modified) = match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let modified = tokio::fs::metadata(&path)
                .await
                .and_then(|m| m.modified())
                .map(|t| {
                    DateTime::<Utc>::from(t)
                        .format("%Y-%m-%d %H:%M UTC")
                        .to_string()
                })
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512 * 1024)]).into_owned();
            (Some(text), modified)
        }
        Err(_) => (None, String::new()),
    };
    Ok(render(
        "validate.html",
        context! {
            signed_in => true, csrf => session::csrf(&s), title => "Validation report",
            path => path, report => report, modified => modified,
        },
    )?
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders() {
        let base = context! { signed_in => true, csrf => "c", title => "t" };
        for (name, _) in TEMPLATES {
            let ctx = context! { ..base.clone(), ..context! {
                connections => Vec::<Value>::new(), days => Vec::<Value>::new(),
                sources => Vec::<Value>::new(), busy => Vec::<Value>::new(),
                ignored => Vec::<Value>::new(), bookings => Vec::<Value>::new(),
                freshness => Vec::<Value>::new(), events => Vec::<Value>::new(),
                label => "L", what => "W", action => "/x", path => "/p", connection_id => "c",
                provider => "pp", start => "2026-12-07", previous => "p", next => "n",
            }};
            let html = render(name, ctx).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(html.0.contains("<html") || *name != "base.html");
        }
        let html = render(
            "login.html",
            context! { title => "x", error => "<script>alert(1)</script>" },
        )
        .unwrap();
        assert!(html.0.contains("&lt;script&gt;"), "escaped");
        assert_eq!(urlencode("a b/é"), "a%20b%2F%C3%A9");
    }
}
