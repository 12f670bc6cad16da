//! The front door to the connection actors: admission, activation, calls.
//!
//! ractor mailboxes are unbounded, so backpressure is ours: each actor has a
//! queue counter, and a caller that would push it past the bound gets
//! [`SendError::Busy`] (HTTP 503 with `Retry-After` at the edge) instead of
//! growing memory without limit.

pub use super::ack::{Ack, SendError};
use super::connection::ConnectionMsg;
pub use super::registry::{Entry, Registry};
use super::runtime::SyncRuntime;
use super::supervisor::{Supervisor, SupervisorMsg};
use super::ActorSettings;
use crate::core::decide::{ConnectionCommand, Rejection};
use crate::core::ids::ConnectionId;
use crate::core::state::ConnectionState;
use crate::ports::{Clock, SystemClock};
use crate::store::Store;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Numbers operators and drills look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ActorStats {
    pub active: usize,
    pub quarantined: usize,
    pub restarts: u64,
}

type SharedAck =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<Ack, SendError>>>;

/// Identical notifications in flight at once share one commit; past this
/// many distinct ones in flight, new ones are committed on their own (the
/// dedupe window still catches repeats), so the map cannot grow without
/// bound.
pub const MAX_SHARED_NOTIFICATIONS: usize = 10_000;

/// The handle the rest of calsync uses to reach connections.
#[derive(Clone)]
pub struct Connections {
    registry: Arc<Registry>,
    supervisor: ActorRef<SupervisorMsg>,
    settings: Arc<ActorSettings>,
    /// Notifications being committed right now, by (connection, key):
    /// identical copies wait for the first instead of queueing (a replay
    /// storm costs one actor call, not one mailbox slot per copy). An entry
    /// lives exactly as long as its commit: the commit runs in a task of
    /// its own (a caller that hangs up cannot abandon it half way) and
    /// removes its entry when done, so a later retry never sees an old
    /// outcome.
    in_flight: Arc<Mutex<HashMap<(ConnectionId, String), SharedAck>>>,
    /// Provider access (for storing credentials); `None` without sync.
    sync: Option<Arc<SyncRuntime>>,
    /// Set in cluster mode: inputs for connections whose slice another
    /// node holds are forwarded there (or to the inbox).
    cluster: ClusterSlot,
}

/// The cluster link, once `serve` attaches one (shared with the supervisor).
pub type ClusterSlot = Arc<std::sync::OnceLock<Arc<crate::cluster::ClusterLink>>>;

impl Connections {
    /// Starts the supervisor. Connections quarantined earlier (per the
    /// `connections` read model) stay quarantined.
    pub async fn start(store: impl Into<Store>, settings: ActorSettings) -> anyhow::Result<Self> {
        Self::start_with_sync(store, settings, None).await
    }

    /// Like [`Connections::start`], with provider access for syncing.
    pub async fn start_with_sync(
        store: impl Into<Store>,
        settings: ActorSettings,
        sync: Option<Arc<SyncRuntime>>,
    ) -> anyhow::Result<Self> {
        let store: Store = store.into();
        let settings = Arc::new(settings);
        let registry = Arc::new(Registry::default());
        for id in store.quarantined_connections().await? {
            registry.set_quarantined(id, true);
        }
        let clock: Arc<dyn Clock> = match &sync {
            Some(runtime) => runtime.clock.clone(),
            None => Arc::new(SystemClock),
        };
        let cluster = ClusterSlot::default();
        let supervisor = Supervisor {
            store,
            settings: settings.clone(),
            registry: registry.clone(),
            sync: sync.clone(),
            clock,
            cluster: cluster.clone(),
            stop_snapshots: Default::default(),
        };
        let (supervisor, _join) = Actor::spawn(None, supervisor, ()).await?;
        Ok(Connections {
            registry,
            supervisor,
            settings,
            in_flight: Arc::default(),
            sync,
            cluster,
        })
    }

    /// Cluster mode: from now on this node runs only the connections whose
    /// slice it holds and forwards the rest. Attaching twice is refused.
    pub fn attach_cluster(&self, link: Arc<crate::cluster::ClusterLink>) -> anyhow::Result<()> {
        self.cluster
            .set(link)
            .map_err(|_| anyhow::anyhow!("a cluster link is already attached"))
    }

