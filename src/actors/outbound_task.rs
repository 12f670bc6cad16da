//! Running a connection's planned outbound writes, outside its actor.
//!
//! Each write was recorded as an intent before this task starts; the task
//! calls the provider with the intent's idempotency key and reports the
//! result back through the actor. A crash anywhere in between leaves the
//! intent pending, and the next run makes the same call with the same key.
//! Writes of different bookings are independent: a failure is recorded for
//! its booking (the core decides between backoff, `failed` and a new id
//! generation) and the next booking is written; only a failure that stops
//! every call (the grant, throttling) ends the run.

use super::runtime::SyncRuntime;
use super::task_support::{keep_rotated_token, load_session, Recorder};
use crate::core::decide::ConnectionCommand;
use crate::core::fault::{stops_run, Fault, FaultKind};
use crate::core::ids::{CalendarId, CalendarProvider, ConnectionId};
use crate::core::inflight::Task;
use crate::core::outbound::{ical_uid, BookingTrack, OutboundOp, WriteOutcome};
use crate::providers::{CalendarApi, OutboundEvent, ProviderError};
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
    recorder: Arc<dyn Recorder>,
    runtime: Arc<SyncRuntime>,
    id: ConnectionId,
    provider: CalendarProvider,
    calendar: CalendarId,
    writes: Vec<PendingWrite>,
) {
    let mut calls = 0;
    if let Err(e) = write_all(
        &*recorder, &runtime, id, provider, &calendar, writes, &mut calls,
    )
    .await
    {
        tracing::debug!(connection_id = %id, error = %e, "outbound writes stopped");
    }
    recorder.finished(Task::Outbound, calls);
}

async fn write_all(
    recorder: &dyn Recorder,
    runtime: &SyncRuntime,
    id: ConnectionId,
    provider: CalendarProvider,
    calendar: &CalendarId,
    writes: Vec<PendingWrite>,
    calls: &mut u32,
) -> Result<(), String> {
    let attempt_started = runtime.clock.now();
    let fail_all = |fault: Fault, writes: &[PendingWrite]| {
        writes
            .first()
            .map(|w| ConnectionCommand::RecordOutboundFailure {
                booking_id: w.booking_id.clone(),
                version: w.version,
                op: w.op.clone(),
                fault,
                unit_random: runtime.entropy.unit(),
                attempt_started: Some(attempt_started),
            })
    };
    let mut session = match load_session(runtime, id).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            let fault = Fault::new(
                FaultKind::Reauthorize,
                "reauthorize",
                "no credentials stored for this connection",
            );
            if let Some(command) = fail_all(fault, &writes) {
                recorder.record(command).await?;
            }
            return Err("no credentials".into());
        }
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
        *calls += 1;
        let (operation, result): (&str, Result<WriteOutcome, ProviderError>) = match &write.op {
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
                client
                    .update_event(
                        &mut session,
                        calendar,
                        external_event_id,
                        &event(write.track.generation, false),
                    )
                    .await
                    .map(|w| WriteOutcome::Updated { etag: w.etag }),
            ),
            OutboundOp::MarkCancelled { external_event_id } => (
                "mark_cancelled",
                client
                    .update_event(
                        &mut session,
                        calendar,
                        external_event_id,
                        &event(write.track.generation, true),
                    )
                    .await
                    .map(|w| WriteOutcome::Updated { etag: w.etag }),
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
                    Ok(Some(found)) => {
                        *calls += 1;
                        client
                            .delete_event(&mut session, calendar, &found.external_event_id)
                            .await
                            .map(|_| WriteOutcome::Deleted)
                    }
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
        let (command, stop) = match result {
            Ok(outcome) => (
                ConnectionCommand::RecordOutboundResult {
                    booking_id: write.booking_id.clone(),
                    version: write.version,
                    outcome,
                },
                false,
            ),
            Err(e) => {
                let fault = e.fault();
                let stop = stops_run(&fault);
                (
                    ConnectionCommand::RecordOutboundFailure {
                        booking_id: write.booking_id.clone(),
                        version: write.version,
                        op: write.op.clone(),
                        fault,
                        unit_random: runtime.entropy.unit(),
                        attempt_started: Some(attempt_started),
                    },
                    stop,
                )
            }
        };
        recorder.record(command).await?;
        if stop {
            return Err("the connection backs off; the rest waits".into());
        }
    }
    Ok(())
}
