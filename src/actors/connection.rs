//! `ConnectionActor`: the single writer of one connection's stream.
//!
//! Failure semantics (ractor): a panic or an `Err` from `handle` ends the
//! actor and our supervisor decides about a restart. So expected failures
//! (database unavailable, conflicts, rejections) are answered to the caller
//! inside the handler and never end the actor — except a conflict, which
//! means another writer owns the stream: the actor stops writing at once
//! (it is fenced) and the next input activates a fresh fold.

use super::front_door::{Ack, SendError};
use super::outbound_task::PendingWrite;
use super::sync_task::{self, CalendarPlan, SyncRuntime};
use super::ActorSettings;
use crate::core::channels::next_renewal;
use crate::core::decide::{decide_with, ConnectionCommand, Effect};
use crate::core::events::ConnectionEvent;
use crate::core::ids::{ConnectionId, StreamName};
use crate::core::projection::connection_changes;
use crate::core::state::ConnectionState;
use crate::core::sync::{may_call_provider, next_outbound_retry, next_wakeup, poll_interval};
use crate::store::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, PgEventStore, Snapshot, StoreError,
};
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

/// Bumped whenever `ConnectionState`'s shape changes: older snapshots are
/// then ignored (they are only a cache) and the stream is folded in full.
pub const SNAPSHOT_SCHEMA_VERSION: i32 = 1;

/// Counters shared between an actor and the front door, read without
/// asking the actor (admission control and passivation).
#[derive(Debug, Default)]
pub struct Mailbox {
    pub queued: AtomicUsize,
    pub last_active_ms: AtomicU64,
}

impl Mailbox {
    pub fn touch(&self) {
        self.last_active_ms.store(
            Utc::now().timestamp_millis().max(0) as u64,
            Ordering::Relaxed,
        );
    }
}

pub enum ConnectionMsg {
    Command {
        command: ConnectionCommand,
        correlation_id: Uuid,
        reply: RpcReplyPort<Result<Ack, SendError>>,
    },
    /// A command from inside the actor system (the sync task): bypasses
    /// admission control, which bounds outside callers only.
    Internal {
        command: ConnectionCommand,
        correlation_id: Uuid,
        reply: RpcReplyPort<Result<Ack, SendError>>,
    },
    /// The sync task finished (successfully or not).
    SyncFinished,
    /// A follow-up sync held back by the minimum interval is due; it
    /// carries the correlation id of the input that asked for it.
    SyncDue(Option<Uuid>),
    /// The channel task finished.
    ChannelsFinished,
    /// The outbound task finished.
    OutboundFinished,
    /// Run channel upkeep now (start-up, renewal time).
    Maintain,
    /// A timer fired: backoff ended or a periodic poll is due.
    Tick,
    /// The actor's current state (for status and tests).
    Inspect(RpcReplyPort<ConnectionState>),
    /// Drill: panic inside the handler, as a bug would.
    DrillPanic,
}

type TimerHandle = ractor::concurrency::JoinHandle<Result<(), ractor::MessagingErr<ConnectionMsg>>>;

