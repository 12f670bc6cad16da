//! `GET /v1/changes` — the platform feed, pulled.
//!
//! `?after=CURSOR` (absent: from the log's start; `now`: from the newest
//! event readable now), `limit=N` (1–1000, default 100), `types=a,b`
//! (default all), `wait=30s` (long poll: up to 60 s; answer as soon as an
//! event arrives, or empty with the same cursor when none did). The answer
//! is `{"events": [...], "next_cursor": "...", "has_more": bool}`; pass
//! `next_cursor` back as `after`. Behind the admin bearer token.

use super::errors::ApiError;
use super::AppState;
use crate::core::platform_events::{parse_types, PlatformEventType};
use crate::feed::{FeedCursor, FeedPage, FeedReader};
use crate::store::PgEventStore;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    after: Option<String>,
    limit: Option<usize>,
    types: Option<String>,
    wait: Option<String>,
}

/// Parses `30s`, `500ms` or bare seconds.
pub fn parse_wait(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit_ms) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1_000)
    } else {
        (text, 1_000)
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("wait: {text:?} is not a duration like 30s or 500ms"))?;
    let wait = Duration::from_millis(n.saturating_mul(unit_ms));
    if wait > MAX_WAIT {
        return Err(format!("wait: at most {}s", MAX_WAIT.as_secs()));
    }
    Ok(wait)
}

/// This module's part of the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(changes))]
pub(super) struct ApiDoc;

#[utoipa::path(get, path = "/v1/changes", tag = "platform", params(ChangesQuery), security(("bearer" = [])), responses((status = 200, description = "Platform events after the cursor, in the log's order, with the next cursor (docs/PLATFORM_EVENTS.md)", body = Object), (status = 400, description = "`bad_request`: a bad cursor, limit, type or wait", body = crate::http::openapi::ErrorBody), crate::http::openapi::AuthErrors))]
async fn changes(
    State(state): State<AppState>,
    Extension(reader): Extension<Arc<FeedReader<PgEventStore>>>,
    query: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: between 1 and {MAX_LIMIT}"
        )));
    }
    let types: Vec<PlatformEventType> = match &q.types {
        Some(t) => parse_types(t).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => Vec::new(),
    };
    let wait = match &q.wait {
        Some(w) => parse_wait(w).map_err(ApiError::bad_request)?,
        None => Duration::ZERO,
    };
    let after = match q.after.as_deref() {
        None | Some("") => FeedCursor::START,
        Some("now") => crate::feed::head(&state.store).await?,
        Some(text) => FeedCursor::decode(text).map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    let page = long_poll(&reader, after, limit, &types, wait).await?;
    Ok(Json(json!({
        "events": page.events,
        "next_cursor": page.next.encode(),
        "has_more": page.has_more,
    })))
}

/// Reads a page; while it is empty, reads again (50 ms, doubling to 500 ms)
/// until `wait` has passed.
async fn long_poll(
    reader: &FeedReader<PgEventStore>,
    after: FeedCursor,
    limit: usize,
    types: &[PlatformEventType],
    wait: Duration,
) -> Result<FeedPage, crate::store::StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    let mut page = reader.read(after, limit, types).await?;
    while page.events.is_empty() && !page.has_more {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(500));
        page = reader.read(page.next, limit, types).await?;
    }
    Ok(page)
}

pub fn routes(state: AppState) -> Router<AppState> {
    let reader = Arc::new(FeedReader::new(state.store.clone()));
    Router::new()
        .route("/v1/changes", get(changes))
        .layer(Extension(reader))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            super::admin::require_admin,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_in_seconds_or_milliseconds_up_to_a_minute() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert!(parse_wait("61s").is_err());
        assert!(parse_wait("soon").is_err());
        assert!(parse_wait("-1s").is_err());
    }
}
