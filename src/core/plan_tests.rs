//! The planner's promises: every gate state for every kind of call, nothing
//! spins over virtual days whatever the provider answers, one failing
//! calendar or booking never holds back the others.

use super::*;
use crate::core::decide::{decide_with, ConnectionCommand};
use crate::core::fault::{Fault, FaultKind};
use crate::core::gate::settings_gate;
use crate::core::ids::{BookingId, CalendarProvider, ExternalAccount, PlatformProviderId};
use crate::core::inflight::{asks_for, Task};
use crate::core::outbound::{Booking, BookingStatus, WriteOutcome};
use crate::core::sync::FetchedPage;
use chrono::TimeZone;
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

fn cal(s: &str) -> CalendarId {
    CalendarId::parse(s).unwrap()
}

fn id() -> ConnectionId {
    ConnectionId::from_uuid(uuid::Uuid::from_u128(7))
}

fn policy() -> Policy {
    Policy::default()
}

/// A connection driven the way the actor drives it: decide, fold, plan.
struct Conn {
    state: ConnectionState,
    inflight: InFlight,
    policy: Policy,
    view: GateView,
    now: DateTime<Utc>,
}

impl Conn {
    fn new(provider: CalendarProvider, calendars: &[&str]) -> Conn {
        let mut c = Conn {
            state: ConnectionState::default(),
            inflight: InFlight::default(),
            policy: policy(),
            view: GateView::all_open(true),
            now: t0(),
        };
        c.command(ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse("p").unwrap(),
            provider,
            account: ExternalAccount::parse("a@example.com").unwrap(),
            calendars: calendars.iter().map(|c| cal(c)).collect(),
            destination_calendar: Some(cal(calendars[0])),
        });
        c
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            id: id(),
            view: self.view,
            policy: &self.policy,
            now: self.now,
        }
    }

    fn command(&mut self, command: ConnectionCommand) {
        let d = decide_with(&self.state, &command, self.now, &self.policy.sync).unwrap();
        let ask = asks_for(&self.state, &command, d.duplicate);
        self.state = self.state.clone().fold(&d.events);
        self.inflight.asked(ask, None);
    }

    fn plan(&self) -> Next {
        next(&self.state, &self.inflight, &self.ctx())
    }

    /// Every calendar synced once, at `now`.
    fn synced(mut self) -> Conn {
        for calendar in self.state.calendars.keys().cloned().collect::<Vec<_>>() {
            self.page(&calendar, true);
        }
        self.inflight = InFlight::default();
        self
    }

    fn page(&mut self, calendar: &CalendarId, full: bool) {
        self.command(ConnectionCommand::RecordPage(FetchedPage {
            calendar: calendar.clone(),
            full_round: full,
            changes: vec![],
            calendar_zone: None,
            completed_with: Some("cursor".into()),
            first_page: true,
            window: full.then(|| self.policy.window.base(self.now)),
        }));
    }

    fn book(&mut self, n: u8) {
        let start = self.now + Duration::days(1);
        self.command(ConnectionCommand::ApplyBooking(Booking {
            booking_id: BookingId::parse(format!("bk-{n}")).unwrap(),
            version: 1,
            status: BookingStatus::Confirmed,
            start,
            end: start + Duration::hours(1),
            time_zone: "UTC".into(),
            title: "t".into(),
            attendees: vec![],
        }));
    }
}

fn fault(kind: FaultKind, status: u16) -> Fault {
    Fault::new(kind, "f", "m").with_status(status)
}

// ------------------------------------------------------ every gate state --

fn view(bits: u8) -> GateView {
    GateView {
        sync_enabled: bits & 1 != 0,
        jobs_enabled: bits & 2 != 0,
        webhooks_enabled: bits & 4 != 0,
        production: bits & 8 != 0,
        provider_allowlisted: bits & 16 != 0,
        connection_allowlisted: bits & 32 != 0,
        public_url: bits & 64 != 0,
    }
}

