//! Outbound sync: bookings become external calendar events, exactly once.
//!
//! The platform sends booking versions; a connection keeps, per booking, the
//! latest version it was told and what the provider has (which external
//! event, which version written). [`next_outbound`] compares the two and
//! names the one write that closes the gap. The shell records that write as
//! an intent *before* calling the provider, calls with an idempotency key
//! derived from the intent (Google: the deterministic event id of
//! `(booking, generation)`; Graph: `transactionId` + a tag searched first),
//! and records the result after. An intent without a result (a crash, a
//! kill, a lost response) is simply written again with the same key.

use super::ids::BookingId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A booking as the platform describes it, at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub booking_id: BookingId,
    /// Monotonically increasing per booking; older versions are ignored.
    pub version: u64,
    pub status: BookingStatus,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// IANA zone the booking was made in.
    pub time_zone: String,
    pub title: String,
    #[serde(default)]
    pub attendees: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BookingStatus {
    Confirmed,
    Cancelled,
}

/// One write to the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum OutboundOp {
    /// Create the booking's event; `generation` makes the idempotency key.
    Create {
        generation: u32,
    },
    /// PATCH the same external event (a reschedule never deletes + creates).
    Update {
        external_event_id: String,
    },
    Delete {
        external_event_id: String,
    },
    /// Delete whatever a create of `generation` may have made (its response
    /// was never recorded): look it up by its tag first.
    DeleteTagged {
        generation: u32,
    },
}

/// What the connection knows of one booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingTrack {
    pub latest: Booking,
    /// Bumped after a delete: Google keeps ids of deleted events reserved,
    /// so a booking re-created after a cancellation needs a new id.
    pub generation: u32,
    pub external_event_id: Option<String>,
    pub etag: Option<String>,
    /// The booking version the provider reflects.
    pub written_version: Option<u64>,
    /// An intent recorded whose result is not recorded yet.
    pub pending: Option<OutboundOp>,
    /// The booking version that intent was recorded for. A write is
    /// credited with this version, never more: a retried create that finds
    /// its event already made (409, or a Graph transaction replay) may be
    /// looking at older content, and crediting the intent's version makes
    /// `next_outbound` follow up with a PATCH to the latest one.
    #[serde(default)]
    pub pending_version: Option<u64>,
    pub last_error: Option<String>,
}

/// The outcome of one write, as the shell reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum WriteOutcome {
    Created {
        external_event_id: String,
        etag: Option<String>,
    },
    Updated {
        etag: Option<String>,
    },
    Deleted,
    /// The event is gone at the provider (someone deleted it): create anew.
    Missing,
}

/// The write that brings the provider to the booking's latest version.
pub fn next_outbound(track: &BookingTrack) -> Option<OutboundOp> {
    let latest = &track.latest;
    match (latest.status, &track.external_event_id) {
        (BookingStatus::Confirmed, None) => Some(OutboundOp::Create {
            generation: track.generation,
        }),
        (BookingStatus::Confirmed, Some(id)) if track.written_version != Some(latest.version) => {
            Some(OutboundOp::Update {
                external_event_id: id.clone(),
            })
        }
        (BookingStatus::Confirmed, Some(_)) => None,
        (BookingStatus::Cancelled, Some(id)) => Some(OutboundOp::Delete {
            external_event_id: id.clone(),
        }),
        // Cancelled before any recorded create: a create may still have
        // happened (its result lost) — clean up by tag.
        (BookingStatus::Cancelled, None) => match &track.pending {
            Some(OutboundOp::Create { generation }) => Some(OutboundOp::DeleteTagged {
                generation: *generation,
            }),
            _ => None,
        },
    }
}

/// The stable ICS UID of a booking (same for all its versions).
pub fn ical_uid(booking_id: &BookingId) -> String {
    format!("{booking_id}@calsync")
}

/// Checks a booking from the platform before it touches the log.
pub fn validate(booking: &Booking) -> Result<(), String> {
    if booking.end <= booking.start {
        return Err("end must be after start".into());
    }
    if booking.end - booking.start > chrono::Duration::days(31) {
        return Err("a booking may last at most 31 days".into());
    }
    if booking.title.chars().count() > 500 || booking.title.chars().any(char::is_control) {
        return Err("title must be at most 500 printable characters".into());
    }
    if booking.attendees.len() > 500 {
        return Err("at most 500 attendees".into());
    }
    if booking
        .attendees
        .iter()
        .any(|a| a.len() > 320 || !a.contains('@'))
    {
        return Err("attendees must be e-mail addresses".into());
    }
    if super::tz::resolve_zone(&booking.time_zone).is_err() {
        return Err(format!("unknown time zone {:?}", booking.time_zone));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn booking(version: u64, status: BookingStatus) -> Booking {
        let start = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        Booking {
            booking_id: BookingId::parse("bk-1").unwrap(),
            version,
            status,
            start,
            end: start + chrono::Duration::hours(1),
            time_zone: "Europe/Berlin".into(),
            title: "Haircut".into(),
            attendees: vec!["a@example.com".into()],
        }
    }

    fn track(b: Booking) -> BookingTrack {
        BookingTrack {
            latest: b,
            generation: 0,
            external_event_id: None,
            etag: None,
            written_version: None,
            pending: None,
            pending_version: None,
            last_error: None,
        }
    }

    #[test]
    fn a_new_booking_is_created_then_rescheduled_in_place_then_deleted() {
        let mut t = track(booking(1, BookingStatus::Confirmed));
        assert_eq!(
            next_outbound(&t),
            Some(OutboundOp::Create { generation: 0 })
        );
        t.external_event_id = Some("ev".into());
        t.written_version = Some(1);
        assert_eq!(next_outbound(&t), None);
        t.latest = booking(2, BookingStatus::Confirmed);
        assert_eq!(
            next_outbound(&t),
            Some(OutboundOp::Update {
                external_event_id: "ev".into()
            })
        );
        t.latest = booking(3, BookingStatus::Cancelled);
        assert_eq!(
            next_outbound(&t),
            Some(OutboundOp::Delete {
                external_event_id: "ev".into()
            })
        );
    }

    #[test]
    fn a_cancellation_racing_an_unrecorded_create_cleans_up_by_tag() {
        let mut t = track(booking(2, BookingStatus::Cancelled));
        assert_eq!(next_outbound(&t), None, "never created, nothing to do");
        t.pending = Some(OutboundOp::Create { generation: 0 });
        assert_eq!(
            next_outbound(&t),
            Some(OutboundOp::DeleteTagged { generation: 0 })
        );
    }

    #[test]
    fn bad_bookings_are_refused_with_a_reason() {
        let mut b = booking(1, BookingStatus::Confirmed);
        assert!(validate(&b).is_ok());
        b.end = b.start;
        assert!(validate(&b).is_err());
        let mut b = booking(1, BookingStatus::Confirmed);
        b.time_zone = "Mars/Olympus".into();
        assert!(validate(&b).is_err());
        let mut b = booking(1, BookingStatus::Confirmed);
        b.attendees = vec!["not-an-address".into()];
        assert!(validate(&b).is_err());
    }
}
