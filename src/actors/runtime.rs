//! What connection actors and their tasks run on: the ports (store,
//! providers, credentials, clock, randomness), the settings in force and
//! the policies the planner follows.

use crate::core::gate::GateView;
use crate::core::ids::{CalendarProvider, ConnectionId};
use crate::core::plan::Policy;
use crate::core::settings::{Flag, SettingsState, Toggle};
use crate::ports::{Clock, Entropy, SystemClock, SystemEntropy};
use crate::providers::{ProviderClient, ProviderEndpoints};
use crate::store::credentials::CredentialVault;
use crate::store::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// The settings in force on this node (the settings stream in `serve`;
/// fixed in tests of other behaviour). The gate itself is the core's
/// ([`crate::core::gate::admit`]); this only says what it sees.
pub trait Gates: Send + Sync {
    fn current(&self) -> Arc<SettingsState>;
    /// Notified on every change, so waiting work starts at once.
    fn subscribe(&self) -> Option<watch::Receiver<Arc<SettingsState>>>;
}

/// Every flag on, production mode off (tests and drills of other
/// behaviour).
pub struct AllOpen;

impl AllOpen {
    pub fn settings() -> SettingsState {
        let mut state = SettingsState::default();
        for flag in Flag::ALL {
            state.flags.insert(
                flag,
                Toggle {
                    enabled: true,
                    last_change: None,
                },
            );
        }
        state
    }
}

impl Gates for AllOpen {
    fn current(&self) -> Arc<SettingsState> {
        Arc::new(AllOpen::settings())
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<SettingsState>>> {
        None
    }
}

/// Everything a connection actor needs to sync.
pub struct SyncRuntime {
    pub google: ProviderClient,
    pub graph: ProviderClient,
    pub vault: CredentialVault,
    pub store: Store,
    /// What the planner follows: busy rules, backoff, cancel mode, poll
    /// interval, sync spacing, window, call budget.
    pub policy: Policy,
    pub gates: Arc<dyn Gates>,
    pub clock: Arc<dyn Clock>,
    pub entropy: Arc<dyn Entropy>,
    /// Access tokens refreshed by this node's tasks, reused until expiry.
    pub access_tokens: super::task_support::AccessTokens,
    /// Public base URL of this deployment's webhook endpoints (e.g.
    /// `https://hooks.example.com`); `None`: no push channels, polls only.
    pub webhook_base: Option<String>,
    /// Requested channel lifetimes (the provider may grant less).
    pub google_channel_lifetime: chrono::Duration,
    pub graph_channel_lifetime: chrono::Duration,
}

impl SyncRuntime {
    pub fn new(
        endpoints: ProviderEndpoints,
        vault: CredentialVault,
        store: impl Into<Store>,
        gates: Arc<dyn Gates>,
    ) -> anyhow::Result<Self> {
        let http = crate::providers::transport::http_client()?;
        Ok(Self::on(endpoints, http.into(), vault, store, gates))
    }

    /// Like [`SyncRuntime::new`], reaching the providers through `http`
    /// (the simulation's in-process simulators).
    pub fn on(
        endpoints: ProviderEndpoints,
        http: crate::providers::transport::HttpPort,
        vault: CredentialVault,
        store: impl Into<Store>,
        gates: Arc<dyn Gates>,
    ) -> Self {
        SyncRuntime {
            google: ProviderClient::for_provider(
                CalendarProvider::Google,
                http.clone(),
                endpoints.clone(),
            ),
            graph: ProviderClient::for_provider(CalendarProvider::Microsoft, http, endpoints),
            vault,
            store: store.into(),
            policy: Policy::default(),
            gates,
            clock: Arc::new(SystemClock),
            entropy: Arc::new(SystemEntropy),
            access_tokens: Default::default(),
            webhook_base: None,
            // Google's default and (observed) maximum is 7 days; Graph's
            // Outlook maximum is disputed (4,230 or 10,080 minutes), so ask
            // a little under the lower one and trust the returned expiry.
            google_channel_lifetime: chrono::Duration::days(7),
            graph_channel_lifetime: chrono::Duration::minutes(4200),
        }
    }

    /// Runs on `clock` (tests moving time with the simulator, the
    /// simulation): the planner, the tasks and the provider clients' token
    /// expiry all read it.
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.google = self.google.clone().with_clock(clock.clone());
        self.graph = self.graph.clone().with_clock(clock.clone());
        self.clock = clock;
    }

    pub fn client(&self, provider: CalendarProvider) -> &ProviderClient {
        match provider {
            CalendarProvider::Google => &self.google,
            CalendarProvider::Microsoft => &self.graph,
        }
    }

    /// What the gate of `connection` sees now.
    pub fn view(&self, provider: CalendarProvider, connection: ConnectionId) -> GateView {
        GateView::new(
            &self.gates.current(),
            provider,
            connection,
            self.webhook_base.is_some(),
        )
    }
}
