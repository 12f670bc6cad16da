//! Pure sync decisions: what a fetched page of provider changes, or a failed
//! attempt, means for a connection.
//!
//! Mark and sweep: a full sync (first sync, or after the provider said the
//! cursor is invalid) starts a new *generation*; every event seen during it
//! is marked with that generation, and when the round completes every busy
//! interval of an older generation is swept — it no longer exists at the
//! provider. A cursor is stored only when a round completes (Google's
//! `nextSyncToken` exists only on the last page; Graph's `deltaLink` too).

use super::backoff::BackoffPolicy;
use super::busy::{google_busy, graph_busy, BusyDecision, BusyPolicy, FreeReason};
use super::events::ConnectionEvent;
use super::explain::{explain, BusyRule, Verdict};
use super::fault::{channel_scope, sync_scope, ChannelScope, Fault, SyncScope};
use super::ids::CalendarId;
use super::outbound::CancelMode;
use super::state::{ConnectionState, WindowBase};
use super::tz::resolve_zone;
use super::wire::ProviderChange;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A page of changes the shell fetched for one calendar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedPage {
    pub calendar: CalendarId,
    /// True when the round started without a cursor (a full sync).
    pub full_round: bool,
    pub changes: Vec<ProviderChange>,
    /// The zone all-day events are dates in, when they do not name their
    /// own: Google, the calendar's `timeZone`; Graph, the mailbox's zone
    /// (`mailboxSettings.timeZone`). `None` or an unknown name means UTC.
    pub calendar_zone: Option<String>,
    /// `Some(cursor)` on the last page of the round.
    pub completed_with: Option<String>,
    /// The first page of its round: a full round starts its generation here.
    #[serde(default)]
    pub first_page: bool,
    /// The window a full round lists.
    #[serde(default)]
    pub window: Option<WindowBase>,
}

/// The policies sync decisions follow.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPolicy {
    pub busy: BusyPolicy,
    pub backoff: BackoffPolicy,
    /// How a cancelled booking's event is written (configuration, given to
    /// the decider; the op chosen is recorded in the intent).
    pub on_cancel: CancelMode,
    /// How long an unavailable calendar (404, 403 …) waits before it is
    /// probed again. Default 1 h.
    pub unavailable_retry: chrono::Duration,
    /// What a booking's event moved or deleted in the calendar by someone
    /// else leads to (`[outbound] on_external_change`).
    pub on_external_change: super::external_change::ExternalChangePolicy,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            busy: BusyPolicy::default(),
            backoff: BackoffPolicy::default(),
            on_cancel: CancelMode::default(),
            unavailable_retry: chrono::Duration::hours(1),
            on_external_change: Default::default(),
        }
    }
}

