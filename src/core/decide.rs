//! `decide`: what happens to a connection when an input arrives.
//!
//! `decide(state, command, now)` is pure: it returns the events to append,
//! or a typed rejection. The actor appends the events and folds them with
//! [`ConnectionState::evolve`]; nothing else changes a connection. What the
//! connection *does* next (sync, channel upkeep, writes, when to wake) is
//! not decided here but by [`super::plan::next`] from the state after the
//! events, so one function owns every schedule.
//!
//! Commands that would change nothing (pausing a paused connection) decide
//! to no events: repeating a command is always safe.

use super::dedupe::DedupeKey;
use super::events::ConnectionEvent;
use super::fault::{channel_scope, write_verdict, ChannelScope, Fault, WriteVerdict};
use super::ids::{CalendarId, CalendarProvider, ExternalAccount, PlatformProviderId};
use super::outbound::{validate, Booking, OutboundOp, WriteOutcome};
use super::state::{ConnectionState, Lifecycle, WindowBase};
use super::sync::{
    channel_failure_events, connection_backoff_event, page_events, reauthorization_events,
    sync_failure_events, truncate_message, FetchedPage, SyncPolicy,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An instruction to a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum ConnectionCommand {
    Create {
        platform_provider_id: PlatformProviderId,
        provider: CalendarProvider,
        account: ExternalAccount,
        calendars: Vec<CalendarId>,
        destination_calendar: Option<CalendarId>,
    },
    SelectCalendars {
        calendars: Vec<CalendarId>,
        destination_calendar: Option<CalendarId>,
    },
    Pause {
        reason: String,
    },
    Resume,
    Remove {
        reason: String,
    },
    RecordCredentialsChanged,
    Quarantine {
        restarts: u32,
        window_secs: u64,
        last_error: String,
    },
    LiftQuarantine,
    /// A push notification for this connection (already authenticated by
    /// the edge). Duplicates of a key in the window are dropped.
    AcceptNotification {
        key: String,
        channel_id: String,
    },
    /// Ask for a sync of every calendar (operator, tests).
    RequestSync,
    /// A page of changes fetched by the shell.
    RecordPage(FetchedPage),
    /// A failed call of a sync round: of `calendar`'s own calls, or before
    /// any calendar was touched (`None`: loading the grant, refreshing it).
    RecordSyncFailure {
        calendar: Option<CalendarId>,
        fault: Fault,
        /// Uniform in `[0, 1)`: jitter for the backoff (randomness is an input).
        unit_random: f64,
        /// When the failed attempt loaded the grant. A refusal of a grant
        /// that has been replaced since says nothing about the new one.
        attempt_started: Option<DateTime<Utc>>,
    },
    /// Fresh credentials after a re-authorisation.
    RecordReauthorized,
    RecordChannelOpened {
        calendar: CalendarId,
        channel_id: String,
        resource_id: String,
        secret_sha256: String,
        expires_at: DateTime<Utc>,
    },
    RecordChannelRenewed {
        channel_id: String,
        expires_at: DateTime<Utc>,
    },
    RecordChannelClosed {
        channel_id: String,
        reason: String,
    },
    /// Opening or renewing `calendar`'s channel failed (`op`: `open` or
    /// `renew`; `channel_id` for a renewal).
    RecordChannelFailure {
        calendar: CalendarId,
        op: String,
        channel_id: Option<String>,
        fault: Fault,
        unit_random: f64,
        attempt_started: Option<DateTime<Utc>>,
    },
    /// A Graph lifecycle notification for one of our subscriptions.
    ChannelLifecycle {
        channel_id: String,
        event: LifecycleEvent,
    },
    /// A booking version from the platform, to appear in the destination
    /// calendar (older or repeated versions change nothing).
    ApplyBooking(Booking),
    /// The provider confirmed an outbound write.
    RecordOutboundResult {
        booking_id: String,
        version: u64,
        outcome: WriteOutcome,
    },
    /// An outbound write of `op` (credited with `version`) failed.
    RecordOutboundFailure {
        booking_id: String,
        version: u64,
        op: OutboundOp,
        fault: Fault,
        unit_random: f64,
        attempt_started: Option<DateTime<Utc>>,
    },
    /// An operator asks to try a failed booking's write again.
    RetryBooking {
        booking_id: String,
    },
    /// Mark which selected calendars are shared as free/busy only.
    SetFreeBusyOnly {
        calendars: Vec<CalendarId>,
    },
    /// The busy intervals of a free/busy-only calendar, as just read.
    RecordFreeBusy {
        calendar: CalendarId,
        busy: Vec<super::interval::Interval>,
        #[serde(default)]
        window: Option<WindowBase>,
    },
    /// Events the planner decided on its own (outbound intents recorded
    /// before their writes, channels forgotten at expiry). Internal only.
    RecordPlanned {
        events: Vec<ConnectionEvent>,
    },
}

/// Graph lifecycle notifications (PROVIDERS.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleEvent {
    /// Renew (or reauthorise) or delivery pauses.
    ReauthorizationRequired,
    /// The subscription is gone: recreate it, then resync.
    SubscriptionRemoved,
    /// Notifications were dropped: resync.
    Missed,
}

