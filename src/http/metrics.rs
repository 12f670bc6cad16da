//! `GET /metrics`: the Prometheus scrape endpoint. No admin token:
//! Prometheus scrapes it, and it carries no connection ids or secrets
//! (labels are bounded sets, see `crate::metrics`).

use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::time::Duration;

/// The state gauges are read from the database at scrape time; a slow
/// database must not make the scrape itself time out.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let handle = crate::metrics::install();
    let refreshed = tokio::time::timeout(
        REFRESH_TIMEOUT,
        crate::metrics::refresh(
            &state.store,
            Some(&state.connections),
            Some(&state.settings),
        ),
    )
    .await;
    match refreshed {
        Ok(Ok(())) => {}
        // Counters and histograms are still worth serving; the stale
        // gauges show up as calsync_metrics_refresh_errors_total.
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: state gauges not refreshed"),
        Err(_) => tracing::warn!("metrics: state gauges not refreshed (timeout)"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}