/// Events for one fetched page.
pub fn page_events(
    state: &ConnectionState,
    page: &FetchedPage,
    now: DateTime<Utc>,
    policy: &SyncPolicy,
) -> Vec<ConnectionEvent> {
    let Some(cal) = state.calendars.get(&page.calendar) else {
        // The calendar was deselected while the page was in flight.
        return Vec::new();
    };
    if cal.free_busy_only {
        // A listing planned before the calendar became free/busy only: its
        // busy time now comes from free/busy reads alone.
        return Vec::new();
    }
    let mut events = Vec::with_capacity(page.changes.len() + 2);
    let mut generation = cal.generation;
    // Every full round marks what it sees with a generation of its own
    // (mark and sweep); a round that failed half way is simply superseded.
    if page.full_round && (page.first_page || !cal.full_sync_in_progress) {
        generation += 1;
        events.push(ConnectionEvent::FullSyncStarted {
            calendar: page.calendar.clone(),
            generation,
            reason: if cal.cursor.is_none() && cal.last_success.is_none() {
                "first sync".into()
            } else if cal.cursor.is_none() {
                "cursor invalid".into()
            } else {
                "window re-based".into()
            },
            window: page.window,
        });
    }
    let zone = page
        .calendar_zone
        .as_deref()
        .or(cal.zone.as_deref())
        .and_then(|z| resolve_zone(z).ok())
        .unwrap_or(chrono_tz::UTC);
    // The window this page's events are judged against: the new round's,
    // else the one the cursor was based on.
    let window = page.window.or(cal.window);
    for change in &page.changes {
        let (event_id, decision) = match change {
            ProviderChange::Google(e) => (e.id.clone(), google_busy(e, zone, &policy.busy)),
            ProviderChange::Graph(e) => (e.id.clone(), graph_busy(e, zone, &policy.busy)),
        };
        if event_id.is_empty() {
            continue;
        }
        let calendar = page.calendar.clone();
        let removed = matches!(
            decision,
            BusyDecision::Free(FreeReason::Cancelled | FreeReason::Removed)
        );
        events.push(
            match explain(change, decision, zone, &policy.busy, window.as_ref()) {
                Verdict::Busy { interval, rule } => ConnectionEvent::ExternalEventSeen {
                    calendar,
                    event_id,
                    blocks: Some(interval),
                    ours: None,
                    rule: Some(rule),
                    ignored: None,
                    span: None,
                },
                Verdict::Ignored { reason, span, .. } if removed => {
                    ConnectionEvent::ExternalEventRemoved {
                        calendar,
                        event_id,
                        reason: Some(reason),
                        span,
                    }
                }
                Verdict::Ignored {
                    reason,
                    span,
                    booking_id,
                } => ConnectionEvent::ExternalEventSeen {
                    calendar,
                    event_id,
                    blocks: None,
                    ours: booking_id,
                    rule: None,
                    ignored: Some(reason),
                    span,
                },
            },
        );
    }
    events.extend(super::external_change::external_changes(
        state,
        page,
        zone,
        window.as_ref(),
        &policy.busy,
        policy.on_external_change,
        now,
    ));
    if let Some(cursor) = &page.completed_with {
        events.push(ConnectionEvent::SyncRoundCompleted {
            calendar: page.calendar.clone(),
            cursor: cursor.clone(),
            swept_generation: page.full_round.then_some(generation),
            at: now,
            zone: page
                .calendar_zone
                .clone()
                .filter(|z| cal.zone.as_deref() != Some(z.as_str())),
        });
    }
    events
}

/// Events for one free/busy read of a calendar shared as free/busy only.
///
/// Free/busy answers carry no event ids, so every read is a full round: a
/// new generation, one row per busy interval (its id derived from its
/// times), and a sweep of whatever the previous read had that this one has
/// not.
pub fn free_busy_events(
    state: &ConnectionState,
    calendar: &CalendarId,
    busy: &[super::interval::Interval],
    window: Option<WindowBase>,
    now: DateTime<Utc>,
) -> Vec<ConnectionEvent> {
    let Some(cal) = state.calendars.get(calendar) else {
        return Vec::new();
    };
    let generation = cal.generation + 1;
    let mut events = vec![ConnectionEvent::FullSyncStarted {
        calendar: calendar.clone(),
        generation,
        reason: "free/busy read".into(),
        window,
    }];
    events.extend(
        busy.iter()
            .map(|interval| ConnectionEvent::ExternalEventSeen {
                calendar: calendar.clone(),
                event_id: format!(
                    "freebusy:{calendar}:{}:{}",
                    interval.start().timestamp(),
                    interval.end().timestamp()
                ),
                blocks: Some(*interval),
                ours: None,
                rule: Some(BusyRule::FreeBusy),
                ignored: None,
                span: None,
            }),
    );
    events.push(ConnectionEvent::SyncRoundCompleted {
        calendar: calendar.clone(),
        cursor: "free-busy".into(),
        swept_generation: Some(generation),
        at: now,
        zone: None,
    });
    events
}

/// The backoff after `failures` failures in a row, from `now`.
fn backoff_until(
    policy: &SyncPolicy,
    failures: u32,
    retry_after_ms: Option<u64>,
    unit_random: f64,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let retry_after = retry_after_ms.map(Duration::from_millis);
    let delay = policy
        .backoff
        .next_delay(failures, retry_after, unit_random);
    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1))
}

