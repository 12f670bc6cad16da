//! `ConnectionActor`: the single writer of one connection's stream.
//!
//! The actor is a loop: receive a message; for an input, decide, append
//! with the expected version and fold ([`decide_with`]); then ask the
//! planner what to do next ([`plan::next`]), append the events it names
//! (outbound intents), start the tasks it names and arm the one timer it
//! gives. It decides nothing itself: no gate, no schedule, no retry.
//!
//! Failure semantics (ractor): a panic or an `Err` from `handle` ends the
//! actor and our supervisor decides about a restart. So expected failures
//! (database unavailable, conflicts, rejections) are answered to the caller
//! inside the handler and never end the actor — except a conflict, which
//! means another writer owns the stream: the actor stops writing at once
//! (it is fenced) and the next input activates a fresh fold. A stopped
//! actor's timer is aborted; a killed one's fires into nothing.

use super::ack::{Ack, SendError};
use super::mailbox::Mailbox;
use super::outbound_task::PendingWrite;
use super::runtime::SyncRuntime;
use super::task_support::Recorder;
use super::ActorSettings;
use crate::core::decide::{decide_with, ConnectionCommand};
use crate::core::events::ConnectionEvent;
use crate::core::ids::{ConnectionId, StreamName};
use crate::core::inflight::{asks_for, Ask, InFlight, Task};
use crate::core::plan::{self, Ctx, Next};
use crate::core::projection::connection_changes;
use crate::core::state::ConnectionState;
use crate::store::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, Snapshot, Store, StoreError,
};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

/// Bumped whenever `ConnectionState`'s shape changes: older snapshots are
/// then ignored (they are only a cache) and the stream is folded in full.
pub const SNAPSHOT_SCHEMA_VERSION: i32 = 2;

pub enum ConnectionMsg {
    /// Commands are boxed: ractor keeps every idle actor's next-message
    /// future allocated, sized for the largest message it could receive,
    /// and a command (a booking, a fetched page) is hundreds of bytes.
    Command {
        command: Box<ConnectionCommand>,
        correlation_id: Uuid,
        reply: RpcReplyPort<Result<Ack, SendError>>,
    },
    /// A command from inside the actor system (a task's result): bypasses
    /// admission control, which bounds outside callers only.
    Internal {
        command: Box<ConnectionCommand>,
        correlation_id: Uuid,
        reply: RpcReplyPort<Result<Ack, SendError>>,
    },
    /// A task ended after this many provider calls.
    Finished { task: Task, calls: u32 },
    /// Plan again: the settings changed, or someone nudged.
    Tick,
    /// The timer armed for this instant fired.
    Wake(DateTime<Utc>),
    /// The actor's current state (for status and tests).
    Inspect(RpcReplyPort<ConnectionState>),
    /// Whether no task of this actor runs (tests waiting for quiescence:
    /// a task's end and the next plan happen in one message, so `true`
    /// means the last plan started nothing).
    Quiet(RpcReplyPort<bool>),
    /// Drill: panic inside the handler, as a bug would.
    DrillPanic,
}

pub struct ConnectionActor {
    pub store: Store,
    pub settings: Arc<ActorSettings>,
    /// Provider access; `None` runs the actor without syncing (tests of the
    /// actor machinery alone).
    pub sync: Option<Arc<SyncRuntime>>,
    /// Cluster mode: this node's belief about the slices it holds. Checked
    /// right before every append, so a node resumed after a pause (or cut
    /// off from the database) writes nothing once its belief has run out —
    /// even to a stream the new owner has not written yet, where the
    /// expected version alone would not fence it (docs/CLUSTER.md).
    pub cluster: super::front_door::ClusterSlot,
    /// Bounds the snapshots of stopping actors (see [`StopSnapshots`]).
    pub stop_snapshots: StopSnapshots,
}

