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
//!
//! A cancellation either deletes the external event or, under
//! [`CancelMode::MarkCancelled`], PATCHes it to stop blocking time and say
//! "Cancelled: ". The mode is an input to [`next_outbound`]; the op it
//! picks is recorded in the intent, so the log alone says what was written.

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
    /// PATCH the same external event to show the cancellation: free time
    /// (Google `transparent`, Graph `showAs: free`) and a "Cancelled: "
    /// title. The event stays, so a re-activation PATCHes it back.
    MarkCancelled {
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
    /// Transient write failures in a row.
    #[serde(default)]
    pub failures: u32,
    /// No write before this instant (the booking's own backoff).
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    /// Set when retrying cannot help: no write until the booking changes
    /// or an operator retries it.
    #[serde(default)]
    pub failed: Option<FailedWrite>,
    /// Set when the booking's event was changed externally under the
    /// `notify` policy: no write for this version; a newer one lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_version: Option<u64>,
    /// The last external change recorded (until a newer version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_change: Option<super::external_change::ExternalChange>,
    /// Etags of our own recent writes: a page showing one of them shows
    /// our write, not someone else's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub our_etags: Vec<String>,
    /// Attendees already reported as having declined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declined: Vec<String>,
}

/// A write the provider refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedWrite {
    /// The provider's HTTP status, when there was one.
    pub status: Option<u16>,
    pub reason: String,
    pub at: DateTime<Utc>,
}

impl BookingTrack {
    /// A booking seen for the first time: nothing written yet.
    pub fn new(latest: Booking) -> Self {
        BookingTrack {
            latest,
            generation: 0,
            external_event_id: None,
            etag: None,
            written_version: None,
            pending: None,
            pending_version: None,
            last_error: None,
            failures: 0,
            retry_at: None,
            failed: None,
            held_version: None,
            external_change: None,
            our_etags: Vec::new(),
            declined: Vec::new(),
        }
    }
}

/// The write to run for a booking now, and whether it needs a new intent
/// recorded first (`false`: an intent is already pending and is completed
/// with its own idempotency key). `None`: nothing to write, or the
/// booking's write failed for good and waits.
pub fn write_to_run(track: &BookingTrack, on_cancel: CancelMode) -> Option<(OutboundOp, bool)> {
    if track.failed.is_some() {
        return None;
    }
    match &track.pending {
        // A create whose outcome is unknown, for a booking cancelled since:
        // when cancellations delete, clean up whatever it may have made
        // instead of creating it first. (When they mark, the create is
        // completed and then marked: the event stays visible, cancelled.)
        Some(OutboundOp::Create { generation })
            if on_cancel == CancelMode::Delete
                && track.latest.status == BookingStatus::Cancelled
                && track.external_event_id.is_none() =>
        {
            Some((
                OutboundOp::DeleteTagged {
                    generation: *generation,
                },
                true,
            ))
        }
        Some(op) => Some((op.clone(), false)),
        None => next_outbound(track, on_cancel).map(|op| (op, true)),
    }
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

/// What a cancelled booking does to its external event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelMode {
    /// The event is deleted from the calendar.
    #[default]
    Delete,
    /// The event stays, visibly cancelled and no longer blocking time.
    MarkCancelled,
}

impl std::str::FromStr for CancelMode {
    type Err = String;

    /// The spelling of the configuration file, for flags and environment.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "delete" => Ok(CancelMode::Delete),
            "mark_cancelled" => Ok(CancelMode::MarkCancelled),
            other => Err(format!(
                "unknown cancel mode {other:?} (expected \"delete\" or \"mark_cancelled\")"
            )),
        }
    }
}

/// The title a cancelled booking's event shows under
/// [`CancelMode::MarkCancelled`].
pub fn cancelled_title(title: &str) -> String {
    format!("Cancelled: {title}")
}