/// Why a command was refused. Each says what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rejection", content = "detail")]
pub enum Rejection {
    #[error("the connection does not exist")]
    NotFound,
    #[error("the connection already exists")]
    AlreadyExists,
    #[error("the connection was removed")]
    Removed,
    #[error("invalid command: {0}")]
    Invalid(String),
}

/// The outcome of a decision: events to append, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub events: Vec<ConnectionEvent>,
    /// The input repeated one already accepted (a duplicate notification).
    pub duplicate: bool,
}

impl Decision {
    fn none() -> Self {
        Decision::default()
    }
    fn one(event: ConnectionEvent) -> Self {
        Decision {
            events: vec![event],
            ..Default::default()
        }
    }
    fn of(events: Vec<ConnectionEvent>) -> Self {
        Decision {
            events,
            duplicate: false,
        }
    }
}

/// The most calendars one connection may select: keeps a connection's
/// state (and its provider calls per sync) bounded.
pub const MAX_CALENDARS: usize = 50;

pub fn decide(
    state: &ConnectionState,
    command: &ConnectionCommand,
    now: DateTime<Utc>,
) -> Result<Decision, Rejection> {
    decide_with(state, command, now, &SyncPolicy::default())
}

/// A refusal of a grant that was replaced after the attempt loaded it says
/// nothing about the new grant (whose own sync was asked for when it was
/// stored).
fn stale_refusal(
    state: &ConnectionState,
    fault: &Fault,
    attempt_started: Option<DateTime<Utc>>,
) -> bool {
    fault.kind == super::fault::FaultKind::Reauthorize
        && attempt_started
            .zip(state.credentials_changed_at)
            .is_some_and(|(started, changed)| changed >= started)
}

