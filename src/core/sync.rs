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
use super::ids::CalendarId;
use super::outbound::CancelMode;
use super::state::ConnectionState;
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
}

/// How a failed provider call should be treated, as classified by the shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "class")]
pub enum FailureClass {
    /// Back off (rate limits, 5xx, timeouts, anything unexpected).
    Transient { retry_after_ms: Option<u64> },
    /// The calendar's cursor is invalid: resync it from scratch, now.
    ResyncRequired { calendar: CalendarId },
    /// The grant is gone: stop calling until re-authorised.
    Reauthorize,
}

/// The policies sync decisions follow.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncPolicy {
    pub busy: BusyPolicy,
    pub backoff: BackoffPolicy,
    /// How a cancelled booking's event is written (configuration, given to
    /// the decider; the op chosen is recorded in the intent).
    pub on_cancel: CancelMode,
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
    let mut events = Vec::with_capacity(page.changes.len() + 2);
    let mut generation = cal.generation;
    if page.full_round && !cal.full_sync_in_progress {
        generation += 1;
        events.push(ConnectionEvent::FullSyncStarted {
            calendar: page.calendar.clone(),
            generation,
            reason: if cal.cursor.is_none() && cal.last_success.is_none() {
                "first sync".into()
            } else {
                "cursor invalid".into()
            },
        });
    }
    let zone = page
        .calendar_zone
        .as_deref()
        .and_then(|z| resolve_zone(z).ok())
        .unwrap_or(chrono_tz::UTC);
    for change in &page.changes {
        let (event_id, decision) = match change {
            ProviderChange::Google(e) => (e.id.clone(), google_busy(e, zone, &policy.busy)),
            ProviderChange::Graph(e) => (e.id.clone(), graph_busy(e, zone, &policy.busy)),
        };
        if event_id.is_empty() {
            continue;
        }
        let calendar = page.calendar.clone();
        events.push(match decision {
            BusyDecision::Blocks(interval) => ConnectionEvent::ExternalEventSeen {
                calendar,
                event_id,
                blocks: Some(interval),
                ours: None,
            },
            BusyDecision::Free(FreeReason::Cancelled | FreeReason::Removed) => {
                ConnectionEvent::ExternalEventRemoved { calendar, event_id }
            }
            BusyDecision::Free(_) | BusyDecision::Invalid(_) => {
                ConnectionEvent::ExternalEventSeen {
                    calendar,
                    event_id,
                    blocks: None,
                    ours: None,
                }
            }
            BusyDecision::Ours { booking_id } => ConnectionEvent::ExternalEventSeen {
                calendar,
                event_id,
                blocks: None,
                ours: Some(booking_id),
            },
        });
    }
    if let Some(cursor) = &page.completed_with {
        events.push(ConnectionEvent::SyncRoundCompleted {
            calendar: page.calendar.clone(),
            cursor: cursor.clone(),
            swept_generation: page.full_round.then_some(generation),
            at: now,
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
            }),
    );
    events.push(ConnectionEvent::SyncRoundCompleted {
        calendar: calendar.clone(),
        cursor: "free-busy".into(),
        swept_generation: Some(generation),
        at: now,
    });
    events
}

/// Events for a failed attempt. `unit_random` in `[0, 1)` jitters the backoff.
pub fn failure_events(
    state: &ConnectionState,
    class: &FailureClass,
    kind: &str,
    message: &str,
    now: DateTime<Utc>,
    unit_random: f64,
    policy: &SyncPolicy,
) -> Vec<ConnectionEvent> {
    match class {
        FailureClass::Reauthorize => {
            if state.needs_reauthorization.is_some() {
                Vec::new()
            } else {
                vec![ConnectionEvent::ReauthorizationRequired {
                    reason: truncate(message),
                }]
            }
        }
        FailureClass::ResyncRequired { calendar } => match state.calendars.get(calendar) {
            Some(cal) => vec![ConnectionEvent::FullSyncStarted {
                calendar: calendar.clone(),
                generation: cal.generation + 1,
                reason: truncate(message),
            }],
            None => Vec::new(),
        },
        FailureClass::Transient { retry_after_ms } => {
            let failures = state.consecutive_failures.saturating_add(1);
            let retry_after = retry_after_ms.map(Duration::from_millis);
            let delay = policy
                .backoff
                .next_delay(failures, retry_after, unit_random);
            let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            vec![ConnectionEvent::SyncFailed {
                kind: kind.to_string(),
                message: truncate(message),
                consecutive_failures: failures,
                backoff_until: now + delay,
            }]
        }
    }
}

/// True when the connection may call its provider at `now`.
pub fn may_call_provider(state: &ConnectionState, now: DateTime<Utc>) -> bool {
    use super::state::Lifecycle;
    state.lifecycle == Lifecycle::Active
        && state.quarantined_at.is_none()
        && state.needs_reauthorization.is_none()
        && state.backoff_until.is_none_or(|until| until <= now)
}

