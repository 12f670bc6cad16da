//! calsim — loopback simulators of the Google Calendar v3 and Microsoft Graph
//! calendar APIs, faithful enough that a client passing against them works
//! against the real services (facts: `shared/PROVIDERS.md`).
//!
//! Map of the crate:
//! - [`Simulators::start`] binds one axum server serving both providers and
//!   the JSON control API; [`SimHandle`] gives URLs and the Rust control API.
//! - `google/` — token endpoint, events CRUD (`events`), incremental sync
//!   (`sync`), `freebusy`, watch channels and push (`push`).
//! - `graph/` — token endpoint, events CRUD + `$filter` (`events`),
//!   calendarView + delta (`delta`), OData query helpers (`query`),
//!   getSchedule (`schedule`), subscriptions
//!   and notifications (`subscriptions`), the mailbox `limiter`.
//! - `gate` — per-request auth, fault injection, limiter and request log.
//! - `faults`, `request_log`, `delivery` (push queue with retries),
//!   `rrule` (recurrence subset), `timefmt` (zones and wire formats).
//! - `control` — the JSON control API; `scenario` — seeded traffic driver.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use calsim::{FaultKind, FaultRule, Provider, SimConfig, Simulators};
//! let sim = Simulators::start(SimConfig::for_tests()).await?;
//! let alice = sim.google().create_account("alice@example.com");
//! // calsync's client refreshes at sim.google_token_url() with alice's
//! // refresh token and calls sim.google_base_url().
//! sim.google().upsert_event(&alice.email, "primary", serde_json::json!({
//!     "summary": "Dentist",
//!     "start": { "dateTime": "2026-10-02T09:00:00Z" },
//!     "end": { "dateTime": "2026-10-02T10:00:00Z" },
//! }))?;
//! sim.add_fault(FaultRule {
//!     provider: Provider::Google,
//!     endpoint: Some("events.list".into()),
//!     account: None,
//!     path: None,
//!     body_contains: None,
//!     kind: FaultKind::Status { code: 503, retry_after: None, reason: None },
//!     remaining: Some(2),
//! });
//! let calls = sim.requests_since(chrono::Utc::now());
//! assert!(calls.is_empty());
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod code_flow;
pub mod config;
pub mod control;
pub mod delivery;
pub mod error;
pub mod faults;
pub mod gate;
pub mod google;
pub mod graph;
pub mod opaque;
pub mod quota;
pub mod request_log;
pub mod rng;
pub mod rrule;
pub mod scenario;
pub mod state;
pub mod timefmt;

use axum::Router;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::SimConfig;
pub use error::{ApiError, ApiResult};
pub use faults::{FaultKind, FaultRule, NotificationFaults};
pub use google::{GoogleAccount, GoogleSim};
pub use graph::{GraphAccount, GraphSim, LifecycleEvent};
pub use request_log::{DeliveryRecord, Provider, RequestRecord};
pub use scenario::{Scenario, ScenarioConfig, ScenarioSummary};
pub use state::{DeliveryTarget, PushRequest, PushResponse, SimClock};

use state::{lock, Shared};

/// Entry point: starts the simulators.
pub struct Simulators;

impl Simulators {
    /// Bind `127.0.0.1:config.port` (0 = random) and serve.
    pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
        let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
        Self::start_on(listener, config).await
    }

    /// Serve on an already bound listener.
    pub async fn start_on(listener: TcpListener, config: SimConfig) -> anyhow::Result<SimHandle> {
        let addr = listener.local_addr()?;
        let origin = format!("http://{addr}");
        let shared = Self::shared(config, origin.clone(), SimClock::Wall, None)?;
        let app = Self::app(&shared);
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "calsim server stopped");
            }
        });
        Ok(SimHandle {
            shared,
            origin,
            shutdown: Arc::new(Mutex::new(Some((tx, server)))),
        })
    }

    /// The simulators without a socket, for the deterministic simulation:
    /// the returned router is called in process, time is tokio's (virtual
    /// under a paused runtime) from `epoch`, and pushes go to `deliver`.
    /// With the same `config.seed` and the same calls, the same answers.
    pub fn in_process(
        config: SimConfig,
        epoch: DateTime<Utc>,
        deliver: Arc<dyn DeliveryTarget>,
    ) -> anyhow::Result<(SimHandle, Router)> {
        let origin = "http://calsim.invalid".to_string();
        let clock = SimClock::Virtual {
            epoch,
            base: tokio::time::Instant::now(),
        };
        let shared = Self::shared(config, origin.clone(), clock, Some(deliver))?;
        let app = Self::app(&shared);
        let handle = SimHandle {
            shared,
            origin,
            shutdown: Arc::new(Mutex::new(None)),
        };
        Ok((handle, app))
    }

    fn app(shared: &Arc<Shared>) -> Router {
        Router::new()
            .merge(google::router(shared.clone()))
            .merge(graph::router(shared.clone()))
            .merge(control::router())
            .fallback(gate::fallback)
            .with_state(shared.clone())
    }

    fn shared(
        config: SimConfig,
        origin: String,
        clock: SimClock,
        deliver: Option<Arc<dyn DeliveryTarget>>,
    ) -> anyhow::Result<Arc<Shared>> {
        let http = reqwest::Client::builder().no_proxy().build()?;
        Ok(Arc::new(Shared {
            rng: rng::SimRng::new(config.seed),
            log: request_log::RequestLog::new(config.log_capacity),
            config,
            origin: origin.clone(),
            faults: Default::default(),
            google: Default::default(),
            graph: Default::default(),
            delivery: Default::default(),
            limiter: Default::default(),
            quotas: Default::default(),
            runtime: tokio::runtime::Handle::try_current()?,
            http,
            scenario: Default::default(),
            clock_offset_ms: Default::default(),
            request_ids: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            clock,
            deliver,
        }))
    }
}

