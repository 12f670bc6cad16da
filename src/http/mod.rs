//! The HTTP surface of `calsync serve`.
//!
//! [`serve`] takes its listener, its state and its shutdown signal as
//! arguments, so tests run the real server on `127.0.0.1:0`.

mod admin;
pub mod auth;
pub mod changes;
pub mod channel_cache;
pub mod connect;
pub mod errors;
mod explain;
mod health;
pub mod metrics;
pub mod openapi;
mod platform;
pub mod server;
pub mod settings;
pub mod subscriptions;
pub mod ui;
pub mod webhooks;

pub use admin::CreateConnection;
pub use server::ServerLimits;

use crate::actors::Connections;
use crate::store::PgEventStore;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use std::future::Future;
use tokio::net::TcpListener;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: PgEventStore,
    pub connections: Connections,
    /// Bearer token for the admin API; `None` closes it.
    pub admin_token: Option<String>,
    /// Drill hooks (kill actors) answer only when this is on.
    pub drills_enabled: bool,
    /// Feature flags and allowlists in force on this node.
    pub settings: crate::settings::SettingsHandle,
    pub webhooks: webhooks::WebhookConfig,
    /// Recent channel lookups of the webhook endpoints (shared by clones).
    pub channels: channel_cache::ChannelCache,
    /// The OAuth connect flow's apps; `None` answers its routes 404.
    pub connect: Option<std::sync::Arc<connect::ConnectSetup>>,
}

/// The whole surface with the default limits.
pub fn router(state: AppState) -> Router {
    router_with(state, &ServerLimits::default())
}

/// Every route with its body limit stated: the API and admin endpoints take
/// `limits.api_body_limit` (413 above, before the body is parsed and after
/// the caller is authenticated), the webhooks their own
/// (`state.webhooks.body_limit`, checked as they read).
pub fn router_with(state: AppState, limits: &ServerLimits) -> Router {
    public_router(state.clone(), limits).merge(operator_routes(state, limits))
}

/// What faces the providers and the platform: health, webhooks, `/v1`.
fn public_router(state: AppState, limits: &ServerLimits) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(webhooks::routes().layer(DefaultBodyLimit::max(state.webhooks.body_limit)))
        .merge(platform::routes(state.clone()).layer(DefaultBodyLimit::max(limits.api_body_limit)))
        .merge(crate::cluster::http::routes().layer(DefaultBodyLimit::max(limits.api_body_limit)))
        .merge(explain::routes(state.clone()))
        .merge(changes::routes(state.clone()))
        .merge(
            subscriptions::routes(state.clone())
                .layer(DefaultBodyLimit::max(limits.api_body_limit)),
        )
        .merge(connect::routes(state.clone()).layer(DefaultBodyLimit::max(limits.api_body_limit)))
        .with_state(state)
}

/// What only operators and Prometheus need: `/metrics` and `/admin/*`.
fn operator_routes(state: AppState, limits: &ServerLimits) -> Router {
    let api = DefaultBodyLimit::max(limits.api_body_limit);
    Router::new()
        .merge(metrics::routes())
        .merge(admin::routes(state.clone()).layer(api))
        .merge(settings::routes(state.clone()).layer(api))
        .merge(ui::routes().layer(api))
        .with_state(state)
}

/// Serves with the default limits until `shutdown` completes, then finishes
/// in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, ServerLimits::default(), shutdown).await
}

/// Serves everything on one listener under `limits` (see [`server`]).
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_split(listener, None, state, limits, shutdown).await
}

/// Serves the public routes on `public` and, when `operator` is given,
/// `/metrics` and `/admin/*` on it alone (with `/healthz` and `/readyz` on
/// both); without it everything is on `public`. The metrics refresher runs
/// as long as the server does.
pub async fn serve_split(
    public: TcpListener,
    operator: Option<TcpListener>,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::metrics::install();
    let _refresher = crate::metrics::refresh::spawn(
        state.store.clone(),
        state.connections.clone(),
        state.settings.clone(),
        limits.metrics_refresh,
    );
    let Some(operator) = operator else {
        return server::serve(public, router_with(state, &limits), limits, shutdown).await;
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
    });
    let ops =
        operator_routes(state.clone(), &limits).merge(health::routes().with_state(state.clone()));
    let (a, b) = tokio::join!(
        server::serve(operator, ops, limits, stop.clone().cancelled_owned()),
        server::serve(
            public,
            public_router(state, &limits),
            limits,
            stop.cancelled_owned()
        ),
    );
    a.and(b)
}