pub struct ConnectionActor {
    pub store: PgEventStore,
    pub settings: Arc<ActorSettings>,
    /// Provider access; `None` runs the actor without syncing (tests of the
    /// actor machinery alone).
    pub sync: Option<Arc<SyncRuntime>>,
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
    incarnation: u64,
    events_since_snapshot: u64,
    mailbox: Arc<Mailbox>,
    /// Runtime only (not folded): a sync task is running / another sync
    /// was asked for while it ran.
    sync_running: bool,
    sync_pending: bool,
    /// When the last sync started (runtime only), for the minimum interval.
    last_sync_started: Option<std::time::Instant>,
    /// A delayed follow-up sync is already scheduled.
    sync_delayed: bool,
    /// The correlation id of the input being handled (runtime only), so
    /// work it causes later (a delayed sync) still names it in logs.
    cause: Option<Uuid>,
    /// When the oldest notification not yet followed by a sync arrived
    /// (the webhook → busy latency metric).
    notified_at: Option<std::time::Instant>,
    channels_running: bool,
    channels_pending: bool,
    outbound_running: bool,
    outbound_pending: bool,
    timer: Option<(chrono::DateTime<Utc>, TimerHandle)>,
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
        let (state, folded) = recover(&self.store, &stream).await?;
        args.mailbox.touch();
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
            incarnation: args.incarnation,
            events_since_snapshot: folded,
            mailbox: args.mailbox,
            sync_running: false,
            sync_pending: false,
            last_sync_started: None,
            sync_delayed: false,
            cause: None,
            notified_at: None,
            channels_running: false,
            channels_pending: false,
            outbound_running: false,
            outbound_pending: false,
            timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = myself.send_message(ConnectionMsg::Maintain);
        // Intents a previous incarnation recorded but never completed are
        // written now, with the same idempotency keys.
        if st.state.bookings.values().any(|t| t.pending.is_some()) {
            self.request_outbound(&myself, st);
        }
        self.reschedule(&myself, st);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Every line logged while handling this message (and by the sync
        // task it starts) carries the connection id and, for inputs, the
        // caller's correlation id. An error-level span is enabled whenever
        // any event is, so the fields are never filtered away.
        let span = tracing::error_span!("connection", connection_id = %st.id,
            incarnation = st.incarnation, correlation_id = tracing::field::Empty);
        let cause = match &message {
            ConnectionMsg::Command { correlation_id, .. }
            | ConnectionMsg::Internal { correlation_id, .. } => Some(*correlation_id),
            ConnectionMsg::SyncDue(cause) => *cause,
            _ => None,
        };
        if let Some(correlation_id) = cause {
            span.record("correlation_id", tracing::field::display(correlation_id));
        }
        st.cause = cause;
        // Boxed: ractor keeps each actor's message loop as one tokio task
        // whose future embeds this one. Inline, every idle actor would carry
        // the space of the deepest handler (decide, append, snapshot) for
        // its whole life; boxed, only a message being handled pays for it.
        Box::pin(self.dispatch(myself, message, st).instrument(span)).await
    }
}

impl ConnectionActor {
    /// Handles one message, inside the span `handle` opened.
    async fn dispatch(
        &self,
        myself: ActorRef<ConnectionMsg>,
        message: ConnectionMsg,
        st: &mut ConnectionActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMsg::Command {
                command,
                correlation_id,
                reply,
            } => {
                st.mailbox.queued.fetch_sub(1, Ordering::AcqRel);
                st.mailbox.touch();
                self.handle_command(&myself, st, command, correlation_id, reply)
                    .await;
            }
            ConnectionMsg::Internal {
                command,
                correlation_id,
                reply,
            } => {
                st.mailbox.touch();
                self.handle_command(&myself, st, command, correlation_id, reply)
                    .await;
            }
            ConnectionMsg::SyncFinished => {
                st.sync_running = false;
                if std::mem::take(&mut st.sync_pending) {
                    self.request_sync(&myself, st);
                }
                self.reschedule(&myself, st);
            }
            ConnectionMsg::SyncDue(_) => {
                st.sync_delayed = false;
                self.request_sync(&myself, st);
                self.reschedule(&myself, st);
            }
            ConnectionMsg::ChannelsFinished => {
                st.channels_running = false;
                if std::mem::take(&mut st.channels_pending) {
                    let _ = myself.send_message(ConnectionMsg::Maintain);
                }
                self.reschedule(&myself, st);
            }
            ConnectionMsg::OutboundFinished => {
                st.outbound_running = false;
                if std::mem::take(&mut st.outbound_pending) {
                    self.request_outbound_now(&myself, st).await;
                }
                self.reschedule(&myself, st);
            }
            ConnectionMsg::Maintain => {
                if let Ok((_, effects)) = self
                    .apply(st, &ConnectionCommand::MaintainChannels, Uuid::new_v4())
                    .await
                {
                    self.run_effects(&myself, st, effects);
                }
            }
            ConnectionMsg::Tick => {
                st.timer = None;
                if next_renewal(&st.state).is_some_and(|at| at <= Utc::now()) {
                    let _ = myself.send_message(ConnectionMsg::Maintain);
                }
                let backoff_over = st.state.consecutive_failures > 0
                    && st.state.backoff_until.is_none_or(|t| t <= Utc::now());
                let jobs = self.sync.as_ref().is_some_and(|s| s.gates.jobs_enabled());
                if backoff_over || jobs {
                    self.request_sync(&myself, st);
                }
                // Pending writes are retried on every tick the connection
                // may write (a successful sync can end the backoff first).
                self.request_outbound_now(&myself, st).await;
                self.reschedule(&myself, st);
            }
            ConnectionMsg::Inspect(reply) => {
                let _ = reply.send(st.state.clone());
            }
            ConnectionMsg::DrillPanic => {
                panic!("drill: connection actor {} killed on purpose", st.id);
            }
        }
        Ok(())
    }
}

