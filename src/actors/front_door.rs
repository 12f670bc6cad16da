//! The front door to the connection actors: admission, activation, calls.
//!
//! ractor mailboxes are unbounded, so backpressure is ours: each actor has a
//! queue counter, and a caller that would push it past the bound gets
//! [`SendError::Busy`] (HTTP 503 with `Retry-After` at the edge) instead of
//! growing memory without limit.

use super::connection::{ConnectionMsg, Mailbox};
use super::supervisor::{Supervisor, SupervisorMsg};
use super::sync_task::SyncRuntime;
use super::ActorSettings;
use crate::core::decide::{ConnectionCommand, Rejection};
use crate::core::ids::ConnectionId;
use crate::core::state::ConnectionState;
use crate::store::PgEventStore;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use uuid::Uuid;

/// A committed input: the stream version after it and how many events it added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ack {
    pub version: u64,
    pub appended: usize,
    /// The input repeated one already accepted (nothing was appended).
    pub duplicate: bool,
}

/// Why an input was not applied. Each variant says what the caller does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Too many inputs queued for this connection: retry after a moment.
    #[error("connection busy: too many queued inputs")]
    Busy { retry_after: Duration },
    /// The connection failed too often and is quarantined: an operator
    /// must look at it (`calsync connections show`).
    #[error("connection quarantined")]
    Quarantined,
    /// The stream moved under the actor (another writer); nothing was
    /// written. Safe to retry: the next actor folds the new state.
    #[error("stream moved under the actor; nothing was written")]
    Fenced,
    /// The database is unavailable; nothing was acknowledged. Retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The command is not valid in the connection's state.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("bad data: {0}")]
    BadData(String),
    /// The actor stopped while handling the input (a crash). The input may
    /// or may not have been committed; inputs are idempotent, so retry.
    #[error("the connection actor stopped before answering")]
    Stopped,
}

#[derive(Clone)]
pub struct Entry {
    pub actor: ActorRef<ConnectionMsg>,
    pub mailbox: Arc<Mailbox>,
    pub incarnation: u64,
}

/// Which actor serves which connection, shared by the front door and the
/// supervisor. Critical sections are a map lookup long.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<ConnectionId, Entry>>,
    quarantined: Mutex<HashSet<ConnectionId>>,
    pub restarts: AtomicU64,
    /// Actor failures per connection since this node started (status).
    failures: Mutex<HashMap<ConnectionId, u64>>,
}

