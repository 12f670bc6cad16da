//! The settings shell: the current [`SettingsState`] of this node, kept up
//! to date by polling the `settings` stream.
//!
//! Every node (and the CLI, writing straight to the database) appends to the
//! one `settings` stream; every node folds it. Polling rather than a
//! notification channel keeps the proof simple: a change committed anywhere
//! is in force here after at most one refresh interval plus one query
//! (default 250 ms, well inside Guarantee 6's one second), and nothing is
//! lost if a notification would have been missed. Reading by stream version
//! needs no global-order watermark: versions are gap-free per stream.

use crate::core::ids::StreamName;
use crate::core::settings::{
    decide, Actor, SettingsCommand, SettingsEvent, SettingsRejection, SettingsState,
};
use crate::ports::{Clock, SystemClock};
use crate::store::{EventMetadata, EventStore, ExpectedVersion, NewEvent, Store, StoreError};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// How often a node looks for settings changes made elsewhere.
pub const DEFAULT_REFRESH: Duration = Duration::from_millis(250);

/// How many times [`SettingsHandle::apply`] re-folds and decides again after
/// losing a race for the stream. Settings changes are rare operator actions,
/// so running out means something is hammering the stream.
pub const MAX_ATTEMPTS: u32 = 16;

/// Events read per query while catching up.
const BATCH: usize = 1000;

/// A failed poll is logged once, then again every this many failures
/// (about every 10 s at the default refresh), so an outage is visible
/// without flooding the log.
const WARN_EVERY: u64 = 40;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Rejected(#[from] SettingsRejection),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored settings event this build cannot read (a newer schema, or a
    /// corrupt row). The state stays at the event before it.
    #[error("settings event {version} cannot be read: {message}")]
    Undecodable { version: u64, message: String },
    #[error("the settings stream kept moving: gave up after {attempts} attempts")]
    Contended { attempts: u32 },
}

impl SettingsError {
    /// True if the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        match self {
            SettingsError::Store(e) => e.is_retryable(),
            SettingsError::Contended { .. } => true,
            SettingsError::Rejected(_) | SettingsError::Undecodable { .. } => false,
        }
    }
}

/// The outcome of [`SettingsHandle::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The settings version the change is in (or was already in).
    pub version: u64,
    /// 0 when the settings already were as asked.
    pub appended: usize,
}

/// This node's view of the settings. Cheap to clone; the background poller
/// stops shortly after the last clone is dropped.
#[derive(Clone)]
pub struct SettingsHandle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    stream: StreamName,
    node: String,
    state: watch::Sender<Arc<SettingsState>>,
    /// Stamps each change's `at` (the simulation's virtual clock there).
    clock: Arc<dyn Clock>,
}

impl SettingsHandle {
    /// Folds the settings stream, then keeps folding new events every
    /// `refresh` in a background task. Fails only if the first fold fails:
    /// a node must not serve on settings it could not read.
    pub async fn start(store: impl Into<Store>, refresh: Duration) -> Result<Self, SettingsError> {
        Self::start_with_clock(store, refresh, Arc::new(SystemClock)).await
    }

    /// [`start`](Self::start) with the clock that stamps each change.
    pub async fn start_with_clock(
        store: impl Into<Store>,
        refresh: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, SettingsError> {
        let (state, _) = watch::channel(Arc::new(SettingsState::default()));
        let inner = Arc::new(Inner {
            store: store.into(),
            stream: StreamName::settings(),
            node: node_name(),
            state,
            clock,
        });
        inner.catch_up().await?;
        tokio::spawn(poll(Arc::downgrade(&inner), refresh));
        Ok(SettingsHandle { inner })
    }

    /// The settings in force on this node right now.
    pub fn current(&self) -> Arc<SettingsState> {
        self.inner.state.borrow().clone()
    }

    /// Notified whenever the settings in force change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<SettingsState>> {
        self.inner.state.subscribe()
    }

    /// Reads any new settings events now instead of waiting for the poller.
    pub async fn refresh(&self) -> Result<Arc<SettingsState>, SettingsError> {
        self.inner.catch_up().await
    }

