//! Platform events: what the booking platform is told, derived from the log.
//!
//! Every platform event is a pure function of one log event and the fold of
//! its connection's stream before it ([`FeedConnection::step`]), so reading
//! the log again — after a restart, in replay, from any cursor — yields the
//! same events with the same ids. Nothing is stored but the log itself.
//!
//! The types (see `docs/PLATFORM_EVENTS.md` for their JSON schemas):
//!
//! | type | when |
//! | --- | --- |
//! | `availability.changed` | a busy interval of the platform provider appeared, moved or vanished |
//! | `booking.external_changed` | our event was moved, deleted or declined in the calendar |
//! | `booking.written` | the provider confirmed a booking's write |
//! | `booking.write_failed` | a booking's write failed (transient or for good) |
//! | `connection.needs_reauthorization` | the grant is gone |
//! | `connection.degraded` | a healthy connection started failing |
//! | `connection.recovered` | a failing connection is healthy again |

use super::events::ConnectionEvent;
use super::ids::{CalendarId, ConnectionId};
use super::interval::Interval;
use super::outbound::WriteOutcome;
use super::state::{ConnectionState, ConnectionStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The schema version of every platform event type today.
pub const SCHEMA_VERSION: u32 = 1;

/// Namespace of the platform event ids (UUID v5 of position, index, type).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6361_6c73_796e_6366_6565_6400_0000_0001);

/// The kinds of platform events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PlatformEventType {
    #[serde(rename = "availability.changed")]
    AvailabilityChanged,
    #[serde(rename = "booking.external_changed")]
    BookingExternalChanged,
    #[serde(rename = "booking.written")]
    BookingWritten,
    #[serde(rename = "booking.write_failed")]
    BookingWriteFailed,
    #[serde(rename = "connection.needs_reauthorization")]
    ConnectionNeedsReauthorization,
    #[serde(rename = "connection.degraded")]
    ConnectionDegraded,
    #[serde(rename = "connection.recovered")]
    ConnectionRecovered,
}

impl PlatformEventType {
    pub const ALL: [PlatformEventType; 7] = [
        PlatformEventType::AvailabilityChanged,
        PlatformEventType::BookingExternalChanged,
        PlatformEventType::BookingWritten,
        PlatformEventType::BookingWriteFailed,
        PlatformEventType::ConnectionNeedsReauthorization,
        PlatformEventType::ConnectionDegraded,
        PlatformEventType::ConnectionRecovered,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PlatformEventType::AvailabilityChanged => "availability.changed",
            PlatformEventType::BookingExternalChanged => "booking.external_changed",
            PlatformEventType::BookingWritten => "booking.written",
            PlatformEventType::BookingWriteFailed => "booking.write_failed",
            PlatformEventType::ConnectionNeedsReauthorization => "connection.needs_reauthorization",
            PlatformEventType::ConnectionDegraded => "connection.degraded",
            PlatformEventType::ConnectionRecovered => "connection.recovered",
        }
    }
}

/// A type name nobody knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform event type {0:?}")]
pub struct UnknownEventType(pub String);

impl std::str::FromStr for PlatformEventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlatformEventType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_string()))
    }
}

/// Parses a comma-separated list of types (`availability.changed,booking.*`
/// is not supported: name each). Empty means every type.
pub fn parse_types(list: &str) -> Result<Vec<PlatformEventType>, UnknownEventType> {
    let mut types: Vec<PlatformEventType> = list
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    types.sort();
    types.dedup();
    Ok(types)
}

/// One event for the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformEvent {
    /// Stable: the same log event always yields the same id.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: PlatformEventType,
    /// When the log recorded the change.
    pub occurred_at: DateTime<Utc>,
    pub schema_version: u32,
    pub connection_id: ConnectionId,
    pub platform_provider_id: Option<String>,
    pub data: Value,
}

/// Where a log event sits: its global position and commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPoint {
    pub position: i64,
    pub committed_at: DateTime<Utc>,
}

