//! The decider over realistic histories (kept beside `decide.rs` to keep it
//! small): sync rounds whose pages carry changed, removed, all-day,
//! recurring, free, declined, tentative and our own events, in several
//! calendars in different zones, for both providers, interleaved with
//! notifications (repeated ones too), booking versions in any order,
//! outbound writes (some failing, some with lost responses) and sync
//! failures. What must hold after every step:
//! - the busy projection is the busy rules applied to the last version of
//!   each event seen in each still-selected calendar (what the last
//!   completed full round of that calendar did not see is gone);
//! - a repeated notification key appends nothing;
//! - no booking has two events in the provider's calendar;
//! - the state is the fold of the log, event by event or from a snapshot.

use super::outbound_tests::Calendar;
use super::*;
use crate::core::busy::{google_busy, graph_busy, BusyDecision, BusyPolicy};
use crate::core::fault::{Fault, FaultKind};
use crate::core::ids::{BookingId, ConnectionId};
use crate::core::interval::Interval;
use crate::core::outbound::BookingStatus;
use crate::core::projection::connection_changes;
use crate::core::sync::FetchedPage;
use crate::core::tz::resolve_zone;
use crate::core::wire::ProviderChange;
use crate::replay::model::Model;
use chrono::{Duration, NaiveDate, TimeZone};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 9, 0, 0).unwrap()
}

const CALENDARS: [&str; 3] = ["a", "b", "c"];

/// Each calendar's zone, as Google (IANA) and Graph (Windows) name it. The
/// event days below include 2026-04-05, when Sydney and Auckland leave DST.
const ZONES: [(&str, &str); 3] = [
    ("Australia/Sydney", "AUS Eastern Standard Time"),
    ("America/New_York", "Eastern Standard Time"),
    ("Pacific/Auckland", "New Zealand Standard Time"),
];

/// One change of an external event, rendered for either provider.
#[derive(Debug, Clone)]
struct Change {
    id: u8,
    kind: u8,
    /// Days after 2026-04-03.
    day: i64,
    hour: u32,
    /// Minutes (timed) or days (all-day).
    len: i64,
}