    /// Decides `command` on the latest settings and appends its events.
    ///
    /// Catches up first, so a command is never judged against a stale view
    /// (turning on a flag another node just turned off must still append).
    /// On a version conflict it catches up and decides again.
    pub async fn apply(
        &self,
        command: SettingsCommand,
        actor: Actor,
    ) -> Result<Applied, SettingsError> {
        let correlation_id = Uuid::new_v4();
        for attempt in 1..=MAX_ATTEMPTS {
            let state = self.inner.catch_up().await?;
            let events = decide(&state, &command, &actor, self.inner.clock.now())?;
            if events.is_empty() {
                return Ok(Applied {
                    version: state.version,
                    appended: 0,
                });
            }
            let metadata = EventMetadata {
                correlation_id: Some(correlation_id),
                causation_id: Some(correlation_id),
                node: Some(self.inner.node.clone()),
                ..Default::default()
            };
            let new_events = events
                .iter()
                .map(|e| to_new_event(e, &metadata))
                .collect::<Result<Vec<_>, _>>()?;
            let expected = ExpectedVersion::from_version(state.version);
            match self
                .inner
                .store
                .append(&self.inner.stream, expected, new_events)
                .await
            {
                Ok(recorded) => {
                    let next = (*state).clone().fold(&events);
                    debug_assert_eq!(recorded.last().map(|r| r.version), Some(next.version));
                    self.inner.publish(next.clone());
                    tracing::info!(
                        actor = %actor,
                        reason = command.reason(),
                        version = next.version,
                        "settings changed"
                    );
                    return Ok(Applied {
                        version: next.version,
                        appended: recorded.len(),
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    // Someone else changed the settings first: spread the
                    // retries a little so racing writers do not collide again.
                    let jitter = rand::random_range(0..5 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SettingsError::Contended {
            attempts: MAX_ATTEMPTS,
        })
    }
}

impl Inner {
    /// Folds every event after the current version and publishes the result.
    async fn catch_up(&self) -> Result<Arc<SettingsState>, SettingsError> {
        let mut state = (*self.state.borrow().clone()).clone();
        let start = state.version;
        loop {
            let batch = self
                .store
                .read_stream(&self.stream, state.version + 1, BATCH)
                .await?;
            let last = batch.len() < BATCH;
            for recorded in &batch {
                state = state.evolve(&decode(recorded)?);
            }
            if last {
                break;
            }
        }
        if state.version > start {
            self.publish(state);
        }
        Ok(self.state.borrow().clone())
    }

    /// Publishes `state` unless a newer one already is: the poller and
    /// `apply` may race, and the view must never go back in time.
    fn publish(&self, state: SettingsState) {
        self.state.send_if_modified(|current| {
            if state.version > current.version {
                *current = Arc::new(state);
                true
            } else {
                false
            }
        });
    }
}

/// The background poller. Holds only a weak reference, so dropping the last
/// handle ends it.
async fn poll(inner: Weak<Inner>, refresh: Duration) {
    let mut ticker = tokio::time::interval(refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures: u64 = 0;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        match inner.catch_up().await {
            Ok(state) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        version = state.version,
                        "settings polling recovered"
                    );
                }
                failures = 0;
            }
            Err(e) => {
                // Keep the last known settings: flipping to defaults (all
                // off) because the database blinked would be an outage of
                // its own, and the edges answer 503 anyway without a database.
                if failures % WARN_EVERY == 0 {
                    let version = inner.state.borrow().version;
                    tracing::warn!(
                        error = %e,
                        failures = failures + 1,
                        version,
                        "cannot read settings; keeping the last known state"
                    );
                }
                failures += 1;
            }
        }
    }
}

fn decode(recorded: &crate::store::RecordedEvent) -> Result<SettingsEvent, SettingsError> {
    let undecodable = |message: String| SettingsError::Undecodable {
        version: recorded.version,
        message,
    };
    let payload: serde_json::Value =
        serde_json::from_str(&recorded.payload).map_err(|e| undecodable(e.to_string()))?;
    SettingsEvent::from_parts(&recorded.event_type, recorded.schema_version, payload)
        .map_err(|e| undecodable(e.to_string()))
}

fn to_new_event(event: &SettingsEvent, metadata: &EventMetadata) -> Result<NewEvent, StoreError> {
    let (event_type, payload) = event
        .to_parts()
        .map_err(|e| StoreError::BadData(e.to_string()))?;
    Ok(
        NewEvent::new(event_type, event.schema_version(), payload.to_string())
            .with_metadata(metadata.clone()),
    )
}

/// `host:pid`, recorded in every event's metadata like the actors do.
fn node_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into());
    format!("{host}:{}", std::process::id())
}

/// The actors' gates see the settings stream.
impl crate::actors::runtime::Gates for SettingsHandle {
    fn current(&self) -> Arc<SettingsState> {
        SettingsHandle::current(self)
    }
    fn subscribe(&self) -> Option<watch::Receiver<Arc<SettingsState>>> {
        Some(SettingsHandle::subscribe(self))
    }
}