/// The stable id of the `index`-th platform event derived from the log
/// event at `position`.
pub fn event_id(position: i64, index: usize, event_type: PlatformEventType) -> String {
    let name = format!("{position}:{index}:{}", event_type.as_str());
    uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
}

/// What the feed knows of one connection: the fold of its stream so far and
/// its busy rows (to say which time range a change affects).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedConnection {
    pub state: ConnectionState,
    busy: BTreeMap<(CalendarId, String), (Interval, u64)>,
}

impl FeedConnection {
    /// The platform events `event` yields, and the fold moved past it.
    pub fn step(
        &mut self,
        connection_id: ConnectionId,
        event: &ConnectionEvent,
        at: LogPoint,
    ) -> Vec<PlatformEvent> {
        let before = self.state.status();
        let affected = self.busy_step(event);
        let state = std::mem::take(&mut self.state).evolve(event);
        self.state = state;
        let after = self.state.status();
        let mut out: Vec<(PlatformEventType, Value)> = Vec::new();
        if let Some(range) = affected {
            out.push((
                PlatformEventType::AvailabilityChanged,
                json!({
                    "calendar_id": calendar_of(event),
                    "from": range.start(),
                    "to": range.end(),
                }),
            ));
        }
        out.extend(self.booking_events(event));
        out.extend(self.health_events(before, after));
        let provider = self
            .state
            .profile
            .as_ref()
            .map(|p| p.platform_provider_id.to_string());
        out.into_iter()
            .enumerate()
            .map(|(index, (event_type, data))| PlatformEvent {
                id: event_id(at.position, index, event_type),
                event_type,
                occurred_at: at.committed_at,
                schema_version: SCHEMA_VERSION,
                connection_id,
                platform_provider_id: provider.clone(),
                data,
            })
            .collect()
    }

    /// Moves the busy rows past `event` (as the `busy_intervals`
    /// projection does) and returns the time range whose busy time changed.
    fn busy_step(&mut self, event: &ConnectionEvent) -> Option<Interval> {
        let generation = |state: &ConnectionState, calendar: &CalendarId| {
            state
                .calendars
                .get(calendar)
                .map(|c| c.generation)
                .unwrap_or(0)
        };
        match event {
            ConnectionEvent::FullSyncStarted {
                calendar,
                generation: g,
                ..
            } => {
                // Folded before the rows of its round are marked.
                if let Some(c) = self.state.calendars.get_mut(calendar) {
                    c.generation = *g;
                }
                None
            }
            ConnectionEvent::ExternalEventSeen {
                calendar,
                event_id,
                blocks,
                ..
            } => {
                let key = (calendar.clone(), event_id.clone());
                let old = match blocks {
                    Some(interval) => self
                        .busy
                        .insert(key, (*interval, generation(&self.state, calendar))),
                    None => self.busy.remove(&key),
                }
                .map(|(i, _)| i);
                (old != *blocks)
                    .then(|| hull(old.iter().chain(blocks.iter())))
                    .flatten()
            }
            ConnectionEvent::ExternalEventRemoved {
                calendar, event_id, ..
            } => self
                .busy
                .remove(&(calendar.clone(), event_id.clone()))
                .map(|(i, _)| i),
            ConnectionEvent::SyncRoundCompleted {
                calendar,
                swept_generation: Some(g),
                ..
            } => self.remove_where(|(c, _), (_, row_gen)| c == calendar && row_gen < g),
            ConnectionEvent::CalendarsSelected { calendars, .. } => {
                self.remove_where(|(c, _), _| !calendars.contains(c))
            }
            ConnectionEvent::ConnectionRemoved { .. } => self.remove_where(|_, _| true),
            _ => None,
        }
    }

    fn remove_where(
        &mut self,
        gone: impl Fn(&(CalendarId, String), &(Interval, u64)) -> bool,
    ) -> Option<Interval> {
        let mut removed = Vec::new();
        self.busy.retain(|k, v| {
            let g = gone(k, v);
            if g {
                removed.push(v.0);
            }
            !g
        });
        hull(removed.iter())
    }