type Shutdown = Arc<Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>>;

/// A running simulator. Cloning shares the same server.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
    origin: String,
    shutdown: Shutdown,
}

impl SimHandle {
    /// `http://127.0.0.1:P`
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn port(&self) -> u16 {
        self.origin
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// `http://127.0.0.1:P/google/calendar/v3`
    pub fn google_base_url(&self) -> String {
        self.shared.google_base()
    }

    /// `http://127.0.0.1:P/google/token`
    pub fn google_token_url(&self) -> String {
        format!("{}/google/token", self.origin)
    }

    /// `http://127.0.0.1:P/google/authorize` (Google's
    /// `accounts.google.com/o/oauth2/v2/auth`).
    pub fn google_authorize_url(&self) -> String {
        format!("{}/google/authorize", self.origin)
    }

    /// `http://127.0.0.1:P/graph/{tenant}/oauth2/v2.0/authorize`
    pub fn graph_authorize_url(&self, tenant: &str) -> String {
        format!("{}/graph/{tenant}/oauth2/v2.0/authorize", self.origin)
    }

    /// `http://127.0.0.1:P/graph/v1.0`
    pub fn graph_base_url(&self) -> String {
        self.shared.graph_base()
    }

    /// `http://127.0.0.1:P/graph/{tenant}/oauth2/v2.0/token`
    pub fn graph_token_url(&self, tenant: &str) -> String {
        format!("{}/graph/{tenant}/oauth2/v2.0/token", self.origin)
    }

    /// `http://127.0.0.1:P/control`
    pub fn control_url(&self) -> String {
        format!("{}/control", self.origin)
    }

    pub fn google(&self) -> GoogleSim {
        GoogleSim {
            shared: self.shared.clone(),
        }
    }

    pub fn graph(&self) -> GraphSim {
        GraphSim {
            shared: self.shared.clone(),
        }
    }

    /// Simulator time: the wall clock plus every `advance_clock`.
    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    /// Move simulator time forward: access tokens, sync-token TTLs, channel
    /// and subscription expirations, quota windows and outages all follow.
    /// Timers of push delivery (retry delays, deadlines) stay in real time.
    pub fn advance_clock(&self, by: chrono::Duration) {
        self.shared.advance_clock(by)
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Add a fault rule; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        self.shared.faults.add(rule)
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        self.shared.faults.remove(id)
    }

    /// Remove every fault rule and notification fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear()
    }

    pub fn faults(&self) -> Vec<(u64, FaultRule)> {
        self.shared.faults.list()
    }

    /// How many requests have reached the hold `name` ([`FaultKind::Hold`]).
    pub fn held(&self, name: &str) -> usize {
        self.shared.faults.held(name)
    }

    /// Lets the requests waiting at hold `name`, and all later ones, through.
    pub fn release_hold(&self, name: &str) {
        self.shared.faults.release_hold(name)
    }

    pub fn set_notification_faults(&self, provider: Provider, faults: NotificationFaults) {
        self.shared.faults.set_notification_faults(provider, faults)
    }

    /// Every provider API request so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.requests()
    }

    pub fn requests_since(&self, t: DateTime<Utc>) -> Vec<RequestRecord> {
        self.shared.log.requests_since(t)
    }

    /// Calls `f` with each request, newest first, until it returns `false`
    /// (nothing is copied; the log is locked meanwhile, so `f` must not
    /// call the simulator).
    pub fn visit_requests_newest_first(&self, f: impl FnMut(&RequestRecord) -> bool) {
        self.shared.log.visit_requests_newest_first(f)
    }

    /// Requests to one provider, optionally only those of one account.
    pub fn requests_for(&self, provider: Provider, account: Option<&str>) -> Vec<RequestRecord> {
        self.shared
            .log
            .requests()
            .into_iter()
            .filter(|r| r.provider == provider)
            .filter(|r| {
                account.is_none_or(|a| {
                    r.account
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(a))
                })
            })
            .collect()
    }

    /// Every push delivery attempt so far (both providers).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.log.deliveries()
    }

    /// Re-send the last `count` notifications (of one channel/subscription id,
    /// or all): a replay storm on demand. Returns how many were queued.
    pub fn replay_notifications(&self, subject: Option<&str>, count: usize) -> usize {
        delivery::replay(&self.shared, subject, count)
    }

    /// Poll the delivery log until `done` holds (or `timeout` passes); returns
    /// the log either way. Push delivery is asynchronous, so tests wait here.
    pub async fn wait_for_deliveries(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(&[DeliveryRecord]) -> bool,
    ) -> Vec<DeliveryRecord> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.deliveries();
            if done(&log) || tokio::time::Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn clear_log(&self) {
        self.shared.log.clear()
    }

    /// Stop serving and end push workers.
    pub async fn shutdown(&self) {
        self.shared.delivery.close();
        let taken = lock(&self.shutdown).take();
        if let Some((tx, server)) = taken {
            let _ = tx.send(());
            let _ = server.await;
        }
    }
}