/// A connection-wide backoff (throttling, the token endpoint).
pub fn connection_backoff_event(
    state: &ConnectionState,
    fault: &Fault,
    now: DateTime<Utc>,
    unit_random: f64,
    policy: &SyncPolicy,
) -> ConnectionEvent {
    let failures = state.consecutive_failures.saturating_add(1);
    // A further failure never shortens a backoff in force: with jitter the
    // eleventh delay can come out shorter than the tenth, and two failures
    // in the same instant (a write and a channel renewal) must not let the
    // second one's earlier end win.
    let until = backoff_until(policy, failures, fault.retry_after_ms, unit_random, now)
        .max(state.backoff_until.unwrap_or(now));
    ConnectionEvent::SyncFailed {
        kind: fault.label.clone(),
        message: truncate(&fault.message),
        consecutive_failures: failures,
        backoff_until: until,
        at: Some(now),
    }
}

/// The grant is gone (recorded once).
pub fn reauthorization_events(state: &ConnectionState, fault: &Fault) -> Vec<ConnectionEvent> {
    if state.needs_reauthorization.is_some() {
        Vec::new()
    } else {
        vec![ConnectionEvent::ReauthorizationRequired {
            reason: truncate(&fault.message),
        }]
    }
}

/// Events for a failed call of a sync round: of `calendar`'s own calls,
/// or (`None`) before any calendar was touched. See [`sync_scope`].
pub fn sync_failure_events(
    state: &ConnectionState,
    calendar: Option<&CalendarId>,
    fault: &Fault,
    now: DateTime<Utc>,
    unit_random: f64,
    policy: &SyncPolicy,
) -> Vec<ConnectionEvent> {
    let scope = sync_scope(fault, calendar.is_some());
    let cal = calendar.and_then(|c| state.calendars.get(c).map(|s| (c, s)));
    match (scope, cal) {
        (SyncScope::Reauthorize, _) => reauthorization_events(state, fault),
        (SyncScope::Connection, _) => {
            vec![connection_backoff_event(
                state,
                fault,
                now,
                unit_random,
                policy,
            )]
        }
        // The calendar was deselected meanwhile: nothing to record.
        (_, None) => Vec::new(),
        // A full round told to start over is not a cursor problem: back off
        // like any other failure, or a provider answering 410 to
        // everything would be listed back to back.
        (SyncScope::Resync, Some((calendar, sync))) if sync.cursor.is_none() => {
            calendar_transient(calendar, sync, fault, now, unit_random, policy)
        }
        // The cursor is dropped; the full round's first page opens the new
        // generation (so a resync is one generation, not two).
        (SyncScope::Resync, Some((calendar, sync))) => vec![ConnectionEvent::FullSyncStarted {
            calendar: calendar.clone(),
            generation: sync.generation,
            reason: truncate(&fault.message),
            window: None,
        }],
        (SyncScope::CalendarTransient, Some((calendar, sync))) => {
            calendar_transient(calendar, sync, fault, now, unit_random, policy)
        }
        (SyncScope::CalendarUnavailable, Some((calendar, sync))) => {
            vec![ConnectionEvent::CalendarSyncFailed {
                calendar: calendar.clone(),
                kind: fault.label.clone(),
                message: truncate(&fault.message),
                status: fault.status,
                unavailable: true,
                failures: sync.failures.saturating_add(1),
                retry_at: unavailable_probe_at(policy, unit_random, now),
                at: now,
            }]
        }
    }
}

/// When an unavailable calendar is probed again: `unavailable_retry` from
/// `now`, spread ±10 % so a fleet's broken calendars are not probed
/// together.
fn unavailable_probe_at(
    policy: &SyncPolicy,
    unit_random: f64,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let spread = policy.unavailable_retry.num_milliseconds() as f64
        * (0.9 + 0.2 * unit_random.clamp(0.0, 1.0));
    now + chrono::Duration::milliseconds(spread as i64)
}