    fn booking_events(&self, event: &ConnectionEvent) -> Vec<(PlatformEventType, Value)> {
        let calendar = self
            .state
            .profile
            .as_ref()
            .and_then(|p| p.destination_calendar.as_ref())
            .map(|c| c.to_string());
        match event {
            ConnectionEvent::OutboundWriteSucceeded {
                booking_id,
                version,
                outcome,
            } => {
                let (what, external) = match outcome {
                    WriteOutcome::Created {
                        external_event_id, ..
                    } => ("created", Some(external_event_id.clone())),
                    WriteOutcome::Updated { .. } => (
                        "updated",
                        self.state
                            .bookings
                            .get(booking_id)
                            .and_then(|t| t.external_event_id.clone()),
                    ),
                    WriteOutcome::Deleted => ("deleted", None),
                    // The event was gone: nothing written yet (a create
                    // follows, and is reported when it lands).
                    WriteOutcome::Missing => return Vec::new(),
                };
                vec![(
                    PlatformEventType::BookingWritten,
                    json!({
                        "booking_id": booking_id,
                        "version": version,
                        "write": what,
                        "calendar_id": calendar,
                        "external_event_id": external,
                    }),
                )]
            }
            ConnectionEvent::OutboundWriteFailed {
                booking_id,
                kind,
                message,
                status,
                retry_at,
                permanent,
                ..
            } => vec![(
                PlatformEventType::BookingWriteFailed,
                json!({
                    "booking_id": booking_id,
                    "version": self.state.bookings.get(booking_id).map(|t| t.latest.version),
                    "kind": kind,
                    "message": message,
                    "provider_status": status,
                    "permanent": permanent,
                    "retry_at": retry_at,
                    "calendar_id": calendar,
                }),
            )],
            ConnectionEvent::BookingExternallyChanged {
                booking_id,
                version,
                change,
                policy,
                ..
            } => {
                let action = match (change, policy) {
                    (super::external_change::ExternalChange::Declined { .. }, _) => "reported",
                    (_, super::external_change::ExternalChangePolicy::Notify) => "held",
                    (_, super::external_change::ExternalChangePolicy::Restore) => "restoring",
                };
                vec![(
                    PlatformEventType::BookingExternalChanged,
                    json!({
                        "booking_id": booking_id,
                        "version": version,
                        "change": change,
                        "policy": policy,
                        "action": action,
                        "calendar_id": calendar,
                    }),
                )]
            }
            _ => Vec::new(),
        }
    }

    fn health_events(
        &self,
        before: ConnectionStatus,
        after: ConnectionStatus,
    ) -> Vec<(PlatformEventType, Value)> {
        use ConnectionStatus as S;
        if before == after {
            return Vec::new();
        }
        let failing = |s: S| matches!(s, S::Backoff | S::Degraded | S::NeedsReauthorization);
        match (before, after) {
            (_, S::NeedsReauthorization) => vec![(
                PlatformEventType::ConnectionNeedsReauthorization,
                json!({ "reason": self.state.needs_reauthorization }),
            )],
            (S::Active, S::Backoff | S::Degraded) => vec![(
                PlatformEventType::ConnectionDegraded,
                json!({
                    "status": after.as_str(),
                    "last_error": self.state.last_error,
                    "backoff_until": self.state.backoff_until,
                }),
            )],
            (b, S::Active) if failing(b) => vec![(
                PlatformEventType::ConnectionRecovered,
                json!({ "previous_status": b.as_str() }),
            )],
            _ => Vec::new(),
        }
    }
}

fn calendar_of(event: &ConnectionEvent) -> Option<String> {
    match event {
        ConnectionEvent::ExternalEventSeen { calendar, .. }
        | ConnectionEvent::ExternalEventRemoved { calendar, .. }
        | ConnectionEvent::SyncRoundCompleted { calendar, .. } => Some(calendar.to_string()),
        _ => None,
    }
}