    pub fn cluster(&self) -> Option<&Arc<crate::cluster::ClusterLink>> {
        self.cluster.get()
    }

    /// The cluster link when `id`'s slice is held by another node (or by
    /// nobody); `None` when this node runs `id`.
    fn elsewhere(&self, id: ConnectionId) -> Option<&Arc<crate::cluster::ClusterLink>> {
        self.cluster.get().filter(|link| !link.owns(id))
    }

    /// Stops (reason `moved`) every running actor whose connection `gone`
    /// says this node no longer runs; returns how many.
    pub fn stop_where(&self, gone: impl Fn(ConnectionId) -> bool) -> usize {
        let mut n = 0;
        for id in self.registry.ids() {
            if gone(id) {
                if let Some(entry) = self.registry.get(id) {
                    entry.actor.stop(Some("moved".into()));
                    n += 1;
                }
            }
        }
        n
    }

    /// Kills what [`Connections::stop_where`] could not stop in time.
    pub fn kill_where(&self, gone: impl Fn(ConnectionId) -> bool) -> usize {
        let mut n = 0;
        for id in self.registry.ids() {
            if gone(id) {
                if let Some(entry) = self.registry.get(id) {
                    self.registry.note_moving(entry.actor.get_id());
                    entry.actor.kill();
                    n += 1;
                }
            }
        }
        n
    }

    /// How many running actors `pred` selects.
    pub fn count_where(&self, pred: impl Fn(ConnectionId) -> bool) -> usize {
        self.registry
            .ids()
            .into_iter()
            .filter(|id| pred(*id))
            .count()
    }

    /// The sync runtime's credential vault (the connect flow seals a new
    /// connection's grant with it before creating the connection).
    pub fn credential_vault(&self) -> Option<&crate::store::credentials::CredentialVault> {
        self.sync.as_ref().map(|s| &s.vault)
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
        if let Some(link) = self.elsewhere(id) {
            return link.forward_notify(id, key, channel_id).await;
        }
        self.notify_here(id, key, channel_id).await
    }