impl Registry {
    fn entries(&self) -> MutexGuard<'_, HashMap<ConnectionId, Entry>> {
        // Poisoning only means a panic elsewhere; the map is still valid.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn quarantine_set(&self) -> MutexGuard<'_, HashSet<ConnectionId>> {
        self.quarantined.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: ConnectionId) -> Option<Entry> {
        self.entries().get(&id).cloned()
    }

    pub fn insert(
        &self,
        id: ConnectionId,
        actor: ActorRef<ConnectionMsg>,
        mailbox: Arc<Mailbox>,
        incarnation: u64,
    ) {
        self.entries().insert(
            id,
            Entry {
                actor,
                mailbox,
                incarnation,
            },
        );
    }

    /// Removes `id` only if it is still served by `actor` (a newer
    /// incarnation may already have taken its place).
    pub fn remove_if(&self, id: ConnectionId, actor: ActorId) {
        let mut entries = self.entries();
        if entries.get(&id).is_some_and(|e| e.actor.get_id() == actor) {
            entries.remove(&id);
        }
    }

    /// Admits one input: bumps the queue counter under the registry lock so
    /// passivation (which checks the counter under the same lock) can never
    /// stop an actor that has an input on the way.
    fn admit(&self, id: ConnectionId, bound: usize) -> Option<Result<Entry, SendError>> {
        let entries = self.entries();
        let entry = entries.get(&id)?;
        if entry.mailbox.queued.load(Ordering::Acquire) >= bound {
            return Some(Err(SendError::Busy {
                retry_after: Duration::from_secs(1),
            }));
        }
        entry.mailbox.queued.fetch_add(1, Ordering::AcqRel);
        Some(Ok(entry.clone()))
    }

    /// Removes and returns the actors idle since before `cutoff_ms` with
    /// nothing queued.
    pub fn take_idle(&self, cutoff_ms: u64) -> Vec<(ConnectionId, ActorRef<ConnectionMsg>)> {
        let mut entries = self.entries();
        let idle: Vec<ConnectionId> = entries
            .iter()
            .filter(|(_, e)| {
                e.mailbox.queued.load(Ordering::Acquire) == 0
                    && e.mailbox.last_active_ms.load(Ordering::Relaxed) < cutoff_ms
            })
            .map(|(id, _)| *id)
            .collect();
        idle.into_iter()
            .filter_map(|id| entries.remove(&id).map(|e| (id, e.actor)))
            .collect()
    }

    pub fn is_quarantined(&self, id: ConnectionId) -> bool {
        self.quarantine_set().contains(&id)
    }

    pub fn set_quarantined(&self, id: ConnectionId, on: bool) {
        let mut set = self.quarantine_set();
        if on {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }

    pub fn active(&self) -> usize {
        self.entries().len()
    }

    /// Counts one actor failure of `id` (each is followed by a restart or
    /// a quarantine).
    pub fn note_failure(&self, id: ConnectionId) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *failures.entry(id).or_insert(0) += 1;
    }

    pub fn failures_of(&self, id: ConnectionId) -> u64 {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.get(&id).copied().unwrap_or(0)
    }

    pub fn ids(&self) -> Vec<ConnectionId> {
        self.entries().keys().copied().collect()
    }
}

/// Numbers operators and drills look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ActorStats {
    pub active: usize,
    pub quarantined: usize,
    pub restarts: u64,
}

type SharedAck =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<Ack, SendError>>>;

/// The handle the rest of calsync uses to reach connections.
#[derive(Clone)]
pub struct Connections {
    registry: Arc<Registry>,
    supervisor: ActorRef<SupervisorMsg>,
    settings: Arc<ActorSettings>,
    /// Notifications being committed right now, by (connection, key):
    /// identical copies wait for the first instead of queueing (a replay
    /// storm costs one actor call, not one mailbox slot per copy).
    in_flight: Arc<Mutex<HashMap<(ConnectionId, String), SharedAck>>>,
    /// Provider access (for storing credentials); `None` without sync.
    sync: Option<Arc<SyncRuntime>>,
}

impl Connections {
    /// Starts the supervisor. Connections quarantined earlier (per the
    /// `connections` read model) stay quarantined.
    pub async fn start(store: PgEventStore, settings: ActorSettings) -> anyhow::Result<Self> {
        Self::start_with_sync(store, settings, None).await
    }