fn calendar_transient(
    calendar: &CalendarId,
    sync: &super::state::CalendarSync,
    fault: &Fault,
    now: DateTime<Utc>,
    unit_random: f64,
    policy: &SyncPolicy,
) -> Vec<ConnectionEvent> {
    let failures = sync.failures.saturating_add(1);
    vec![ConnectionEvent::CalendarSyncFailed {
        calendar: calendar.clone(),
        kind: fault.label.clone(),
        message: truncate(&fault.message),
        status: fault.status,
        unavailable: false,
        failures,
        retry_at: backoff_until(policy, failures, fault.retry_after_ms, unit_random, now),
        at: now,
    }]
}

/// Events for a failed channel operation on `calendar`.
pub fn channel_failure_events(
    state: &ConnectionState,
    calendar: &CalendarId,
    op: &str,
    fault: &Fault,
    now: DateTime<Utc>,
    unit_random: f64,
    policy: &SyncPolicy,
) -> Vec<ConnectionEvent> {
    let Some(sync) = state.calendars.get(calendar) else {
        return Vec::new();
    };
    let failures = sync.channel_failures.saturating_add(1);
    let retry_at = match channel_scope(fault) {
        // The provider does not know the calendar (a 404 or 410 to opening
        // a channel; renewals of a lost channel are closed instead, see
        // `decide`). Retrying in seconds cannot help, and raced the first
        // sync's own 404 into a third call (the `isolation` drill): wait
        // as long as an unavailable calendar's probe. If the calendar does
        // exist, its polls keep it in sync meanwhile.
        ChannelScope::Gone => unavailable_probe_at(policy, unit_random, now),
        _ => backoff_until(policy, failures, fault.retry_after_ms, unit_random, now),
    };
    vec![ConnectionEvent::ChannelUpkeepFailed {
        calendar: calendar.clone(),
        op: op.to_string(),
        kind: fault.label.clone(),
        message: truncate(&fault.message),
        failures,
        retry_at,
        at: now,
    }]
}

/// The periodic poll interval of one connection: `base` spread by ±10 %,
/// deterministically per connection, so a fleet created at once does not
/// poll in lockstep (Google asks integrators to avoid synchronised polls).
pub fn poll_interval(
    base: chrono::Duration,
    connection: super::ids::ConnectionId,
) -> chrono::Duration {
    let bytes = connection.as_uuid();
    let spread = u16::from_le_bytes([bytes.as_bytes()[14], bytes.as_bytes()[15]]) as f64 / 65535.0;
    let factor = 0.9 + 0.2 * spread;
    chrono::Duration::milliseconds((base.num_milliseconds() as f64 * factor) as i64)
}

/// Bounds a provider message kept in the log.
pub fn truncate_message(s: &str) -> String {
    truncate(s)
}