/// [`decide`] under explicit sync policies (busy rules, backoff).
pub fn decide_with(
    state: &ConnectionState,
    command: &ConnectionCommand,
    now: DateTime<Utc>,
    policy: &SyncPolicy,
) -> Result<Decision, Rejection> {
    use ConnectionCommand as C;
    match (state.lifecycle, command) {
        (
            Lifecycle::Uncreated,
            C::Create {
                platform_provider_id,
                provider,
                account,
                calendars,
                destination_calendar,
            },
        ) => {
            check_calendars(calendars, destination_calendar)?;
            Ok(Decision::one(ConnectionEvent::ConnectionCreated {
                platform_provider_id: platform_provider_id.clone(),
                provider: *provider,
                account: account.clone(),
                calendars: dedup(calendars),
                destination_calendar: destination_calendar.clone(),
            }))
        }
        (Lifecycle::Uncreated, _) => Err(Rejection::NotFound),
        (Lifecycle::Removed, C::Remove { .. }) => Ok(Decision::none()),
        // A removed connection may still record that its channels closed.
        (Lifecycle::Removed, C::RecordChannelClosed { channel_id, reason }) => {
            Ok(closed(state, channel_id, reason, now))
        }
        (Lifecycle::Removed, C::RecordPlanned { events }) => Ok(Decision::of(events.clone())),
        (Lifecycle::Removed, _) => Err(Rejection::Removed),
        (_, C::Create { .. }) => Err(Rejection::AlreadyExists),
        (
            _,
            C::SelectCalendars {
                calendars,
                destination_calendar,
            },
        ) => {
            check_calendars(calendars, destination_calendar)?;
            let calendars = dedup(calendars);
            let unchanged = state.profile.as_ref().is_some_and(|p| {
                p.calendars == calendars && p.destination_calendar == *destination_calendar
            });
            if unchanged {
                return Ok(Decision::none());
            }
            Ok(Decision::one(ConnectionEvent::CalendarsSelected {
                calendars,
                destination_calendar: destination_calendar.clone(),
            }))
        }
        (Lifecycle::Paused, C::Pause { .. }) => Ok(Decision::none()),
        (_, C::Pause { reason }) => Ok(Decision::one(ConnectionEvent::ConnectionPaused {
            reason: reason.clone(),
        })),
        (Lifecycle::Paused, C::Resume) => Ok(Decision::one(ConnectionEvent::ConnectionResumed {})),
        (_, C::Resume) => Ok(Decision::none()),
        // A removed connection keeps no grant: its sealed credentials are
        // erased in the same transaction (the projection deletes the row).
        (_, C::Remove { reason }) => Ok(Decision::of(vec![
            ConnectionEvent::ConnectionRemoved {
                reason: reason.clone(),
            },
            ConnectionEvent::CredentialsErased { at: now },
        ])),
        (_, C::RecordCredentialsChanged) => {
            Ok(Decision::one(ConnectionEvent::CredentialsChanged {
                at: now,
            }))
        }
        (
            _,
            C::Quarantine {
                restarts,
                window_secs,
                last_error,
            },
        ) => {
            if state.quarantined_at.is_some() {
                return Ok(Decision::none());
            }
            Ok(Decision::one(ConnectionEvent::ConnectionQuarantined {
                restarts: *restarts,
                window_secs: *window_secs,
                last_error: truncate(last_error, 500),
                at: now,
            }))
        }
        (_, C::LiftQuarantine) => {
            if state.quarantined_at.is_none() {
                return Ok(Decision::none());
            }
            Ok(Decision::one(ConnectionEvent::QuarantineLifted { at: now }))
        }
        (_, C::AcceptNotification { key, channel_id }) => {
            if key.is_empty() || key.len() > 1024 {
                return Err(Rejection::Invalid(
                    "notification key must be 1..=1024 bytes".into(),
                ));
            }
            if state.dedupe.contains(&DedupeKey::from_stored(key.clone())) {
                return Ok(Decision {
                    duplicate: true,
                    ..Decision::none()
                });
            }
            // Recorded in any state, so nothing is lost; the planner syncs
            // only when the gates allow.
            Ok(Decision::one(ConnectionEvent::NotificationAccepted {
                key: key.clone(),
                channel_id: channel_id.clone(),
                received_at: now,
            }))
        }
        (_, C::RequestSync) => Ok(Decision::none()),
        (_, C::RecordPage(page)) => Ok(Decision::of(page_events(state, page, now, policy))),
        (
            _,
            C::RecordSyncFailure {
                calendar,
                fault,
                unit_random,
                attempt_started,
            },
        ) => {
            if stale_refusal(state, fault, *attempt_started) {
                return Ok(Decision::none());
            }
            Ok(Decision::of(sync_failure_events(
                state,
                calendar.as_ref(),
                fault,
                now,
                *unit_random,
                policy,
            )))
        }
        (_, C::RecordReauthorized) => {
            if state.needs_reauthorization.is_none() {
                return Ok(Decision::none());
            }
            Ok(Decision::one(ConnectionEvent::Reauthorized { at: now }))
        }
        (
            _,
            C::RecordChannelOpened {
                calendar,
                channel_id,
                resource_id,
                secret_sha256,
                expires_at,
            },
        ) => {
            if state.channels.contains_key(channel_id) {
                return Ok(Decision::none());
            }
            Ok(Decision::one(ConnectionEvent::ChannelOpened {
                calendar: calendar.clone(),
                channel_id: channel_id.clone(),
                resource_id: resource_id.clone(),
                secret_sha256: secret_sha256.clone(),
                expires_at: *expires_at,
                at: Some(now),
            }))
        }
        (
            _,
            C::RecordChannelRenewed {
                channel_id,
                expires_at,
            },
        ) => match state.channels.get(channel_id) {
            Some(_) => Ok(Decision::one(ConnectionEvent::ChannelRenewed {
                channel_id: channel_id.clone(),
                expires_at: *expires_at,
                at: Some(now),
            })),
            None => Ok(Decision::none()),
        },
        (_, C::RecordChannelClosed { channel_id, reason }) => {
            Ok(closed(state, channel_id, reason, now))
        }
        (
            _,
            C::RecordChannelFailure {
                calendar,
                op,
                channel_id,
                fault,
                unit_random,
                attempt_started,
            },
        ) => {
            if stale_refusal(state, fault, *attempt_started) {
                return Ok(Decision::none());
            }
            Ok(match channel_scope(fault) {
                ChannelScope::Reauthorize => Decision::of(reauthorization_events(state, fault)),
                // A subscription gone at the provider on renewal: forget it;
                // the plan opens a new one.
                ChannelScope::Gone if channel_id.is_some() => closed(
                    state,
                    channel_id.as_deref().unwrap_or_default(),
                    "not found at the provider on renewal",
                    now,
                ),
                ChannelScope::Gone | ChannelScope::Backoff => Decision::of(channel_failure_events(
                    state,
                    calendar,
                    op,
                    fault,
                    now,
                    *unit_random,
                    policy,
                )),
            })
        }
        (_, C::ApplyBooking(booking)) => {
            validate(booking).map_err(Rejection::Invalid)?;
            let seen = state
                .bookings
                .get(booking.booking_id.as_str())
                .map(|t| t.latest.version);
            if seen.is_some_and(|v| booking.version <= v) {
                // Older or repeated: acknowledged, changes nothing.
                return Ok(Decision {
                    duplicate: true,
                    ..Decision::none()
                });
            }
            Ok(Decision::one(ConnectionEvent::BookingReceived {
                booking: booking.clone(),
            }))
        }
        (
            _,
            C::RecordOutboundResult {
                booking_id,
                version,
                outcome,
            },
        ) => {
            if !state.bookings.contains_key(booking_id) {
                return Err(Rejection::Invalid(format!("unknown booking {booking_id}")));
            }
            Ok(Decision::one(ConnectionEvent::OutboundWriteSucceeded {
                booking_id: booking_id.clone(),
                version: *version,
                outcome: outcome.clone(),
            }))
        }
        (
            _,
            C::RecordOutboundFailure {
                booking_id,
                version,
                op,
                fault,
                unit_random,
                attempt_started,
            },
        ) => {
            let Some(track) = state.bookings.get(booking_id) else {
                return Err(Rejection::Invalid(format!("unknown booking {booking_id}")));
            };
            if stale_refusal(state, fault, *attempt_started) {
                return Ok(Decision::none());
            }
            let failed =
                |failures: Option<u32>, retry_at, permanent| ConnectionEvent::OutboundWriteFailed {
                    booking_id: booking_id.clone(),
                    kind: fault.label.clone(),
                    message: truncate_message(&fault.message),
                    status: fault.status,
                    failures,
                    retry_at,
                    permanent,
                    at: Some(now),
                };
            Ok(match write_verdict(op, fault) {
                WriteVerdict::Outcome(outcome) => {
                    Decision::one(ConnectionEvent::OutboundWriteSucceeded {
                        booking_id: booking_id.clone(),
                        version: *version,
                        outcome,
                    })
                }
                WriteVerdict::Reauthorize => {
                    let mut events = vec![failed(None, None, false)];
                    events.extend(reauthorization_events(state, fault));
                    Decision::of(events)
                }
                WriteVerdict::Connection => Decision::of(vec![
                    failed(None, None, false),
                    connection_backoff_event(state, fault, now, *unit_random, policy),
                ]),
                WriteVerdict::Transient => {
                    let failures = track.failures.saturating_add(1);
                    let delay = policy.backoff.next_delay(
                        failures,
                        fault.retry_after_ms.map(std::time::Duration::from_millis),
                        *unit_random,
                    );
                    let retry_at = now
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
                    Decision::one(failed(Some(failures), Some(retry_at), false))
                }
                WriteVerdict::Permanent => Decision::one(failed(None, None, true)),
            })
        }
        (_, C::RetryBooking { booking_id }) => match state.bookings.get(booking_id) {
            None => Err(Rejection::Invalid(format!("unknown booking {booking_id}"))),
            Some(t) if t.failed.is_none() && t.retry_at.is_none() => Ok(Decision::none()),
            Some(_) => Ok(Decision::one(ConnectionEvent::OutboundRetryRequested {
                booking_id: booking_id.clone(),
                at: now,
            })),
        },
        (_, C::SetFreeBusyOnly { calendars }) => {
            if let Some(unknown) = calendars.iter().find(|c| !state.calendars.contains_key(*c)) {
                return Err(Rejection::Invalid(format!(
                    "calendar {unknown} is not selected on this connection"
                )));
            }
            let current: Vec<&CalendarId> = state
                .calendars
                .iter()
                .filter(|(_, c)| c.free_busy_only)
                .map(|(id, _)| id)
                .collect();
            let mut wanted: Vec<&CalendarId> = calendars.iter().collect();
            wanted.sort();
            wanted.dedup();
            if current == wanted {
                return Ok(Decision::none());
            }
            Ok(Decision::one(ConnectionEvent::FreeBusyOnlySelected {
                calendars: wanted.into_iter().cloned().collect(),
            }))
        }
        (
            _,
            C::RecordFreeBusy {
                calendar,
                busy,
                window,
            },
        ) => Ok(Decision::of(super::sync::free_busy_events(
            state, calendar, busy, *window, now,
        ))),
        (_, C::ChannelLifecycle { channel_id, event }) => match event {
            LifecycleEvent::Missed | LifecycleEvent::ReauthorizationRequired => {
                Ok(Decision::none())
            }
            LifecycleEvent::SubscriptionRemoved => {
                Ok(closed(state, channel_id, "subscriptionRemoved", now))
            }
        },
        (_, C::RecordPlanned { events }) => Ok(Decision::of(events.clone())),
    }
}

