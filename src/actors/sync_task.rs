//! Running one planned sync of a connection, outside its actor.
//!
//! The planner ([`crate::core::plan`]) decided which calendars to sync and
//! how; this task makes the provider calls so the actor keeps answering
//! webhooks within their deadline. Every fetched page and every failure
//! goes back through the actor ([`Recorder`]), which decides and appends it
//! like any other input. A calendar's failure is recorded for that
//! calendar and the task moves on to the next one; only a failure the core
//! scopes to the whole connection (the grant, throttling, the token
//! endpoint) ends the run.

use super::runtime::SyncRuntime;
use super::task_support::{keep_rotated_token, load_session, Recorder};
use crate::core::decide::ConnectionCommand;
use crate::core::fault::{sync_scope, Fault, FaultKind, SyncScope};
use crate::core::ids::{CalendarId, CalendarProvider, ConnectionId};
use crate::core::inflight::Task;
use crate::core::plan::{RoundKind, SyncRun};
use crate::core::state::WindowBase;
use crate::core::sync::FetchedPage;
use crate::providers::{
    AuthSession, CalendarApi, PageNext, ProviderClient, SyncCursor, SyncPosition,
};
use std::sync::Arc;

/// Default least time between two syncs of one connection: ten a second,
/// Google Calendar's default per-user quota (600 queries a minute), so a
/// notification flood on one account cannot by itself exhaust the quota,
/// while a connection changing a few times a second still syncs each change
/// on arrival. Configurable (`[sync] min_interval_ms`).
pub const DEFAULT_MIN_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a run stopped early.
enum Stop {
    /// The core scoped a failure to the whole connection (recorded).
    ConnectionWide,
    /// The actor did not take a result (the database is down, or it was
    /// fenced): nothing more can be recorded.
    Unrecorded(String),
}

/// Runs `run` and reports back; the actor learns it ended through
/// [`Recorder::finished`].
pub async fn run(
    recorder: Arc<dyn Recorder>,
    runtime: Arc<SyncRuntime>,
    id: ConnectionId,
    provider: CalendarProvider,
    run: SyncRun,
    notified_at: Option<std::time::Instant>,
) {
    let started = std::time::Instant::now();
    crate::metrics::sync_started(provider.as_str());
    let mut tally = Tally::default();
    let outcome = sync_rounds(&*recorder, &runtime, id, provider, run, &mut tally).await;
    let calls = tally.calls;
    let failure = match &outcome {
        Ok(()) => tally.first_failure.as_deref(),
        Err(Stop::ConnectionWide) => tally.first_failure.as_deref().or(Some("connection")),
        Err(Stop::Unrecorded(_)) => Some("record"),
    };
    crate::metrics::sync_finished(provider.as_str(), failure, started.elapsed());
    if let (Ok(()), Some(at)) = (&outcome, notified_at) {
        crate::metrics::webhook_to_busy(provider.as_str(), at.elapsed());
    }
    if let Err(Stop::Unrecorded(e)) = &outcome {
        tracing::warn!(error = %e, "sync stopped: a result could not be recorded");
    }
    recorder.finished(Task::Sync, calls);
}

/// What one run did: provider calls made, and the first failure's kind.
#[derive(Default)]
struct Tally {
    calls: u32,
    first_failure: Option<String>,
}

/// Records a failure; `Err` when the run must stop.
async fn failed(
    recorder: &dyn Recorder,
    runtime: &SyncRuntime,
    calendar: Option<&CalendarId>,
    fault: Fault,
    attempt_started: chrono::DateTime<chrono::Utc>,
    tally: &mut Tally,
) -> Result<(), Stop> {
    tally
        .first_failure
        .get_or_insert_with(|| fault.label.clone());
    let scope = sync_scope(&fault, calendar.is_some());
    tracing::warn!(calendar = ?calendar.map(|c| c.as_str()), kind = %fault.label,
        error = %fault.message, ?scope, "sync failed");
    let command = ConnectionCommand::RecordSyncFailure {
        calendar: calendar.cloned(),
        fault,
        unit_random: runtime.entropy.unit(),
        attempt_started: Some(attempt_started),
    };
    recorder.record(command).await.map_err(Stop::Unrecorded)?;
    match scope {
        SyncScope::Connection | SyncScope::Reauthorize => Err(Stop::ConnectionWide),
        _ => Ok(()),
    }
}