/// The write that brings the provider to the booking's latest version; a
/// cancellation is written the way `on_cancel` says.
pub fn next_outbound(track: &BookingTrack, on_cancel: CancelMode) -> Option<OutboundOp> {
    match (owed_write(track)?, on_cancel) {
        (OutboundOp::Delete { external_event_id }, CancelMode::MarkCancelled) => {
            Some(OutboundOp::MarkCancelled { external_event_id })
        }
        (op, _) => Some(op),
    }
}

/// Whether the provider lags the booking. The cancel mode only chooses
/// *how* a cancellation is written, never *whether* a write is owed, so
/// projections need no mode and replay needs no configuration.
pub fn owes_write(track: &BookingTrack) -> bool {
    owed_write(track).is_some()
}

/// The write owed, with a cancellation written as a delete.
fn owed_write(track: &BookingTrack) -> Option<OutboundOp> {
    let latest = &track.latest;
    // Changed in the calendar under `notify`: the host's edit stands until
    // the platform sends a newer version.
    if track.held_version == Some(latest.version) && track.pending.is_none() {
        return None;
    }
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
        // The event already shows this cancelled version: only a mark
        // credits a cancelled version while keeping the event (creates and
        // updates are only ever intended for confirmed versions, and a
        // delete forgets the event). A mode changed since never deletes it
        // after the fact.
        (BookingStatus::Cancelled, Some(_)) if track.written_version == Some(latest.version) => {
            None
        }
        (BookingStatus::Cancelled, Some(id)) => Some(OutboundOp::Delete {
            external_event_id: id.clone(),
        }),
        // Cancelled before any recorded create: a create may still have
        // happened (its result lost) — clean up by tag. In either mode: an
        // event nobody recorded has nothing to keep for a re-activation.
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
    use proptest::prelude::*;

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
        BookingTrack::new(b)
    }

    #[test]
    fn a_new_booking_is_created_then_rescheduled_in_place_then_deleted() {
        let mut t = track(booking(1, BookingStatus::Confirmed));
        assert_eq!(
            next_outbound(&t, CancelMode::Delete),
            Some(OutboundOp::Create { generation: 0 })
        );
        t.external_event_id = Some("ev".into());
        t.written_version = Some(1);
        assert_eq!(next_outbound(&t, CancelMode::Delete), None);
        t.latest = booking(2, BookingStatus::Confirmed);
        assert_eq!(
            next_outbound(&t, CancelMode::Delete),
            Some(OutboundOp::Update {
                external_event_id: "ev".into()
            })
        );
        t.latest = booking(3, BookingStatus::Cancelled);
        assert_eq!(
            next_outbound(&t, CancelMode::Delete),
            Some(OutboundOp::Delete {
                external_event_id: "ev".into()
            })
        );
    }

    #[test]
    fn a_cancellation_racing_an_unrecorded_create_cleans_up_by_tag() {
        let mut t = track(booking(2, BookingStatus::Cancelled));
        assert_eq!(
            next_outbound(&t, CancelMode::Delete),
            None,
            "never created, nothing to do"
        );
        t.pending = Some(OutboundOp::Create { generation: 0 });
        assert_eq!(
            next_outbound(&t, CancelMode::Delete),
            Some(OutboundOp::DeleteTagged { generation: 0 })
        );
    }

    #[test]
    fn in_mark_mode_a_cancellation_patches_the_event_and_a_reactivation_patches_it_back() {
        let mark = CancelMode::MarkCancelled;
        let mut t = track(booking(1, BookingStatus::Confirmed));
        t.external_event_id = Some("ev".into());
        t.written_version = Some(1);
        t.latest = booking(2, BookingStatus::Cancelled);
        assert_eq!(
            next_outbound(&t, mark),
            Some(OutboundOp::MarkCancelled {
                external_event_id: "ev".into()
            })
        );
        // The mark succeeded (an update credited with the cancelled version).
        t.written_version = Some(2);
        assert_eq!(next_outbound(&t, mark), None);
        assert!(!owes_write(&t));
        // A later cancelled version (say a new title) is marked again.
        t.latest = booking(3, BookingStatus::Cancelled);
        assert_eq!(
            next_outbound(&t, mark),
            Some(OutboundOp::MarkCancelled {
                external_event_id: "ev".into()
            })
        );
        t.written_version = Some(3);
        // Re-activated: the same event is PATCHed back, same generation.
        t.latest = booking(4, BookingStatus::Confirmed);
        assert_eq!(
            next_outbound(&t, mark),
            Some(OutboundOp::Update {
                external_event_id: "ev".into()
            })
        );
    }

    #[test]
    fn an_event_already_marked_is_not_deleted_when_the_mode_changes_later() {
        let mut t = track(booking(2, BookingStatus::Cancelled));
        t.external_event_id = Some("ev".into());
        t.written_version = Some(2);
        assert_eq!(next_outbound(&t, CancelMode::Delete), None);
        // The next cancelled version is written in the mode then in force.
        t.latest = booking(3, BookingStatus::Cancelled);
        assert_eq!(
            next_outbound(&t, CancelMode::Delete),
            Some(OutboundOp::Delete {
                external_event_id: "ev".into()
            })
        );
    }

    #[test]
    fn the_marked_title_says_cancelled() {
        assert_eq!(cancelled_title("Haircut"), "Cancelled: Haircut");
    }

    fn any_track() -> impl Strategy<Value = BookingTrack> {
        let op = prop_oneof![
            (0u32..3).prop_map(|generation| OutboundOp::Create { generation }),
            Just(OutboundOp::Update {
                external_event_id: "ev".into()
            }),
            Just(OutboundOp::Delete {
                external_event_id: "ev".into()
            }),
            Just(OutboundOp::MarkCancelled {
                external_event_id: "ev".into()
            }),
        ];
        (
            1u64..5,
            any::<bool>(),
            0u32..3,
            any::<bool>(),
            proptest::option::of(0u64..5),
            proptest::option::of(op),
        )
            .prop_map(
                |(version, cancelled, generation, has_event, written, pending)| {
                    let status = if cancelled {
                        BookingStatus::Cancelled
                    } else {
                        BookingStatus::Confirmed
                    };
                    let mut t = track(booking(version, status));
                    t.generation = generation;
                    t.external_event_id = has_event.then(|| "ev".to_string());
                    t.written_version = written;
                    t.pending = pending;
                    t
                },
            )
    }

    proptest! {
        /// The mode picks how a cancellation is written, never whether a
        /// write is owed — which is why projections (and replay) need no
        /// mode — and it only ever swaps a delete for a mark of the same
        /// event.
        #[test]
        fn the_cancel_mode_only_changes_how_an_owed_delete_is_written(t in any_track()) {
            let delete = next_outbound(&t, CancelMode::Delete);
            let mark = next_outbound(&t, CancelMode::MarkCancelled);
            prop_assert_eq!(delete.is_some(), owes_write(&t));
            prop_assert_eq!(mark.is_some(), owes_write(&t));
            match (delete, mark) {
                (
                    Some(OutboundOp::Delete { external_event_id: a }),
                    Some(OutboundOp::MarkCancelled { external_event_id: b }),
                ) => prop_assert_eq!(a, b),
                (d, m) => prop_assert_eq!(d, m),
            }
        }

        /// Mark mode never asks for a second event: once an event exists,
        /// every write targets it.
        #[test]
        fn mark_mode_never_creates_while_an_event_exists(t in any_track()) {
            if t.external_event_id.is_some() {
                let op = next_outbound(&t, CancelMode::MarkCancelled);
                prop_assert!(
                    !matches!(op, Some(OutboundOp::Create { .. }) | Some(OutboundOp::Delete { .. })),
                    "{:?}", op
                );
            }
        }
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
