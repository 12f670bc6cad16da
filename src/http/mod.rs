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
pub mod settings;
pub mod webhooks;

pub use admin::CreateConnection;

use crate::actors::Connections;
use crate::store::PgEventStore;
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

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .merge(admin::routes(state.clone()))
        .merge(settings::routes(state.clone()))
        .merge(webhooks::routes())
        .merge(platform::routes(state.clone()))
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
