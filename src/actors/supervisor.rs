//! Our supervisor of connection actors.
//!
//! ractor restarts nothing by itself and skips `post_stop` after a kill or a
//! panic, so everything a restart needs lives here: which actor serves which
//! connection, how often each failed recently, and when to try again. An
//! actor that keeps failing (R failures within T) is quarantined — recorded
//! on its stream, visible in status — instead of restarting in a hot loop.

use super::connection::{recover_prefix, ConnectionActor, ConnectionArgs, ConnectionMsg};
use super::mailbox::Mailbox;
use super::registry::Registry;
use super::runtime::SyncRuntime;
use super::ActorSettings;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::ConnectionId;
use crate::core::projection::connection_changes;
use crate::ports::Clock;
use crate::store::{EventMetadata, EventStore, ExpectedVersion, NewEvent, Store};
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub enum SupervisorMsg {
    /// Spawn the actor for `id` unless one is running; reply with it.
    Activate {
        id: ConnectionId,
        reply: RpcReplyPort<Result<ActorRef<ConnectionMsg>, String>>,
    },
    /// A scheduled restart after a failure.
    Restart { id: ConnectionId },
    /// Stop actors idle longer than the idle timeout.
    SweepIdle,
    /// Wake passivated connections whose periodic poll is due.
    PollDue,
    /// The settings changed: every actor plans again, and passivated ones
    /// that were waiting on a gate wake.
    SettingsChanged,
    /// Lift a quarantine (operator action): the next input activates again.
    LiftQuarantine {
        id: ConnectionId,
        reply: RpcReplyPort<Result<(), String>>,
    },
}

pub struct Supervisor {
    pub store: Store,
    pub settings: Arc<ActorSettings>,
    pub registry: Arc<Registry>,
    pub sync: Option<Arc<SyncRuntime>>,
    pub clock: Arc<dyn Clock>,
    /// Cluster mode: only connections of slices this node holds run here.
    pub cluster: super::front_door::ClusterSlot,
    /// Shared by this node's actors: their stop snapshots, a few at a time.
    pub stop_snapshots: super::connection::StopSnapshots,
}

