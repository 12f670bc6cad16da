//! Push delivery: one task per subscription, apart from ingest and sync.
//!
//! Each worker folds its subscription's stream, asks the core what next
//! ([`next_delivery`]), reads the feed after the subscription's cursor and
//! POSTs one batch at a time — so a subscription's events arrive in order —
//! signed (`Calsync-Signature`). In a cluster only the node holding the
//! subscription's slice delivers it ([`delivery_slice`]); the outcome is
//! appended at the version the worker folded, so a node that lost the slice
//! mid-delivery loses the race and re-folds. A slow or
//! dead receiver only ever holds its own worker: ingest and sync never wait
//! for a delivery, and other subscriptions keep going.

use super::subscriptions::{self, signature};
use super::{FeedCursor, FeedReader};
use crate::core::platform_events::PlatformEvent;
use crate::core::subscription::{
    delivery_failed, delivery_slice, next_delivery, FailedAttempt, NextDelivery, PushPolicy,
    SubscriptionEvent, SubscriptionState,
};
use crate::store::{ExpectedVersion, PgEventStore};
use chrono::Utc;
use rand::Rng;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Calsync-Signature";
/// How often new subscriptions are looked for, and how often an idle
/// worker reads the feed again.
const IDLE: Duration = Duration::from_millis(200);

/// Whether this node delivers a subscription now.
pub type Ownership = Arc<dyn Fn(Uuid) -> bool + Send + Sync>;

/// A lone node delivers every subscription.
pub fn alone() -> Ownership {
    Arc::new(|_| true)
}

/// A cluster node delivers the subscriptions whose slice it holds.
pub fn in_cluster(link: Arc<crate::cluster::ClusterLink>) -> Ownership {
    Arc::new(move |id| link.owns_slice(delivery_slice(&id)))
}

/// Starts the delivery of every subscription (existing and future) that
/// `owns` says is this node's, until `stop` is cancelled.
pub fn spawn(
    store: PgEventStore,
    policy: PushPolicy,
    owns: Ownership,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let reader = Arc::new(FeedReader::new(store.clone()));
        let client = match reqwest::Client::builder()
            .timeout(policy.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "feed push: no HTTP client");
                return;
            }
        };
        let policy = Arc::new(policy);
        let mut running: HashSet<Uuid> = HashSet::new();
        while !stop.is_cancelled() {
            match subscriptions::ids(&store).await {
                Ok(ids) => {
                    for id in ids {
                        if running.insert(id) {
                            let worker = Worker {
                                id,
                                store: store.clone(),
                                reader: reader.clone(),
                                client: client.clone(),
                                policy: policy.clone(),
                                owns: owns.clone(),
                            };
                            tokio::spawn(worker.run(stop.clone()));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "feed push: listing subscriptions"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(IDLE) => {}
            }
        }
    })
}

struct Worker {
    id: Uuid,
    store: PgEventStore,
    reader: Arc<FeedReader<PgEventStore>>,
    client: reqwest::Client,
    policy: Arc<PushPolicy>,
    owns: Ownership,
}

impl Worker {
    async fn run(self, stop: CancellationToken) {
        // Where the feed was scanned to past the cursor without finding a
        // matching event (kept in memory only: it saves re-reading).
        let mut scanned: Option<(String, FeedCursor)> = None;
        while !stop.is_cancelled() {
            let pause = match self.step(&mut scanned).await {
                Ok(Some(pause)) => pause,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(subscription = %self.id, error = %e, "feed push");
                    Duration::from_secs(1)
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    /// One round: `None` when the subscription is gone, else how long to
    /// pause before the next.
    async fn step(
        &self,
        scanned: &mut Option<(String, FeedCursor)>,
    ) -> Result<Option<Duration>, String> {
        if !(self.owns)(self.id) {
            // Another node delivers it; what it scanned is its own.
            *scanned = None;
            return Ok(Some(IDLE));
        }
        let state = subscriptions::load(&self.store, self.id)
            .await
            .map_err(|e| e.to_string())?;
        let now = Utc::now();
        match next_delivery(&state, now) {
            NextDelivery::Stop => return Ok(None),
            NextDelivery::Parked => return Ok(Some(Duration::from_secs(1))),
            NextDelivery::WaitUntil(at) => {
                let wait = (at - now).to_std().unwrap_or_default();
                return Ok(Some(wait.min(Duration::from_secs(1))));
            }
            NextDelivery::Deliver => {}
        }
        let cursor = FeedCursor::decode(&state.cursor).map_err(|e| e.to_string())?;
        let from = match scanned {
            Some((c, to)) if *c == state.cursor => *to,
            _ => cursor,
        };
        let page = self
            .reader
            .read(from, self.policy.batch, &state.types)
            .await
            .map_err(|e| e.to_string())?;
        if page.events.is_empty() {
            *scanned = Some((state.cursor.clone(), page.next));
            return Ok(Some(if page.has_more { Duration::ZERO } else { IDLE }));
        }
        *scanned = None;
        self.deliver(&state, &page.events, page.next).await?;
        Ok(Some(Duration::ZERO))
    }

    /// POSTs one batch and records the outcome.
    async fn deliver(
        &self,
        state: &SubscriptionState,
        events: &[PlatformEvent],
        next: FeedCursor,
    ) -> Result<(), String> {
        let Some(secret) = subscriptions::secret(&self.store, self.id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err("the subscription's secret is gone".into());
        };
        // The same cursor gives the same delivery id on every retry.
        let delivery_id = Uuid::new_v5(&self.id, state.cursor.as_bytes()).to_string();
        let event_ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "subscription_id": self.id,
            "delivery_id": delivery_id,
            "events": events,
        }))
        .map_err(|e| e.to_string())?;
        let timestamp = Utc::now().timestamp();
        let result = self
            .client
            .post(&state.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, signature(&secret, timestamp, &body))
            .header("Calsync-Delivery-Id", &delivery_id)
            .header("Calsync-Subscription-Id", self.id.to_string())
            .body(body)
            .send()
            .await;
        let now = Utc::now();
        let outcome = match result {
            Ok(r) if r.status().is_success() => vec![SubscriptionEvent::DeliverySucceeded {
                delivery_id,
                event_ids,
                next_cursor: next.encode(),
                attempt: state.attempts + 1,
                status: r.status().as_u16(),
                at: now,
            }],
            Ok(r) => {
                let status = r.status();
                let error = if status.is_redirection() {
                    format!("{status}: redirects are not followed")
                } else {
                    status.to_string()
                };
                self.failed(state, delivery_id, event_ids, Some(status.as_u16()), error)
            }
            Err(e) => {
                let error = if e.is_timeout() {
                    format!("timed out after {:?}", self.policy.timeout)
                } else {
                    format!("{e}")
                };
                self.failed(state, delivery_id, event_ids, None, error)
            }
        };
        subscriptions::append(
            &self.store,
            self.id,
            ExpectedVersion::Exact(state.version),
            &outcome,
        )
        .await
        .map_err(|e| e.to_string())
    }

    fn failed(
        &self,
        state: &SubscriptionState,
        delivery_id: String,
        event_ids: Vec<String>,
        status: Option<u16>,
        error: String,
    ) -> Vec<SubscriptionEvent> {
        let unit: f64 = rand::rng().random();
        delivery_failed(
            state,
            FailedAttempt {
                delivery_id,
                event_ids,
                status,
                error,
            },
            Utc::now(),
            unit,
            &self.policy,
        )
    }
}