async fn sync_rounds(
    recorder: &dyn Recorder,
    runtime: &SyncRuntime,
    id: ConnectionId,
    provider: CalendarProvider,
    run: SyncRun,
    tally: &mut Tally,
) -> Result<(), Stop> {
    let attempt_started = runtime.clock.now();
    let mut session = match load_session(runtime, id).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            let fault = Fault::new(
                FaultKind::Reauthorize,
                "reauthorize",
                "no credentials stored for this connection",
            );
            return failed(recorder, runtime, None, fault, attempt_started, tally).await;
        }
        Err(e) => {
            let fault = Fault::transient("credentials", e.to_string());
            return failed(recorder, runtime, None, fault, attempt_started, tally).await;
        }
    };
    let client = runtime.client(provider);
    // The token first: its endpoint failing concerns every calendar.
    let token = client.ensure_token(&mut session).await;
    keep_rotated_token(runtime, id, &mut session).await;
    if let Err(e) = token {
        tally.calls += 1;
        return failed(recorder, runtime, None, e.fault(), attempt_started, tally).await;
    }
    for round in run.rounds {
        let calls = &mut tally.calls;
        let result = match round.kind {
            RoundKind::FreeBusy { window } => {
                free_busy(
                    recorder,
                    runtime,
                    client,
                    &mut session,
                    id,
                    &round.calendar,
                    window,
                    calls,
                )
                .await
            }
            RoundKind::Incremental { cursor } => {
                let position = SyncPosition::Cursor(SyncCursor(cursor));
                list(
                    recorder,
                    runtime,
                    client,
                    &mut session,
                    id,
                    &round.calendar,
                    position,
                    None,
                    calls,
                )
                .await
            }
            RoundKind::Full { window } => {
                list(
                    recorder,
                    runtime,
                    client,
                    &mut session,
                    id,
                    &round.calendar,
                    SyncPosition::Start,
                    Some(window),
                    calls,
                )
                .await
            }
        };
        match result {
            Ok(()) => {}
            Err(Round::Failed(fault)) => {
                failed(
                    recorder,
                    runtime,
                    Some(&round.calendar),
                    fault,
                    attempt_started,
                    tally,
                )
                .await?
            }
            Err(Round::Unrecorded(e)) => return Err(Stop::Unrecorded(e)),
        }
    }
    Ok(())
}

/// Why one calendar's round ended early.
enum Round {
    Failed(Fault),
    Unrecorded(String),
}

#[allow(clippy::too_many_arguments)]
async fn free_busy(
    recorder: &dyn Recorder,
    runtime: &SyncRuntime,
    client: &ProviderClient,
    session: &mut AuthSession,
    id: ConnectionId,
    calendar: &CalendarId,
    window: WindowBase,
    calls: &mut u32,
) -> Result<(), Round> {
    *calls += 1;
    let result = client
        .free_busy(session, std::slice::from_ref(calendar), window.into())
        .await;
    keep_rotated_token(runtime, id, session).await;
    let busy = result
        .map_err(|e| Round::Failed(e.fault()))?
        .into_iter()
        .filter(|(c, _)| c == calendar)
        .flat_map(|(_, intervals)| intervals)
        .collect();
    let command = ConnectionCommand::RecordFreeBusy {
        calendar: calendar.clone(),
        busy,
        window: Some(window),
    };
    recorder.record(command).await.map_err(Round::Unrecorded)
}

#[allow(clippy::too_many_arguments)]
async fn list(
    recorder: &dyn Recorder,
    runtime: &SyncRuntime,
    client: &ProviderClient,
    session: &mut AuthSession,
    id: ConnectionId,
    calendar: &CalendarId,
    mut position: SyncPosition,
    window: Option<WindowBase>,
    calls: &mut u32,
) -> Result<(), Round> {
    let full_round = window.is_some();
    // A full round lists its window; an incremental one's cursor carries it.
    let listing = window
        .map(Into::into)
        .unwrap_or_else(|| runtime.policy.window.base(runtime.clock.now()).into());
    let mut first_page = true;
    loop {
        *calls += 1;
        let result = client
            .list_changes(session, calendar, &position, listing)
            .await;
        keep_rotated_token(runtime, id, session).await;
        let page = result.map_err(|e| Round::Failed(e.fault()))?;
        let (completed_with, next) = match page.next {
            PageNext::More(token) => (None, Some(SyncPosition::Page(token))),
            PageNext::Complete(cursor) => (Some(cursor.0), None),
        };
        let fetched = FetchedPage {
            calendar: calendar.clone(),
            full_round,
            changes: page.changes,
            calendar_zone: page.calendar_zone,
            completed_with,
            first_page,
            window,
        };
        first_page = false;
        recorder
            .record(ConnectionCommand::RecordPage(fetched))
            .await
            .map_err(Round::Unrecorded)?;
        match next {
            Some(p) => position = p,
            None => return Ok(()),
        }
    }
}
