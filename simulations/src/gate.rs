//! The HTTP gate in front of each simulated provider: classifies the
//! endpoint, authenticates the bearer token, applies injected faults and the
//! Graph mailbox limiter, and records the request in the log.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::AccessCheck;
use crate::error::ApiError;
use crate::request_log::{Provider, RequestRecord};
use crate::state::{lock, Shared};
use crate::{google, graph};

/// The account a request authenticated as (inserted for handlers).
#[derive(Clone, Debug)]
pub struct Authed(pub String);

/// Set by handlers that learn the account themselves (token endpoints).
#[derive(Clone, Debug)]
pub struct LoggedAccount(pub String);

fn render(provider: Provider, e: ApiError) -> Response {
    match provider {
        Provider::Google => google::errors::GErr(e).into_response(),
        Provider::Graph => graph::errors::MErr(e).into_response(),
    }
}

fn injected(
    provider: Provider,
    code: u16,
    reason: Option<String>,
    retry_after: Option<f64>,
) -> ApiError {
    match provider {
        Provider::Google => google::errors::injected(code, reason, retry_after),
        Provider::Graph => graph::errors::injected(code, reason, retry_after),
    }
}

pub async fn google_gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ctx = sh.response_context();
    crate::error::scoped(ctx, gate(sh, Provider::Google, req, next)).await
}

pub async fn graph_gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ctx = sh.response_context();
    crate::error::scoped(ctx, gate(sh, Provider::Graph, req, next)).await
}

/// What the log keeps of a request, gathered before the handler runs.
struct Seen {
    provider: Provider,
    at: chrono::DateTime<Utc>,
    endpoint: &'static str,
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<serde_json::Value>,
}

/// Request headers worth asserting on; never `Authorization`.
const LOGGED_HEADERS: &[&str] = &[
    "if-match",
    "if-none-match",
    "prefer",
    "content-type",
    "user-agent",
];

/// Largest request body accepted (and logged); bigger bodies get 413.
const MAX_BODY: usize = 1 << 20;

async fn gate(sh: Arc<Shared>, provider: Provider, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let endpoint = match provider {
        Provider::Google => google::classify(&parts.method, parts.uri.path()),
        Provider::Graph => graph::classify(&parts.method, parts.uri.path()),
    };
    let mut seen = Seen {
        provider,
        at: sh.now(),
        endpoint,
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: LOGGED_HEADERS
            .iter()
            .filter_map(|h| {
                parts
                    .headers
                    .get(*h)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| (h.to_string(), v.to_string()))
            })
            .collect(),
        body: None,
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        let e = ApiError::new(413, "payloadTooLarge", "Request payload too large.");
        return finish(&sh, &seen, None, render(provider, e), None);
    };
    // Token requests carry secrets (refresh tokens, client secrets): not logged.
    if endpoint != "token" {
        seen.body = serde_json::from_slice(&bytes).ok();
    }
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    serve(sh, seen, req, next).await
}

/// Who the bearer token belongs to, valid or not.
fn authenticate(sh: &Shared, seen: &Seen, req: &Request, needs_auth: bool) -> AccessCheck {
    if !needs_auth {
        return AccessCheck::Missing;
    }
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match seen.provider {
        Provider::Google => lock(&sh.google).tokens.check_access(header, seen.at),
        Provider::Graph => lock(&sh.graph).tokens.check_access(header, seen.at),
    }
}

/// Quotas and the Graph mailbox limiter. `Ok(permit)` holds the mailbox slot
/// for the duration of the request; `Err` is the throttling answer and its label.
fn admit(
    sh: &Shared,
    seen: &Seen,
    account: &str,
    needs_auth: bool,
) -> Result<Option<graph::limiter::Permit>, (ApiError, &'static str)> {
    admit_quota(sh, seen.provider, account, seen.at).map_err(|e| (e, "quota"))?;
    if seen.provider != Provider::Graph || !needs_auth {
        return Ok(None);
    }
    let mailbox = graph::mailbox_of(&seen.path).unwrap_or_else(|| account.to_string());
    sh.limiter
        .try_acquire(&mailbox, sh.config.graph_mailbox_concurrency)
        .map(Some)
        .ok_or((graph::errors::mailbox_concurrency(), "mailbox_concurrency"))
}