/// The channel is closed, if it is still known.
fn closed(state: &ConnectionState, channel_id: &str, reason: &str, now: DateTime<Utc>) -> Decision {
    if !state.channels.contains_key(channel_id) {
        return Decision::none();
    }
    Decision::one(ConnectionEvent::ChannelClosed {
        channel_id: channel_id.to_string(),
        reason: reason.to_string(),
        at: now,
    })
}

fn check_calendars(
    calendars: &[CalendarId],
    destination: &Option<CalendarId>,
) -> Result<(), Rejection> {
    if calendars.len() > MAX_CALENDARS {
        return Err(Rejection::Invalid(format!(
            "at most {MAX_CALENDARS} calendars per connection, got {}",
            calendars.len()
        )));
    }
    if calendars.is_empty() && destination.is_none() {
        return Err(Rejection::Invalid(
            "select at least one calendar or a destination calendar".into(),
        ));
    }
    Ok(())
}

fn dedup(calendars: &[CalendarId]) -> Vec<CalendarId> {
    let mut out: Vec<CalendarId> = Vec::with_capacity(calendars.len());
    for c in calendars {
        if !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::ConnectionStatus;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn cal(s: &str) -> CalendarId {
        CalendarId::parse(s).unwrap()
    }

    fn create() -> ConnectionCommand {
        ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse("p1").unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse("a@example.com").unwrap(),
            calendars: vec![cal("primary"), cal("primary")],
            destination_calendar: Some(cal("primary")),
        }
    }

    /// Runs commands the way the actor does: decide, then fold the events.
    fn run(commands: &[ConnectionCommand]) -> (ConnectionState, Vec<ConnectionEvent>) {
        let mut state = ConnectionState::default();
        let mut log = Vec::new();
        for c in commands {
            if let Ok(d) = decide(&state, c, now()) {
                state = state.fold(&d.events);
                log.extend(d.events);
            }
        }
        (state, log)
    }

    #[test]
    fn a_connection_must_exist_before_anything_else() {
        let s = ConnectionState::default();
        assert_eq!(
            decide(&s, &ConnectionCommand::Resume, now()),
            Err(Rejection::NotFound)
        );
        let (state, log) = run(&[create(), create()]);
        assert_eq!(log.len(), 1, "the second create is rejected");
        assert_eq!(
            state.profile.unwrap().calendars,
            vec![cal("primary")],
            "duplicate calendars are dropped"
        );
    }

    #[test]
    fn repeated_commands_are_idempotent() {
        let pause = ConnectionCommand::Pause { reason: "x".into() };
        let (_, log) = run(&[
            create(),
            pause.clone(),
            pause,
            ConnectionCommand::Resume,
            ConnectionCommand::Resume,
        ]);
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn quarantine_shows_in_status_until_lifted() {
        let q = ConnectionCommand::Quarantine {
            restarts: 5,
            window_secs: 60,
            last_error: "boom".into(),
        };
        let (state, _) = run(&[create(), q.clone(), q]);
        assert_eq!(state.status(), ConnectionStatus::Quarantined);
        let (state, _) = run(&[
            create(),
            ConnectionCommand::Quarantine {
                restarts: 5,
                window_secs: 60,
                last_error: "boom".into(),
            },
            ConnectionCommand::LiftQuarantine,
        ]);
        assert_eq!(state.status(), ConnectionStatus::Active);
    }

    #[test]
    fn a_new_grant_asks_for_a_sync_of_every_calendar() {
        // Created before its grant: nothing could be synced yet. Storing the
        // grant must not wait for the next poll.
        let (state, _) = run(&[create()]);
        let c = ConnectionCommand::RecordCredentialsChanged;
        let d = decide(&state, &c, now()).unwrap();
        assert_eq!(d.events.len(), 1);
        assert!(crate::core::inflight::asks_for(&state, &c, d.duplicate).sync_all);
    }

    fn refusal(started: Option<DateTime<Utc>>) -> ConnectionCommand {
        ConnectionCommand::RecordSyncFailure {
            calendar: None,
            fault: Fault::new(
                crate::core::fault::FaultKind::Reauthorize,
                "reauthorize",
                "no credentials stored",
            ),
            unit_random: 0.5,
            attempt_started: started,
        }
    }

    #[test]
    fn a_refusal_of_a_replaced_grant_is_ignored() {
        let (state, _) = run(&[create()]);
        let earlier = now() - chrono::Duration::seconds(1);
        let d = decide(&state, &ConnectionCommand::RecordCredentialsChanged, now()).unwrap();
        let state = state.fold(&d.events);
        // The attempt loaded the grant before the new one was stored.
        assert_eq!(
            decide(&state, &refusal(Some(earlier)), now()),
            Ok(Decision::none())
        );
        // An attempt with the new grant that is refused still counts.
        let later = now() + chrono::Duration::seconds(1);
        let d = decide(&state, &refusal(Some(later)), later).unwrap();
        assert_eq!(
            state.fold(&d.events).status(),
            ConnectionStatus::NeedsReauthorization
        );
    }

    #[test]
    fn a_permanent_write_failure_fails_only_its_booking_until_it_changes_or_is_retried() {
        let booking = |n: u8, version| Booking {
            booking_id: crate::core::ids::BookingId::parse(format!("bk-{n}")).unwrap(),
            version,
            status: crate::core::outbound::BookingStatus::Confirmed,
            start: now(),
            end: now() + chrono::Duration::hours(1),
            time_zone: "UTC".into(),
            title: "t".into(),
            attendees: vec![],
        };
        let (state, _) = run(&[
            create(),
            ConnectionCommand::ApplyBooking(booking(1, 1)),
            ConnectionCommand::ApplyBooking(booking(2, 1)),
        ]);
        let refused = ConnectionCommand::RecordOutboundFailure {
            booking_id: "bk-1".into(),
            version: 1,
            op: OutboundOp::Create { generation: 0 },
            fault: Fault::new(
                crate::core::fault::FaultKind::Rejected,
                "rejected",
                "invalid attendee",
            )
            .with_status(400),
            unit_random: 0.5,
            attempt_started: None,
        };
        let events = decide(&state, &refused, now()).unwrap().events;
        let state = state.fold(&events);
        let failed = state.bookings["bk-1"].failed.as_ref().unwrap();
        assert_eq!(failed.status, Some(400));
        assert!(state.bookings["bk-2"].failed.is_none());
        assert_eq!(
            state.consecutive_failures, 0,
            "the connection does not back off"
        );
        assert_eq!(state.status(), ConnectionStatus::Degraded);
        // An operator retry clears it; so does a new version.
        let retried = ConnectionCommand::RetryBooking {
            booking_id: "bk-1".into(),
        };
        let after = state
            .clone()
            .fold(&decide(&state, &retried, now()).unwrap().events);
        assert!(after.bookings["bk-1"].failed.is_none());
        let changed = ConnectionCommand::ApplyBooking(booking(1, 2));
        let after = state
            .clone()
            .fold(&decide(&state, &changed, now()).unwrap().events);
        assert!(after.bookings["bk-1"].failed.is_none());
    }

    #[test]
    fn removed_connections_refuse_everything_but_remove() {
        let (state, _) = run(&[create(), ConnectionCommand::Remove { reason: "x".into() }]);
        assert_eq!(
            decide(&state, &ConnectionCommand::Resume, now()),
            Err(Rejection::Removed)
        );
        assert_eq!(
            decide(
                &state,
                &ConnectionCommand::Remove { reason: "y".into() },
                now()
            ),
            Ok(Decision::none())
        );
    }

    #[test]
    fn selecting_nothing_or_too_much_is_invalid() {
        let (state, _) = run(&[create()]);
        let none = ConnectionCommand::SelectCalendars {
            calendars: vec![],
            destination_calendar: None,
        };
        assert!(matches!(
            decide(&state, &none, now()),
            Err(Rejection::Invalid(_))
        ));
        let many = ConnectionCommand::SelectCalendars {
            calendars: (0..51).map(|i| cal(&format!("c{i}"))).collect(),
            destination_calendar: None,
        };
        assert!(matches!(
            decide(&state, &many, now()),
            Err(Rejection::Invalid(_))
        ));
    }

    fn fault_kind() -> impl Strategy<Value = crate::core::fault::FaultKind> {
        use crate::core::fault::FaultKind as K;
        prop_oneof![
            Just(K::Reauthorize),
            Just(K::RateLimited),
            Just(K::Unavailable),
            Just(K::ResyncRequired),
            Just(K::NotFound),
            Just(K::Gone),
            Just(K::Duplicate),
            Just(K::IdRetired),
            Just(K::PreconditionFailed),
            Just(K::Rejected),
        ]
    }

    /// Google events as a sync page may carry them: timed, all-day,
    /// tombstones, free, declined and our own.
    fn change() -> impl Strategy<Value = crate::core::wire::ProviderChange> {
        (0u8..6, 0u8..5, 0i64..48).prop_map(|(id, shape, hour)| {
            let start = now() + chrono::Duration::hours(hour);
            let json = match shape {
                0 => serde_json::json!({"id": format!("e{id}"), "status": "cancelled"}),
                1 => serde_json::json!({"id": format!("e{id}"),
                    "start": {"date": "2026-11-25"}, "end": {"date": "2026-11-26"}}),
                2 => serde_json::json!({"id": format!("e{id}"), "transparency": "transparent",
                    "start": {"dateTime": start.to_rfc3339()},
                    "end": {"dateTime": (start + chrono::Duration::hours(1)).to_rfc3339()}}),
                3 => serde_json::json!({"id": format!("e{id}"),
                    "start": {"dateTime": start.to_rfc3339()},
                    "end": {"dateTime": (start + chrono::Duration::hours(1)).to_rfc3339()},
                    "extendedProperties": {"private": {"calsyncBookingId": "bk-1"}}}),
                _ => serde_json::json!({"id": format!("e{id}"),
                    "start": {"dateTime": start.to_rfc3339()},
                    "end": {"dateTime": (start + chrono::Duration::hours(1)).to_rfc3339()}}),
            };
            crate::core::wire::ProviderChange::Google(serde_json::from_value(json).unwrap())
        })
    }

    fn command() -> impl Strategy<Value = ConnectionCommand> {
        let cal = prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(cal);
        let booking =
            (0u8..3, 1u64..4, any::<bool>()).prop_map(|(n, version, cancelled)| Booking {
                booking_id: crate::core::ids::BookingId::parse(format!("bk-{n}")).unwrap(),
                version,
                status: if cancelled {
                    crate::core::outbound::BookingStatus::Cancelled
                } else {
                    crate::core::outbound::BookingStatus::Confirmed
                },
                start: now(),
                end: now() + chrono::Duration::hours(1),
                time_zone: "UTC".into(),
                title: "t".into(),
                attendees: vec![],
            });
        prop_oneof![
            Just(create()),
            (
                proptest::collection::vec(cal.clone(), 0..3),
                proptest::option::of(cal.clone())
            )
                .prop_map(|(calendars, destination_calendar)| {
                    ConnectionCommand::SelectCalendars {
                        calendars,
                        destination_calendar,
                    }
                }),
            Just(ConnectionCommand::Pause { reason: "p".into() }),
            Just(ConnectionCommand::Resume),
            Just(ConnectionCommand::Remove { reason: "r".into() }),
            Just(ConnectionCommand::RecordCredentialsChanged),
            Just(ConnectionCommand::Quarantine {
                restarts: 3,
                window_secs: 10,
                last_error: "e".into()
            }),
            Just(ConnectionCommand::LiftQuarantine),
            (0u8..6).prop_map(|k| ConnectionCommand::AcceptNotification {
                key: format!("google:ch:{k}"),
                channel_id: "ch".into()
            }),
            Just(ConnectionCommand::RequestSync),
            (proptest::option::of(cal.clone()), fault_kind(), 0.0f64..1.0).prop_map(
                |(calendar, kind, r)| ConnectionCommand::RecordSyncFailure {
                    calendar,
                    fault: Fault::new(kind, "f", "m").with_status(503),
                    unit_random: r,
                    attempt_started: None,
                }
            ),
            (cal.clone(), fault_kind()).prop_map(|(calendar, kind)| {
                ConnectionCommand::RecordChannelFailure {
                    calendar,
                    op: "open".into(),
                    channel_id: None,
                    fault: Fault::new(kind, "f", "m"),
                    unit_random: 0.5,
                    attempt_started: None,
                }
            }),
            Just(ConnectionCommand::RecordReauthorized),
            (
                cal.clone(),
                any::<bool>(),
                any::<bool>(),
                proptest::collection::vec(change(), 0..6),
                proptest::option::of(Just("cursor".to_string()))
            )
                .prop_map(|(calendar, full, first, changes, done)| {
                    ConnectionCommand::RecordPage(crate::core::sync::FetchedPage {
                        calendar,
                        full_round: full,
                        changes,
                        calendar_zone: Some("Europe/Berlin".into()),
                        completed_with: done,
                        first_page: first,
                        window: full
                            .then(|| crate::core::window::WindowPolicy::default().base(now())),
                    })
                }),
            booking.prop_map(ConnectionCommand::ApplyBooking),
            (0u8..3, fault_kind()).prop_map(|(n, kind)| ConnectionCommand::RecordOutboundFailure {
                booking_id: format!("bk-{n}"),
                version: 1,
                op: OutboundOp::Create { generation: 0 },
                fault: Fault::new(kind, "f", "m"),
                unit_random: 0.5,
                attempt_started: None,
            }),
            (0u8..3).prop_map(|n| ConnectionCommand::RecordOutboundResult {
                booking_id: format!("bk-{n}"),
                version: 1,
                outcome: WriteOutcome::Created {
                    external_event_id: format!("ev-{n}"),
                    etag: None
                },
            }),
            (0u8..3).prop_map(|n| ConnectionCommand::RetryBooking {
                booking_id: format!("bk-{n}")
            }),
        ]
    }

    proptest! {
        /// Folding the emitted events reproduces the state the decider saw,
        /// and any snapshot plus its tail equals the full fold.
        #[test]
        fn folding_emitted_events_reproduces_the_decided_state(
            commands in proptest::collection::vec(command(), 0..40),
            split in 0usize..40,
        ) {
            let (state, log) = run(&commands);
            prop_assert_eq!(&ConnectionState::default().fold(&log), &state);
            prop_assert_eq!(state.version as usize, log.len());
            let split = split.min(log.len());
            let snapshot = ConnectionState::default().fold(&log[..split]);
            let restored: ConnectionState =
                serde_json::from_str(&serde_json::to_string(&snapshot).unwrap()).unwrap();
            prop_assert_eq!(restored.fold(&log[split..]), state);
        }

        /// A calendar's failure never touches another calendar's sync state.
        #[test]
        fn one_calendars_failure_leaves_the_others_alone(
            commands in proptest::collection::vec(command(), 0..30),
            kind in fault_kind(),
        ) {
            let (state, _) = run(&commands);
            let failure = ConnectionCommand::RecordSyncFailure {
                calendar: Some(cal("a")),
                fault: Fault::new(kind, "f", "m"),
                unit_random: 0.5,
                attempt_started: None,
            };
            if let Ok(d) = decide(&state, &failure, now()) {
                let after = state.clone().fold(&d.events);
                for (id, sync) in &state.calendars {
                    if *id != cal("a") {
                        prop_assert_eq!(&after.calendars[id], sync);
                    }
                }
            }
        }

        /// Every event the decider emits survives the log's type/payload split.
        #[test]
        fn emitted_events_round_trip_through_the_log_format(
            commands in proptest::collection::vec(command(), 0..20),
        ) {
            let (_, log) = run(&commands);
            for e in &log {
                let (ty, payload) = e.to_parts().unwrap();
                let text = payload.to_string();
                let back = ConnectionEvent::from_parts(ty, e.schema_version(), payload).unwrap();
                prop_assert_eq!(&back, e);
                // Replay's decode, straight from the stored text, agrees.
                let direct = ConnectionEvent::from_json(ty, e.schema_version(), text.as_bytes()).unwrap();
                prop_assert_eq!(&direct, e);
            }
        }
    }
}

#[cfg(test)]
#[path = "decide_outbound_tests.rs"]
mod outbound_tests;

#[cfg(test)]
#[path = "decide_sync_tests.rs"]
mod sync_tests;