/// Connection actors alive in this process (all nodes of it): started and
/// their state not yet dropped. A passivated actor leaves the registry at
/// once but ends later, after its snapshot.
static RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// See [`RUNNING`].
pub fn running_in_process() -> usize {
    RUNNING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Snapshots one node's stopping actors write at once: a quarter of the
/// default pool (16), the rest left to live work.
const STOP_SNAPSHOTS_AT_ONCE: usize = 4;

/// The permits of [`STOP_SNAPSHOTS_AT_ONCE`], one set per node (shared by
/// its actors; per node, not per process, so nodes in one process — the
/// simulation runs seeds side by side — never wait for each other).
#[derive(Clone)]
pub struct StopSnapshots(Arc<tokio::sync::Semaphore>);

impl Default for StopSnapshots {
    fn default() -> Self {
        StopSnapshots(Arc::new(tokio::sync::Semaphore::new(
            STOP_SNAPSHOTS_AT_ONCE,
        )))
    }
}

/// Counts an actor in [`RUNNING`] for as long as its state lives: dropped
/// with it however the actor ends (stopped, failed, or killed, which skips
/// `post_stop`).
struct Running;

impl Running {
    fn start() -> Self {
        RUNNING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        // The actor's memory is being freed now: keep the release window
        // open past the last actor of a sweep to end (they trail the sweep
        // by their snapshots: seconds at 100,000 actors), whichever path
        // stopped it.
        crate::memory::want_release();
    }
}

pub struct ConnectionArgs {
    pub id: ConnectionId,
    pub incarnation: u64,
    pub mailbox: Arc<Mailbox>,
}

pub struct ConnectionActorState {
    id: ConnectionId,
    stream: StreamName,
    state: ConnectionState,
    /// What runs and what inputs asked for (runtime only, see
    /// [`InFlight`]).
    inflight: InFlight,
    /// Whether the running sync / writes were asked for by an input (their
    /// calls are then not budgeted).
    sync_prompted: bool,
    outbound_prompted: bool,
    incarnation: u64,
    events_since_snapshot: u64,
    mailbox: Arc<Mailbox>,
    /// When the oldest notification not yet followed by a sync arrived
    /// (the webhook → busy latency metric).
    notified_at: Option<std::time::Instant>,
    over_budget: bool,
    timer: Option<(DateTime<Utc>, tokio::task::JoinHandle<()>)>,
    _running: Running,
}

/// How tasks report to this actor (they never see its message type).
struct ActorRecorder(ActorRef<ConnectionMsg>);

impl Recorder for ActorRecorder {
    fn record(&self, command: ConnectionCommand) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let sent = self
                .0
                .call(
                    |reply| ConnectionMsg::Internal {
                        command: Box::new(command),
                        correlation_id: Uuid::nil(),
                        reply,
                    },
                    Some(std::time::Duration::from_secs(60)),
                )
                .await;
            match sent {
                Ok(CallResult::Success(Ok(_))) => Ok(()),
                Ok(CallResult::Success(Err(e))) => Err(e.to_string()),
                _ => Err("connection actor not answering".into()),
            }
        })
    }

    fn finished(&self, task: Task, calls: u32) {
        let _ = self.0.send_message(ConnectionMsg::Finished { task, calls });
    }
}

