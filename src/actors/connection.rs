//! `ConnectionActor`: the single writer of one connection's stream.
//!
//! Failure semantics (ractor): a panic or an `Err` from `handle` ends the
//! actor and our supervisor decides about a restart. So expected failures
//! (database unavailable, conflicts, rejections) are answered to the caller
//! inside the handler and never end the actor — except a conflict, which
//! means another writer owns the stream: the actor stops writing at once
//! (it is fenced) and the next input activates a fresh fold.

use super::front_door::{Ack, SendError};
use super::ActorSettings;
use crate::core::decide::{decide, ConnectionCommand};
use crate::core::events::ConnectionEvent;
use crate::core::ids::{ConnectionId, StreamName};
use crate::core::projection::connection_changes;
use crate::core::state::ConnectionState;
use crate::store::{
    EventMetadata, EventStore, ExpectedVersion, NewEvent, PgEventStore, Snapshot, StoreError,
};
use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// The actor's current state (for status and tests).
    Inspect(RpcReplyPort<ConnectionState>),
    /// Drill: panic inside the handler, as a bug would.
    DrillPanic,
}

pub struct ConnectionActor {
    pub store: PgEventStore,
    pub settings: Arc<ActorSettings>,
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
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMsg::Command {
                command,
                correlation_id,
                reply,
            } => {
                st.mailbox.queued.fetch_sub(1, Ordering::AcqRel);
                st.mailbox.touch();
                let result = self.apply(st, &command, correlation_id).await;
                let fenced = matches!(result, Err(SendError::Fenced));
                let _ = reply.send(result);
                if fenced {
                    tracing::warn!(connection_id = %st.id, incarnation = st.incarnation,
                        "stream moved under this actor: fenced, stopping");
                    myself.stop(Some("fenced".into()));
                }
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
    /// Decide, append with the expected version, fold. Nothing is
    /// acknowledged unless it is committed.
    async fn apply(
        &self,
        st: &mut ConnectionActorState,
        command: &ConnectionCommand,
        correlation_id: Uuid,
    ) -> Result<Ack, SendError> {
        let decision = decide(&st.state, command, Utc::now()).map_err(SendError::Rejected)?;
        if decision.events.is_empty() {
            return Ok(Ack {
                version: st.state.version,
                appended: 0,
            });
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
            .append_with(&st.stream, expected, events, &changes)
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
            let event = serde_json::from_str(&recorded.payload)
                .ok()
                .and_then(|payload| {
                    ConnectionEvent::from_parts(
                        &recorded.event_type,
                        recorded.schema_version,
                        payload,
                    )
                    .ok()
                });
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
            let payload: serde_json::Value = serde_json::from_str(&recorded.payload)?;
            let event = ConnectionEvent::from_parts(
                &recorded.event_type,
                recorded.schema_version,
                payload,
            )?;
            state = state.evolve(&event);
            folded += 1;
        }
    }
    Ok((state, folded))
}
