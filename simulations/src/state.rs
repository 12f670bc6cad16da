//! The state every handler and control call shares.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};

use crate::config::SimConfig;
use crate::delivery::DeliveryQueues;
use crate::faults::FaultSet;
use crate::google::model::GoogleState;
use crate::graph::limiter::MailboxLimiter;
use crate::graph::model::GraphState;
use crate::quota::Quotas;
use crate::request_log::RequestLog;
use crate::rng::SimRng;
use crate::scenario::Scenario;

pub struct Shared {
    pub config: SimConfig,
    /// `http://127.0.0.1:PORT`, used to build absolute URLs (nextLink, resourceUri).
    pub origin: String,
    pub rng: SimRng,
    pub log: RequestLog,
    pub faults: FaultSet,
    pub google: Mutex<GoogleState>,
    pub graph: Mutex<GraphState>,
    pub delivery: DeliveryQueues,
    pub limiter: MailboxLimiter,
    pub quotas: Quotas,
    /// Push tasks are spawned here, so sync control calls can trigger them.
    pub runtime: tokio::runtime::Handle,
    pub http: reqwest::Client,
    /// Scenario populated through the control API, kept for later mutations.
    pub scenario: Mutex<Option<Arc<Scenario>>>,
    /// Milliseconds added to the wall clock (`advance_clock`), so tests can
    /// expire tokens, channels and subscriptions without waiting.
    pub clock_offset_ms: AtomicI64,
}

pub type SharedRef = Arc<Shared>;

/// Lock ignoring poisoning: a panicked handler must not wedge the simulator,
/// and every critical section leaves the state consistent before it can panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Simulator time: the wall clock plus the advanced offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock_offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
    }

    pub fn google_base(&self) -> String {
        format!("{}/google/calendar/v3", self.origin)
    }

    pub fn graph_base(&self) -> String {
        format!("{}/graph/v1.0", self.origin)
    }
}
