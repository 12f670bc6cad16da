//! The demo's world: database, simulators, settings, connection actors and
//! calsync's HTTP server, all in this process and wired the way `serve`
//! wires them — except that the provider URLs point at the simulators and
//! push notifications come back to this server's own address.

use super::DemoError;
use crate::actors::runtime::{Gates, SyncRuntime};
use crate::actors::{ActorSettings, Connections};
use crate::config::GlobalArgs;
use crate::core::backoff::BackoffPolicy;
use crate::core::settings::{Actor, Flag, SettingsCommand};
use crate::database::Database;
use crate::http::{self, AppState};
use crate::providers::ProviderEndpoints;
use crate::settings::{SettingsHandle, DEFAULT_REFRESH};
use crate::store::credentials::CredentialVault;
use crate::store::PgEventStore;
use calsim::{SimConfig, SimHandle, Simulators};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The demo's operator name in the settings audit trail.
pub const OPERATOR: &str = "demo";

pub struct World {
    pub db: Database,
    /// What an operator should know about the database (one line).
    pub db_note: String,
    pub sim: SimHandle,
    pub settings: SettingsHandle,
    pub connections: Connections,
    pub vault: CredentialVault,
    pub endpoints: ProviderEndpoints,
    /// calsync's own base URL (`http://127.0.0.1:PORT`).
    pub base: String,
    pub admin_token: String,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
    /// Held for the whole run: a second demo in this directory must not
    /// wipe the cluster under this one (not even during `initdb`, before
    /// PostgreSQL's own pid file exists).
    _lock: Option<super::database::Lock>,
}

impl World {
    pub async fn start(
        global: &GlobalArgs,
        listen: SocketAddr,
        seed: u64,
    ) -> anyhow::Result<World> {
        // Before anything is recorded: without a recorder, metrics are
        // dropped, and the summary reads its counters from this recorder.
        crate::metrics::install();
        let (db, db_note, lock) = super::database::open_database(global).await?;
        let store = db.store();
        let sim = Simulators::start(SimConfig {
            seed,
            // Quick push retries, so a notification that met a busy moment
            // is retried within the demo's quiet period.
            push_retry_delay_ms: 50,
            ..SimConfig::default()
        })
        .await?;
        let settings = SettingsHandle::start(store.clone(), DEFAULT_REFRESH).await?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| DemoError::Listen(listen, e))?;
        let base = own_base_url(listener.local_addr()?);
        let endpoints = ProviderEndpoints {
            google_api: sim.google_base_url(),
            google_token: sim.google_token_url(),
            graph_api: sim.graph_base_url(),
            graph_token: sim.graph_token_url("common"),
        };
        // Credentials are sealed with a key that lives only as long as this
        // process: the demo's accounts are throwaway.
        let vault = CredentialVault::random();
        let gates: Arc<dyn Gates> = Arc::new(settings.clone());
        let mut runtime = SyncRuntime::new(endpoints.clone(), vault.clone(), store.clone(), gates)?;
        // Same policy code as production, shorter delays: a provider outage
        // of a few seconds must show backoff *and* recovery within the run.
        runtime.policy.sync.backoff = BackoffPolicy {
            base: Duration::from_millis(800),
            cap: Duration::from_secs(4),
            ..BackoffPolicy::default()
        };
        runtime.webhook_base = Some(base.clone());
        let connections = Connections::start_with_sync(
            store.clone(),
            ActorSettings::default(),
            Some(Arc::new(runtime)),
        )
        .await?;
        let admin_token = hex::encode(rand::random::<[u8; 16]>());
        let state = AppState {
            connect: None,
            channels: Default::default(),
            store,
            connections: connections.clone(),
            admin_token: Some(admin_token.clone()),
            // The demo is a playground: the kill drill is open to the
            // admin token holder.
            drills_enabled: true,
            settings: settings.clone(),
            webhooks: Default::default(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, state, async {
            let _ = rx.await;
        }));
        Ok(World {
            db,
            db_note,
            sim,
            settings,
            connections,
            vault,
            endpoints,
            base,
            admin_token,
            server: Some((tx, server)),
            _lock: lock,
        })
    }

    pub fn store(&self) -> PgEventStore {
        self.db.store()
    }

    /// Turns the three feature flags on through the settings stream, as an
    /// operator would (`calsync flags set …`): audited, actor `demo`.
    pub async fn enable_flags(&self) -> anyhow::Result<()> {
        let actor = Actor::parse(OPERATOR)?;
        for flag in [Flag::SyncEnabled, Flag::JobsEnabled, Flag::WebhooksEnabled] {
            self.settings
                .apply(
                    SettingsCommand::SetFlag {
                        flag,
                        enabled: true,
                        reason: "calsync demo: turn the system on".into(),
                    },
                    actor.clone(),
                )
                .await?;
        }
        // Gates read the handle's folded state: make sure it has the flags
        // before the first connection asks.
        self.settings.refresh().await?;
        Ok(())
    }

    /// Stops actors, simulators, the HTTP server and the private cluster,
    /// in that order: nothing is left calling something already gone.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.connections.shutdown();
        self.sim.shutdown().await;
        if let Some((tx, server)) = self.server.take() {
            let _ = tx.send(());
            match tokio::time::timeout(Duration::from_secs(10), server).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
                Ok(_) => {}
                Err(_) => tracing::warn!("HTTP server did not finish within 10 s"),
            }
        }
        let cluster = self.db.cluster.clone();
        drop(self);
        if let Some(cluster) = cluster {
            // A clean stop: a checkpoint, no crash recovery next time.
            tokio::task::spawn_blocking(move || cluster.stop(crate::pg::StopMode::Fast)).await??;
        }
        Ok(())
    }
}

/// The URL providers deliver to: the bound address, with a wildcard IP
/// replaced by loopback (the simulators run on this machine).
fn own_base_url(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}
