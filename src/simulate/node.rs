//! One calsync node on the simulation's ports: the in-memory store, the
//! virtual clock, a seeded RNG and the in-process simulators. It can crash
//! and restart on the surviving store, as a real process would.

use super::stall::StallWatch;
use super::wiring::{InProcessSimulator, PushTarget, Pushes};
use crate::actors::runtime::{Gates, SyncRuntime};
use crate::actors::{ActorSettings, Connections};
use crate::core::backoff::BackoffPolicy;
use crate::core::external_change::ExternalChangePolicy;
use crate::ports::{Clock, SeededEntropy, TokioClock};
use crate::providers::transport::HttpPort;
use crate::providers::ProviderEndpoints;
use crate::settings::SettingsHandle;
use crate::store::credentials::CredentialVault;
use crate::store::MemoryStore;
use calsim::{SimConfig, SimHandle, Simulators};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Where the node's webhooks are (never dialled: pushes are in process).
pub const PUBLIC_URL: &str = "https://calsync.sim";

pub struct Node {
    pub clock: Arc<TokioClock>,
    pub entropy: Arc<SeededEntropy>,
    pub store: MemoryStore,
    pub sim: SimHandle,
    http: HttpPort,
    pub push: Arc<PushTarget>,
    pub vault: CredentialVault,
    pub settings: SettingsHandle,
    /// `None` while the node is down.
    pub connections: Option<Connections>,
    pub starts: u32,
    /// How this node's actors are tuned (the seed picks it).
    pub actor_settings: ActorSettings,
    /// Trips when the node spins (provider calls and appends per virtual
    /// minute far beyond any real load).
    pub watch: Arc<StallWatch>,
    /// `[outbound] on_external_change` (the seed picks it).
    pub external_change: ExternalChangePolicy,
}

impl Node {
    pub async fn new(
        seed: u64,
        epoch: DateTime<Utc>,
        sim: SimConfig,
        actor_settings: ActorSettings,
    ) -> anyhow::Result<Node> {
        let clock = Arc::new(TokioClock::starting_at(epoch));
        let store = MemoryStore::new(clock.clone());
        let watch = Arc::new(StallWatch::default());
        let on_append = watch.clone();
        store.on_append(Arc::new(move |stream: &str| {
            // The stream's kind (`connection`, `settings`), not its id.
            on_append.record(stream.split('-').next().unwrap_or(stream));
        }));
        let push = Arc::new(PushTarget::default());
        let (sim, router) = Simulators::in_process(sim, epoch, Arc::new(Pushes(push.clone())))?;
        let http = HttpPort::InProcess(Arc::new(InProcessSimulator {
            router,
            watch: watch.clone(),
        }));
        // Settings changes are applied through this handle (in force at
        // once); its poll for changes made elsewhere is only a backstop.
        let settings = SettingsHandle::start_with_clock(
            store.clone(),
            Duration::from_secs(3600),
            clock.clone(),
        )
        .await?;
        Ok(Node {
            clock,
            entropy: Arc::new(SeededEntropy::new(seed ^ 0x5eed)),
            store,
            sim,
            http,
            push,
            vault: CredentialVault::random(),
            settings,
            connections: None,
            starts: 0,
            actor_settings,
            watch,
            external_change: ExternalChangePolicy::default(),
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn runtime(&self) -> SyncRuntime {
        let endpoints = ProviderEndpoints {
            google_api: self.sim.google_base_url(),
            google_token: self.sim.google_token_url(),
            graph_api: self.sim.graph_base_url(),
            graph_token: self.sim.graph_token_url("common"),
        };
        let gates: Arc<dyn Gates> = Arc::new(self.settings.clone());
        let mut runtime = SyncRuntime::on(
            endpoints,
            self.http.clone(),
            self.vault.clone(),
            self.store.clone(),
            gates,
        );
        runtime.set_clock(self.clock.clone());
        runtime.entropy = self.entropy.clone();
        runtime.policy.sync.backoff = BackoffPolicy::default();
        runtime.policy.sync.on_external_change = self.external_change;
        runtime.webhook_base = Some(PUBLIC_URL.into());
        runtime
    }

    /// Starts (or restarts) the node's actors on the store.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let connections = Connections::start_with_sync(
            self.store.clone(),
            self.actor_settings.clone(),
            Some(Arc::new(self.runtime())),
        )
        .await?;
        *self.push.node.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((connections.clone(), self.store.clone()));
        self.connections = Some(connections);
        self.starts += 1;
        Ok(())
    }

    /// The process dies: every actor is killed where it stands; pushes
    /// fail until a restart.
    pub fn crash(&mut self) {
        *self.push.node.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(connections) = self.connections.take() {
            connections.crash();
        }
    }

    /// The in-process port to the simulators (the final checks read
    /// through it too).
    pub fn http(&self) -> HttpPort {
        self.http.clone()
    }

    pub fn connections(&self) -> anyhow::Result<&Connections> {
        self.connections
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the node is down"))
    }
}
