//! Two-way sync: what calsync does when someone else changes a booking's own
//! event in the external calendar.
//!
//! Inbound sync reads our events back (recognised by [`super::busy`] as
//! `Ours`). When one comes back moved, or as a tombstone, or with an attendee
//! who declined, [`external_changes`] turns that into a
//! [`ConnectionEvent::BookingExternallyChanged`], and [`fold`] applies the
//! policy in force (`[outbound] on_external_change`):
//!
//! - `notify` (the default): record it, tell the platform
//!   (`booking.external_changed`), and stop writing the booking until the
//!   platform sends a newer version — the host's edit stands;
//! - `restore`: write the booking back (re-create a deleted event, PATCH a
//!   moved one back to the booking's times).
//!
//! A declined invitation is reported under either policy and never "fixed".
//!
//! Only a settled booking is judged: confirmed, its latest version written,
//! no write in flight. Anything else owes a write already, and the write's
//! own outcome (say `Missing`) decides. A stale page — fetched before our own
//! last write landed — shows the event with an etag we wrote ourselves, so
//! an etag calsync recorded for one of its writes is never an external
//! change; only times that differ *and* an etag we never wrote make a move.

use super::busy::{google_interval, graph_all_day_zone, graph_interval};
use super::events::ConnectionEvent;
use super::outbound::{BookingStatus, BookingTrack};
use super::state::{ConnectionState, WindowBase};
use super::sync::FetchedPage;
use super::wire::{GoogleEventStatus, GoogleResponseStatus, ProviderChange};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// What changed about our event, as seen in the external calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ExternalChange {
    /// The event was deleted (or cancelled) in the calendar.
    Deleted {
        external_event_id: String,
        /// Graph's delta said `@removed`, which it also says of an event
        /// moved out of the sync window: the event may still exist, so its
        /// id is kept and the next write (a PATCH or DELETE) finds out — a
        /// 404 there re-creates it, anything else leaves one event.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unconfirmed: bool,
    },
    /// The event now runs from `start` to `end`.
    Moved {
        external_event_id: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
    /// These attendees declined (newly, since the last report).
    Declined {
        external_event_id: String,
        attendees: Vec<String>,
    },
}

impl ExternalChange {
    /// `deleted`, `moved` or `declined`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExternalChange::Deleted { .. } => "deleted",
            ExternalChange::Moved { .. } => "moved",
            ExternalChange::Declined { .. } => "declined",
        }
    }
}

/// What calsync does when a booking's event is moved or deleted externally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalChangePolicy {
    /// Report it and stop writing the booking until a newer version.
    #[default]
    Notify,
    /// Write the booking back over the change.
    Restore,
}

impl std::str::FromStr for ExternalChangePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "notify" => Ok(ExternalChangePolicy::Notify),
            "restore" => Ok(ExternalChangePolicy::Restore),
            other => Err(format!(
                "unknown external change policy {other:?} (expected \"notify\" or \"restore\")"
            )),
        }
    }
}

/// How many of our own etags a booking remembers (a stale page is at most
/// a write or two behind).
const OUR_ETAGS: usize = 4;

/// One of our events as a page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Observation {
    /// A tombstone or a cancelled event with this id. `confirmed` is false
    /// for Graph's `@removed`, which also means "moved out of the window".
    Gone { event_id: String, confirmed: bool },
    Seen {
        event_id: String,
        booking_id: String,
        times: Option<(DateTime<Utc>, DateTime<Utc>)>,
        etags: Vec<String>,
        declined: Vec<String>,
    },
}