/// docs/FLAGS.md's table, written out independently of the gate.
fn allowed(v: &GateView, call: Call) -> bool {
    let listed = !v.production || (v.provider_allowlisted && v.connection_allowlisted);
    listed
        && v.sync_enabled
        && match call {
            Call::Sync | Call::Write | Call::ChannelClose => true,
            Call::Poll => v.jobs_enabled,
            Call::ChannelUpkeep => v.webhooks_enabled && v.public_url,
        }
}

/// A connection with work of every kind due: a never-synced calendar
/// (sync), one synced long ago (poll), a queued booking (write), a calendar
/// without a channel (upkeep) and a channel of a deselected calendar
/// (close).
fn everything_due() -> Conn {
    let mut c = Conn::new(CalendarProvider::Google, &["fresh", "old", "gone"]);
    let old = cal("old");
    c.page(&old, true);
    c.command(ConnectionCommand::RecordChannelOpened {
        calendar: cal("gone"),
        channel_id: "ch-gone".into(),
        resource_id: "r".into(),
        secret_sha256: "00".into(),
        expires_at: c.now + Duration::days(7),
    });
    c.command(ConnectionCommand::SelectCalendars {
        calendars: vec![cal("fresh"), cal("old")],
        destination_calendar: Some(cal("fresh")),
    });
    c.book(1);
    c.inflight = InFlight::default();
    c.now += Duration::hours(2);
    c
}

#[test]
fn every_gate_state_plans_exactly_the_calls_it_allows() {
    for bits in 0..128u8 {
        let mut c = everything_due();
        c.view = view(bits);
        let n = c.plan();
        let rounds: Vec<&CalendarRound> = n.sync.iter().flat_map(|s| &s.rounds).collect();
        let synced = |name: &str| rounds.iter().any(|r| r.calendar == cal(name));
        let opens = n
            .channels
            .iter()
            .any(|s| matches!(s, ChannelStep::Open { .. }));
        let closes = n
            .channels
            .iter()
            .any(|s| matches!(s, ChannelStep::Close { .. }));
        let v = c.view;
        assert_eq!(synced("fresh"), allowed(&v, Call::Sync), "{v:?} first sync");
        assert_eq!(synced("old"), allowed(&v, Call::Poll), "{v:?} poll");
        assert_eq!(n.writes.is_some(), allowed(&v, Call::Write), "{v:?} write");
        assert_eq!(opens, allowed(&v, Call::ChannelUpkeep), "{v:?} open");
        assert_eq!(closes, allowed(&v, Call::ChannelClose), "{v:?} close");
        // Intents are recorded only for writes about to run.
        let intents = n
            .events
            .iter()
            .any(|e| matches!(e, ConnectionEvent::OutboundIntentRecorded { .. }));
        assert_eq!(intents, n.writes.is_some());
        for call in &n.wake_for {
            assert!(allowed(&v, *call), "{v:?} wakes for {call:?}");
        }
    }
}

#[test]
fn lifecycle_states_plan_nothing_but_a_removed_connections_channel_closes() {
    for state in ["paused", "quarantined", "reauth", "removed"] {
        let mut c = everything_due();
        c.command(match state {
            "paused" => ConnectionCommand::Pause { reason: "x".into() },
            "quarantined" => ConnectionCommand::Quarantine {
                restarts: 6,
                window_secs: 60,
                last_error: "x".into(),
            },
            "reauth" => ConnectionCommand::RecordSyncFailure {
                calendar: None,
                fault: fault(FaultKind::Reauthorize, 400),
                unit_random: 0.5,
                attempt_started: None,
            },
            _ => ConnectionCommand::Remove { reason: "x".into() },
        });
        let n = c.plan();
        assert!(n.sync.is_none() && n.writes.is_none(), "{state}: {n:?}");
        assert_eq!(n.wake_at, None, "{state} needs no timer");
        let only_closes = n
            .channels
            .iter()
            .all(|s| matches!(s, ChannelStep::Close { .. }));
        assert!(only_closes, "{state}: {:?}", n.channels);
        assert_eq!(!n.channels.is_empty(), state == "removed", "{state}");
    }
}