    /// Like [`Connections::start`], with provider access for syncing.
    pub async fn start_with_sync(
        store: PgEventStore,
        settings: ActorSettings,
        sync: Option<Arc<SyncRuntime>>,
    ) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        let registry = Arc::new(Registry::default());
        let client = store.pool().get().await?;
        for row in client
            .query(
                "SELECT connection_id FROM connections WHERE status = 'quarantined'",
                &[],
            )
            .await?
        {
            registry.set_quarantined(ConnectionId::from_uuid(row.get(0)), true);
        }
        drop(client);
        let supervisor = Supervisor {
            store,
            settings: settings.clone(),
            registry: registry.clone(),
            sync: sync.clone(),
        };
        let (supervisor, _join) = Actor::spawn(None, supervisor, ()).await?;
        Ok(Connections {
            registry,
            supervisor,
            settings,
            in_flight: Arc::default(),
            sync,
        })
    }

    /// Stores a connection's OAuth credentials (sealed, never in the log),
    /// records that they changed, and lifts a needs-re-authorisation state:
    /// what the platform calls when a user completes (re-)consent.
    pub async fn save_credentials(
        &self,
        id: ConnectionId,
        session: &crate::providers::AuthSession,
    ) -> Result<Ack, SendError> {
        let Some(sync) = &self.sync else {
            return Err(SendError::Unavailable(
                "no credential vault configured".into(),
            ));
        };
        // The connection must exist before a secret is stored for it.
        self.inspect(id).await.and_then(|state| {
            if state.profile.is_none() {
                Err(SendError::Rejected(Rejection::NotFound))
            } else {
                Ok(())
            }
        })?;
        sync.vault
            .save(&sync.store, id, session)
            .await
            .map_err(|e| SendError::Unavailable(e.to_string()))?;
        sync.access_tokens.forget(id);
        self.command(
            id,
            ConnectionCommand::RecordCredentialsChanged,
            Uuid::new_v4(),
        )
        .await?;
        self.command(id, ConnectionCommand::RecordReauthorized, Uuid::new_v4())
            .await
    }

    /// Commits a push notification. Copies of a notification already on its
    /// way share its outcome and count as duplicates.
    pub async fn notify(
        &self,
        id: ConnectionId,
        key: String,
        channel_id: String,
    ) -> Result<Ack, SendError> {
        use futures::FutureExt;
        let slot = (id, key.clone());
        let (shared, leader) = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get(&slot) {
                Some(existing) => (existing.clone(), false),
                None => {
                    let this = self.clone();
                    let command = ConnectionCommand::AcceptNotification { key, channel_id };
                    let fut = async move { this.command(id, command, Uuid::new_v4()).await }
                        .boxed()
                        .shared();
                    in_flight.insert(slot.clone(), fut.clone());
                    (fut, true)
                }
            }
        };
        let result = shared.await;
        if leader {
            self.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&slot);
            result
        } else {
            result.map(|ack| Ack {
                duplicate: true,
                appended: 0,
                ..ack
            })
        }
    }

    /// Sends a command to a connection's actor (activating it if needed)
    /// and waits for it to be committed or refused.
    pub async fn command(
        &self,
        id: ConnectionId,
        command: ConnectionCommand,
        correlation_id: Uuid,
    ) -> Result<Ack, SendError> {
        // A fenced actor wrote nothing and stopped; one retry reaches a
        // fresh fold of the stream.
        match self.command_once(id, command.clone(), correlation_id).await {
            Err(SendError::Fenced) => self.command_once(id, command, correlation_id).await,
            other => other,
        }
    }

    async fn command_once(
        &self,
        id: ConnectionId,
        command: ConnectionCommand,
        correlation_id: Uuid,
    ) -> Result<Ack, SendError> {
        let entry = self.admitted(id).await?;
        let sent = entry.actor.call(
            |reply| ConnectionMsg::Command {
                command,
                correlation_id,
                reply,
            },
            Some(self.settings.call_timeout),
        );
        match sent.await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(SendError::Unavailable("timed out".into())),
            Ok(CallResult::SenderError) => Err(SendError::Stopped),
            Err(_) => {
                // Never enqueued: the actor was already gone.
                entry.mailbox.queued.fetch_sub(1, Ordering::AcqRel);
                self.registry.remove_if(id, entry.actor.get_id());
                Err(SendError::Stopped)
            }
        }
    }

    /// The actor's current state.
    pub async fn inspect(&self, id: ConnectionId) -> Result<ConnectionState, SendError> {
        let entry = self.activate(id).await?;
        match entry
            .actor
            .call(ConnectionMsg::Inspect, Some(self.settings.call_timeout))
            .await
        {
            Ok(CallResult::Success(state)) => Ok(state),
            Ok(CallResult::Timeout) => Err(SendError::Unavailable("timed out".into())),
            _ => Err(SendError::Stopped),
        }
    }

    async fn admitted(&self, id: ConnectionId) -> Result<Entry, SendError> {
        if self.registry.is_quarantined(id) {
            return Err(SendError::Quarantined);
        }
        for _ in 0..3 {
            if let Some(admitted) = self.registry.admit(id, self.settings.mailbox_bound) {
                return admitted;
            }
            self.activate(id).await?;
        }
        Err(SendError::Stopped)
    }

    async fn activate(&self, id: ConnectionId) -> Result<Entry, SendError> {
        if let Some(entry) = self.registry.get(id) {
            return Ok(entry);
        }
        if self.registry.is_quarantined(id) {
            return Err(SendError::Quarantined);
        }
        let result = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Activate { id, reply },
                Some(self.settings.call_timeout),
            )
            .await;
        match result {
            Ok(CallResult::Success(Ok(_))) => self.registry.get(id).ok_or(SendError::Stopped),
            Ok(CallResult::Success(Err(_))) if self.registry.is_quarantined(id) => {
                Err(SendError::Quarantined)
            }
            Ok(CallResult::Success(Err(e))) => Err(SendError::Unavailable(e)),
            _ => Err(SendError::Unavailable("supervisor not answering".into())),
        }
    }

    /// Lifts a quarantine (recorded on the stream).
    pub async fn lift_quarantine(&self, id: ConnectionId) -> Result<(), String> {
        match self
            .supervisor
            .call(
                |reply| SupervisorMsg::LiftQuarantine { id, reply },
                Some(self.settings.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(result)) => result,
            _ => Err("supervisor not answering".into()),
        }
    }

    /// Drill: kill one connection's actor with ractor's `kill` (no handler
    /// runs, `post_stop` is skipped). Returns false if it was not active.
    pub fn kill(&self, id: ConnectionId) -> bool {
        match self.registry.get(id) {
            Some(entry) => {
                entry.actor.kill();
                true
            }
            None => false,
        }
    }

    /// Drill: make one connection's actor panic inside its handler.
    pub fn panic(&self, id: ConnectionId) -> bool {
        match self.registry.get(id) {
            Some(entry) => entry.actor.send_message(ConnectionMsg::DrillPanic).is_ok(),
            None => false,
        }
    }

    /// Drill: kill up to `n` active actors chosen at random.
    pub fn kill_random(&self, n: usize) -> Vec<ConnectionId> {
        use rand::seq::SliceRandom;
        let mut ids = self.registry.ids();
        ids.shuffle(&mut rand::rng());
        ids.truncate(n);
        ids.into_iter().filter(|id| self.kill(*id)).collect()
    }

    /// Stops every actor idle longer than `idle` right now (the supervisor
    /// also does this periodically with the configured idle timeout).
    pub fn passivate_idle(&self, idle: Duration) -> usize {
        let cutoff = (chrono::Utc::now().timestamp_millis().max(0) as u64)
            .saturating_sub(idle.as_millis().min(u64::MAX as u128) as u64);
        let stopped = self.registry.take_idle(cutoff);
        for (_, actor) in &stopped {
            actor.stop(Some("passivated".into()));
        }
        stopped.len()
    }

    pub fn is_active(&self, id: ConnectionId) -> bool {
        self.registry.get(id).is_some()
    }

    pub fn incarnation(&self, id: ConnectionId) -> Option<u64> {
        self.registry.get(id).map(|e| e.incarnation)
    }

    /// Actor failures (restarts and quarantines) of `id` on this node.
    pub fn restarts_of(&self, id: ConnectionId) -> u64 {
        self.registry.failures_of(id)
    }

    pub fn stats(&self) -> ActorStats {
        ActorStats {
            active: self.registry.active(),
            quarantined: self.registry.quarantine_set().len(),
            restarts: self.registry.restarts.load(Ordering::Relaxed),
        }
    }

    /// Stops the supervisor and every actor.
    pub fn shutdown(&self) {
        self.supervisor.stop(Some("shutdown".into()));
    }
}