fn observe(change: &ProviderChange, zone: Tz, ours: Option<&str>) -> Option<Observation> {
    match change {
        ProviderChange::Google(e) => {
            if e.status() == GoogleEventStatus::Cancelled {
                return Some(Observation::Gone {
                    event_id: e.id.clone(),
                    confirmed: true,
                });
            }
            let booking_id = ours?.to_string();
            let declined = e
                .attendees
                .iter()
                .filter(|a| !a.is_self && a.response_status == Some(GoogleResponseStatus::Declined))
                .filter_map(|a| a.email.clone())
                .collect();
            Some(Observation::Seen {
                event_id: e.id.clone(),
                booking_id,
                times: google_interval(e, zone).ok(),
                etags: e.etag.iter().cloned().collect(),
                declined,
            })
        }
        ProviderChange::Graph(e) => {
            if e.removed.is_some() || e.is_cancelled {
                return Some(Observation::Gone {
                    event_id: e.id.clone(),
                    confirmed: e.removed.is_none(),
                });
            }
            let booking_id = ours?.to_string();
            Some(Observation::Seen {
                event_id: e.id.clone(),
                booking_id,
                times: graph_interval(e, graph_all_day_zone(e, zone)).ok(),
                etags: e
                    .odata_etag
                    .iter()
                    .chain(e.change_key.iter())
                    .cloned()
                    .collect(),
                declined: Vec::new(),
            })
        }
    }
}

/// Whether the booking is settled enough to judge: confirmed, the latest
/// version written, no write in flight, and `event_id` its current event.
fn settled<'a>(track: &'a BookingTrack, event_id: &str) -> Option<&'a BookingTrack> {
    let settled = track.pending.is_none()
        && track.latest.status == BookingStatus::Confirmed
        && track.written_version == Some(track.latest.version)
        && track.external_event_id.as_deref() == Some(event_id);
    settled.then_some(track)
}

/// The external changes one observation shows, given what we know.
fn judge(track: &BookingTrack, observation: &Observation) -> Vec<ExternalChange> {
    match observation {
        Observation::Gone {
            event_id,
            confirmed,
        } => {
            let already = matches!(
                &track.external_change,
                Some(ExternalChange::Deleted { external_event_id, .. }) if external_event_id == event_id
            );
            if already {
                return Vec::new();
            }
            vec![ExternalChange::Deleted {
                external_event_id: event_id.clone(),
                unconfirmed: !confirmed,
            }]
        }
        Observation::Seen {
            event_id,
            times,
            etags,
            declined,
            ..
        } => {
            let mut changes = Vec::new();
            let ours = etags.iter().any(|e| track.our_etags.contains(e));
            let wanted = (track.latest.start, track.latest.end);
            if let Some((start, end)) = *times {
                let already = matches!(
                    &track.external_change,
                    Some(ExternalChange::Moved { start: s, end: e, .. }) if (*s, *e) == (start, end)
                );
                if !ours && (start, end) != wanted && !already {
                    changes.push(ExternalChange::Moved {
                        external_event_id: event_id.clone(),
                        start,
                        end,
                    });
                }
            }
            let mut new: Vec<String> = declined
                .iter()
                .filter(|a| !track.declined.contains(a))
                .cloned()
                .collect();
            new.sort();
            new.dedup();
            if !new.is_empty() {
                changes.push(ExternalChange::Declined {
                    external_event_id: event_id.clone(),
                    attendees: new,
                });
            }
            changes
        }
    }
}

/// Whether a removal of `track`'s event can be judged against `window`, the
/// window of the round the page belongs to. Graph reports `@removed` for
/// every change to an event outside its round's window, our own writes
/// included, so a removal says something only about a booking inside it;
/// with no window known nothing can be told.
fn removal_in_view(track: &BookingTrack, window: Option<&WindowBase>) -> bool {
    window.is_some_and(|w| track.latest.start < w.end && w.start < track.latest.end)
}