#[test]
fn work_held_by_a_gate_is_planned_once_the_gate_opens() {
    let mut c = Conn::new(CalendarProvider::Google, &["primary"]).synced();
    c.view = GateView::new(
        &crate::core::settings::SettingsState::default(),
        CalendarProvider::Google,
        id(),
        true,
    );
    c.book(1);
    let n = c.plan();
    assert!(n.is_idle() && n.wake_at.is_none(), "{n:?}");
    assert!(
        c.state.bookings["bk-1"].pending.is_none(),
        "no intent while gated"
    );
    assert_eq!(
        booking_wait(&c.state, "bk-1", &c.ctx()),
        Some(crate::core::gate::Wait::SyncDisabled)
    );
    c.view = GateView::all_open(true);
    assert_eq!(booking_wait(&c.state, "bk-1", &c.ctx()), None);
    let n = c.plan();
    assert_eq!(n.writes.map(|w| w.bookings), Some(vec!["bk-1".to_string()]));
}

#[test]
fn a_waiting_booking_says_which_gate_holds_it() {
    let mut c = Conn::new(CalendarProvider::Google, &["primary"]).synced();
    c.book(1);
    let wait = |c: &Conn| booking_wait(&c.state, "bk-1", &c.ctx()).map(|w| w.code());
    c.view = GateView {
        production: true,
        provider_allowlisted: true,
        ..GateView::all_open(true)
    };
    assert_eq!(wait(&c), Some("connection_not_allowlisted"));
    c.view.connection_allowlisted = true;
    assert_eq!(wait(&c), None);
    c.command(ConnectionCommand::Pause { reason: "x".into() });
    assert_eq!(wait(&c), Some("paused"));
}

#[test]
fn resume_and_a_new_grant_sync_at_once() {
    let mut c = Conn::new(CalendarProvider::Google, &["primary"]).synced();
    c.command(ConnectionCommand::Pause { reason: "x".into() });
    c.now += Duration::seconds(5);
    assert!(c.plan().sync.is_none());
    c.command(ConnectionCommand::Resume);
    let n = c.plan();
    assert!(n.sync.is_some_and(|s| s.prompted), "resume syncs at once");
    let mut c = Conn::new(CalendarProvider::Google, &["primary"]).synced();
    c.now += Duration::seconds(5);
    c.command(ConnectionCommand::RecordCredentialsChanged);
    assert!(c.plan().sync.is_some(), "a new grant syncs at once");
}

// ------------------------------------------------------------- isolation --

#[test]
fn a_missing_calendar_listed_first_never_holds_back_the_healthy_one() {
    for order in [["aaa-missing", "primary"], ["primary", "zzz-missing"]] {
        let mut c = Conn::new(CalendarProvider::Google, &order);
        let missing = cal(order.iter().find(|c| c.contains("missing")).unwrap());
        let n = c.plan();
        assert_eq!(n.sync.as_ref().map(|s| s.rounds.len()), Some(2));
        c.inflight
            .sync_started(&[missing.clone(), cal("primary")], c.now);
        c.command(ConnectionCommand::RecordSyncFailure {
            calendar: Some(missing.clone()),
            fault: fault(FaultKind::NotFound, 404),
            unit_random: 0.5,
            attempt_started: None,
        });
        c.page(&cal("primary"), true);
        c.inflight.finished(Task::Sync, 2, true, c.now);
        assert_eq!(c.state.consecutive_failures, 0, "{order:?}");
        assert!(c.state.calendars[&cal("primary")].cursor.is_some());
        // A notification for the healthy calendar syncs it alone, at once.
        c.now += Duration::seconds(1);
        c.inflight.asked(
            crate::core::inflight::Ask {
                sync: vec![cal("primary")],
                ..Default::default()
            },
            None,
        );
        let n = c.plan();
        let rounds: Vec<CalendarId> = n
            .sync
            .unwrap()
            .rounds
            .into_iter()
            .map(|r| r.calendar)
            .collect();
        assert_eq!(rounds, vec![cal("primary")], "{order:?}");
        // The missing calendar waits about an hour.
        let retry = c.state.calendars[&missing].retry_at.unwrap();
        assert!(retry >= c.now + Duration::minutes(50), "{order:?}");
    }
}