    /// [`Connections::notify`] on this node, whoever owns the slice (the
    /// internal route and the inbox drain check ownership first).
    pub async fn notify_here(
        &self,
        id: ConnectionId,
        key: String,
        channel_id: String,
    ) -> Result<Ack, SendError> {
        use futures::FutureExt;
        let slot = (id, key.clone());
        let command = ConnectionCommand::AcceptNotification { key, channel_id };
        let joined = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            match in_flight.get(&slot) {
                Some(existing) => Some((existing.clone(), false)),
                None if in_flight.len() >= MAX_SHARED_NOTIFICATIONS => None,
                None => {
                    // The commit runs on its own task and takes its entry out
                    // when it ends, whether or not anyone still waits for it.
                    let this = self.clone();
                    let key = slot.clone();
                    let command = command.clone();
                    let commit = tokio::spawn(async move {
                        let result = this.command_here(id, command, Uuid::new_v4()).await;
                        this.in_flight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                        result
                    });
                    let fut = async move { commit.await.unwrap_or(Err(SendError::Stopped)) }
                        .boxed()
                        .shared();
                    in_flight.insert(slot.clone(), fut.clone());
                    Some((fut, true))
                }
            }
        };
        let Some((shared, leader)) = joined else {
            return self.command_here(id, command, Uuid::new_v4()).await;
        };
        let result = shared.await;
        if leader {
            result
        } else {
            result.map(|ack| Ack {
                duplicate: true,
                appended: 0,
                ..ack
            })
        }
    }

    /// How many distinct notifications are being committed right now.
    pub fn notifications_in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Sends a command to a connection's actor (activating it if needed)
    /// and waits for it to be committed or refused.
    pub async fn command(
        &self,
        id: ConnectionId,
        command: ConnectionCommand,
        correlation_id: Uuid,
    ) -> Result<Ack, SendError> {
        if let Some(link) = self.elsewhere(id) {
            return link.forward_command(id, command, correlation_id).await;
        }
        self.command_here(id, command, correlation_id).await
    }

    /// [`Connections::command`] on this node, whoever owns the slice.
    pub async fn command_here(
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
                command: Box::new(command),
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

    /// Why a booking's write to connection `id` waits now, as the core's
    /// gate sees it (`None`: nothing owed, or about to be written).
    pub async fn booking_wait(
        &self,
        id: ConnectionId,
        booking_id: &str,
    ) -> Result<Option<crate::core::gate::Wait>, SendError> {
        let state = self.inspect(id).await?;
        let Some(runtime) = &self.sync else {
            return Ok(None);
        };
        let Some(provider) = state.profile.as_ref().map(|p| p.provider) else {
            return Ok(None);
        };
        let ctx = crate::core::plan::Ctx {
            id,
            view: runtime.view(provider, id),
            policy: &runtime.policy,
            now: runtime.clock.now(),
        };
        Ok(crate::core::plan::booking_wait(&state, booking_id, &ctx))
    }

    /// Whether connection `id`'s actor runs no task right now (activating
    /// it if needed): what tests wait for after moving a clock.
    pub async fn quiet(&self, id: ConnectionId) -> Result<bool, SendError> {
        let entry = self.activate(id).await?;
        match entry
            .actor
            .call(ConnectionMsg::Quiet, Some(self.settings.call_timeout))
            .await
        {
            Ok(CallResult::Success(quiet)) => Ok(quiet),
            Ok(CallResult::Timeout) => Err(SendError::Unavailable("timed out".into())),
            _ => Err(SendError::Stopped),
        }
    }

    /// The actor's current state.
    pub async fn inspect(&self, id: ConnectionId) -> Result<ConnectionState, SendError> {
        if let Some(link) = self.elsewhere(id) {
            return link.forward_inspect(id).await;
        }
        self.inspect_here(id).await
    }

    /// [`Connections::inspect`] on this node, whoever owns the slice.
    pub async fn inspect_here(&self, id: ConnectionId) -> Result<ConnectionState, SendError> {
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

    /// Lifts a quarantine (recorded on the stream) and syncs at once. In a
    /// cluster the quarantine lives in the owner's supervisor, so the lift
    /// is forwarded there.
    pub async fn lift_quarantine(&self, id: ConnectionId) -> Result<(), String> {
        if let Some(link) = self.elsewhere(id) {
            return link
                .forward_lift_quarantine(id)
                .await
                .map_err(|e| e.to_string());
        }
        self.lift_quarantine_here(id).await
    }

    /// [`Self::lift_quarantine`] on this node (the owner, or a lone node).
    pub async fn lift_quarantine_here(&self, id: ConnectionId) -> Result<(), String> {
        match self
            .supervisor
            .call(
                |reply| SupervisorMsg::LiftQuarantine { id, reply },
                Some(self.settings.call_timeout),
            )
            .await
        {
            Ok(CallResult::Success(result)) => result?,
            _ => return Err("supervisor not answering".into()),
        }
        self.command(id, ConnectionCommand::RequestSync, Uuid::new_v4())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Has every active actor plan again now (a clock moved in tests, an
    /// operator nudge).
    pub fn wake_all(&self) {
        for actor in self.registry.actors() {
            let _ = actor.send_message(ConnectionMsg::Tick);
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
        let now = match &self.sync {
            Some(runtime) => runtime.clock.now(),
            None => chrono::Utc::now(),
        };
        let cutoff = (now.timestamp_millis().max(0) as u64)
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
            quarantined: self.registry.quarantined_count(),
            restarts: self.registry.restarts.load(Ordering::Relaxed),
        }
    }

    /// A crash of this node: every actor killed where it stands (no
    /// handler runs), then the supervisor. Tasks already running finish
    /// against dead actors and record nothing.
    pub fn crash(&self) {
        for actor in self.registry.actors() {
            actor.kill();
        }
        self.supervisor.kill();
    }

    /// Stops the supervisor and every actor.
    pub fn shutdown(&self) {
        self.supervisor.stop(Some("shutdown".into()));
    }
}
