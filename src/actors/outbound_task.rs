//! Running a connection's pending outbound writes, outside its actor.
//!
//! Each write was recorded as an intent before this task starts; the task
//! calls the provider with the intent's idempotency key and reports the
//! result back through the actor. A crash anywhere in between leaves the
//! intent pending, and the next run makes the same call with the same key.

use super::connection::ConnectionMsg;
use super::sync_task::SyncRuntime;
use super::task_support::{keep_rotated_token, load_session, record};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{CalendarId, CalendarProvider, ConnectionId};
use crate::core::outbound::{ical_uid, BookingTrack, OutboundOp, WriteOutcome};
use crate::core::sync::FailureClass;
use crate::providers::{CalendarApi, OutboundEvent, ProviderError};
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Instant;

/// One pending write, as decided.
pub struct PendingWrite {
    pub booking_id: String,
    pub op: OutboundOp,
    /// The version the intent was recorded for: what the write is credited
    /// with (the content sent is the latest version, which is never older).
    pub version: u64,
    pub track: BookingTrack,
}

pub async fn run(
    actor: ActorRef<ConnectionMsg>,
    runtime: Arc<SyncRuntime>,
    id: ConnectionId,
    provider: CalendarProvider,
    calendar: CalendarId,
    writes: Vec<PendingWrite>,
) {
    if let Err(e) = write_all(&actor, &runtime, id, provider, &calendar, writes).await {
        tracing::debug!(connection_id = %id, error = %e, "outbound writes stopped");
    }
    let _ = actor.send_message(ConnectionMsg::OutboundFinished);
}

async fn write_all(
    actor: &ActorRef<ConnectionMsg>,
    runtime: &SyncRuntime,
    id: ConnectionId,
    provider: CalendarProvider,
    calendar: &CalendarId,
    writes: Vec<PendingWrite>,
) -> Result<(), String> {
    let mut session = match load_session(runtime, id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err("no credentials".into()),
        Err(e) => return Err(e.to_string()),
    };
    let client = runtime.client(provider);
    for write in writes {
        let booking = &write.track.latest;
        let event = |generation: u32, marked_cancelled: bool| OutboundEvent {
            booking_id: booking.booking_id.to_string(),
            generation,
            title: booking.title.clone(),
            start: booking.start,
            end: booking.end,
            time_zone: booking.time_zone.clone(),
            attendees: booking.attendees.clone(),
            ical_uid: ical_uid(&booking.booking_id),
            marked_cancelled,
        };
        let started = Instant::now();
        let (operation, result) = match &write.op {
            OutboundOp::Create { generation } => (
                "create",
                client
                    .create_event(&mut session, calendar, &event(*generation, false))
                    .await
                    .map(|w| WriteOutcome::Created {
                        external_event_id: w.external_event_id,
                        etag: w.etag,
                    }),
            ),
            OutboundOp::Update { external_event_id } => (
                "update",
                match client
                    .update_event(
                        &mut session,
                        calendar,
                        external_event_id,
                        &event(write.track.generation, false),
                    )
                    .await
                {
                    Ok(w) => Ok(WriteOutcome::Updated { etag: w.etag }),
                    // Deleted at the provider by someone else: create anew.
                    Err(ProviderError::NotFound(_) | ProviderError::Gone(_)) => {
                        Ok(WriteOutcome::Missing)
                    }
                    Err(e) => Err(e),
                },
            ),
            OutboundOp::MarkCancelled { external_event_id } => (
                "mark_cancelled",
                match client
                    .update_event(
                        &mut session,
                        calendar,
                        external_event_id,
                        &event(write.track.generation, true),
                    )
                    .await
                {
                    Ok(w) => Ok(WriteOutcome::Updated { etag: w.etag }),
                    // Deleted at the provider by someone else: nothing is
                    // left to mark; a re-activation creates anew.
                    Err(ProviderError::NotFound(_) | ProviderError::Gone(_)) => {
                        Ok(WriteOutcome::Missing)
                    }
                    Err(e) => Err(e),
                },
            ),
            OutboundOp::Delete { external_event_id } => (
                "delete",
                client
                    .delete_event(&mut session, calendar, external_event_id)
                    .await
                    .map(|_| WriteOutcome::Deleted),
            ),
            OutboundOp::DeleteTagged { generation } => (
                "delete",
                match client
                    .find_booking_event(
                        &mut session,
                        calendar,
                        booking.booking_id.as_str(),
                        *generation,
                    )
                    .await
                {
                    Ok(Some(found)) => client
                        .delete_event(&mut session, calendar, &found.external_event_id)
                        .await
                        .map(|_| WriteOutcome::Deleted),
                    Ok(None) => Ok(WriteOutcome::Deleted),
                    Err(e) => Err(e),
                },
            ),
        };
        crate::metrics::outbound_write(
            provider.as_str(),
            operation,
            result.as_ref().map(|_| "ok").unwrap_or_else(|e| e.kind()),
            started.elapsed(),
        );
        keep_rotated_token(runtime, id, &mut session).await;
        let command = match result {
            Ok(outcome) => ConnectionCommand::RecordOutboundResult {
                booking_id: write.booking_id.clone(),
                version: write.version,
                outcome,
            },
            Err(e) => {
                let class = match &e {
                    ProviderError::Reauthorize(_) => FailureClass::Reauthorize,
                    other => FailureClass::Transient {
                        retry_after_ms: other
                            .retry_after()
                            .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
                    },
                };
                let failure = ConnectionCommand::RecordOutboundFailure {
                    booking_id: write.booking_id.clone(),
                    class,
                    kind: e.kind().to_string(),
                    message: e.to_string(),
                    unit_random: rand::random(),
                };
                record(actor, failure).await?;
                // The connection backs off: stop here, the rest waits.
                return Err(e.to_string());
            }
        };
        record(actor, command).await?;
    }
    Ok(())
}