async fn serve(sh: Arc<Shared>, seen: Seen, mut req: Request, next: Next) -> Response {
    let provider = seen.provider;
    let needs_auth = !matches!(seen.endpoint, "token" | "revoke" | "authorize");
    let check = authenticate(&sh, &seen, &req, needs_auth);
    let mut account = match &check {
        AccessCheck::Valid(a) | AccessCheck::Expired(a) => Some(a.clone()),
        _ => None,
    };
    let probe = crate::faults::Probe {
        provider,
        endpoint: seen.endpoint,
        account: account.as_deref(),
        path: &seen.path,
        body: seen.body.as_ref(),
    };
    let decision = sh.faults.evaluate(&probe, seen.at, &sh.rng);
    let latency = Duration::from_millis(decision.latency_ms);
    let mut response = if let Some(s) = &decision.respond {
        tokio::time::sleep(latency).await;
        render(
            provider,
            injected(provider, s.code, s.reason.clone(), s.retry_after),
        )
    } else if needs_auth && !matches!(check, AccessCheck::Valid(_)) {
        render(provider, unauthorized(provider, &check))
    } else {
        let mut permit = None;
        if let Some(a) = &account {
            req.extensions_mut().insert(Authed(a.clone()));
            match admit(&sh, &seen, a, needs_auth) {
                Ok(p) => permit = p,
                Err((e, label)) => {
                    return finish(&sh, &seen, account, render(provider, e), Some(label.into()))
                }
            }
        }
        if let Some(name) = &decision.hold {
            let hold = sh.faults.hold(name);
            hold.wait().await;
        }
        // Added latency models a slow backend, so it holds the mailbox slot.
        tokio::time::sleep(latency).await;
        let resp = next.run(req).await;
        drop(permit);
        match decision.lose_response {
            Some(code) => render(provider, injected(provider, code, None, None)),
            None => resp,
        }
    };
    if let Some(LoggedAccount(a)) = response.extensions_mut().remove::<LoggedAccount>() {
        account = Some(a);
    }
    finish(&sh, &seen, account, response, decision.label)
}

fn finish(
    sh: &Shared,
    seen: &Seen,
    account: Option<String>,
    response: Response,
    fault: Option<String>,
) -> Response {
    sh.log.record(RequestRecord {
        seq: 0,
        at: seen.at,
        provider: seen.provider,
        account,
        endpoint: seen.endpoint.to_string(),
        method: seen.method.to_string(),
        path: seen.path.clone(),
        query: seen.query.clone(),
        headers: seen.headers.clone(),
        body: seen.body.clone(),
        status: response.status().as_u16(),
        fault,
    });
    response
}

/// The optional per-account quotas (off unless configured).
fn admit_quota(
    sh: &Shared,
    provider: Provider,
    account: &str,
    now: chrono::DateTime<Utc>,
) -> Result<(), ApiError> {
    let (limit, window) = match provider {
        Provider::Google => (
            sh.config.google_user_requests_per_minute,
            chrono::Duration::minutes(1),
        ),
        Provider::Graph => (
            sh.config.graph_mailbox_requests_per_10_min,
            chrono::Duration::minutes(10),
        ),
    };
    let Some(limit) = limit else { return Ok(()) };
    sh.quotas
        .admit(provider, account, limit, window, now)
        .map_err(|retry_after| match provider {
            Provider::Google => {
                ApiError::new(403, "userRateLimitExceeded", "User Rate Limit Exceeded")
                    .domain("usageLimits")
            }
            Provider::Graph => graph::errors::injected(429, None, Some(retry_after)),
        })
}

fn unauthorized(provider: Provider, check: &AccessCheck) -> ApiError {
    match provider {
        Provider::Google => {
            ApiError::new(401, "authError", "Invalid Credentials").at("header", "Authorization")
        }
        Provider::Graph => {
            let msg = match check {
                AccessCheck::Missing => "Access token is empty.",
                AccessCheck::Expired(_) => "Lifetime validation failed, the token is expired.",
                _ => "IDX14100: JWT is not well formed.",
            };
            ApiError::new(401, "InvalidAuthenticationToken", msg)
        }
    }
}

/// Unknown paths get a 404 in the shape of the provider their prefix names;
/// provider-prefixed ones are recorded like any other provider request.
pub async fn fallback(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: axum::http::Uri,
) -> Response {
    let path = uri.path().to_string();
    let provider = if path.starts_with("/graph/") {
        Provider::Graph
    } else if path.starts_with("/google/") {
        Provider::Google
    } else {
        return (axum::http::StatusCode::NOT_FOUND, "calsim: unknown path").into_response();
    };
    let error = match provider {
        Provider::Graph => ApiError::new(
            400,
            "BadRequest",
            format!("Resource not found for the segment '{path}'."),
        ),
        Provider::Google => ApiError::new(404, "notFound", "Not Found"),
    };
    let seen = Seen {
        provider,
        at: sh.now(),
        endpoint: "unknown",
        method,
        query: uri.query().map(str::to_string),
        path,
        headers: Vec::new(),
        body: None,
    };
    finish(&sh, &seen, None, render(provider, error), None)
}