impl Actor for ConnectionActor {
    type Msg = ConnectionMsg;
    type State = ConnectionActorState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ConnectionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let stream = args.id.stream();
        // Boxed, as `handle`'s work is: ractor's task future embeds this
        // one, and every idle actor would keep room for it.
        let (state, folded) = Box::pin(recover(&self.store, &stream)).await?;
        args.mailbox.touch(self.now());
        tracing::debug!(
            connection_id = %args.id,
            version = state.version,
            folded,
            incarnation = args.incarnation,
            "connection actor started"
        );
        Ok(ConnectionActorState {
            id: args.id,
            stream,
            state,
            inflight: InFlight::default(),
            sync_prompted: false,
            outbound_prompted: false,
            incarnation: args.incarnation,
            events_since_snapshot: folded,
            mailbox: args.mailbox,
            notified_at: None,
            over_budget: false,
            timer: None,
            _running: Running::start(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Plan at once: intents a previous incarnation left open are
        // completed with the same keys, overdue work starts.
        let _ = myself.send_message(ConnectionMsg::Tick);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, timer)) = st.timer.take() {
            timer.abort();
        }
        // A stopped actor (passivated, most often) comes back on its next
        // wake-up: snapshot what it folded since the last snapshot, so that
        // activation reads one snapshot instead of refolding up to
        // `snapshot_every` events each time a quiet connection polls.
        if st.events_since_snapshot > 0 {
            // Boxed, as `pre_start`'s recovery is. A sweep stops actors by
            // the thousand: each waits for one of a few permits, holding no
            // pool connection meanwhile, so the snapshots never starve the
            // appends that keep arriving (100,000 at once timed out the
            // pool's 5 s wait for half of them, and any append waiting
            // with them).
            Box::pin(async {
                let _permit = self.stop_snapshots.0.acquire().await;
                self.snapshot(st).await;
            })
            .await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Every line logged while handling this message (and by the tasks
        // it starts) carries the connection id and, for inputs, the
        // caller's correlation id. An error-level span is enabled whenever
        // any event is, so the fields are never filtered away.
        let span = tracing::error_span!("connection", connection_id = %st.id,
            incarnation = st.incarnation, correlation_id = tracing::field::Empty);
        if let ConnectionMsg::Command { correlation_id, .. } = &message {
            span.record("correlation_id", tracing::field::display(correlation_id));
        }
        // Boxed: ractor keeps each actor's message loop as one tokio task
        // whose future embeds this one. Inline, every idle actor would carry
        // the space of the deepest handler (decide, append, snapshot) for
        // its whole life; boxed, only a message being handled pays for it.
        Box::pin(self.dispatch(myself, message, st).instrument(span)).await
    }
}

impl ConnectionActor {
    fn now(&self) -> DateTime<Utc> {
        match &self.sync {
            Some(runtime) => runtime.clock.now(),
            None => Utc::now(),
        }
    }

    /// Handles one message, inside the span `handle` opened, then plans.
    async fn dispatch(
        &self,
        myself: ActorRef<ConnectionMsg>,
        message: ConnectionMsg,
        st: &mut ConnectionActorState,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.now();
        match message {
            ConnectionMsg::Command {
                command,
                correlation_id,
                reply,
            } => {
                st.mailbox.queued.fetch_sub(1, Ordering::AcqRel);
                st.mailbox.touch(now);
                if !self
                    .handle_input(&myself, st, *command, correlation_id, reply)
                    .await
                {
                    return Ok(());
                }
            }
            ConnectionMsg::Internal {
                command,
                correlation_id,
                reply,
            } => {
                st.mailbox.touch(now);
                if !self
                    .handle_input(&myself, st, *command, correlation_id, reply)
                    .await
                {
                    return Ok(());
                }
            }
            ConnectionMsg::Finished { task, calls } => {
                let prompted = match task {
                    Task::Sync => std::mem::take(&mut st.sync_prompted),
                    Task::Outbound => std::mem::take(&mut st.outbound_prompted),
                    Task::Channels => false,
                };
                st.inflight.finished(task, calls, prompted, now);
            }
            ConnectionMsg::Tick => {}
            ConnectionMsg::Wake(at) => {
                if st.timer.as_ref().is_some_and(|(armed, _)| *armed == at) {
                    st.timer = None;
                }
            }
            ConnectionMsg::Inspect(reply) => {
                let _ = reply.send(st.state.clone());
                return Ok(());
            }
            ConnectionMsg::Quiet(reply) => {
                let busy = [Task::Sync, Task::Channels, Task::Outbound]
                    .iter()
                    .any(|t| st.inflight.is_running(*t));
                let _ = reply.send(!busy);
                return Ok(());
            }
            ConnectionMsg::DrillPanic => {
                panic!("drill: connection actor {} killed on purpose", st.id);
            }
        }
        self.advance(&myself, st).await;
        Ok(())
    }

    /// Decides and commits one input, answers the caller, and records what
    /// it asks for. `false` when the actor was fenced and is stopping.
    async fn handle_input(
        &self,
        myself: &ActorRef<ConnectionMsg>,
        st: &mut ConnectionActorState,
        command: ConnectionCommand,
        correlation_id: Uuid,
        reply: RpcReplyPort<Result<Ack, SendError>>,
    ) -> bool {
        // What the input asks for depends on the state before it (which
        // calendar a channel belongs to): worked out now, instead of
        // keeping a copy of that state (a duplicate asks for nothing).
        let ask = asks_for(&st.state, &command, false);
        let result = self.apply(st, &command, correlation_id).await;
        if let (ConnectionCommand::AcceptNotification { .. }, Ok(ack), Some(profile)) =
            (&command, &result, &st.state.profile)
        {
            crate::metrics::notification(profile.provider.as_str(), ack.duplicate);
            if !ack.duplicate {
                st.notified_at.get_or_insert_with(std::time::Instant::now);
            }
        }
        if let Ok(ack) = &result {
            let cause = (!correlation_id.is_nil()).then_some(correlation_id);
            let ask = if ack.duplicate { Ask::default() } else { ask };
            st.inflight.asked(ask, cause);
        }
        let fenced = matches!(result, Err(SendError::Fenced));
        // Answer first: the caller (a webhook waiting on its 2xx) needs only
        // the commit, not what follows from it.
        let _ = reply.send(result);
        if fenced {
            self.fence(myself, st);
            return false;
        }
        true
    }

    fn fence(&self, myself: &ActorRef<ConnectionMsg>, st: &mut ConnectionActorState) {
        tracing::warn!(connection_id = %st.id, incarnation = st.incarnation,
            "stream moved under this actor: fenced, stopping");
        if let Some((_, timer)) = st.timer.take() {
            timer.abort();
        }
        myself.stop(Some("fenced".into()));
    }

    /// Asks the planner what to do now and does it: appends the events it
    /// names, starts its tasks, arms its one timer.
    async fn advance(&self, myself: &ActorRef<ConnectionMsg>, st: &mut ConnectionActorState) {
        let Some(runtime) = self.sync.clone() else {
            return;
        };
        let Some(provider) = st.state.profile.as_ref().map(|p| p.provider) else {
            return;
        };
        let now = runtime.clock.now();
        let ctx = Ctx {
            id: st.id,
            view: runtime.view(provider, st.id),
            policy: &runtime.policy,
            now,
        };
        let mut next = plan::next(&st.state, &st.inflight, &ctx);
        if next.over_budget != st.over_budget {
            st.over_budget = next.over_budget;
            if next.over_budget {
                crate::metrics::call_budget_exceeded(provider.as_str());
                tracing::warn!(connection_id = %st.id,
                    calls = st.inflight.unprompted_calls(now),
                    budget = runtime.policy.budget.for_calendars(st.state.calendars.len()),
                    "hourly provider call budget spent: background work waits");
            }
        }
        if !next.events.is_empty() {
            let events = std::mem::take(&mut next.events);
            match self
                .apply(
                    st,
                    &ConnectionCommand::RecordPlanned { events },
                    Uuid::nil(),
                )
                .await
            {
                Ok(_) => {}
                Err(SendError::Fenced) => return self.fence(myself, st),
                Err(e) => {
                    // The intents are not recorded: no write may start. Try
                    // again shortly.
                    tracing::warn!(connection_id = %st.id, error = %e, "planned events not recorded");
                    next.writes = None;
                    let retry = now + chrono::Duration::seconds(1);
                    next.wake_at = Some(next.wake_at.map_or(retry, |w| w.min(retry)));
                }
            }
        }
        self.start(myself, st, &runtime, provider, next);
    }

    fn start(
        &self,
        myself: &ActorRef<ConnectionMsg>,
        st: &mut ConnectionActorState,
        runtime: &Arc<SyncRuntime>,
        provider: crate::core::ids::CalendarProvider,
        next: Next,
    ) {
        let now = runtime.clock.now();
        let recorder: Arc<dyn Recorder> = Arc::new(ActorRecorder(myself.clone()));
        if let Some(run) = next.sync {
            let calendars: Vec<_> = run.rounds.iter().map(|r| r.calendar.clone()).collect();
            let cause = st.inflight.sync_started(&calendars, now);
            st.sync_prompted = run.prompted;
            let task = super::sync_task::run(
                recorder.clone(),
                runtime.clone(),
                st.id,
                provider,
                run,
                st.notified_at.take(),
            );
            // The task's span keeps the correlation id of the input that
            // asked for this sync, even when it starts later.
            let span = tracing::error_span!(
                "sync",
                provider = provider.as_str(),
                correlation_id = tracing::field::Empty
            );
            if let Some(cause) = cause {
                span.record("correlation_id", tracing::field::display(cause));
            }
            tokio::spawn(task.instrument(span));
        }
        if !next.channels.is_empty() {
            st.inflight.channels_started();
            let task = super::channel_task::run(
                recorder.clone(),
                runtime.clone(),
                st.id,
                provider,
                st.state.channels.clone(),
                next.channels,
            );
            let span = tracing::error_span!("channels", provider = provider.as_str());
            tokio::spawn(task.instrument(span));
        }
        if let Some(run) = next.writes {
            let calendar = st
                .state
                .profile
                .as_ref()
                .and_then(|p| p.destination_calendar.clone());
            let writes: Vec<PendingWrite> = run
                .bookings
                .iter()
                .filter_map(|booking_id| {
                    let track = st.state.bookings.get(booking_id)?;
                    Some(PendingWrite {
                        booking_id: booking_id.clone(),
                        op: track.pending.clone()?,
                        version: track.pending_version.unwrap_or(track.latest.version),
                        track: track.clone(),
                    })
                })
                .collect();
            if let (Some(calendar), false) = (calendar, writes.is_empty()) {
                st.inflight.outbound_started();
                st.outbound_prompted = run.prompted;
                tokio::spawn(super::outbound_task::run(
                    recorder,
                    runtime.clone(),
                    st.id,
                    provider,
                    calendar,
                    writes,
                ));
            }
        }
        self.arm(myself, st, runtime, next.wake_at);
    }

    /// Keeps exactly one timer, at `at`.
    fn arm(
        &self,
        myself: &ActorRef<ConnectionMsg>,
        st: &mut ConnectionActorState,
        runtime: &SyncRuntime,
        at: Option<DateTime<Utc>>,
    ) {
        st.mailbox.set_wake_at(at);
        if st.timer.as_ref().map(|(t, _)| *t) == at {
            return;
        }
        if let Some((_, handle)) = st.timer.take() {
            handle.abort();
        }
        if let Some(at) = at {
            let sleep = runtime.clock.sleep_until(at);
            let actor = myself.clone();
            let handle = tokio::spawn(async move {
                sleep.await;
                let _ = actor.send_message(ConnectionMsg::Wake(at));
            });
            st.timer = Some((at, handle));
        }
    }

    /// Decide, append with the expected version, fold. Nothing is
    /// acknowledged unless it is committed.
    async fn apply(
        &self,
        st: &mut ConnectionActorState,
        command: &ConnectionCommand,
        correlation_id: Uuid,
    ) -> Result<Ack, SendError> {
        let fallback;
        let policy = match &self.sync {
            Some(s) => &s.policy.sync,
            None => {
                fallback = Default::default();
                &fallback
            }
        };
        let decision =
            decide_with(&st.state, command, self.now(), policy).map_err(SendError::Rejected)?;
        if decision.events.is_empty() {
            return Ok(Ack {
                version: st.state.version,
                appended: 0,
                duplicate: decision.duplicate,
            });
        }
        let next = st.state.clone().fold(&decision.events);
        let correlation = (!correlation_id.is_nil()).then_some(correlation_id);
        let metadata = EventMetadata {
            correlation_id: correlation,
            causation_id: correlation,
            node: Some(self.settings.node.clone()),
            incarnation: Some(st.incarnation),
            ..Default::default()
        };
        let events = decision
            .events
            .iter()
            .map(|e| to_new_event(e, &metadata))
            .collect::<Result<Vec<_>, _>>()?;
        let changes = connection_changes(st.id, &next, &decision.events);
        let expected = ExpectedVersion::from_version(st.state.version);
        if self.cluster.get().is_some_and(|link| !link.owns(st.id)) {
            return Err(SendError::Fenced);
        }
        match self
            .store
            .append_with(&st.stream, expected, events, changes)
            .await
        {
            Ok(recorded) => {
                st.state = next;
                st.events_since_snapshot += recorded.len() as u64;
                if st.events_since_snapshot >= self.settings.snapshot_every {
                    self.snapshot(st).await;
                }
                Ok(Ack {
                    version: st.state.version,
                    appended: recorded.len(),
                    duplicate: false,
                })
            }
            Err(StoreError::Conflict { .. }) => Err(SendError::Fenced),
            Err(StoreError::Unavailable(e)) => Err(SendError::Unavailable(e)),
            Err(StoreError::BadData(e)) => Err(SendError::BadData(e)),
        }
    }

    async fn snapshot(&self, st: &mut ConnectionActorState) {
        let Ok(state) = serde_json::to_string(&st.state) else {
            return;
        };
        let snapshot = Snapshot {
            stream: st.stream.clone(),
            version: st.state.version,
            schema_version: SNAPSHOT_SCHEMA_VERSION,
            state,
        };
        // A snapshot is a cache: failing to save one costs only speed.
        match self.store.save_snapshot(&snapshot).await {
            Ok(()) => st.events_since_snapshot = 0,
            Err(e) => tracing::warn!(connection_id = %st.id, error = %e, "snapshot not saved"),
        }
    }
}

fn to_new_event(event: &ConnectionEvent, metadata: &EventMetadata) -> Result<NewEvent, SendError> {
    let (event_type, payload) = event
        .to_parts()
        .map_err(|e| SendError::BadData(e.to_string()))?;
    Ok(
        NewEvent::new(event_type, event.schema_version(), payload.to_string())
            .with_metadata(metadata.clone()),
    )
}

/// Folds as much of a stream as this build can read, stopping at the first
/// event it cannot decode. Used by the supervisor to record a quarantine on
/// a stream whose full fold fails.
pub async fn recover_prefix(
    store: &impl EventStore,
    stream: &StreamName,
) -> Result<ConnectionState, crate::store::StoreError> {
    let mut state = ConnectionState::default();
    loop {
        let batch = store.read_stream(stream, state.version + 1, 1000).await?;
        if batch.is_empty() {
            return Ok(state);
        }
        for recorded in &batch {
            let event = ConnectionEvent::from_json(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload.as_bytes(),
            )
            .ok();
            match event {
                Some(event) => state = state.evolve(&event),
                None => return Ok(state),
            }
        }
    }
}

/// Rebuilds a connection's state: the newest usable snapshot, then the
/// stream's tail. Returns the state and how many events were folded.
pub async fn recover(
    store: &impl EventStore,
    stream: &StreamName,
) -> Result<(ConnectionState, u64), ActorProcessingErr> {
    let mut state = match store.load_snapshot(stream).await? {
        Some(s) if s.schema_version == SNAPSHOT_SCHEMA_VERSION => {
            serde_json::from_str::<ConnectionState>(&s.state)
                .ok()
                .filter(|state| state.version == s.version)
                .unwrap_or_default()
        }
        _ => ConnectionState::default(),
    };
    let mut folded = 0u64;
    loop {
        let batch = store.read_stream(stream, state.version + 1, 1000).await?;
        if batch.is_empty() {
            break;
        }
        for recorded in &batch {
            // Straight into the event (no `serde_json::Value`): activation
            // decodes whole streams, and the transient trees fragmented the
            // heap of long-lived actors.
            let event = ConnectionEvent::from_json(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload.as_bytes(),
            )?;
            state = state.evolve(&event);
            folded += 1;
        }
    }
    // An idle actor keeps this state for hours: no room to spare.
    state.shrink_to_fit();
    Ok((state, folded))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle actor keeps room for its largest possible message (see
    /// [`ConnectionMsg`]): a new inline variant of a few hundred bytes
    /// would add that much to each of 100,000 actors.
    #[test]
    fn connection_messages_stay_small() {
        assert!(
            std::mem::size_of::<ConnectionMsg>() <= 64,
            "ConnectionMsg is {} bytes: box the large variant",
            std::mem::size_of::<ConnectionMsg>()
        );
    }
}