/// The `booking_externally_changed` events one fetched page shows, each
/// with the policy in force. `zone` is the page's calendar zone; `window`
/// the window of the round the page belongs to.
pub fn external_changes(
    state: &ConnectionState,
    page: &FetchedPage,
    zone: Tz,
    window: Option<&WindowBase>,
    busy: &super::busy::BusyPolicy,
    policy: ExternalChangePolicy,
    now: DateTime<Utc>,
) -> Vec<ConnectionEvent> {
    // Our events live in the destination calendar only.
    let destination = state
        .profile
        .as_ref()
        .and_then(|p| p.destination_calendar.as_ref());
    if destination != Some(&page.calendar) || state.bookings.is_empty() {
        return Vec::new();
    }
    let mut events = Vec::new();
    let mut judged: Vec<String> = Vec::new();
    for change in &page.changes {
        let ours = match change {
            ProviderChange::Google(e) => super::busy::google_busy(e, zone, busy),
            ProviderChange::Graph(e) => super::busy::graph_busy(e, zone, busy),
        };
        let ours = match &ours {
            super::busy::BusyDecision::Ours { booking_id } => Some(booking_id.as_str()),
            _ => None,
        };
        let Some(observation) = observe(change, zone, ours) else {
            continue;
        };
        let track = match &observation {
            Observation::Gone {
                event_id,
                confirmed,
            } => state
                .bookings
                .values()
                .find_map(|t| settled(t, event_id))
                .filter(|t| *confirmed || removal_in_view(t, window)),
            Observation::Seen {
                event_id,
                booking_id,
                ..
            } => state
                .bookings
                .get(booking_id)
                .and_then(|t| settled(t, event_id)),
        };
        let Some(track) = track else { continue };
        let booking_id = track.latest.booking_id.to_string();
        // One judgement per booking and page: the first observation wins.
        if judged.contains(&booking_id) {
            continue;
        }
        judged.push(booking_id.clone());
        for change in judge(track, &observation) {
            events.push(ConnectionEvent::BookingExternallyChanged {
                booking_id: booking_id.clone(),
                version: track.latest.version,
                change,
                policy,
                at: now,
            });
        }
    }
    events
}

/// Applies a recorded external change to the booking it names.
pub fn fold(track: &mut BookingTrack, change: &ExternalChange, policy: ExternalChangePolicy) {
    let hold = policy == ExternalChangePolicy::Notify;
    match change {
        ExternalChange::Deleted {
            unconfirmed: true, ..
        } => {
            // Perhaps only moved out of Graph's window: keep the id, so the
            // next write addresses the event and its outcome tells.
            if hold {
                track.held_version = Some(track.latest.version);
            } else {
                track.written_version = None;
            }
        }
        ExternalChange::Deleted { .. } => {
            // The event is gone: a later write creates a new one (with a new
            // id: Google keeps deleted ids reserved).
            track.external_event_id = None;
            track.etag = None;
            track.written_version = None;
            track.generation += 1;
            track.our_etags.clear();
            if hold {
                track.held_version = Some(track.latest.version);
            }
        }
        ExternalChange::Moved { .. } => {
            if hold {
                track.held_version = Some(track.latest.version);
            } else {
                // The calendar no longer shows the latest version: a PATCH
                // back to it is owed.
                track.written_version = None;
            }
        }
        ExternalChange::Declined { attendees, .. } => {
            for a in attendees {
                if !track.declined.contains(a) {
                    track.declined.push(a.clone());
                }
            }
            return;
        }
    }
    track.external_change = Some(change.clone());
}

/// Remembers an etag of one of our own writes.
pub fn remember_etag(track: &mut BookingTrack, etag: Option<&String>) {
    if let Some(etag) = etag {
        if !track.our_etags.contains(etag) {
            track.our_etags.push(etag.clone());
        }
        let excess = track.our_etags.len().saturating_sub(OUR_ETAGS);
        track.our_etags.drain(..excess);
    }
}

/// One of our writes landed: the calendar shows the booking again, so a
/// later edit is a new change even when it repeats an earlier one (a host
/// moving the event back to where they had it before `restore` put it
/// back — the simulation's seed 60).
pub fn on_written(track: &mut BookingTrack) {
    track.external_change = None;
}