impl ConnectionActor {
    async fn handle_command(
        &self,
        myself: &ActorRef<ConnectionMsg>,
        st: &mut ConnectionActorState,
        command: ConnectionCommand,
        correlation_id: Uuid,
        reply: RpcReplyPort<Result<Ack, SendError>>,
    ) {
        let result = self.apply(st, &command, correlation_id).await;
        if let (ConnectionCommand::AcceptNotification { .. }, Ok((ack, _)), Some(profile)) =
            (&command, &result, &st.state.profile)
        {
            crate::metrics::notification(profile.provider.as_str(), ack.duplicate);
            if !ack.duplicate {
                st.notified_at.get_or_insert_with(std::time::Instant::now);
            }
        }
        let (result, effects) = match result {
            Ok((ack, effects)) => (Ok(ack), effects),
            Err(e) => (Err(e), Vec::new()),
        };
        let fenced = matches!(result, Err(SendError::Fenced));
        // Answer first: the caller (a webhook waiting on its 2xx) needs only
        // the commit, not the effects.
        let _ = reply.send(result);
        if fenced {
            tracing::warn!(connection_id = %st.id, incarnation = st.incarnation,
                "stream moved under this actor: fenced, stopping");
            myself.stop(Some("fenced".into()));
            return;
        }
        self.run_effects(myself, st, effects);
        self.reschedule(myself, st);
    }

    fn run_effects(
        &self,
        myself: &ActorRef<ConnectionMsg>,
        st: &mut ConnectionActorState,
        effects: Vec<Effect>,
    ) {
        for effect in effects {
            match effect {
                Effect::Sync => self.request_sync(myself, st),
                Effect::Channels(steps) => self.request_channels(myself, st, steps),
                Effect::Outbound => self.request_outbound(myself, st),
            }
        }
    }

    /// Starts the pending outbound writes unless a run is in progress (then
    /// one follow-up run is queued) or the connection may not write now.
    fn request_outbound(&self, myself: &ActorRef<ConnectionMsg>, st: &mut ConnectionActorState) {
        let Some(runtime) = &self.sync else { return };
        if !may_call_provider(&st.state, Utc::now()) {
            return;
        }
        if st.outbound_running {
            st.outbound_pending = true;
            return;
        }
        let Some(profile) = &st.state.profile else {
            return;
        };
        let Some(calendar) = profile.destination_calendar.clone() else {
            return;
        };
        let writes: Vec<PendingWrite> = st
            .state
            .bookings
            .iter()
            .filter_map(|(booking_id, track)| {
                track.pending.clone().map(|op| PendingWrite {
                    booking_id: booking_id.clone(),
                    op,
                    version: track.pending_version.unwrap_or(track.latest.version),
                    track: track.clone(),
                })
            })
            .collect();
        if writes.is_empty() {
            return;
        }
        st.outbound_running = true;
        tokio::spawn(super::outbound_task::run(
            myself.clone(),
            runtime.clone(),
            st.id,
            profile.provider,
            calendar,
            writes,
        ));
    }

    /// Records intents for lagging bookings and runs the pending writes.
    async fn request_outbound_now(
        &self,
        myself: &ActorRef<ConnectionMsg>,
        st: &mut ConnectionActorState,
    ) {
        if let Ok((_, effects)) = self
            .apply(st, &ConnectionCommand::RequestOutbound, Uuid::new_v4())
            .await
        {
            self.run_effects(myself, st, effects);
        }
    }

    /// Starts channel upkeep unless webhooks are off, no public URL is
    /// configured, or upkeep is already running (then it re-plans after).
    fn request_channels(
        &self,
        myself: &ActorRef<ConnectionMsg>,
        st: &mut ConnectionActorState,
        steps: Vec<crate::core::channels::ChannelStep>,
    ) {
        let Some(runtime) = &self.sync else { return };
        if runtime.webhook_base.is_none() || !runtime.gates.webhooks_enabled() || steps.is_empty() {
            return;
        }
        if st.channels_running {
            st.channels_pending = true;
            return;
        }
        let Some(profile) = &st.state.profile else {
            return;
        };
        st.channels_running = true;
        let task = super::channel_task::run(
            myself.clone(),
            runtime.clone(),
            st.id,
            profile.provider,
            st.state.channels.clone(),
            steps,
        );
        // Like the sync task: a child of the message's span.
        let span = tracing::error_span!("channels", provider = profile.provider.as_str());
        tokio::spawn(task.instrument(span));
    }