fn truncate(s: &str) -> String {
    const MAX: usize = 500;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decide::{decide, ConnectionCommand};
    use crate::core::fault::{Fault, FaultKind};
    use crate::core::ids::{CalendarProvider, ExternalAccount, PlatformProviderId};
    use crate::core::state::ConnectionStatus;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn cal() -> CalendarId {
        CalendarId::parse("primary").unwrap()
    }

    fn created() -> ConnectionState {
        let c = ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse("p").unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse("a@example.com").unwrap(),
            calendars: vec![cal()],
            destination_calendar: None,
        };
        apply(ConnectionState::default(), c)
    }

    fn apply(state: ConnectionState, c: ConnectionCommand) -> ConnectionState {
        let d = decide(&state, &c, now()).unwrap();
        state.fold(&d.events)
    }

    fn google(id: &str, start: &str, end: &str) -> ProviderChange {
        ProviderChange::Google(
            serde_json::from_value(json!({
                "id": id, "status": "confirmed",
                "start": {"dateTime": start}, "end": {"dateTime": end}
            }))
            .unwrap(),
        )
    }

    fn tombstone(id: &str) -> ProviderChange {
        ProviderChange::Google(
            serde_json::from_value(json!({"id": id, "status": "cancelled"})).unwrap(),
        )
    }

    fn page(full: bool, changes: Vec<ProviderChange>, done: Option<&str>) -> FetchedPage {
        FetchedPage {
            calendar: cal(),
            full_round: full,
            changes,
            calendar_zone: Some("Europe/Berlin".into()),
            completed_with: done.map(String::from),
            first_page: false,
            window: None,
        }
    }

    fn failure(kind: FaultKind, retry_after_ms: Option<u64>, calendar: bool) -> ConnectionCommand {
        ConnectionCommand::RecordSyncFailure {
            calendar: calendar.then(cal),
            fault: Fault::new(kind, "f", "m").with_retry_after_ms(retry_after_ms),
            unit_random: 0.0,
            attempt_started: None,
        }
    }

    fn types(events: &[ConnectionEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type()).collect()
    }

    /// The channel retry after opening a channel failed with `kind`.
    fn channel_retry_after_open_fails(kind: FaultKind) -> chrono::Duration {
        let s = apply(
            created(),
            ConnectionCommand::RecordChannelFailure {
                calendar: cal(),
                op: "open".into(),
                channel_id: None,
                fault: Fault::new(kind, "f", "m"),
                unit_random: 0.5,
                attempt_started: None,
            },
        );
        s.calendars[&cal()].channel_retry_at.unwrap() - now()
    }

    #[test]
    fn a_calendar_the_provider_does_not_know_waits_an_hour_for_its_next_channel_open() {
        // A 404 to events.watch will be a 404 again in a second: waiting as
        // long as an unavailable calendar's probe keeps a missing calendar
        // at one watch and one list per hour.
        for kind in [FaultKind::NotFound, FaultKind::Gone] {
            let wait = channel_retry_after_open_fails(kind);
            assert_eq!(wait, SyncPolicy::default().unavailable_retry, "{kind:?}");
        }
        // A transient refusal backs off as before: seconds, not an hour.
        let wait = channel_retry_after_open_fails(FaultKind::Unavailable);
        assert!(wait < chrono::Duration::minutes(5), "{wait}");
    }

    #[test]
    fn a_first_sync_opens_generation_one_and_stores_the_cursor_only_at_the_end() {
        let s = created();
        let p1 = page(
            true,
            vec![google("a", "2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z")],
            None,
        );
        let e1 = page_events(&s, &p1, now(), &SyncPolicy::default());
        assert_eq!(types(&e1), ["full_sync_started", "external_event_seen"]);
        let s = s.fold(&e1);
        assert_eq!(
            s.calendars[&cal()].cursor,
            None,
            "no cursor before the last page"
        );
        let p2 = page(true, vec![tombstone("b")], Some("tok-1"));
        let e2 = page_events(&s, &p2, now(), &SyncPolicy::default());
        assert_eq!(
            types(&e2),
            ["external_event_removed", "sync_round_completed"]
        );
        assert!(matches!(
            e2.last(),
            Some(ConnectionEvent::SyncRoundCompleted {
                swept_generation: Some(1),
                ..
            })
        ));
        let s = s.fold(&e2);
        assert_eq!(s.calendars[&cal()].cursor.as_deref(), Some("tok-1"));
        assert_eq!(s.calendars[&cal()].last_success, Some(now()));
    }

    #[test]
    fn an_invalid_cursor_starts_a_new_generation_once() {
        let s = created();
        let e = page_events(
            &s,
            &page(true, vec![], Some("t1")),
            now(),
            &SyncPolicy::default(),
        );
        let s = s.fold(&e);
        let s = apply(s, failure(FaultKind::ResyncRequired, None, true));
        assert_eq!(s.calendars[&cal()].cursor, None);
        assert_eq!(s.calendars[&cal()].failures, 0, "a resync is not a failure");
        // The full round's first page opens generation 2, its later pages
        // no other, and its completion sweeps everything older.
        let first = FetchedPage {
            first_page: true,
            ..page(true, vec![], None)
        };
        let e = page_events(&s, &first, now(), &SyncPolicy::default());
        assert_eq!(types(&e), ["full_sync_started"]);
        let s = s.fold(&e);
        assert_eq!(s.calendars[&cal()].generation, 2);
        let e = page_events(
            &s,
            &page(true, vec![], Some("t2")),
            now(),
            &SyncPolicy::default(),
        );
        assert_eq!(types(&e), ["sync_round_completed"]);
        assert!(matches!(
            e[0],
            ConnectionEvent::SyncRoundCompleted {
                swept_generation: Some(2),
                ..
            }
        ));
        // A full round told to start over backs off instead of looping.
        let again = apply(s, failure(FaultKind::ResyncRequired, None, true));
        assert_eq!(again.calendars[&cal()].failures, 1);
        assert!(again.calendars[&cal()].retry_at.is_some());
    }

    #[test]
    fn the_first_page_of_every_full_round_starts_a_generation_with_its_window() {
        let s = created();
        let window = crate::core::window::WindowPolicy::default().base(now());
        let first = FetchedPage {
            first_page: true,
            window: Some(window),
            ..page(true, vec![], None)
        };
        let e = page_events(&s, &first, now(), &SyncPolicy::default());
        assert!(matches!(
            &e[0],
            ConnectionEvent::FullSyncStarted { generation: 1, window: Some(w), .. } if *w == window
        ));
        let s = s.fold(&e);
        // A re-base of a synced calendar: a new round, a new generation.
        let e = page_events(&s, &first, now(), &SyncPolicy::default());
        assert!(matches!(
            &e[0],
            ConnectionEvent::FullSyncStarted { generation: 2, .. }
        ));
    }

    #[test]
    fn a_calendars_transient_failure_backs_off_that_calendar_honouring_retry_after() {
        let mut s = created();
        for n in 1..=3 {
            s = apply(s, failure(FaultKind::Unavailable, Some(30_000), true));
            let c = &s.calendars[&cal()];
            assert_eq!(c.failures, n);
            assert!(c.retry_at.unwrap() >= now() + chrono::Duration::seconds(30));
        }
        assert_eq!(
            s.consecutive_failures, 0,
            "the connection does not back off"
        );
        assert_eq!(
            s.status(),
            ConnectionStatus::Backoff,
            "its only calendar does"
        );
        assert_eq!(s.error_count(), 3);
        let e = page_events(
            &s,
            &page(true, vec![], Some("t")),
            now(),
            &SyncPolicy::default(),
        );
        let s = s.fold(&e);
        assert_eq!(s.calendars[&cal()].failures, 0);
        assert_eq!(s.status(), ConnectionStatus::Active);
    }

    #[test]
    fn throttling_backs_off_the_whole_connection_and_a_success_resets_it() {
        let mut s = created();
        for n in 1..=3 {
            s = apply(s, failure(FaultKind::RateLimited, Some(30_000), true));
            assert_eq!(s.consecutive_failures, n);
            assert!(s.backoff_until.unwrap() >= now() + chrono::Duration::seconds(30));
        }
        assert_eq!(s.status(), ConnectionStatus::Backoff);
        let e = page_events(
            &s,
            &page(true, vec![], Some("t")),
            now(),
            &SyncPolicy::default(),
        );
        let s = s.fold(&e);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.backoff_until, None);
        assert_eq!(s.status(), ConnectionStatus::Active);
    }

    #[test]
    fn a_further_failure_never_shortens_the_backoff_in_force() {
        // Seen in the simulation (seed 38): two failures in one instant, the
        // second's jittered delay shorter than the first's; the connection
        // then listed inside the first's backoff.
        let mut s = created();
        s.consecutive_failures = 10;
        s.backoff_until = Some(now() + chrono::Duration::hours(1));
        let fault = Fault::new(FaultKind::RateLimited, "f", "m");
        for unit in [0.0, 0.5, 1.0] {
            match connection_backoff_event(&s, &fault, now(), unit, &SyncPolicy::default()) {
                ConnectionEvent::SyncFailed { backoff_until, .. } => {
                    assert!(backoff_until >= now() + chrono::Duration::hours(1))
                }
                other => panic!("{other:?}"),
            }
        }
        // A backoff already over does not count.
        s.backoff_until = Some(now() - chrono::Duration::hours(1));
        match connection_backoff_event(&s, &fault, now(), 0.0, &SyncPolicy::default()) {
            ConnectionEvent::SyncFailed { backoff_until, .. } => {
                assert!(backoff_until < now() + chrono::Duration::hours(1))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_missing_calendar_is_unavailable_and_probed_again_in_about_an_hour() {
        let s = apply(created(), failure(FaultKind::NotFound, None, true));
        let c = &s.calendars[&cal()];
        assert!(c.unavailable.is_some());
        let retry = c.retry_at.unwrap();
        assert!(retry >= now() + chrono::Duration::minutes(54));
        assert!(retry <= now() + chrono::Duration::minutes(66));
        assert_eq!(c.health().as_str(), "unavailable");
    }

    #[test]
    fn a_revoked_grant_stops_calls_until_reauthorised() {
        let reauth = failure(FaultKind::Reauthorize, None, false);
        let s = apply(created(), reauth.clone());
        assert_eq!(s.status(), ConnectionStatus::NeedsReauthorization);
        assert!(
            decide(&s, &reauth, now()).unwrap().events.is_empty(),
            "recorded once"
        );
        let d = decide(&s, &ConnectionCommand::RecordReauthorized, now()).unwrap();
        assert_eq!(s.fold(&d.events).status(), ConnectionStatus::Active);
    }

    #[test]
    fn notifications_are_deduplicated_by_the_folded_window() {
        let s = created();
        let n = ConnectionCommand::AcceptNotification {
            key: "google:chan-1:7".into(),
            channel_id: "chan-1".into(),
        };
        let first = decide(&s, &n, now()).unwrap();
        assert!(!first.duplicate);
        assert!(crate::core::inflight::asks_for(&s, &n, first.duplicate).sync_all);
        let s = s.fold(&first.events);
        let again = decide(&s, &n, now()).unwrap();
        assert!(again.duplicate);
        assert!(again.events.is_empty());
        assert_eq!(
            crate::core::inflight::asks_for(&s, &n, again.duplicate),
            Default::default(),
            "no extra sync work"
        );
        // The window survives a snapshot round trip.
        let restored: ConnectionState =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert!(decide(&restored, &n, now()).unwrap().duplicate);
    }

    #[test]
    fn poll_intervals_are_spread_within_ten_percent_and_stable() {
        let base = chrono::Duration::minutes(15);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let id = crate::core::ids::ConnectionId::new_random();
            let p = poll_interval(base, id);
            assert!(p >= chrono::Duration::seconds(810) && p <= chrono::Duration::seconds(990));
            assert_eq!(p, poll_interval(base, id));
            seen.insert(p.num_seconds());
        }
        assert!(seen.len() > 50, "intervals are not spread");
    }

    #[test]
    fn each_free_busy_read_replaces_the_previous_one() {
        let s = created();
        let t = |h: u32| Utc.with_ymd_and_hms(2026, 11, 25, h, 0, 0).unwrap();
        let a = crate::core::interval::Interval::new(t(9), t(10)).unwrap();
        let b = crate::core::interval::Interval::new(t(14), t(15)).unwrap();
        let first = free_busy_events(&s, &cal(), &[a, b], None, now());
        assert_eq!(
            types(&first),
            [
                "full_sync_started",
                "external_event_seen",
                "external_event_seen",
                "sync_round_completed"
            ]
        );
        let s = s.fold(&first);
        let second = free_busy_events(&s, &cal(), &[b], None, now());
        assert!(matches!(
            second.last(),
            Some(ConnectionEvent::SyncRoundCompleted {
                swept_generation: Some(2),
                ..
            })
        ));
    }

    #[test]
    fn own_outbound_events_never_block() {
        let s = created();
        let ours = ProviderChange::Google(
            serde_json::from_value(json!({
                "id": "csabc", "status": "confirmed",
                "start": {"dateTime": "2026-11-25T10:00:00Z"}, "end": {"dateTime": "2026-11-25T11:00:00Z"},
                "extendedProperties": {"private": {"calsyncBookingId": "bk-1"}}
            }))
            .unwrap(),
        );
        let e = page_events(
            &s,
            &page(false, vec![ours], None),
            now(),
            &SyncPolicy::default(),
        );
        assert!(matches!(
            &e[0],
            ConnectionEvent::ExternalEventSeen { blocks: None, ours: Some(b), .. } if b == "bk-1"
        ));
    }
}