impl Change {
    fn render(&self, provider: CalendarProvider, calendar: usize) -> ProviderChange {
        let date = NaiveDate::from_ymd_opt(2026, 4, 3).unwrap() + Duration::days(self.day);
        let wall = date.and_hms_opt(self.hour, 0, 0).unwrap();
        let id = format!("e{}", self.id);
        let ours = format!("bk-{}", self.id % 3);
        match provider {
            CalendarProvider::Google => {
                let start = Utc.from_utc_datetime(&wall);
                let mut v = serde_json::json!({"id": id,
                    "start": {"dateTime": start.to_rfc3339()},
                    "end": {"dateTime": (start + Duration::minutes(self.len)).to_rfc3339()}});
                match self.kind {
                    // All-day, in the calendar's zone.
                    1 => {
                        v["start"] = serde_json::json!({"date": date.to_string()});
                        v["end"] = serde_json::json!({
                            "date": (date + Duration::days(1 + self.len % 3)).to_string()});
                    }
                    2 => v["transparency"] = "transparent".into(),
                    3 => {
                        v["attendees"] = serde_json::json!([
                            {"email": "me@example.com", "self": true, "responseStatus": "declined"}])
                    }
                    4 => v["status"] = "tentative".into(),
                    5 => v = serde_json::json!({"id": id, "status": "cancelled"}),
                    6 => {
                        v["extendedProperties"] =
                            serde_json::json!({"private": {"calsyncBookingId": ours}})
                    }
                    // An instance of a weekly series, in local wall time.
                    7 => {
                        let tz = ZONES[calendar].0;
                        let local = wall.format("%Y-%m-%dT%H:%M:%S").to_string();
                        let end = (wall + Duration::minutes(self.len))
                            .format("%Y-%m-%dT%H:%M:%S")
                            .to_string();
                        v = serde_json::json!({
                            "id": format!("r{}_{}", self.id, wall.format("%Y%m%dT%H%M%SZ")),
                            "recurringEventId": format!("r{}", self.id),
                            "originalStartTime": {"dateTime": local, "timeZone": tz},
                            "start": {"dateTime": local, "timeZone": tz},
                            "end": {"dateTime": end, "timeZone": tz}});
                    }
                    _ => {}
                }
                ProviderChange::Google(serde_json::from_value(v).unwrap())
            }
            CalendarProvider::Microsoft => {
                let at = |t: chrono::NaiveDateTime, zone: &str| {
                    serde_json::json!({
                        "dateTime": t.format("%Y-%m-%dT%H:%M:%S.0000000").to_string(),
                        "timeZone": zone})
                };
                let end = wall + Duration::minutes(self.len);
                let mut v = serde_json::json!({"id": id, "type": "singleInstance",
                    "start": at(wall, "UTC"), "end": at(end, "UTC")});
                match self.kind {
                    // All-day: floating midnights labelled UTC, the day in
                    // the mailbox's zone (or the event's own, when named).
                    1 => {
                        let midnight = date.and_hms_opt(0, 0, 0).unwrap();
                        v["isAllDay"] = true.into();
                        v["start"] = at(midnight, "UTC");
                        v["end"] = at(midnight + Duration::days(1 + self.len % 3), "UTC");
                        if self.hour % 2 == 0 {
                            v["originalStartTimeZone"] = ZONES[(calendar + 1) % 3].1.into();
                        }
                    }
                    2 => v["showAs"] = "free".into(),
                    3 => v["responseStatus"] = serde_json::json!({"response": "declined"}),
                    4 => v["showAs"] = "tentative".into(),
                    5 if self.hour % 2 == 0 => {
                        v = serde_json::json!({"id": id, "@removed": {"reason": "deleted"}})
                    }
                    5 => v["isCancelled"] = true.into(),
                    6 => {
                        v["singleValueExtendedProperties"] = serde_json::json!([{
                            "id": crate::core::busy::GRAPH_BOOKING_PROPERTY_ID, "value": ours}])
                    }
                    // An occurrence, labelled with the mailbox's Windows zone.
                    7 => {
                        let zone = ZONES[calendar].1;
                        v = serde_json::json!({
                            "id": format!("r{}-{}", self.id, wall.format("%Y%m%d")),
                            "type": "occurrence", "seriesMasterId": format!("r{}", self.id),
                            "start": at(wall, zone), "end": at(end, zone)});
                    }
                    _ => {}
                }
                ProviderChange::Graph(serde_json::from_value(v).unwrap())
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// One round of one calendar: its pages in order; without `complete`
    /// it is cut short (the provider failed half way).
    Round {
        calendar: usize,
        full: bool,
        pages: Vec<Vec<Change>>,
        complete: bool,
    },
    Notify(u8),
    Book {
        n: u8,
        version: u64,
        cancelled: bool,
    },
    /// Run the writes the planner starts: each succeeds, fails (503) or
    /// succeeds with its response lost.
    Writes {
        outcome: u8,
    },
    SyncFailure {
        calendar: Option<usize>,
        kind: FaultKind,
    },
    Select(Vec<usize>),
}

fn change() -> impl Strategy<Value = Change> {
    (0u8..8, 0u8..8, 0i64..4, 0u32..24, 15i64..600).prop_map(|(id, kind, day, hour, len)| Change {
        id,
        kind,
        day,
        hour,
        len,
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (
            0usize..3,
            any::<bool>(),
            prop::collection::vec(prop::collection::vec(change(), 1..6), 1..4),
            prop::bool::weighted(0.8),
        )
            .prop_map(|(calendar, full, pages, complete)| Step::Round {
                calendar,
                full,
                pages,
                complete,
            }),
        2 => (0u8..12).prop_map(Step::Notify),
        2 => (0u8..3, 1u64..5, prop::bool::weighted(0.3))
            .prop_map(|(n, version, cancelled)| Step::Book { n, version, cancelled }),
        2 => (0u8..4).prop_map(|outcome| Step::Writes { outcome }),
        1 => (
            prop::option::of(0usize..3),
            prop::sample::select(vec![
                FaultKind::Unavailable,
                FaultKind::NotFound,
                FaultKind::RateLimited,
                FaultKind::ResyncRequired,
            ]),
        )
            .prop_map(|(calendar, kind)| Step::SyncFailure { calendar, kind }),
        1 => prop::sample::subsequence(vec![0usize, 1, 2], 1..=3).prop_map(Step::Select),
    ]
}

/// What the independent model remembers of one event in one calendar.
#[derive(Debug, Clone)]
struct Seen {
    change: ProviderChange,
    /// When it was seen (a counter over every change of the history).
    at: u64,
}

struct Harness {
    provider: CalendarProvider,
    state: ConnectionState,
    log: Vec<ConnectionEvent>,
    projection: Model,
    outbound: Calendar,
    policy: crate::core::plan::Policy,
    // The model.
    selected: BTreeSet<usize>,
    seen: BTreeMap<(usize, String), Seen>,
    clock: u64,
    notified: BTreeSet<u8>,
}

fn id() -> ConnectionId {
    ConnectionId::from_uuid(uuid::Uuid::from_u128(24))
}

fn cal(i: usize) -> CalendarId {
    CalendarId::parse(CALENDARS[i]).unwrap()
}

impl Harness {
    fn new(provider: CalendarProvider) -> Harness {
        let mut h = Harness {
            provider,
            state: ConnectionState::default(),
            log: Vec::new(),
            projection: Model::default(),
            outbound: Calendar::default(),
            policy: crate::core::plan::Policy::default(),
            selected: (0..3).collect(),
            seen: BTreeMap::new(),
            clock: 0,
            notified: BTreeSet::new(),
        };
        h.command(&ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse("p24").unwrap(),
            provider,
            account: ExternalAccount::parse("a@example.com").unwrap(),
            calendars: (0..3).map(cal).collect(),
            destination_calendar: Some(cal(0)),
        });
        h
    }

    /// Decide, append, fold and project, as the actor and the store do.
    fn command(&mut self, command: &ConnectionCommand) -> Option<Decision> {
        let d = decide_with(&self.state, command, now(), &self.policy.sync).ok()?;
        self.state = self.state.clone().fold(&d.events);
        self.projection
            .apply(connection_changes(id(), &self.state, &d.events))
            .unwrap();
        self.log.extend(d.events.iter().cloned());
        Some(d)
    }

    fn zone(&self, calendar: usize) -> &'static str {
        match self.provider {
            CalendarProvider::Google => ZONES[calendar].0,
            CalendarProvider::Microsoft => ZONES[calendar].1,
        }
    }

    fn round(&mut self, calendar: usize, full: bool, pages: &[Vec<Change>], complete: bool) {
        let started = self.clock;
        for (i, changes) in pages.iter().enumerate() {
            let last = i + 1 == pages.len();
            let changes: Vec<ProviderChange> = changes
                .iter()
                .map(|c| c.render(self.provider, calendar))
                .collect();
            self.command(&ConnectionCommand::RecordPage(FetchedPage {
                calendar: cal(calendar),
                full_round: full,
                changes: changes.clone(),
                calendar_zone: Some(self.zone(calendar).into()),
                completed_with: (last && complete).then(|| format!("cursor-{}", self.clock)),
                first_page: i == 0,
                window: None,
            }));
            if self.selected.contains(&calendar) {
                for change in changes {
                    let event_id = match &change {
                        ProviderChange::Google(e) => e.id.clone(),
                        ProviderChange::Graph(e) => e.id.clone(),
                    };
                    self.clock += 1;
                    let at = self.clock;
                    self.seen.insert((calendar, event_id), Seen { change, at });
                }
            }
        }
        if full && complete && self.selected.contains(&calendar) {
            // Whatever this full round did not list is gone at the provider.
            self.seen
                .retain(|(c, _), seen| *c != calendar || seen.at > started);
        }
    }

    /// The busy rows the model expects: the rules applied to the last
    /// version seen of each event, in its calendar's zone.
    fn expected_busy(&self) -> BTreeMap<(String, String), Interval> {
        let policy = BusyPolicy::default();
        self.seen
            .iter()
            .filter_map(|((calendar, event_id), seen)| {
                let zone = resolve_zone(self.zone(*calendar)).unwrap();
                let decision = match &seen.change {
                    ProviderChange::Google(e) => google_busy(e, zone, &policy),
                    ProviderChange::Graph(e) => graph_busy(e, zone, &policy),
                };
                match decision {
                    BusyDecision::Blocks(interval) => Some((
                        (CALENDARS[*calendar].to_string(), event_id.clone()),
                        interval,
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    fn projected_busy(&self) -> BTreeMap<(String, String), Interval> {
        self.projection
            .busy()
            .map(|r| {
                (
                    (r.calendar_id.clone(), r.external_event_id.clone()),
                    r.interval,
                )
            })
            .collect()
    }

    /// Runs the writes the planner starts now (see `decide_outbound_tests`).
    fn writes(&mut self, outcome: u8) {
        let ctx = crate::core::plan::Ctx {
            id: id(),
            view: crate::core::gate::GateView::all_open(false),
            policy: &self.policy,
            now: now(),
        };
        let next = crate::core::plan::next(
            &self.state,
            &crate::core::inflight::InFlight::default(),
            &ctx,
        );
        if !next.events.is_empty() {
            self.command(&ConnectionCommand::RecordPlanned {
                events: next.events,
            });
        }
        for booking_id in next.writes.map(|w| w.bookings).unwrap_or_default() {
            let track = self.state.bookings[&booking_id].clone();
            let Some(op) = track.pending.clone() else {
                continue;
            };
            let version = track.pending_version.unwrap_or(track.latest.version);
            match outcome {
                0 => {
                    self.command(&ConnectionCommand::RecordOutboundFailure {
                        booking_id,
                        version,
                        op,
                        fault: Fault::new(FaultKind::Unavailable, "unavailable", "503")
                            .with_status(503),
                        unit_random: 0.5,
                        attempt_started: None,
                    });
                }
                1 => {
                    // Written, but the response never arrives.
                    self.outbound.write(&track, &op);
                }
                _ => {
                    let outcome = self.outbound.write(&track, &op);
                    self.command(&ConnectionCommand::RecordOutboundResult {
                        booking_id,
                        version,
                        outcome,
                    });
                }
            }
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Round {
                calendar,
                full,
                pages,
                complete,
            } => self.round(*calendar, *full, pages, *complete),
            Step::Notify(k) => {
                let d = self
                    .command(&ConnectionCommand::AcceptNotification {
                        key: format!("{}:ch:{k}", self.provider),
                        channel_id: "ch".into(),
                    })
                    .unwrap();
                if self.notified.insert(*k) {
                    prop_assert_eq!(d.events.len(), 1, "a new key is recorded");
                } else {
                    prop_assert!(d.duplicate, "key {} again is not a duplicate", k);
                    prop_assert!(
                        d.events.is_empty(),
                        "key {} again appended {:?}",
                        k,
                        d.events
                    );
                }
            }
            Step::Book {
                n,
                version,
                cancelled,
            } => {
                let start = now() + Duration::days(2);
                self.command(&ConnectionCommand::ApplyBooking(Booking {
                    booking_id: BookingId::parse(format!("bk-{n}")).unwrap(),
                    version: *version,
                    status: if *cancelled {
                        BookingStatus::Cancelled
                    } else {
                        BookingStatus::Confirmed
                    },
                    start,
                    end: start + Duration::hours(1),
                    time_zone: "Australia/Sydney".into(),
                    title: format!("t{version}"),
                    attendees: vec![],
                }));
            }
            Step::Writes { outcome } => self.writes(*outcome),
            Step::SyncFailure { calendar, kind } => {
                self.command(&ConnectionCommand::RecordSyncFailure {
                    calendar: calendar.map(cal),
                    fault: Fault::new(*kind, "f", "m").with_status(503),
                    unit_random: 0.5,
                    attempt_started: None,
                });
            }
            Step::Select(calendars) => {
                self.command(&ConnectionCommand::SelectCalendars {
                    calendars: calendars.iter().map(|c| cal(*c)).collect(),
                    destination_calendar: Some(cal(0)),
                });
                self.selected = calendars.iter().copied().collect();
                let selected = self.selected.clone();
                self.seen.retain(|(c, _), _| selected.contains(c));
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn decided_histories_with_real_pages_keep_every_promise(
        graph in any::<bool>(),
        steps in prop::collection::vec(step(), 1..40),
        split in 0usize..200,
    ) {
        let provider = if graph { CalendarProvider::Microsoft } else { CalendarProvider::Google };
        let mut h = Harness::new(provider);
        for (i, s) in steps.iter().enumerate() {
            h.step(s)?;
            prop_assert_eq!(
                h.projected_busy(),
                h.expected_busy(),
                "busy rows after step {}: {:?}", i, s
            );
            let mut per_booking: BTreeMap<&str, usize> = BTreeMap::new();
            for shown in h.outbound.events.values() {
                *per_booking.entry(shown.booking_id.as_str()).or_default() += 1;
            }
            for (booking, n) in per_booking {
                prop_assert!(n <= 1, "{} has {} events after step {}", booking, n, i);
            }
        }
        // The state is the fold of the log: event by event, and from a
        // snapshot (through its JSON) plus the tail.
        let mut one_by_one = ConnectionState::default();
        for e in &h.log {
            one_by_one = one_by_one.evolve(e);
        }
        prop_assert_eq!(&one_by_one, &h.state);
        prop_assert_eq!(h.state.version as usize, h.log.len());
        let split = split.min(h.log.len());
        let snapshot = ConnectionState::default().fold(&h.log[..split]);
        let restored: ConnectionState =
            serde_json::from_str(&serde_json::to_string(&snapshot).unwrap()).unwrap();
        prop_assert_eq!(restored.fold(&h.log[split..]), h.state.clone());
    }
}
