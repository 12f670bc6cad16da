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
    /// Request ids in error bodies (see [`crate::error::ResponseContext`]).
    pub request_ids: Arc<std::sync::atomic::AtomicU64>,
    /// What the clock reads before the offset.
    pub clock: SimClock,
    /// Where pushes go: `None` over HTTP; in process in the simulation.
    pub deliver: Option<Arc<dyn DeliveryTarget>>,
}

/// The simulator's base clock.
#[derive(Clone, Copy, Debug)]
pub enum SimClock {
    /// The wall clock.
    Wall,
    /// `epoch` plus the time tokio's clock moved since `base`: under a
    /// paused runtime, virtual and deterministic.
    Virtual {
        epoch: DateTime<Utc>,
        base: tokio::time::Instant,
    },
}

/// One push (notification or validation handshake) to a receiver.
#[derive(Clone, Debug)]
pub struct PushRequest {
    /// The target URL, with its query (the handshake's `validationToken`).
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// The receiver's answer.
#[derive(Clone, Debug)]
pub struct PushResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// A receiver of pushes called in process (no sockets): the simulation
/// hands notifications to calsync directly.
pub trait DeliveryTarget: Send + Sync {
    fn post(
        &self,
        request: PushRequest,
    ) -> futures::future::BoxFuture<'static, Result<PushResponse, String>>;
}

pub type SharedRef = Arc<Shared>;

/// Lock ignoring poisoning: a panicked handler must not wedge the simulator,
/// and every critical section leaves the state consistent before it can panic.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Simulator time: the wall clock plus the advanced offset.
    /// What error bodies rendered for a request arriving now need.
    pub fn response_context(&self) -> crate::error::ResponseContext {
        crate::error::ResponseContext {
            ids: self.request_ids.clone(),
            now: self.now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        let base = match self.clock {
            SimClock::Wall => Utc::now(),
            SimClock::Virtual { epoch, base } => {
                epoch + Duration::from_std(tokio::time::Instant::now() - base).unwrap_or_default()
            }
        };
        base + Duration::milliseconds(self.clock_offset_ms.load(Ordering::Relaxed))
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