#[test]
fn a_booking_that_fails_for_good_never_blocks_the_ones_after_it() {
    let mut c = Conn::new(CalendarProvider::Google, &["primary"]).synced();
    for n in 0..20 {
        c.book(n);
    }
    let n = c.plan();
    let writes = n.writes.unwrap();
    assert_eq!(writes.bookings.len(), 20);
    c.command(ConnectionCommand::RecordPlanned { events: n.events });
    c.inflight.outbound_started();
    for b in &writes.bookings {
        let version = 1;
        if b == "bk-0" {
            c.command(ConnectionCommand::RecordOutboundFailure {
                booking_id: b.clone(),
                version,
                op: OutboundOp::Create { generation: 0 },
                fault: fault(FaultKind::Duplicate, 409),
                unit_random: 0.5,
                attempt_started: None,
            });
        } else {
            c.command(ConnectionCommand::RecordOutboundResult {
                booking_id: b.clone(),
                version,
                outcome: WriteOutcome::Created {
                    external_event_id: format!("ev-{b}"),
                    etag: None,
                },
            });
        }
    }
    c.inflight.finished(Task::Outbound, 20, true, c.now);
    let written = c
        .state
        .bookings
        .values()
        .filter(|t| t.written_version == Some(1))
        .count();
    assert_eq!(written, 19);
    assert!(c.state.bookings["bk-0"].failed.is_some());
    c.now += Duration::hours(3);
    assert!(
        c.plan().writes.is_none(),
        "a failed write waits for a change"
    );
}

use crate::core::outbound::OutboundOp;

// ---------------------------------------------------------- channel loops --

/// Runs the planner over `hours` of virtual time with no input at all,
/// answering every provider call with `answer`, and returns the provider
/// calls made in each hour.
fn drive(
    c: &mut Conn,
    hours: i64,
    answer: &dyn Fn(&str) -> Option<Fault>,
    ttl: Duration,
) -> Vec<u32> {
    let end = c.now + Duration::hours(hours);
    let mut per_hour = vec![0u32; hours as usize];
    let mut at_same_instant = 0;
    while c.now < end {
        let n = c.plan();
        if let Some(wake) = n.wake_at {
            assert!(
                wake >= c.now + c.policy.min_sync_interval,
                "a wake-up at {wake} is sooner than the spacing after {}",
                c.now
            );
        }
        let hour = ((c.now - t0()).num_hours() as usize).min(per_hour.len() - 1);
        let started = !n.is_idle();
        if !n.events.is_empty() {
            c.command(ConnectionCommand::RecordPlanned {
                events: n.events.clone(),
            });
        }
        let mut calls = 0;
        if let Some(run) = &n.sync {
            let calendars: Vec<CalendarId> =
                run.rounds.iter().map(|r| r.calendar.clone()).collect();
            c.inflight.sync_started(&calendars, c.now);
            for r in &run.rounds {
                calls += 1;
                match answer("events.list") {
                    Some(f) => c.command(ConnectionCommand::RecordSyncFailure {
                        calendar: Some(r.calendar.clone()),
                        fault: f,
                        unit_random: 0.5,
                        attempt_started: None,
                    }),
                    None => c.page(&r.calendar, matches!(r.kind, RoundKind::Full { .. })),
                }
            }
            c.inflight.finished(Task::Sync, calls, run.prompted, c.now);
            per_hour[hour] += calls;
        }
        if !n.channels.is_empty() {
            c.inflight.channels_started();
            let mut calls = 0;
            for step in &n.channels {
                calls += 1;
                match step {
                    ChannelStep::Open { calendar } => match answer("events.watch") {
                        Some(f) => c.command(ConnectionCommand::RecordChannelFailure {
                            calendar: calendar.clone(),
                            op: "open".into(),
                            channel_id: None,
                            fault: f,
                            unit_random: 0.5,
                            attempt_started: None,
                        }),
                        None => c.command(ConnectionCommand::RecordChannelOpened {
                            calendar: calendar.clone(),
                            channel_id: format!("ch-{}", c.state.version),
                            resource_id: "r".into(),
                            secret_sha256: "00".into(),
                            expires_at: c.now + ttl,
                        }),
                    },
                    ChannelStep::Renew { channel_id } => match answer("subscriptions.renew") {
                        Some(f) => {
                            let calendar = c.state.channels[channel_id].calendar.clone();
                            c.command(ConnectionCommand::RecordChannelFailure {
                                calendar,
                                op: "renew".into(),
                                channel_id: Some(channel_id.clone()),
                                fault: f,
                                unit_random: 0.5,
                                attempt_started: None,
                            })
                        }
                        None => c.command(ConnectionCommand::RecordChannelRenewed {
                            channel_id: channel_id.clone(),
                            expires_at: c.now + ttl,
                        }),
                    },
                    ChannelStep::Close { channel_id } => {
                        c.command(ConnectionCommand::RecordChannelClosed {
                            channel_id: channel_id.clone(),
                            reason: "stopped".into(),
                        })
                    }
                }
            }
            c.inflight.finished(Task::Channels, calls, false, c.now);
            per_hour[hour] += calls;
        }
        if started {
            at_same_instant += 1;
            assert!(at_same_instant < 20, "the planner spins at {}", c.now);
            continue;
        }
        at_same_instant = 0;
        c.now = n.wake_at.unwrap_or(c.now + Duration::hours(1));
    }
    per_hour
}