    /// Starts a sync unless one is running (then one follow-up is queued),
    /// the sync flag is off, or the connection may not call its provider
    /// now (backoff, paused, needs re-authorisation) — the timer brings it
    /// back when the backoff ends.
    fn request_sync(&self, myself: &ActorRef<ConnectionMsg>, st: &mut ConnectionActorState) {
        let Some(runtime) = &self.sync else { return };
        if !runtime.gates.sync_enabled() || !may_call_provider(&st.state, Utc::now()) {
            return;
        }
        if st.sync_running {
            st.sync_pending = true;
            return;
        }
        if let Some(started) = st.last_sync_started {
            let since = started.elapsed();
            if since < runtime.min_sync_interval {
                if !st.sync_delayed {
                    st.sync_delayed = true;
                    let cause = st.cause;
                    myself.send_after(runtime.min_sync_interval - since, move || {
                        ConnectionMsg::SyncDue(cause)
                    });
                }
                return;
            }
        }
        let Some(profile) = &st.state.profile else {
            return;
        };
        st.sync_running = true;
        st.last_sync_started = Some(std::time::Instant::now());
        let plans = st
            .state
            .calendars
            .iter()
            .map(|(calendar, sync)| CalendarPlan {
                calendar: calendar.clone(),
                cursor: sync.cursor.clone(),
                free_busy_only: sync.free_busy_only,
            })
            .collect();
        let sync = sync_task::run(
            myself.clone(),
            runtime.clone(),
            st.id,
            profile.provider,
            plans,
            st.notified_at.take(),
        );
        // The task's span is a child of the message's: it keeps the
        // correlation id of the input that asked for this sync.
        let span = tracing::error_span!("sync", provider = profile.provider.as_str());
        tokio::spawn(sync.instrument(span));
    }

    /// Keeps one timer, at the state's next wake-up (end of backoff or next
    /// periodic poll). Times come from the folded state, so they survive
    /// restarts.
    fn reschedule(&self, myself: &ActorRef<ConnectionMsg>, st: &mut ConnectionActorState) {
        let Some(runtime) = &self.sync else { return };
        let now = Utc::now();
        let wanted = if st.sync_running || !runtime.gates.sync_enabled() {
            None
        } else {
            let renewal = runtime
                .webhook_base
                .as_ref()
                .and_then(|_| next_renewal(&st.state));
            let outbound = (!st.outbound_running)
                .then(|| next_outbound_retry(&st.state, now))
                .flatten();
            let poll = poll_interval(runtime.poll_every, st.id);
            [next_wakeup(&st.state, poll, now), renewal, outbound]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.max(now + chrono::Duration::milliseconds(50)))
        };
        if st.timer.as_ref().map(|(at, _)| *at) == wanted {
            return;
        }
        if let Some((_, handle)) = st.timer.take() {
            handle.abort();
        }
        if let Some(at) = wanted {
            let delay = (at - now).to_std().unwrap_or_default();
            st.timer = Some((at, myself.send_after(delay, || ConnectionMsg::Tick)));
        }
    }

    /// Decide, append with the expected version, fold. Nothing is
    /// acknowledged unless it is committed.
    async fn apply(
        &self,
        st: &mut ConnectionActorState,
        command: &ConnectionCommand,
        correlation_id: Uuid,
    ) -> Result<(Ack, Vec<Effect>), SendError> {
        let policy = self
            .sync
            .as_ref()
            .map(|s| s.policy.clone())
            .unwrap_or_default();
        let decision =
            decide_with(&st.state, command, Utc::now(), &policy).map_err(SendError::Rejected)?;
        if decision.events.is_empty() {
            return Ok((
                Ack {
                    version: st.state.version,
                    appended: 0,
                    duplicate: decision.duplicate,
                },
                decision.effects,
            ));
        }
        let next = st.state.clone().fold(&decision.events);
        let metadata = EventMetadata {
            correlation_id: Some(correlation_id),
            causation_id: Some(correlation_id),
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
                Ok((
                    Ack {
                        version: st.state.version,
                        appended: recorded.len(),
                        duplicate: false,
                    },
                    decision.effects,
                ))
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
    Ok((state, folded))
}