pub struct SupervisorState {
    by_actor: HashMap<ActorId, ConnectionId>,
    failures: BTreeMap<ConnectionId, VecDeque<DateTime<Utc>>>,
    incarnations: BTreeMap<ConnectionId, u64>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        let every = (self.settings.idle_timeout / 4).max(std::time::Duration::from_millis(50));
        myself.send_interval(every, || SupervisorMsg::SweepIdle);
        myself.send_interval(self.settings.poll_sweep_every, || SupervisorMsg::PollDue);
        // Settings changes reach every actor at once: work a gate held back
        // starts the moment it opens (guarantee 6).
        if let Some(mut changes) = self.sync.as_ref().and_then(|s| s.gates.subscribe()) {
            let me = myself.clone();
            tokio::spawn(async move {
                while changes.changed().await.is_ok() {
                    if me.send_message(SupervisorMsg::SettingsChanged).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(SupervisorState {
            by_actor: HashMap::new(),
            failures: BTreeMap::new(),
            incarnations: BTreeMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Activate { id, reply } => {
                let result = self.activate(&myself, st, id).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::Restart { id } => {
                if self.registry.get(id).is_none() && !self.registry.is_quarantined(id) {
                    if let Err(e) = self.activate(&myself, st, id).await {
                        tracing::warn!(connection_id = %id, error = %e, "restart failed");
                    }
                }
            }
            SupervisorMsg::SweepIdle => {
                let cutoff = (self.clock.now().timestamp_millis().max(0) as u64).saturating_sub(
                    self.settings.idle_timeout.as_millis().min(u64::MAX as u128) as u64,
                );
                for (id, actor) in self.registry.take_idle(cutoff) {
                    st.by_actor.remove(&actor.get_id());
                    actor.stop(Some("passivated".into()));
                    tracing::debug!(connection_id = %id, "passivated idle actor");
                }
            }
            SupervisorMsg::PollDue => {
                // Active actors keep their own timers; this wakes passivated
                // ones: first those this node parked with a wake-up now due,
                // then (after a restart, when nothing is parked yet) those
                // the database says have not synced for a poll interval.
                let Some(sync) = &self.sync else {
                    return Ok(());
                };
                let now = self.clock.now();
                for id in self.registry.take_due_parked(now, false) {
                    self.wake(&myself, st, id).await;
                }
                if !crate::core::gate::background_allowed(&sync.gates.current()) {
                    return Ok(());
                }
                match self.due_for_poll(sync.policy.poll_every, now).await {
                    Ok(due) => {
                        for id in due {
                            if self.registry.is_parked(id) {
                                continue;
                            }
                            self.wake(&myself, st, id).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "poll sweep failed"),
                }
            }
            SupervisorMsg::SettingsChanged => {
                for actor in self.registry.actors() {
                    let _ = actor.send_message(ConnectionMsg::Tick);
                }
                let now = self.clock.now();
                for id in self.registry.take_due_parked(now, true) {
                    self.wake(&myself, st, id).await;
                }
            }
            SupervisorMsg::LiftQuarantine { id, reply } => {
                let result = self
                    .record(id, ConnectionCommand::LiftQuarantine)
                    .await
                    .map(|_| {
                        self.registry.set_quarantined(id, false);
                        st.failures.remove(&id);
                    });
                let _ = reply.send(result);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = st.by_actor.remove(&cell.get_id()) {
                    self.registry.remove_if(id, cell.get_id());
                    if !self.registry.take_moving(cell.get_id()) {
                        self.failed(&myself, st, id, err.to_string()).await;
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(id) = st.by_actor.remove(&cell.get_id()) {
                    self.registry.remove_if(id, cell.get_id());
                    // Passivation and fencing are normal stops; a kill (drill
                    // or bug) is a failure and gets a restart.
                    // A connection whose slice moved to another node
                    // (stopped, or killed past the stop bound) is not ours
                    // to restart.
                    let moved = self.registry.take_moving(cell.get_id());
                    let normal = moved
                        || matches!(reason.as_deref(), Some("passivated" | "fenced" | "moved"));
                    if !normal {
                        let why = reason.unwrap_or_else(|| "killed".into());
                        self.failed(&myself, st, id, why).await;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl Supervisor {
    /// Activates `id` (unless running or quarantined) and has it plan.
    async fn wake(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        id: ConnectionId,
    ) {
        if self.registry.get(id).is_some() || self.registry.is_quarantined(id) {
            return;
        }
        if let Ok(actor) = self.activate(myself, st, id).await {
            let _ = actor.send_message(ConnectionMsg::Tick);
        }
    }

    /// Candidates for a poll: active connections whose least recently
    /// synced calendar is older than the poll interval (or never synced),
    /// a bounded batch per sweep. Only candidates: each actor's planner
    /// decides whether anything is due.
    async fn due_for_poll(
        &self,
        poll_every: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConnectionId>, String> {
        self.store
            .poll_candidates(now - poll_every, 500)
            .await
            .map_err(|e| e.to_string())
    }

    async fn activate(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        id: ConnectionId,
    ) -> Result<ActorRef<ConnectionMsg>, String> {
        if let Some(entry) = self.registry.get(id) {
            return Ok(entry.actor);
        }
        if self.registry.is_quarantined(id) {
            return Err("quarantined".into());
        }
        if self.cluster.get().is_some_and(|link| !link.owns(id)) {
            return Err("another node holds this connection's slice".into());
        }
        let incarnation = {
            let n = st.incarnations.entry(id).or_insert(0);
            *n += 1;
            *n
        };
        let mailbox = Arc::new(Mailbox::default());
        mailbox.touch(self.clock.now());
        let actor = ConnectionActor {
            store: self.store.clone(),
            settings: self.settings.clone(),
            sync: self.sync.clone(),
            cluster: self.cluster.clone(),
            stop_snapshots: self.stop_snapshots.clone(),
        };
        let args = ConnectionArgs {
            id,
            incarnation,
            mailbox: mailbox.clone(),
        };
        match Actor::spawn_linked(None, actor, args, myself.get_cell()).await {
            Ok((actor, _join)) => {
                st.by_actor.insert(actor.get_id(), id);
                self.registry
                    .insert(id, actor.clone(), mailbox, incarnation);
                Ok(actor)
            }
            Err(e) => {
                // A failed start (e.g. an event this build cannot decode) is
                // a failure like any other: back off, and quarantine if it
                // keeps happening.
                let message = e.to_string();
                self.failed(myself, st, id, message.clone()).await;
                Err(message)
            }
        }
    }

    async fn failed(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        st: &mut SupervisorState,
        id: ConnectionId,
        error: String,
    ) {
        self.registry.restarts.fetch_add(1, Ordering::Relaxed);
        self.registry.note_failure(id);
        let now = self.clock.now();
        let window = self.settings.restart_window;
        let window_chrono = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let recent = st.failures.entry(id).or_default();
        recent.push_back(now);
        while recent.front().is_some_and(|t| now - *t > window_chrono) {
            recent.pop_front();
        }
        let count = recent.len() as u32;
        tracing::warn!(connection_id = %id, failures_in_window = count, error = %error,
            "connection actor failed");
        if count > self.settings.max_restarts {
            crate::metrics::actor_quarantined();
            self.registry.set_quarantined(id, true);
            let command = ConnectionCommand::Quarantine {
                restarts: count,
                window_secs: window.as_secs(),
                last_error: error,
            };
            match self.record(id, command).await {
                Ok(()) => tracing::error!(connection_id = %id, "connection quarantined"),
                Err(e) => tracing::error!(connection_id = %id, error = %e,
                    "connection quarantined in memory; recording it failed"),
            }
        } else {
            crate::metrics::actor_restarted();
            let delay = self.settings.restart_delay(count);
            myself.send_after(delay, move || SupervisorMsg::Restart { id });
        }
    }

    /// Appends a supervisor decision to a connection whose actor is not
    /// running. The full fold may fail (that is often why we are here), so
    /// the decision is taken on the readable prefix and the append is fenced
    /// by the stream's current version.
    async fn record(&self, id: ConnectionId, command: ConnectionCommand) -> Result<(), String> {
        let stream = id.stream();
        let version = self
            .store
            .stream_version(&stream)
            .await
            .map_err(|e| e.to_string())?;
        let state = recover_prefix(&self.store, &stream)
            .await
            .map_err(|e| e.to_string())?;
        // The same policies as the actor: lifting a quarantine records the
        // outbound intents that waited, and their cancel mode must be the
        // configured one.
        let policy = self
            .sync
            .as_ref()
            .map(|s| s.policy.sync.clone())
            .unwrap_or_default();
        let decision =
            crate::core::decide::decide_with(&state, &command, self.clock.now(), &policy)
                .map_err(|e| e.to_string())?;
        if decision.events.is_empty() {
            return Ok(());
        }
        let next = state.clone().fold(&decision.events);
        let metadata = EventMetadata {
            node: Some(self.settings.node.clone()),
            ..Default::default()
        };
        let mut events = Vec::new();
        for e in &decision.events {
            let (ty, payload) = e.to_parts().map_err(|e| e.to_string())?;
            events.push(
                NewEvent::new(ty, e.schema_version(), payload.to_string())
                    .with_metadata(metadata.clone()),
            );
        }
        // The row shows the readable prefix plus this decision, so the
        // quarantine is visible in status even when the full fold fails.
        let mut next = next;
        next.version = version + decision.events.len() as u64;
        let changes = connection_changes(id, &next, &decision.events);
        self.store
            .append_with(
                &stream,
                ExpectedVersion::from_version(version),
                events,
                changes,
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