fn budget_of(c: &Conn) -> u32 {
    c.policy.budget.for_calendars(c.state.calendars.len())
}

#[test]
fn a_two_minute_channel_lifetime_is_reestablished_every_ten_minutes_for_hours() {
    for provider in [CalendarProvider::Google, CalendarProvider::Microsoft] {
        let mut c = Conn::new(provider, &["primary"]).synced();
        let per_hour = drive(&mut c, 6, &|_| None, Duration::minutes(2));
        for (h, calls) in per_hour.iter().enumerate() {
            // Six upkeeps an hour (the ten-minute floor; a Google renewal
            // also stops the old channel), plus four polls: never the
            // once-a-minute renewal that fills the log with 2,880 events
            // a day per calendar.
            assert!(
                (10..=22).contains(calls),
                "{provider:?} hour {h}: {calls} calls: {per_hour:?}"
            );
        }
        let granted = c.state.calendars[&cal("primary")].channel_granted_at;
        assert!(
            granted.is_some_and(|t| c.now - t <= Duration::minutes(10)),
            "{provider:?}: a channel was granted in the last ten minutes"
        );
    }
}

#[test]
fn a_channel_that_can_never_open_or_renew_backs_off_for_hours() {
    for provider in [CalendarProvider::Google, CalendarProvider::Microsoft] {
        let mut c = Conn::new(provider, &["primary"]).synced();
        c.command(ConnectionCommand::RecordChannelOpened {
            calendar: cal("primary"),
            channel_id: "ch".into(),
            resource_id: "r".into(),
            secret_sha256: "00".into(),
            expires_at: c.now + Duration::minutes(90),
        });
        let forbidden =
            |endpoint: &str| (endpoint != "events.list").then(|| fault(FaultKind::Rejected, 403));
        let per_hour = drive(&mut c, 24, &forbidden, Duration::days(3));
        let total: u32 = per_hour.iter().sum();
        // Polls (4 an hour) plus channel attempts backing off to the cap.
        assert!(
            total < 24 * 12,
            "{provider:?}: {total} calls in 24 h: {per_hour:?}"
        );
        assert!(c.state.calendars[&cal("primary")].channel_failures > 5);
        assert!(c.state.error_count() > 0, "the failure is counted");
        assert!(c
            .state
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("channel"));
    }
}

