//! The HTTP surface of `calsync serve`.
//!
//! [`serve`] takes its listener, its state and its shutdown signal as
//! arguments, so tests run the real server on `127.0.0.1:0`.

mod admin;
pub mod channel_cache;
pub mod errors;
mod health;
pub mod metrics;
mod platform;
pub mod server;
pub mod settings;
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
    let api = DefaultBodyLimit::max(limits.api_body_limit);
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(admin::routes(state.clone()).layer(api))
        .merge(settings::routes(state.clone()).layer(api))
        .merge(webhooks::routes().layer(DefaultBodyLimit::max(state.webhooks.body_limit)))
        .merge(platform::routes(state.clone()).layer(api))
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

/// Serves under `limits` (see [`server`]).
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router_with(state, &limits), limits, shutdown).await
}