/// A newer version of the booking arrived: any hold ends.
pub fn on_new_version(track: &mut BookingTrack) {
    track.held_version = None;
    track.external_change = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decide::{decide_with, ConnectionCommand};
    use crate::core::ids::PlatformProviderId;
    use crate::core::ids::{BookingId, CalendarId, CalendarProvider, ExternalAccount};
    use crate::core::outbound::{next_outbound, Booking, CancelMode, OutboundOp, WriteOutcome};
    use crate::core::sync::SyncPolicy;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap()
    }

    fn booking(version: u64, hour: u32) -> Booking {
        let start = Utc.with_ymd_and_hms(2026, 12, 2, hour, 0, 0).unwrap();
        Booking {
            booking_id: BookingId::parse("bk-1").unwrap(),
            version,
            status: BookingStatus::Confirmed,
            start,
            end: start + chrono::Duration::hours(1),
            time_zone: "UTC".into(),
            title: "Haircut".into(),
            attendees: vec!["client@example.com".into()],
        }
    }

    fn run(state: ConnectionState, events: &[ConnectionEvent]) -> ConnectionState {
        events.iter().fold(state, |s, e| s.evolve(e))
    }

    /// A Google connection with bk-1 v1 written as event "ev1" (etag "e1").
    fn written() -> ConnectionState {
        let primary = CalendarId::parse("primary").unwrap();
        let mut events = vec![ConnectionEvent::ConnectionCreated {
            platform_provider_id: PlatformProviderId::parse("prov-1").unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse("host@example.com").unwrap(),
            calendars: vec![primary.clone()],
            destination_calendar: Some(primary),
        }];
        events.extend(bk1_written_as_ev1("\"e1\""));
        run(ConnectionState::default(), &events)
    }

    fn page(changes: Vec<serde_json::Value>) -> FetchedPage {
        FetchedPage {
            calendar: CalendarId::parse("primary").unwrap(),
            full_round: false,
            changes: changes
                .into_iter()
                .map(|c| ProviderChange::Google(serde_json::from_value(c).unwrap()))
                .collect(),
            calendar_zone: Some("UTC".into()),
            completed_with: Some("cursor-2".into()),
            first_page: true,
            window: None,
        }
    }

    fn our_event(etag: &str, hour: u32, declined: &[&str]) -> serde_json::Value {
        let start = Utc.with_ymd_and_hms(2026, 12, 2, hour, 0, 0).unwrap();
        let mut attendees =
            vec![serde_json::json!({"email": "client@example.com", "responseStatus": "accepted"})];
        for d in declined {
            attendees.push(serde_json::json!({"email": d, "responseStatus": "declined"}));
        }
        serde_json::json!({
            "id": "ev1", "etag": etag, "status": "confirmed",
            "start": {"dateTime": start.to_rfc3339()},
            "end": {"dateTime": (start + chrono::Duration::hours(1)).to_rfc3339()},
            "extendedProperties": {"private": {"calsyncBookingId": "bk-1"}},
            "attendees": attendees,
        })
    }

    fn record(
        state: &ConnectionState,
        p: FetchedPage,
        policy: ExternalChangePolicy,
    ) -> Vec<ConnectionEvent> {
        let sync = SyncPolicy {
            on_external_change: policy,
            ..SyncPolicy::default()
        };
        decide_with(state, &ConnectionCommand::RecordPage(p), now(), &sync)
            .unwrap()
            .events
    }

    fn changes(events: &[ConnectionEvent]) -> Vec<(String, ExternalChangePolicy)> {
        events
            .iter()
            .filter_map(|e| match e {
                ConnectionEvent::BookingExternallyChanged { change, policy, .. } => {
                    Some((change.kind().to_string(), *policy))
                }
                _ => None,
            })
            .collect()
    }

    fn tombstone() -> serde_json::Value {
        serde_json::json!({"id": "ev1", "status": "cancelled"})
    }

    #[test]
    fn our_event_read_back_unchanged_is_no_change() {
        let s = written();
        assert!(changes(&record(
            &s,
            page(vec![our_event("\"e1\"", 10, &[])]),
            Default::default()
        ))
        .is_empty());
        // A new etag (say the host added a note) with the same times: no move.
        assert!(changes(&record(
            &s,
            page(vec![our_event("\"e9\"", 10, &[])]),
            Default::default()
        ))
        .is_empty());
    }

    #[test]
    fn a_deletion_under_notify_is_recorded_and_holds_the_booking_until_a_new_version() {
        let s = written();
        let events = record(&s, page(vec![tombstone()]), ExternalChangePolicy::Notify);
        assert_eq!(
            changes(&events),
            vec![("deleted".into(), ExternalChangePolicy::Notify)]
        );
        let s = run(s, &events);
        let track = &s.bookings["bk-1"];
        assert_eq!(track.held_version, Some(1));
        assert_eq!(
            next_outbound(track, CancelMode::Delete),
            None,
            "no re-creation"
        );
        // The same tombstone seen again is not reported twice.
        assert!(changes(&record(&s, page(vec![tombstone()]), Default::default())).is_empty());
        // The platform sends a new version: written again, as a new event.
        let s = run(
            s,
            &[ConnectionEvent::BookingReceived {
                booking: booking(2, 11),
            }],
        );
        assert_eq!(
            next_outbound(&s.bookings["bk-1"], CancelMode::Delete),
            Some(OutboundOp::Create { generation: 1 })
        );
    }

    #[test]
    fn a_deletion_under_restore_re_creates_the_event() {
        let s = written();
        let events = record(&s, page(vec![tombstone()]), ExternalChangePolicy::Restore);
        assert_eq!(
            changes(&events),
            vec![("deleted".into(), ExternalChangePolicy::Restore)]
        );
        let s = run(s, &events);
        assert_eq!(
            next_outbound(&s.bookings["bk-1"], CancelMode::Delete),
            Some(OutboundOp::Create { generation: 1 })
        );
    }

    #[test]
    fn a_move_is_reported_once_and_held_under_notify_or_patched_back_under_restore() {
        let s = written();
        let moved = page(vec![our_event("\"e2\"", 15, &[])]);
        let events = record(&s, moved.clone(), ExternalChangePolicy::Notify);
        assert_eq!(
            changes(&events),
            vec![("moved".into(), ExternalChangePolicy::Notify)]
        );
        let held = run(s.clone(), &events);
        assert_eq!(
            next_outbound(&held.bookings["bk-1"], CancelMode::Delete),
            None
        );
        assert!(changes(&record(&held, moved.clone(), Default::default())).is_empty());
        // Moved again, elsewhere: reported again.
        assert_eq!(
            changes(&record(
                &held,
                page(vec![our_event("\"e3\"", 16, &[])]),
                Default::default()
            ))
            .len(),
            1
        );

        let events = record(&s, moved.clone(), ExternalChangePolicy::Restore);
        let restored = run(s, &events);
        assert_eq!(
            next_outbound(&restored.bookings["bk-1"], CancelMode::Delete),
            Some(OutboundOp::Update {
                external_event_id: "ev1".into()
            })
        );
        // Written back; then the host moves it to the same place again:
        // a new change, restored again.
        let restored = run(
            restored,
            &[
                ConnectionEvent::OutboundIntentRecorded {
                    booking_id: "bk-1".into(),
                    version: 1,
                    op: OutboundOp::Update {
                        external_event_id: "ev1".into(),
                    },
                },
                ConnectionEvent::OutboundWriteSucceeded {
                    booking_id: "bk-1".into(),
                    version: 1,
                    outcome: WriteOutcome::Updated {
                        etag: Some("\"e3\"".into()),
                    },
                },
            ],
        );
        let again = page(vec![our_event("\"e4\"", 15, &[])]);
        assert_eq!(
            changes(&record(&restored, again, ExternalChangePolicy::Restore)),
            vec![("moved".into(), ExternalChangePolicy::Restore)]
        );
    }

    #[test]
    fn a_stale_page_showing_our_own_older_write_is_not_a_move() {
        // v2 moved the booking to 12:00 (etag e2); a page fetched before
        // that write still shows 10:00 with our etag e1.
        let s = run(
            written(),
            &[
                ConnectionEvent::BookingReceived {
                    booking: booking(2, 12),
                },
                ConnectionEvent::OutboundIntentRecorded {
                    booking_id: "bk-1".into(),
                    version: 2,
                    op: OutboundOp::Update {
                        external_event_id: "ev1".into(),
                    },
                },
                ConnectionEvent::OutboundWriteSucceeded {
                    booking_id: "bk-1".into(),
                    version: 2,
                    outcome: WriteOutcome::Updated {
                        etag: Some("\"e2\"".into()),
                    },
                },
            ],
        );
        assert!(changes(&record(
            &s,
            page(vec![our_event("\"e1\"", 10, &[])]),
            Default::default()
        ))
        .is_empty());
    }

    #[test]
    fn a_decline_is_reported_once_and_never_fixed() {
        let s = written();
        let p = page(vec![our_event("\"e2\"", 10, &["guest@example.com"])]);
        for policy in [ExternalChangePolicy::Notify, ExternalChangePolicy::Restore] {
            let events = record(&s, p.clone(), policy);
            assert_eq!(changes(&events), vec![("declined".into(), policy)]);
            let after = run(s.clone(), &events);
            assert_eq!(
                next_outbound(&after.bookings["bk-1"], CancelMode::Delete),
                None
            );
            assert_eq!(after.bookings["bk-1"].held_version, None);
            assert!(changes(&record(&after, p.clone(), policy)).is_empty());
        }
    }

    #[test]
    fn a_booking_with_a_write_owed_or_in_flight_is_not_judged() {
        let s = run(
            written(),
            &[ConnectionEvent::BookingReceived {
                booking: booking(2, 12),
            }],
        );
        assert!(changes(&record(&s, page(vec![tombstone()]), Default::default())).is_empty());
        assert!(changes(&record(
            &s,
            page(vec![our_event("\"e7\"", 15, &[])]),
            Default::default()
        ))
        .is_empty());
    }

    /// A Graph connection with bk-1 v1 (10:00–11:00 on 2 December) written
    /// as "ev1", its calendar's round based on `window` (if any).
    fn written_on_graph(window: Option<(u32, u32)>) -> ConnectionState {
        let primary = CalendarId::parse("primary").unwrap();
        let mut events = vec![ConnectionEvent::ConnectionCreated {
            platform_provider_id: PlatformProviderId::parse("prov-1").unwrap(),
            provider: CalendarProvider::Microsoft,
            account: ExternalAccount::parse("host@contoso.com").unwrap(),
            calendars: vec![primary.clone()],
            destination_calendar: Some(primary.clone()),
        }];
        if let Some((from_day, to_day)) = window {
            events.push(ConnectionEvent::FullSyncStarted {
                calendar: primary,
                generation: 1,
                reason: "first sync".into(),
                window: Some(WindowBase {
                    based_at: now(),
                    start: Utc.with_ymd_and_hms(2026, 12, from_day, 0, 0, 0).unwrap(),
                    end: Utc.with_ymd_and_hms(2026, 12, to_day, 0, 0, 0).unwrap(),
                }),
            });
        }
        events.extend(bk1_written_as_ev1("W/\"e1\""));
        run(ConnectionState::default(), &events)
    }

    /// bk-1 v1 received and written as "ev1" with `etag`.
    fn bk1_written_as_ev1(etag: &str) -> Vec<ConnectionEvent> {
        vec![
            ConnectionEvent::BookingReceived {
                booking: booking(1, 10),
            },
            ConnectionEvent::OutboundIntentRecorded {
                booking_id: "bk-1".into(),
                version: 1,
                op: OutboundOp::Create { generation: 0 },
            },
            ConnectionEvent::OutboundWriteSucceeded {
                booking_id: "bk-1".into(),
                version: 1,
                outcome: WriteOutcome::Created {
                    external_event_id: "ev1".into(),
                    etag: Some(etag.into()),
                },
            },
        ]
    }

    fn graph_removal() -> FetchedPage {
        FetchedPage {
            changes: vec![ProviderChange::Graph(
                serde_json::from_value(serde_json::json!({
                    "@odata.type": "#microsoft.graph.event",
                    "id": "ev1",
                    "@removed": {"reason": "deleted"}
                }))
                .unwrap(),
            )],
            ..page(vec![])
        }
    }

    #[test]
    fn a_graph_removal_of_a_booking_outside_the_window_or_with_none_known_is_not_a_deletion() {
        // Graph reports `@removed` for every change to an event outside the
        // round's window — our own writes included. Taking that for a
        // deletion re-created the event: two events for one booking.
        for window in [Some((3, 10)), None] {
            let s = written_on_graph(window);
            for policy in [ExternalChangePolicy::Notify, ExternalChangePolicy::Restore] {
                assert!(
                    changes(&record(&s, graph_removal(), policy)).is_empty(),
                    "window {window:?}, {policy:?}"
                );
            }
        }
    }

    #[test]
    fn a_graph_removal_inside_the_window_keeps_the_event_id_so_no_second_event_is_made() {
        let s = written_on_graph(Some((1, 8)));
        for policy in [ExternalChangePolicy::Notify, ExternalChangePolicy::Restore] {
            let events = record(&s, graph_removal(), policy);
            assert_eq!(changes(&events), vec![("deleted".into(), policy)]);
            let after = run(s.clone(), &events);
            let track = &after.bookings["bk-1"];
            assert_eq!(track.external_event_id.as_deref(), Some("ev1"));
            // Reported once, however often Graph repeats it.
            assert!(changes(&record(&after, graph_removal(), policy)).is_empty());
            // The write that follows (at once under restore, at the next
            // version under notify) addresses the old event: a PATCH finds
            // it if it was only moved, a 404 re-creates it.
            let after = match policy {
                ExternalChangePolicy::Restore => after,
                ExternalChangePolicy::Notify => {
                    assert_eq!(next_outbound(track, CancelMode::Delete), None, "held");
                    run(
                        after,
                        &[ConnectionEvent::BookingReceived {
                            booking: booking(2, 11),
                        }],
                    )
                }
            };
            assert_eq!(
                next_outbound(&after.bookings["bk-1"], CancelMode::Delete),
                Some(OutboundOp::Update {
                    external_event_id: "ev1".into()
                }),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn the_policy_spellings_parse() {
        assert_eq!("notify".parse(), Ok(ExternalChangePolicy::Notify));
        assert_eq!("restore".parse(), Ok(ExternalChangePolicy::Restore));
        assert!("fix".parse::<ExternalChangePolicy>().is_err());
        assert_eq!(
            ExternalChangePolicy::default(),
            ExternalChangePolicy::Notify
        );
    }

    #[test]
    fn the_event_round_trips_through_the_log_format() {
        let e = ConnectionEvent::BookingExternallyChanged {
            booking_id: "bk-1".into(),
            version: 3,
            change: ExternalChange::Moved {
                external_event_id: "ev1".into(),
                start: now(),
                end: now() + chrono::Duration::hours(1),
            },
            policy: ExternalChangePolicy::Notify,
            at: now(),
        };
        let (ty, payload) = e.to_parts().unwrap();
        assert_eq!(ty, "booking_externally_changed");
        assert_eq!(payload["change"]["kind"], "moved");
        assert_eq!(ConnectionEvent::from_parts(ty, 1, payload).unwrap(), e);
    }
}