#[test]
fn webhooks_off_closes_open_channels_once_and_polls_at_the_normal_pace() {
    let mut c = Conn::new(CalendarProvider::Google, &["primary"]).synced();
    c.command(ConnectionCommand::RecordChannelOpened {
        calendar: cal("primary"),
        channel_id: "ch".into(),
        resource_id: "r".into(),
        secret_sha256: "00".into(),
        expires_at: c.now + Duration::days(7),
    });
    c.view.webhooks_enabled = false;
    let n = c.plan();
    assert_eq!(
        n.channels,
        vec![ChannelStep::Close {
            channel_id: "ch".into()
        }]
    );
    let per_hour = drive(&mut c, 5, &|_| None, Duration::days(7));
    assert!(c.state.channels.is_empty());
    let total: u32 = per_hour.iter().sum();
    assert!(total <= 1 + 5 * 5, "{per_hour:?}");
}

// ------------------------------------------------------ nothing spins --

fn answer_kind() -> impl Strategy<Value = Option<FaultKind>> {
    prop_oneof![
        3 => Just(None),
        1 => Just(Some(FaultKind::Unavailable)),
        1 => Just(Some(FaultKind::Rejected)),
        1 => Just(Some(FaultKind::NotFound)),
        1 => Just(Some(FaultKind::RateLimited)),
        1 => Just(Some(FaultKind::ResyncRequired)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the provider answers, gates and lifetimes, a connection left
    /// alone stays within its hourly budget and never sets a timer sooner
    /// than the spacing, over two virtual days.
    #[test]
    fn nothing_spins_in_any_state(
        bits in 0u8..128,
        list in answer_kind(),
        watch in answer_kind(),
        graph in any::<bool>(),
        ttl_minutes in prop_oneof![Just(2i64), Just(45), Just(4230)],
        calendars in 1usize..4,
    ) {
        let provider = if graph { CalendarProvider::Microsoft } else { CalendarProvider::Google };
        let names: Vec<String> = (0..calendars).map(|i| format!("c{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut c = Conn::new(provider, &names);
        c.view = view(bits);
        let answer = move |endpoint: &str| {
            let kind = if endpoint == "events.list" { list } else { watch };
            kind.map(|k| fault(k, 500))
        };
        let per_hour = drive(&mut c, 48, &answer, Duration::minutes(ttl_minutes));
        let budget = budget_of(&c);
        // The first hour may include the prompted first sync of each calendar.
        for (h, calls) in per_hour.iter().enumerate() {
            prop_assert!(*calls <= budget + calendars as u32, "hour {}: {} calls > {}", h, calls, budget);
        }
    }

    /// A gated connection wakes only for work its gates allow, and never
    /// sooner than the spacing.
    #[test]
    fn a_gated_connection_wakes_only_for_allowed_work(bits in 0u8..128, hours in 0i64..30) {
        let mut c = everything_due();
        c.view = view(bits);
        c.now += Duration::hours(hours);
        let n = c.plan();
        for call in &n.wake_for {
            prop_assert!(settings_gate(&c.view, *call).is_ok(), "{:?} under {:?}", call, c.view);
        }
        if let Some(at) = n.wake_at {
            prop_assert!(at >= c.now + c.policy.min_sync_interval);
        }
    }
}

#[test]
fn syncs_are_spaced_however_many_notifications_arrive() {
    let mut c = Conn::new(CalendarProvider::Google, &["primary"]).synced();
    c.now += Duration::seconds(1);
    let mut started = 0;
    let end = c.now + Duration::seconds(10);
    while c.now < end {
        c.inflight.asked(
            crate::core::inflight::Ask {
                sync_all: true,
                ..Default::default()
            },
            None,
        );
        let n = c.plan();
        if let Some(run) = n.sync {
            started += 1;
            let cals: Vec<CalendarId> = run.rounds.iter().map(|r| r.calendar.clone()).collect();
            c.inflight.sync_started(&cals, c.now);
            c.inflight.finished(Task::Sync, 1, true, c.now);
        }
        c.now += Duration::milliseconds(10);
    }
    // 10 s at one start per 100 ms.
    assert!((95..=101).contains(&started), "{started} syncs in 10 s");
}