/// When outbound writes left pending (a failed write, then a backoff that
/// may already have ended) should be tried again: at the end of the backoff,
/// and never sooner than half a second from now.
pub fn next_outbound_retry(state: &ConnectionState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    state
        .bookings
        .values()
        .any(|t| t.pending.is_some())
        .then(|| {
            state
                .backoff_until
                .unwrap_or(now)
                .max(now + chrono::Duration::milliseconds(500))
        })
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

/// When the connection next needs to wake up on its own: the end of its
/// backoff, or its next periodic poll (`poll_every` after the oldest
/// calendar's last success).
pub fn next_wakeup(
    state: &ConnectionState,
    poll_every: chrono::Duration,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    use super::state::Lifecycle;
    if state.lifecycle != Lifecycle::Active
        || state.needs_reauthorization.is_some()
        || state.quarantined_at.is_some()
    {
        return None;
    }
    if let Some(until) = state.backoff_until {
        if until > now {
            return Some(until);
        }
    }
    let oldest = state
        .calendars
        .values()
        .map(|c| c.last_success)
        .min()
        .flatten();
    Some(match oldest {
        Some(t) => (t + poll_every).max(now),
        None => now,
    })
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
    use crate::core::decide::{decide, ConnectionCommand, Effect};
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
        }
    }

    fn types(events: &[ConnectionEvent]) -> Vec<&'static str> {
        events.iter().map(|e| e.event_type()).collect()
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
        let s = apply(
            s,
            ConnectionCommand::RecordFailure {
                class: FailureClass::ResyncRequired { calendar: cal() },
                kind: "resync_required".into(),
                message: "410 fullSyncRequired".into(),
                unit_random: 0.5,
                attempt_started: None,
            },
        );
        assert_eq!(s.calendars[&cal()].generation, 2);
        assert_eq!(s.calendars[&cal()].cursor, None);
        // The full round's pages do not start yet another generation, and
        // its completion sweeps everything older than generation 2.
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
    }

    #[test]
    fn transient_failures_back_off_honouring_retry_after_and_success_resets() {
        let mut s = created();
        for n in 1..=3 {
            s = apply(
                s,
                ConnectionCommand::RecordFailure {
                    class: FailureClass::Transient {
                        retry_after_ms: Some(30_000),
                    },
                    kind: "rate_limited".into(),
                    message: "429".into(),
                    unit_random: 0.0,
                    attempt_started: None,
                },
            );
            assert_eq!(s.consecutive_failures, n);
            assert!(s.backoff_until.unwrap() >= now() + chrono::Duration::seconds(30));
        }
        assert_eq!(s.status(), ConnectionStatus::Backoff);
        assert!(!may_call_provider(&s, now()));
        assert!(may_call_provider(&s, s.backoff_until.unwrap()));
        assert_eq!(
            next_wakeup(&s, chrono::Duration::minutes(5), now()),
            s.backoff_until
        );
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
    fn a_revoked_grant_stops_calls_until_reauthorised() {
        let reauth = ConnectionCommand::RecordFailure {
            class: FailureClass::Reauthorize,
            kind: "reauthorize".into(),
            message: "invalid_grant".into(),
            unit_random: 0.5,
            attempt_started: None,
        };
        let s = apply(created(), reauth.clone());
        assert_eq!(s.status(), ConnectionStatus::NeedsReauthorization);
        assert!(!may_call_provider(&s, now() + chrono::Duration::days(30)));
        assert_eq!(next_wakeup(&s, chrono::Duration::minutes(5), now()), None);
        assert!(
            decide(&s, &reauth, now()).unwrap().events.is_empty(),
            "recorded once"
        );
        let d = decide(&s, &ConnectionCommand::RecordReauthorized, now()).unwrap();
        assert!(d.effects.contains(&Effect::Sync), "{:?}", d.effects);
        assert!(may_call_provider(&s.fold(&d.events), now()));
    }

    #[test]
    fn notifications_are_deduplicated_by_the_folded_window() {
        let s = created();
        let n = ConnectionCommand::AcceptNotification {
            key: "google:chan-1:7".into(),
            channel_id: "chan-1".into(),
        };
        let first = decide(&s, &n, now()).unwrap();
        assert_eq!(first.effects, vec![Effect::Sync]);
        assert!(!first.duplicate);
        let s = s.fold(&first.events);
        let again = decide(&s, &n, now()).unwrap();
        assert!(again.duplicate);
        assert!(
            again.events.is_empty() && again.effects.is_empty(),
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
        let first = free_busy_events(&s, &cal(), &[a, b], now());
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
        let second = free_busy_events(&s, &cal(), &[b], now());
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