/// The smallest interval covering all of `intervals`.
fn hull<'a>(intervals: impl Iterator<Item = &'a Interval>) -> Option<Interval> {
    intervals.fold(None, |acc: Option<Interval>, i| match acc {
        None => Some(*i),
        Some(a) => Interval::new(a.start().min(i.start()), a.end().max(i.end())).ok(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::external_change::{ExternalChange, ExternalChangePolicy};
    use crate::core::ids::{BookingId, CalendarProvider, ExternalAccount, PlatformProviderId};
    use crate::core::outbound::{Booking, BookingStatus, OutboundOp};
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, h, 0, 0).unwrap()
    }

    fn cal(s: &str) -> CalendarId {
        CalendarId::parse(s).unwrap()
    }

    fn id() -> ConnectionId {
        ConnectionId::parse("6b0d7c2e-1111-4f7a-9c53-4f55b2d0a001").unwrap()
    }

    fn history() -> Vec<ConnectionEvent> {
        let booking = Booking {
            booking_id: BookingId::parse("bk-1").unwrap(),
            version: 1,
            status: BookingStatus::Confirmed,
            start: t(10),
            end: t(11),
            time_zone: "UTC".into(),
            title: "Haircut".into(),
            attendees: vec![],
        };
        let seen = |e: &str, from: u32, to: u32| ConnectionEvent::ExternalEventSeen {
            calendar: cal("primary"),
            event_id: e.into(),
            blocks: Some(Interval::new(t(from), t(to)).unwrap()),
            ours: None,
            rule: None,
            ignored: None,
            span: None,
        };
        vec![
            ConnectionEvent::ConnectionCreated {
                platform_provider_id: PlatformProviderId::parse("prov-1").unwrap(),
                provider: CalendarProvider::Google,
                account: ExternalAccount::parse("host@example.com").unwrap(),
                calendars: vec![cal("primary"), cal("team")],
                destination_calendar: Some(cal("primary")),
            },
            ConnectionEvent::FullSyncStarted {
                calendar: cal("primary"),
                generation: 1,
                reason: "first sync".into(),
                window: None,
            },
            seen("a", 9, 10),
            seen("b", 12, 13),
            ConnectionEvent::SyncRoundCompleted {
                calendar: cal("primary"),
                cursor: "c1".into(),
                swept_generation: Some(1),
                at: t(1),
                zone: None,
            },
            // Seen again unchanged: no availability change.
            seen("a", 9, 10),
            // Moved: the range covers where it was and where it is.
            seen("b", 14, 15),
            ConnectionEvent::ExternalEventRemoved {
                calendar: cal("primary"),
                event_id: "a".into(),
                reason: None,
                span: None,
            },
            // A removal of something that never blocked changes nothing.
            ConnectionEvent::ExternalEventRemoved {
                calendar: cal("primary"),
                event_id: "zzz".into(),
                reason: None,
                span: None,
            },
            ConnectionEvent::SyncFailed {
                kind: "throttled".into(),
                message: "429".into(),
                consecutive_failures: 1,
                backoff_until: t(2),
                at: Some(t(1)),
            },
            ConnectionEvent::SyncRoundCompleted {
                calendar: cal("primary"),
                cursor: "c2".into(),
                swept_generation: None,
                at: t(2),
                zone: None,
            },
            ConnectionEvent::BookingReceived { booking },
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
                    etag: None,
                },
            },
            ConnectionEvent::BookingExternallyChanged {
                booking_id: "bk-1".into(),
                version: 1,
                change: ExternalChange::Deleted {
                    external_event_id: "ev1".into(),
                    unconfirmed: false,
                },
                policy: ExternalChangePolicy::Notify,
                at: t(3),
            },
            ConnectionEvent::ReauthorizationRequired {
                reason: "invalid_grant".into(),
            },
            ConnectionEvent::Reauthorized { at: t(4) },
            // Deselecting "primary" drops its remaining busy row (b).
            ConnectionEvent::CalendarsSelected {
                calendars: vec![cal("team")],
                destination_calendar: None,
            },
        ]
    }

    fn derive_all(events: &[ConnectionEvent]) -> Vec<PlatformEvent> {
        let mut fold = FeedConnection::default();
        events
            .iter()
            .enumerate()
            .flat_map(|(i, e)| {
                fold.step(
                    id(),
                    e,
                    LogPoint {
                        position: 100 + i as i64,
                        committed_at: t(0),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_history_yields_the_expected_platform_events_in_order() {
        let got: Vec<(String, Value)> = derive_all(&history())
            .into_iter()
            .map(|e| (e.event_type.as_str().to_string(), e.data))
            .collect();
        let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            types,
            vec![
                "availability.changed", // a appears
                "availability.changed", // b appears
                "availability.changed", // b moves
                "availability.changed", // a removed
                "connection.degraded",
                "connection.recovered",
                "booking.written",
                "booking.external_changed",
                "connection.needs_reauthorization",
                "connection.recovered",
                "availability.changed", // primary deselected: b goes
            ]
        );
        assert_eq!(got[2].1["from"], json!(t(12)));
        assert_eq!(got[2].1["to"], json!(t(15)));
        assert_eq!(got[3].1["from"], json!(t(9)));
        assert_eq!(got[6].1["external_event_id"], "ev1");
        assert_eq!(got[7].1["change"]["kind"], "deleted");
        assert_eq!(got[7].1["action"], "held");
        assert_eq!(got[10].1["from"], json!(t(14)));
    }

    #[test]
    fn ids_are_stable_and_unique_and_depend_on_the_log_position() {
        let a = derive_all(&history());
        let b = derive_all(&history());
        assert_eq!(a, b, "the same log yields the same events");
        let mut ids: Vec<&str> = a.iter().map(|e| e.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), a.len());
        assert_ne!(
            event_id(1, 0, PlatformEventType::BookingWritten),
            event_id(2, 0, PlatformEventType::BookingWritten)
        );
        assert!(a
            .iter()
            .all(|e| e.platform_provider_id.as_deref() == Some("prov-1")
                && e.schema_version == SCHEMA_VERSION));
    }

    #[test]
    fn a_sweep_of_an_older_generation_changes_availability() {
        let mut events = history()[..5].to_vec();
        events.push(ConnectionEvent::FullSyncStarted {
            calendar: cal("primary"),
            generation: 2,
            reason: "cursor invalid".into(),
            window: None,
        });
        events.push(ConnectionEvent::ExternalEventSeen {
            calendar: cal("primary"),
            event_id: "a".into(),
            blocks: Some(Interval::new(t(9), t(10)).unwrap()),
            ours: None,
            rule: None,
            ignored: None,
            span: None,
        });
        events.push(ConnectionEvent::SyncRoundCompleted {
            calendar: cal("primary"),
            cursor: "c3".into(),
            swept_generation: Some(2),
            at: t(5),
            zone: None,
        });
        let got = derive_all(&events);
        let last = got.last().unwrap();
        assert_eq!(last.event_type, PlatformEventType::AvailabilityChanged);
        assert_eq!(
            last.data["from"],
            json!(t(12)),
            "b was not seen again: swept"
        );
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn types_parse_from_their_names_and_unknown_ones_are_refused() {
        for t in PlatformEventType::ALL {
            assert_eq!(t.as_str().parse::<PlatformEventType>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), json!(t.as_str()));
        }
        assert_eq!(
            parse_types("booking.written, availability.changed,booking.written").unwrap(),
            vec![
                PlatformEventType::AvailabilityChanged,
                PlatformEventType::BookingWritten
            ]
        );
        assert!(parse_types("").unwrap().is_empty());
        assert!(parse_types("booking.*").is_err());
    }
}
