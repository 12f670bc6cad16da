//! Outbound decisions against a model calendar (kept beside `decide.rs` to
//! keep it small): whatever the order of booking versions (older, repeated
//! and skipped versions included), write runs and lost responses, in either
//! cancel mode, the calendar ends as the newest versions and the mode say,
//! never with two events for one booking. Writes are planned the way the
//! actor plans them ([`crate::core::plan::next`]).

use super::*;
use crate::core::ids::{BookingId, ConnectionId};
use crate::core::outbound::{cancelled_title, BookingStatus, BookingTrack, CancelMode, OutboundOp};
use crate::core::projection::{connection_changes, RowChange};
use chrono::TimeZone;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

/// What the provider shows for one external event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shown {
    pub(super) booking_id: String,
    title: String,
    busy: bool,
    /// The booking version whose content the last write carried.
    pub(super) version: u64,
}

/// A provider calendar with the idempotency the real clients give: a
/// create of an existing deterministic id returns it unchanged, a delete of
/// a missing event counts as done.
#[derive(Debug, Default)]
pub(super) struct Calendar {
    pub(super) events: BTreeMap<String, Shown>,
}

impl Calendar {
    /// Runs `op` the way the outbound task does: with the track's latest
    /// content.
    pub(super) fn write(&mut self, track: &BookingTrack, op: &OutboundOp) -> WriteOutcome {
        let b = &track.latest;
        let shown = |marked: bool| Shown {
            booking_id: b.booking_id.to_string(),
            title: if marked {
                cancelled_title(&b.title)
            } else {
                b.title.clone()
            },
            busy: !marked,
            version: b.version,
        };
        let mut patch = |id: &str, marked: bool| match self.events.get_mut(id) {
            Some(e) => {
                *e = shown(marked);
                WriteOutcome::Updated { etag: None }
            }
            None => WriteOutcome::Missing,
        };
        match op {
            OutboundOp::Create { generation } => {
                let id = format!("{}-{generation}", b.booking_id);
                self.events.entry(id.clone()).or_insert(shown(false));
                WriteOutcome::Created {
                    external_event_id: id,
                    etag: None,
                }
            }
            OutboundOp::Update { external_event_id } => patch(external_event_id, false),
            OutboundOp::MarkCancelled { external_event_id } => patch(external_event_id, true),
            OutboundOp::Delete { external_event_id } => {
                self.events.remove(external_event_id);
                WriteOutcome::Deleted
            }
            OutboundOp::DeleteTagged { generation } => {
                self.events
                    .remove(&format!("{}-{generation}", b.booking_id));
                WriteOutcome::Deleted
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Version `version` of booking `n`: newer, older or the same as one
    /// already sent (platforms retry and reorder).
    Book {
        n: u8,
        version: u64,
        cancelled: bool,
        title: u8,
    },
    /// Run every planned write; with `lose`, the responses never arrive.
    Run { lose: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..3, 1u64..6, any::<bool>(), 0u8..3).prop_map(|(n, version, cancelled, title)| {
            Step::Book { n, version, cancelled, title }
        }),
        2 => any::<bool>().prop_map(|lose| Step::Run { lose }),
    ]
}

struct Harness {
    state: ConnectionState,
    log: Vec<ConnectionEvent>,
    calendar: Calendar,
    policy: SyncPolicy,
}

impl Harness {
    fn new(on_cancel: CancelMode) -> Self {
        let mut h = Harness {
            state: ConnectionState::default(),
            log: Vec::new(),
            calendar: Calendar::default(),
            policy: SyncPolicy {
                on_cancel,
                ..SyncPolicy::default()
            },
        };
        h.command(ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse("p1").unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse("a@example.com").unwrap(),
            calendars: vec![CalendarId::parse("primary").unwrap()],
            destination_calendar: Some(CalendarId::parse("primary").unwrap()),
        });
        h
    }

    fn command(&mut self, command: ConnectionCommand) -> Decision {
        let d = decide_with(&self.state, &command, now(), &self.policy).unwrap();
        self.state = self.state.clone().fold(&d.events);
        self.log.extend(d.events.iter().cloned());
        d
    }

    /// What the planner starts now: intents recorded, the bookings to write.
    fn planned(&mut self) -> Vec<String> {
        let policy = crate::core::plan::Policy {
            sync: self.policy.clone(),
            ..Default::default()
        };
        let ctx = crate::core::plan::Ctx {
            id: ConnectionId::from_uuid(uuid::Uuid::from_u128(1)),
            view: crate::core::gate::GateView::all_open(false),
            policy: &policy,
            now: now(),
        };
        let next = crate::core::plan::next(
            &self.state,
            &crate::core::inflight::InFlight::default(),
            &ctx,
        );
        if !next.events.is_empty() {
            self.command(ConnectionCommand::RecordPlanned {
                events: next.events,
            });
        }
        next.writes.map(|w| w.bookings).unwrap_or_default()
    }

    fn run(&mut self, lose: bool) {
        let planned = self.planned();
        let pending: Vec<(String, BookingTrack, OutboundOp)> = planned
            .iter()
            .filter_map(|id| {
                let t = &self.state.bookings[id];
                t.pending.clone().map(|op| (id.clone(), t.clone(), op))
            })
            .collect();
        for (booking_id, track, op) in pending {
            let outcome = self.calendar.write(&track, &op);
            if !lose {
                self.command(ConnectionCommand::RecordOutboundResult {
                    booking_id,
                    version: track.pending_version.unwrap_or(track.latest.version),
                    outcome,
                });
            }
        }
    }

    /// Runs writes until nothing is planned (as restarts and retries do).
    fn settle(&mut self) {
        for _ in 0..20 {
            if self.state.bookings.values().all(|t| {
                t.pending.is_none()
                    && crate::core::outbound::write_to_run(t, self.policy.on_cancel).is_none()
            }) {
                return;
            }
            self.run(false);
        }
        panic!("outbound writes never settled: {:?}", self.state.bookings);
    }
}

proptest! {
    #[test]
    fn the_calendar_converges_to_the_latest_versions_in_either_cancel_mode(
        mark in any::<bool>(),
        steps in proptest::collection::vec(step(), 0..40),
    ) {
        let mode = if mark { CancelMode::MarkCancelled } else { CancelMode::Delete };
        let mut h = Harness::new(mode);
        let mut newest: BTreeMap<u8, u64> = BTreeMap::new();
        for s in &steps {
            match s {
                Step::Book { n, version, cancelled, title } => {
                    let top = newest.entry(*n).or_default();
                    *top = (*top).max(*version);
                    let start = now() + chrono::Duration::days(1);
                    h.command(ConnectionCommand::ApplyBooking(Booking {
                        booking_id: BookingId::parse(format!("bk-{n}")).unwrap(),
                        version: *version,
                        status: if *cancelled { BookingStatus::Cancelled } else { BookingStatus::Confirmed },
                        start,
                        end: start + chrono::Duration::hours(1),
                        time_zone: "UTC".into(),
                        title: format!("t{title}"),
                        attendees: vec![],
                    }));
                }
                Step::Run { lose } => h.run(*lose),
            }
        }
        h.settle();

        // The op chosen is in the log, so replay needs no configuration.
        let mut created: BTreeSet<String> = BTreeSet::new();
        for e in &h.log {
            if let ConnectionEvent::OutboundIntentRecorded { booking_id, op, .. } = e {
                match op {
                    OutboundOp::Create { .. } => { created.insert(booking_id.clone()); }
                    OutboundOp::Delete { .. } => prop_assert!(!mark, "mark mode deleted"),
                    OutboundOp::MarkCancelled { .. } => prop_assert!(mark, "delete mode marked"),
                    _ => {}
                }
            }
        }
        prop_assert_eq!(&ConnectionState::default().fold(&h.log), &h.state);

        let id = ConnectionId::from_uuid(uuid::Uuid::from_u128(1));
        let rows: BTreeMap<String, String> = connection_changes(id, &h.state, &h.log)
            .into_iter()
            .filter_map(|c| match c {
                RowChange::UpsertBooking(row) => Some((row.booking_id, row.state)),
                _ => None,
            })
            .collect();
        for (booking_id, track) in h.state.bookings.iter() {
            let n: u8 = booking_id.trim_start_matches("bk-").parse().unwrap();
            prop_assert_eq!(track.latest.version, newest[&n], "an older version won");
            let shown: Vec<&Shown> = h
                .calendar
                .events
                .values()
                .filter(|e| &e.booking_id == booking_id)
                .collect();
            let latest = &track.latest;
            let row = rows[booking_id].as_str();
            match latest.status {
                BookingStatus::Confirmed => {
                    prop_assert_eq!(shown.len(), 1, "{} is not shown once", booking_id);
                    prop_assert!(shown[0].busy);
                    prop_assert_eq!(&shown[0].title, &latest.title);
                    prop_assert_eq!(row, "written");
                }
                BookingStatus::Cancelled if mark && created.contains(booking_id) => {
                    // Written once, so it stays, marked, as its latest version.
                    prop_assert_eq!(shown.len(), 1, "{} is not shown once", booking_id);
                    prop_assert!(!shown[0].busy, "a marked event still blocks time");
                    prop_assert_eq!(&shown[0].title, &cancelled_title(&latest.title));
                    prop_assert_eq!(row, "cancelled");
                }
                BookingStatus::Cancelled => {
                    prop_assert!(shown.is_empty(), "{} was cancelled but is shown", booking_id);
                    prop_assert_eq!(row, "removed");
                }
            }
        }
    }
}

/// One booking version as the platform sends it; its title names its
/// version, so the calendar shows which version it was written from.
fn version_of(n: u8, version: u64, cancelled: bool) -> Booking {
    let start = now() + chrono::Duration::days(1) + chrono::Duration::hours(version as i64);
    Booking {
        booking_id: BookingId::parse(format!("bk-{n}")).unwrap(),
        version,
        status: if cancelled {
            BookingStatus::Cancelled
        } else {
            BookingStatus::Confirmed
        },
        start,
        end: start + chrono::Duration::hours(1),
        time_zone: "UTC".into(),
        title: format!("v{version}"),
        attendees: vec![],
    }
}

#[derive(Debug, Clone)]
enum Sent {
    /// A version, in whatever order the generator picks.
    Book {
        n: u8,
        version: u64,
        cancelled: bool,
    },
    /// The `i`-th booking sent so far, sent again unchanged (a platform
    /// retry, a replayed delivery).
    Again(usize),
    Run {
        lose: bool,
    },
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        3 => (0u8..2, 1u64..8, prop::bool::weighted(0.3))
            .prop_map(|(n, version, cancelled)| Sent::Book { n, version, cancelled }),
        2 => any::<usize>().prop_map(Sent::Again),
        2 => any::<bool>().prop_map(|lose| Sent::Run { lose }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// Versions in any order, and the same version again: a version older
    /// than or equal to one already accepted appends nothing and changes
    /// nothing, and the external event only ever moves forward: every
    /// write carries a version at least as new as any shown before, and the
    /// calendar ends as the newest version says.
    #[test]
    fn older_and_repeated_versions_never_move_the_event_back(
        mark in any::<bool>(),
        steps in proptest::collection::vec(sent(), 1..48),
    ) {
        let mode = if mark { CancelMode::MarkCancelled } else { CancelMode::Delete };
        let mut h = Harness::new(mode);
        let mut history: Vec<Booking> = Vec::new();
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        let mut shown_high: BTreeMap<String, u64> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            let booking = match s {
                Sent::Book { n, version, cancelled } => Some(version_of(*n, *version, *cancelled)),
                Sent::Again(k) if !history.is_empty() => Some(history[k % history.len()].clone()),
                Sent::Again(_) => None,
                Sent::Run { lose } => {
                    h.run(*lose);
                    None
                }
            };
            if let Some(b) = booking {
                let id = b.booking_id.to_string();
                let before = h.state.clone();
                let stale = newest.get(&id).is_some_and(|v| b.version <= *v);
                let d = h.command(ConnectionCommand::ApplyBooking(b.clone()));
                if stale {
                    prop_assert!(d.duplicate, "step {}: stale {:?} not acknowledged as such", i, b);
                    prop_assert!(d.events.is_empty(), "step {}: stale version appended {:?}", i, d.events);
                    prop_assert_eq!(&h.state, &before, "step {}: a stale version changed the state", i);
                } else {
                    prop_assert_eq!(d.events.len(), 1);
                    newest.insert(id.clone(), b.version);
                }
                prop_assert_eq!(h.state.bookings[&id].latest.version, newest[&id]);
                history.push(b);
            }
            // The calendar never goes back to an older version.
            for e in h.calendar.events.values() {
                let high = shown_high.entry(e.booking_id.clone()).or_default();
                prop_assert!(
                    e.version >= *high,
                    "step {}: {} went back from v{} to v{}", i, e.booking_id, *high, e.version
                );
                *high = e.version;
                prop_assert!(e.version <= newest[&e.booking_id]);
            }
            let mut per_booking: BTreeMap<&str, usize> = BTreeMap::new();
            for e in h.calendar.events.values() {
                *per_booking.entry(e.booking_id.as_str()).or_default() += 1;
            }
            prop_assert!(per_booking.values().all(|n| *n <= 1), "step {}: {:?}", i, h.calendar.events);
        }
        h.settle();
        for (id, track) in h.state.bookings.iter() {
            let shown: Vec<&Shown> = h.calendar.events.values().filter(|e| &e.booking_id == id).collect();
            if track.latest.status == BookingStatus::Confirmed {
                prop_assert_eq!(shown.len(), 1);
                prop_assert_eq!(shown[0].version, newest[id], "{} settled on an older version", id);
                prop_assert_eq!(&shown[0].title, &format!("v{}", newest[id]));
            }
        }
    }
}
