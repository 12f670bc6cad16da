//! The busy rules: does one provider event block the calendar owner's time,
//! and if so, which UTC interval?
//!
//! Owns the decision per event (`shared/PROVIDERS.md` §4) and the recognition
//! of calsync's own outbound events, which come back through inbound sync and
//! must not block time a second time (DESIGN.md guarantee 4). It does not own
//! storage: the sync engine upserts `Blocks` into `busy_intervals` keyed by
//! the external event id and deletes the row for every other decision.
//!
//! Rule order matters and is the same for both providers: a deleted or
//! cancelled event is gone whoever made it; then our own events are
//! recognised before any "free" rule, so the platform never counts its own
//! booking twice; then the free rules; only then are times read, so a free
//! event with odd times is still simply free.
//!
//! All-day events are dates in a zone, blocking from the first instant of
//! the start date to the first instant of the (exclusive) end date there:
//! Google's in the calendar's `timeZone`, Graph's in the event's
//! `originalStartTimeZone`, else the mailbox's zone, else UTC
//! ([`graph_all_day_zone`]). Midnight is read like any wall time
//! ([`crate::core::tz::local_to_utc`]): where a DST change skips midnight,
//! the day starts at the first instant after the gap.

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::core::interval::Interval;
use crate::core::tz::{local_midnight_utc, local_to_utc, resolve_zone};
use crate::core::wire::{
    GoogleEvent, GoogleEventDateTime, GoogleEventStatus, GoogleEventType, GoogleResponseStatus,
    GoogleTransparency, GoogleWhen, GraphDateTimeTimeZone, GraphEvent, GraphEventType,
    GraphResponse, GraphShowAs, WireTimeError,
};

/// Google: key in `extendedProperties.private` holding the platform booking id
/// on events calsync created.
pub const GOOGLE_BOOKING_PROPERTY: &str = "calsyncBookingId";

/// Graph: id of the single-value extended property holding the platform
/// booking id on events calsync created. Graph returns it only when asked with
/// `$expand`, which delta queries do not support, hence also
/// [`booking_tag`] in `transactionId`.
pub const GRAPH_BOOKING_PROPERTY_ID: &str =
    "String {6f2b8c1e-3d4a-4e5f-9a6b-7c8d9e0f1a2b} Name calsyncBookingId";

/// Prefix of a [`booking_tag`]: calsync's Google event ids and Graph
/// `transactionId`s.
pub const BOOKING_TAG_PREFIX: &str = "cs";

/// Lower-case base32hex (RFC 4648 §7): the only alphabet Google accepts in
/// client-chosen event ids.
const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// What the busy rules need to know about the owner's preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BusyPolicy {
    /// Whether tentative time blocks: an event marked tentative, or one the
    /// owner answered "tentative" or has not answered yet. Default `true`:
    /// a double booking costs more than a slot hidden by a maybe.
    pub tentative_blocks: bool,
}

impl Default for BusyPolicy {
    fn default() -> Self {
        BusyPolicy {
            tentative_blocks: true,
        }
    }
}

/// The verdict on one provider event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BusyDecision {
    /// The event blocks this UTC interval.
    Blocks(Interval),
    /// The event exists (or existed) but blocks nothing.
    Free(FreeReason),
    /// calsync's own outbound event for this booking: the booking itself
    /// already blocks the time on the platform.
    Ours { booking_id: String },
    /// The event cannot be read; it blocks nothing and should be reported.
    Invalid(InvalidEvent),
}

/// Why an event does not block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FreeReason {
    /// Google `status: cancelled` (deleted event, tombstone or cancelled
    /// instance of a series) or Graph `isCancelled`.
    Cancelled,
    /// Graph delta `@removed`. The item may lie outside the sync window.
    Removed,
    /// Google `transparency: transparent`.
    Transparent,
    /// Graph `showAs: free`.
    ShowAsFree,
    /// Graph `showAs: workingElsewhere`.
    WorkingElsewhere,
    /// Google `eventType: workingLocation`: not a commitment.
    WorkingLocation,
    /// Google `eventType: birthday`.
    Birthday,
    /// The owner declined.
    Declined,
    /// Tentative, and the policy says tentative time does not block.
    Tentative,
    /// A Graph series master: its occurrences arrive as their own events.
    SeriesMaster,
    /// Start equals end: there is no time to block.
    ZeroDuration,
}

/// Why an event could not be turned into a decision about time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum InvalidEvent {
    #[error("event has no id")]
    MissingId,
    #[error("event has no {0}")]
    MissingTime(TimeField),
    #[error("unreadable {field}: {reason}")]
    BadTime { field: TimeField, reason: String },
    #[error("unknown time zone {0:?}")]
    UnknownZone(String),
    #[error("start and end mix an all-day date with a timed value")]
    MixedAllDay,
    #[error("end {end} is before start {start}")]
    EndBeforeStart {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

/// Which end of an event a time problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeField {
    Start,
    End,
}

impl std::fmt::Display for TimeField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeField::Start => "start",
            TimeField::End => "end",
        })
    }
}

/// Applies the Google rules. `calendar_zone` is the calendar's own zone
/// (`timeZone` of the `events.list` response): all-day events block from
/// midnight to midnight there, and it is the fallback for an offset-less
/// `dateTime` without `timeZone`.
pub fn google_busy(event: &GoogleEvent, calendar_zone: Tz, policy: &BusyPolicy) -> BusyDecision {
    if event.id.is_empty() {
        return BusyDecision::Invalid(InvalidEvent::MissingId);
    }
    // Covers tombstones (only id + status) and cancelled instances of a
    // series (recurringEventId + originalStartTime) alike.
    if event.status() == GoogleEventStatus::Cancelled {
        return BusyDecision::Free(FreeReason::Cancelled);
    }
    // The private property exists only on the copy calsync wrote. The id is
    // shared with every guest's copy, so it identifies our event only when
    // this calendar is not merely invited: a platform provider invited to
    // another provider's booking is genuinely busy.
    let booking = event
        .private_property(GOOGLE_BOOKING_PROPERTY)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .or_else(|| match event.is_invitation() {
            true => None,
            false => booking_id_from_tag(&event.id),
        });
    if let Some(booking_id) = booking {
        return BusyDecision::Ours { booking_id };
    }
    if event.transparency == Some(GoogleTransparency::Transparent) {
        return BusyDecision::Free(FreeReason::Transparent);
    }
    match event.event_type {
        Some(GoogleEventType::WorkingLocation) => {
            return BusyDecision::Free(FreeReason::WorkingLocation)
        }
        Some(GoogleEventType::Birthday) => return BusyDecision::Free(FreeReason::Birthday),
        _ => {}
    }
    let response = event
        .self_attendee()
        .and_then(|me| me.response_status.as_ref());
    if response == Some(&GoogleResponseStatus::Declined) {
        return BusyDecision::Free(FreeReason::Declined);
    }
    let tentative = event.status() == GoogleEventStatus::Tentative
        || matches!(
            response,
            Some(GoogleResponseStatus::Tentative | GoogleResponseStatus::NeedsAction)
        );
    if tentative && !policy.tentative_blocks {
        return BusyDecision::Free(FreeReason::Tentative);
    }
    decide_interval(google_interval(event, calendar_zone))
}

/// Applies the Graph rules. Zone names may be Windows or IANA names.
///
/// A timed event is read in the zone its `start`/`end` are labelled with
/// (UTC, as the sync client asks). An all-day event (`isAllDay`) blocks from
/// midnight to midnight (end date exclusive) in [`graph_all_day_zone`]: its
/// `originalStartTimeZone` when that names a real zone, else
/// `fallback_zone`, which is the mailbox's zone (`mailboxSettings.timeZone`)
/// or UTC when that is unknown. The label of an all-day event's times is
/// ignored: Graph renders all-day events as floating midnights labelled with
/// the zone the request asked for, not the event's zone
/// (`shared/PROVIDERS.md` §4).
pub fn graph_busy(event: &GraphEvent, fallback_zone: Tz, policy: &BusyPolicy) -> BusyDecision {
    if event.id.is_empty() {
        return BusyDecision::Invalid(InvalidEvent::MissingId);
    }
    if event.removed.is_some() {
        return BusyDecision::Free(FreeReason::Removed);
    }
    if event.is_cancelled {
        return BusyDecision::Free(FreeReason::Cancelled);
    }
    let booking = event
        .extended_property(GRAPH_BOOKING_PROPERTY_ID)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            event
                .transaction_id
                .as_deref()
                .and_then(booking_id_from_tag)
        });
    if let Some(booking_id) = booking {
        return BusyDecision::Ours { booking_id };
    }
    if event.event_type == Some(GraphEventType::SeriesMaster) {
        return BusyDecision::Free(FreeReason::SeriesMaster);
    }
    match event.show_as {
        Some(GraphShowAs::Free) => return BusyDecision::Free(FreeReason::ShowAsFree),
        Some(GraphShowAs::WorkingElsewhere) => {
            return BusyDecision::Free(FreeReason::WorkingElsewhere)
        }
        _ => {}
    }
    let response = event.response();
    if response == Some(&GraphResponse::Declined) {
        return BusyDecision::Free(FreeReason::Declined);
    }
    // `busy`, `oof`, `unknown`, a missing or a new value all block: when in
    // doubt, hiding a slot is cheaper than a double booking.
    let tentative = event.show_as == Some(GraphShowAs::Tentative)
        || matches!(
            response,
            Some(GraphResponse::TentativelyAccepted | GraphResponse::NotResponded)
        );
    if tentative && !policy.tentative_blocks {
        return BusyDecision::Free(FreeReason::Tentative);
    }
    decide_interval(graph_interval(event, fallback_zone))
}

/// The zone whose midnights bound a Graph all-day event: its
/// `originalStartTimeZone` when that resolves to a real zone (Windows or
/// IANA name), else `fallback_zone` (the mailbox's zone, or UTC). Graph's
/// `tzone://Microsoft/Custom` (a legacy custom zone of desktop Outlook) and
/// unknown names do not resolve: the mailbox's zone is the best guess of the
/// day the owner meant, far better than UTC, which moves the day off by the
/// owner's offset.
pub fn graph_all_day_zone(event: &GraphEvent, fallback_zone: Tz) -> Tz {
    event
        .original_start_time_zone
        .as_deref()
        .and_then(|name| resolve_zone(name).ok())
        .unwrap_or(fallback_zone)
}

/// A Google event's times as an interval, when they can be read (for the
/// explanation of an event the rules ignored; a tombstone has none).
pub fn google_span(event: &GoogleEvent, calendar_zone: Tz) -> Option<Interval> {
    let (start, end) = google_interval(event, calendar_zone).ok()?;
    Interval::new(start, end).ok()
}

/// A Graph event's times as an interval, when they can be read.
pub fn graph_span(event: &GraphEvent, fallback_zone: Tz) -> Option<Interval> {
    let (start, end) = graph_interval(event, fallback_zone).ok()?;
    Interval::new(start, end).ok()
}

fn decide_interval(bounds: Result<(DateTime<Utc>, DateTime<Utc>), InvalidEvent>) -> BusyDecision {
    match bounds {
        Err(invalid) => BusyDecision::Invalid(invalid),
        Ok((start, end)) if start == end => BusyDecision::Free(FreeReason::ZeroDuration),
        Ok((start, end)) => match Interval::new(start, end) {
            Ok(interval) => BusyDecision::Blocks(interval),
            Err(_) => BusyDecision::Invalid(InvalidEvent::EndBeforeStart { start, end }),
        },
    }
}

fn bad_time(field: TimeField) -> impl Fn(WireTimeError) -> InvalidEvent {
    move |e| match e {
        WireTimeError::Missing => InvalidEvent::MissingTime(field),
        other => InvalidEvent::BadTime {
            field,
            reason: other.to_string(),
        },
    }
}

fn zone_named(name: &str) -> Result<Tz, InvalidEvent> {
    resolve_zone(name).map_err(|e| InvalidEvent::UnknownZone(e.0))
}

pub(crate) fn google_interval(
    event: &GoogleEvent,
    calendar_zone: Tz,
) -> Result<(DateTime<Utc>, DateTime<Utc>), InvalidEvent> {
    let start = google_when(event.start.as_ref(), TimeField::Start)?;
    let end = google_when(event.end.as_ref(), TimeField::End)?;
    match (start, end) {
        // All-day: the end date is exclusive, and both midnights are the
        // calendar's, so a DST day blocks 23 or 25 hours.
        (GoogleWhen::Date(s), GoogleWhen::Date(e)) => Ok((
            local_midnight_utc(s, calendar_zone),
            local_midnight_utc(e, calendar_zone),
        )),
        (GoogleWhen::Date(_), _) | (_, GoogleWhen::Date(_)) => Err(InvalidEvent::MixedAllDay),
        (s, e) => Ok((
            google_instant(s, calendar_zone)?,
            google_instant(e, calendar_zone)?,
        )),
    }
}

fn google_when(
    value: Option<&GoogleEventDateTime>,
    field: TimeField,
) -> Result<GoogleWhen, InvalidEvent> {
    value
        .ok_or(InvalidEvent::MissingTime(field))?
        .when()
        .map_err(bad_time(field))
}

fn google_instant(when: GoogleWhen, calendar_zone: Tz) -> Result<DateTime<Utc>, InvalidEvent> {
    match when {
        GoogleWhen::Instant(t) => Ok(t.with_timezone(&Utc)),
        GoogleWhen::Local { wall, time_zone } => {
            let zone = match time_zone.as_deref() {
                Some(name) => zone_named(name)?,
                None => calendar_zone,
            };
            Ok(local_to_utc(wall, zone))
        }
        GoogleWhen::Date(d) => Ok(local_midnight_utc(d, calendar_zone)),
    }
}

pub(crate) fn graph_interval(
    event: &GraphEvent,
    fallback_zone: Tz,
) -> Result<(DateTime<Utc>, DateTime<Utc>), InvalidEvent> {
    if event.is_all_day {
        // Floating midnights: only the dates count (a stray time of day
        // cannot shift the day), read in the event's own zone. Both
        // midnights are that zone's, so a DST day blocks 23 or 25 hours.
        let start = graph_wall(event.start.as_ref(), TimeField::Start)?.date();
        let end = graph_wall(event.end.as_ref(), TimeField::End)?.date();
        let zone = graph_all_day_zone(event, fallback_zone);
        return Ok((
            local_midnight_utc(start, zone),
            local_midnight_utc(end, zone),
        ));
    }
    let start = graph_point(event.start.as_ref(), TimeField::Start)?;
    let end = graph_point(event.end.as_ref(), TimeField::End)?;
    Ok((local_to_utc(start.0, start.1), local_to_utc(end.0, end.1)))
}

/// The wall time of a Graph `dateTimeTimeZone`, its zone label unread.
fn graph_wall(
    value: Option<&GraphDateTimeTimeZone>,
    field: TimeField,
) -> Result<NaiveDateTime, InvalidEvent> {
    value
        .ok_or(InvalidEvent::MissingTime(field))?
        .wall_time()
        .map_err(bad_time(field))
}

/// A Graph `dateTimeTimeZone` as (wall time, zone). A missing zone means UTC,
/// Graph's default response zone.
fn graph_point(
    value: Option<&GraphDateTimeTimeZone>,
    field: TimeField,
) -> Result<(NaiveDateTime, Tz), InvalidEvent> {
    let value = value.ok_or(InvalidEvent::MissingTime(field))?;
    let wall = value.wall_time().map_err(bad_time(field))?;
    let zone = match value.time_zone.as_deref() {
        _ if value.has_offset() => Tz::UTC,
        Some(name) if !name.trim().is_empty() => zone_named(name)?,
        _ => Tz::UTC,
    };
    Ok((wall, zone))
}

// ------------------------------------------------- our own outbound events --

/// The tag calsync puts on its outbound events: the Google event id it
/// chooses, and the Graph `transactionId`.
///
/// Scheme: [`BOOKING_TAG_PREFIX`] followed by lower-case unpadded base32hex of
/// the UTF-8 text `"{generation}:{booking_id}"`. It is
/// - a valid Google event id (base32hex, 5–1024 chars for booking ids up to
///   the 200-byte limit);
/// - reversible, so inbound sync recovers the booking id from the id alone
///   (Google tombstones and Graph delta items carry nothing else of ours);
/// - self-checking: a Google-generated id that happens to start with `cs`
///   decodes to bytes that are not `digits:text`, so a foreign event is not
///   mistaken for ours (which would silently stop it blocking time);
/// - versioned by `generation`, because Google reserves deleted ids: a
///   booking whose event was deleted needs a new id to be written again.
pub fn booking_tag(booking_id: &str, generation: u32) -> String {
    let payload = format!("{generation}:{booking_id}");
    let mut tag = String::with_capacity(BOOKING_TAG_PREFIX.len() + payload.len() * 8 / 5 + 1);
    tag.push_str(BOOKING_TAG_PREFIX);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in payload.bytes() {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            tag.push(char::from(BASE32HEX[((buffer >> bits) & 0x1f) as usize]));
        }
    }
    if bits > 0 {
        tag.push(char::from(
            BASE32HEX[((buffer << (5 - bits)) & 0x1f) as usize],
        ));
    }
    tag
}

/// The (booking id, generation) a [`booking_tag`] encodes, or `None` for any
/// other string. A Google instance suffix (`_20261002T130000Z`) is ignored.
pub fn parse_booking_tag(tag: &str) -> Option<(String, u32)> {
    let base = tag.split('_').next()?;
    let body = base.strip_prefix(BOOKING_TAG_PREFIX)?;
    let mut bytes = Vec::with_capacity(body.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in body.bytes() {
        let value = BASE32HEX.iter().position(|&a| a == c)? as u32;
        buffer = ((buffer << 5) | value) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push((buffer >> bits) as u8);
        }
    }
    // Canonical encodings leave fewer than 5 zero bits over.
    if bits >= 5 || buffer & ((1 << bits) - 1) != 0 {
        return None;
    }
    let text = String::from_utf8(bytes).ok()?;
    let (generation, booking_id) = text.split_once(':')?;
    let generation_ok = !generation.is_empty()
        && generation.len() <= 10
        && generation.bytes().all(|b| b.is_ascii_digit());
    if !generation_ok || booking_id.is_empty() || booking_id.chars().any(char::is_control) {
        return None;
    }
    Some((booking_id.to_owned(), generation.parse().ok()?))
}

fn booking_id_from_tag(tag: &str) -> Option<String> {
    parse_booking_tag(tag).map(|(booking_id, _)| booking_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::{GoogleEvent, GraphEvent};

    #[derive(Debug)]
    enum Want {
        Blocks(&'static str, &'static str),
        Free(FreeReason),
        Ours(&'static str),
        Invalid,
    }

    enum Provider {
        Google(Tz),
        /// With the mailbox's zone (the all-day fallback).
        Graph(Tz),
    }

    struct Case {
        name: &'static str,
        provider: Provider,
        policy: BusyPolicy,
        json: String,
        want: Want,
    }

    const STRICT: BusyPolicy = BusyPolicy {
        tentative_blocks: false,
    };

    fn google(name: &'static str, json: &str, want: Want) -> Case {
        Case {
            name,
            provider: Provider::Google(Tz::Europe__Berlin),
            policy: BusyPolicy::default(),
            json: json.to_owned(),
            want,
        }
    }

    fn graph(name: &'static str, json: &str, want: Want) -> Case {
        Case {
            name,
            provider: Provider::Graph(Tz::UTC),
            policy: BusyPolicy::default(),
            json: json.to_owned(),
            want,
        }
    }

    impl Case {
        fn in_zone(mut self, zone: Tz) -> Self {
            self.provider = match self.provider {
                Provider::Google(_) => Provider::Google(zone),
                Provider::Graph(_) => Provider::Graph(zone),
            };
            self
        }
        fn policy(mut self, policy: BusyPolicy) -> Self {
            self.policy = policy;
            self
        }
    }

    /// A timed Google event, 10:00–11:00 Berlin summer time, plus `extra`
    /// fields.
    fn g_timed(extra: &str) -> String {
        format!(
            r#"{{"id":"evt1","start":{{"dateTime":"2026-07-01T10:00:00+02:00"}},
                "end":{{"dateTime":"2026-07-01T11:00:00+02:00"}}{extra}}}"#
        )
    }

    fn g_all_day(start: &str, end: &str, extra: &str) -> String {
        format!(r#"{{"id":"evt2","start":{{"date":"{start}"}},"end":{{"date":"{end}"}}{extra}}}"#)
    }

    /// A timed Graph event, 13:00–14:00 UTC, plus `extra` fields.
    fn m_timed(extra: &str) -> String {
        format!(
            r#"{{"id":"AAMk1","start":{{"dateTime":"2026-07-01T13:00:00.0000000","timeZone":"UTC"}},
                "end":{{"dateTime":"2026-07-01T14:00:00.0000000","timeZone":"UTC"}}{extra}}}"#
        )
    }

    fn m_zoned(start: &str, end: &str, zone: &str, extra: &str) -> String {
        format!(
            r#"{{"id":"AAMk2","start":{{"dateTime":"{start}","timeZone":"{zone}"}},
                "end":{{"dateTime":"{end}","timeZone":"{zone}"}}{extra}}}"#
        )
    }

    fn self_response(status: &str) -> String {
        format!(
            r#","attendees":[{{"email":"boss@example.com","organizer":true,"responseStatus":"accepted"}},
                {{"email":"me@example.com","self":true,"responseStatus":"{status}"}}]"#
        )
    }

    const G_SLOT: Want = Want::Blocks("2026-07-01T08:00:00Z", "2026-07-01T09:00:00Z");
    const M_SLOT: Want = Want::Blocks("2026-07-01T13:00:00Z", "2026-07-01T14:00:00Z");

    fn cases() -> Vec<Case> {
        let ours_tag = booking_tag("bk_123", 0);
        vec![
            // ------------------------------------------------------ Google --
            google("g: plain opaque timed event", &g_timed(""), G_SLOT),
            google(
                "g: explicit confirmed + opaque",
                &g_timed(r#","status":"confirmed","transparency":"opaque","eventType":"default""#),
                G_SLOT,
            ),
            google(
                "g: offset-less dateTime read in its timeZone",
                r#"{"id":"e","start":{"dateTime":"2026-07-01T09:00:00","timeZone":"America/New_York"},
                    "end":{"dateTime":"2026-07-01T10:00:00","timeZone":"America/New_York"}}"#,
                Want::Blocks("2026-07-01T13:00:00Z", "2026-07-01T14:00:00Z"),
            ),
            google(
                "g: offset-less dateTime without timeZone uses the calendar zone",
                r#"{"id":"e","start":{"dateTime":"2026-07-01T10:00:00"},"end":{"dateTime":"2026-07-01T11:00:00"}}"#,
                G_SLOT,
            ),
            google(
                "g: timed event across the spring gap is 2 real hours",
                r#"{"id":"e","start":{"dateTime":"2026-03-29T01:00:00","timeZone":"Europe/Berlin"},
                    "end":{"dateTime":"2026-03-29T04:00:00","timeZone":"Europe/Berlin"}}"#,
                Want::Blocks("2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z"),
            ),
            google(
                "g: tombstone with only id and status",
                r#"{"id":"evt1","status":"cancelled"}"#,
                Want::Free(FreeReason::Cancelled),
            ),
            google(
                "g: cancelled instance of a live series",
                r#"{"id":"r9x8_20261002T130000Z","status":"cancelled","recurringEventId":"r9x8",
                    "originalStartTime":{"dateTime":"2026-10-02T15:00:00+02:00"}}"#,
                Want::Free(FreeReason::Cancelled),
            ),
            google(
                "g: confirmed instance of a series blocks like any event",
                &g_timed(
                    r#","recurringEventId":"r9x8","originalStartTime":{"dateTime":"2026-07-01T10:00:00+02:00"}"#,
                ),
                G_SLOT,
            ),
            google(
                "g: transparent",
                &g_timed(r#","transparency":"transparent""#),
                Want::Free(FreeReason::Transparent),
            ),
            google(
                "g: transparency is case-insensitive",
                &g_timed(r#","transparency":"TRANSPARENT""#),
                Want::Free(FreeReason::Transparent),
            ),
            google(
                "g: all-day transparent (\"free\" all-day event)",
                &g_all_day(
                    "2026-07-01",
                    "2026-07-02",
                    r#","transparency":"transparent""#,
                ),
                Want::Free(FreeReason::Transparent),
            ),
            google(
                "g: workingLocation",
                &g_all_day(
                    "2026-07-01",
                    "2026-07-02",
                    r#","eventType":"workingLocation""#,
                ),
                Want::Free(FreeReason::WorkingLocation),
            ),
            google(
                "g: birthday",
                &g_all_day(
                    "2026-07-01",
                    "2026-07-02",
                    r#","eventType":"birthday","transparency":"opaque""#,
                ),
                Want::Free(FreeReason::Birthday),
            ),
            google(
                "g: outOfOffice blocks",
                &g_timed(r#","eventType":"outOfOffice""#),
                G_SLOT,
            ),
            google(
                "g: focusTime blocks",
                &g_timed(r#","eventType":"focusTime""#),
                G_SLOT,
            ),
            google(
                "g: unknown eventType blocks",
                &g_timed(r#","eventType":"somethingNew""#),
                G_SLOT,
            ),
            google(
                "g: owner declined",
                &g_timed(&self_response("declined")),
                Want::Free(FreeReason::Declined),
            ),
            google(
                "g: someone else declined, owner accepted",
                &g_timed(
                    r#","attendees":[{"email":"x@example.com","responseStatus":"declined"},
                        {"email":"me@example.com","self":true,"responseStatus":"accepted"}]"#,
                ),
                G_SLOT,
            ),
            google(
                "g: owner tentative blocks by default",
                &g_timed(&self_response("tentative")),
                G_SLOT,
            ),
            google(
                "g: owner tentative is free when tentative does not block",
                &g_timed(&self_response("tentative")),
                Want::Free(FreeReason::Tentative),
            )
            .policy(STRICT),
            google(
                "g: owner has not answered: blocks by default",
                &g_timed(&self_response("needsAction")),
                G_SLOT,
            ),
            google(
                "g: owner has not answered, strict policy",
                &g_timed(&self_response("needsAction")),
                Want::Free(FreeReason::Tentative),
            )
            .policy(STRICT),
            google(
                "g: tentative event status blocks by default",
                &g_timed(r#","status":"tentative""#),
                G_SLOT,
            ),
            google(
                "g: tentative event status, strict policy",
                &g_timed(r#","status":"tentative""#),
                Want::Free(FreeReason::Tentative),
            )
            .policy(STRICT),
            google(
                "g: all-day on Berlin spring-forward day is 23 h",
                &g_all_day("2026-03-29", "2026-03-30", ""),
                Want::Blocks("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
            ),
            google(
                "g: all-day on Berlin fall-back day is 25 h",
                &g_all_day("2026-10-25", "2026-10-26", ""),
                Want::Blocks("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
            ),
            google(
                "g: all-day on New York spring-forward day is 23 h",
                &g_all_day("2026-03-08", "2026-03-09", ""),
                Want::Blocks("2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"),
            )
            .in_zone(Tz::America__New_York),
            google(
                "g: all-day on New York fall-back day is 25 h",
                &g_all_day("2026-11-01", "2026-11-02", ""),
                Want::Blocks("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"),
            )
            .in_zone(Tz::America__New_York),
            google(
                "g: three-day all-day event, exclusive end date",
                &g_all_day("2026-07-01", "2026-07-04", ""),
                Want::Blocks("2026-06-30T22:00:00Z", "2026-07-03T22:00:00Z"),
            ),
            google(
                "g: ours by private extended property",
                &g_timed(r#","extendedProperties":{"private":{"calsyncBookingId":"bk_123"}}"#),
                Want::Ours("bk_123"),
            ),
            google(
                "g: ours even when marked transparent",
                &g_timed(
                    r#","transparency":"transparent","extendedProperties":{"private":{"calsyncBookingId":"bk_9"}}"#,
                ),
                Want::Ours("bk_9"),
            ),
            google(
                "g: ours by event id tag",
                &format!(
                    r#"{{"id":"{ours_tag}","start":{{"dateTime":"2026-07-01T10:00:00+02:00"}},"end":{{"dateTime":"2026-07-01T11:00:00+02:00"}}}}"#
                ),
                Want::Ours("bk_123"),
            ),
            google(
                "g: ours by id tag when we organise it with guests",
                &format!(
                    r#"{{"id":"{ours_tag}","organizer":{{"email":"me@example.com","self":true}},
                        "attendees":[{{"email":"me@example.com","self":true,"organizer":true,"responseStatus":"accepted"}},
                        {{"email":"guest@example.com","responseStatus":"needsAction"}}],
                        "start":{{"dateTime":"2026-07-01T10:00:00+02:00"}},"end":{{"dateTime":"2026-07-01T11:00:00+02:00"}}}}"#
                ),
                Want::Ours("bk_123"),
            ),
            google(
                "g: a guest's copy of another calendar's calsync event blocks",
                &format!(
                    r#"{{"id":"{ours_tag}","organizer":{{"email":"other@example.com"}},
                        "attendees":[{{"email":"other@example.com","organizer":true,"responseStatus":"accepted"}},
                        {{"email":"me@example.com","self":true,"responseStatus":"accepted"}}],
                        "start":{{"dateTime":"2026-07-01T10:00:00+02:00"}},"end":{{"dateTime":"2026-07-01T11:00:00+02:00"}}}}"#
                ),
                G_SLOT,
            ),
            google(
                "g: shared property of the same name is not ours",
                &g_timed(r#","extendedProperties":{"shared":{"calsyncBookingId":"bk_123"}}"#),
                G_SLOT,
            ),
            google(
                "g: a Google id that merely starts with cs is not ours",
                r#"{"id":"cs4kq9ujg8tb1g2e0m3ncrh2a8","start":{"dateTime":"2026-07-01T10:00:00+02:00"},
                    "end":{"dateTime":"2026-07-01T11:00:00+02:00"}}"#,
                G_SLOT,
            ),
            google(
                "g: our deleted event is cancelled, not ours",
                &format!(r#"{{"id":"{ours_tag}","status":"cancelled"}}"#),
                Want::Free(FreeReason::Cancelled),
            ),
            google(
                "g: zero-length event",
                r#"{"id":"e","start":{"dateTime":"2026-07-01T10:00:00Z"},"end":{"dateTime":"2026-07-01T10:00:00Z"}}"#,
                Want::Free(FreeReason::ZeroDuration),
            ),
            google(
                "g: end before start",
                r#"{"id":"e","start":{"dateTime":"2026-07-01T10:00:00Z"},"end":{"dateTime":"2026-07-01T09:00:00Z"}}"#,
                Want::Invalid,
            ),
            google(
                "g: missing end",
                r#"{"id":"e","start":{"dateTime":"2026-07-01T10:00:00Z"}}"#,
                Want::Invalid,
            ),
            google(
                "g: all-day start with timed end",
                r#"{"id":"e","start":{"date":"2026-07-01"},"end":{"dateTime":"2026-07-01T10:00:00Z"}}"#,
                Want::Invalid,
            ),
            google(
                "g: unknown timeZone",
                r#"{"id":"e","start":{"dateTime":"2026-07-01T10:00:00","timeZone":"Mars/Olympus"},
                    "end":{"dateTime":"2026-07-01T11:00:00","timeZone":"Mars/Olympus"}}"#,
                Want::Invalid,
            ),
            google(
                "g: event without id",
                r#"{"start":{"dateTime":"2026-07-01T10:00:00Z"},"end":{"dateTime":"2026-07-01T11:00:00Z"}}"#,
                Want::Invalid,
            ),
            // ------------------------------------------------------- Graph --
            graph("m: busy in UTC", &m_timed(r#","showAs":"busy""#), M_SLOT),
            graph("m: showAs absent blocks", &m_timed(""), M_SLOT),
            graph(
                "m: Pacific Standard Time in summer (PDT)",
                &m_zoned(
                    "2026-07-01T09:00:00.0000000",
                    "2026-07-01T10:30:00.0000000",
                    "Pacific Standard Time",
                    r#","showAs":"busy""#,
                ),
                Want::Blocks("2026-07-01T16:00:00Z", "2026-07-01T17:30:00Z"),
            ),
            graph(
                "m: Pacific Standard Time in winter (PST)",
                &m_zoned(
                    "2026-01-15T09:00:00.0000000",
                    "2026-01-15T10:00:00.0000000",
                    "Pacific Standard Time",
                    "",
                ),
                Want::Blocks("2026-01-15T17:00:00Z", "2026-01-15T18:00:00Z"),
            ),
            graph(
                "m: W. Europe Standard Time",
                &m_zoned(
                    "2026-07-01T10:00:00.0000000",
                    "2026-07-01T11:00:00.0000000",
                    "W. Europe Standard Time",
                    "",
                ),
                Want::Blocks("2026-07-01T08:00:00Z", "2026-07-01T09:00:00Z"),
            ),
            graph(
                "m: IANA zone name",
                &m_zoned(
                    "2026-07-01T10:00:00.0000000",
                    "2026-07-01T11:00:00.0000000",
                    "Europe/Berlin",
                    "",
                ),
                Want::Blocks("2026-07-01T08:00:00Z", "2026-07-01T09:00:00Z"),
            ),
            graph(
                "m: seven fractional digits are kept",
                &m_zoned(
                    "2026-07-01T13:00:00.5000000",
                    "2026-07-01T14:00:00.0000000",
                    "UTC",
                    "",
                ),
                Want::Blocks("2026-07-01T13:00:00.5Z", "2026-07-01T14:00:00Z"),
            ),
            graph(
                "m: @removed stub",
                r#"{"@odata.type":"microsoft.graph.event","id":"AAMk1","@removed":{"reason":"deleted"}}"#,
                Want::Free(FreeReason::Removed),
            ),
            graph(
                "m: @removed wins over stale fields",
                &m_timed(r#","showAs":"busy","@removed":{"reason":"changed"}"#),
                Want::Free(FreeReason::Removed),
            ),
            graph(
                "m: cancelled by organizer",
                &m_timed(r#","isCancelled":true,"showAs":"busy""#),
                Want::Free(FreeReason::Cancelled),
            ),
            graph(
                "m: cancelled occurrence of a series",
                &m_timed(r#","isCancelled":true,"type":"occurrence","seriesMasterId":"AAMkM""#),
                Want::Free(FreeReason::Cancelled),
            ),
            graph(
                "m: showAs free",
                &m_timed(r#","showAs":"free""#),
                Want::Free(FreeReason::ShowAsFree),
            ),
            graph(
                "m: showAs Free (capitalised)",
                &m_timed(r#","showAs":"Free""#),
                Want::Free(FreeReason::ShowAsFree),
            ),
            graph(
                "m: workingElsewhere",
                &m_timed(r#","showAs":"workingElsewhere""#),
                Want::Free(FreeReason::WorkingElsewhere),
            ),
            graph("m: oof blocks", &m_timed(r#","showAs":"oof""#), M_SLOT),
            graph(
                "m: unknown blocks",
                &m_timed(r#","showAs":"unknown""#),
                M_SLOT,
            ),
            graph(
                "m: a new showAs value blocks",
                &m_timed(r#","showAs":"superBusy""#),
                M_SLOT,
            ),
            graph(
                "m: tentative blocks by default",
                &m_timed(r#","showAs":"tentative""#),
                M_SLOT,
            ),
            graph(
                "m: tentative, strict policy",
                &m_timed(r#","showAs":"tentative""#),
                Want::Free(FreeReason::Tentative),
            )
            .policy(STRICT),
            graph(
                "m: tentativelyAccepted, strict policy",
                &m_timed(r#","showAs":"busy","responseStatus":{"response":"tentativelyAccepted"}"#),
                Want::Free(FreeReason::Tentative),
            )
            .policy(STRICT),
            graph(
                "m: notResponded blocks by default",
                &m_timed(r#","responseStatus":{"response":"notResponded"}"#),
                M_SLOT,
            ),
            graph(
                "m: response none (own event) blocks under strict policy",
                &m_timed(r#","showAs":"busy","responseStatus":{"response":"none"}"#),
                M_SLOT,
            )
            .policy(STRICT),
            graph(
                "m: declined",
                &m_timed(r#","showAs":"busy","responseStatus":{"response":"declined"}"#),
                Want::Free(FreeReason::Declined),
            ),
            graph(
                "m: organizer blocks",
                &m_timed(r#","responseStatus":{"response":"organizer"}"#),
                M_SLOT,
            ),
            graph(
                "m: all-day W. Europe on the spring-forward day is 23 h",
                &m_zoned(
                    "2026-03-29T00:00:00.0000000",
                    "2026-03-30T00:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true,"showAs":"busy","originalStartTimeZone":"W. Europe Standard Time""#,
                ),
                Want::Blocks("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
            ),
            graph(
                "m: all-day W. Europe on the fall-back day is 25 h",
                &m_zoned(
                    "2026-10-25T00:00:00.0000000",
                    "2026-10-26T00:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true,"originalStartTimeZone":"W. Europe Standard Time""#,
                ),
                Want::Blocks("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
            ),
            graph(
                "m: all-day Eastern Standard Time on the fall-back day is 25 h",
                &m_zoned(
                    "2026-11-01T00:00:00.0000000",
                    "2026-11-02T00:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true,"originalStartTimeZone":"Eastern Standard Time""#,
                ),
                Want::Blocks("2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"),
            ),
            graph(
                "m: all-day: the label of the floating midnights is not the event's zone",
                &m_zoned(
                    "2026-07-01T00:00:00.0000000",
                    "2026-07-02T00:00:00.0000000",
                    "Pacific Standard Time",
                    r#","isAllDay":true,"originalStartTimeZone":"Europe/Berlin""#,
                ),
                Want::Blocks("2026-06-30T22:00:00Z", "2026-07-01T22:00:00Z"),
            ),
            graph(
                "m: all-day with a stray time of day keeps its date",
                &m_zoned(
                    "2026-07-01T05:00:00.0000000",
                    "2026-07-02T05:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true,"originalStartTimeZone":"Europe/Berlin""#,
                ),
                Want::Blocks("2026-06-30T22:00:00Z", "2026-07-01T22:00:00Z"),
            ),
            graph(
                "m: all-day labelled with an unknown zone still reads its dates",
                &m_zoned(
                    "2026-07-01T00:00:00.0000000",
                    "2026-07-02T00:00:00.0000000",
                    "tzone://Microsoft/Custom",
                    r#","isAllDay":true,"originalStartTimeZone":"Europe/Berlin""#,
                ),
                Want::Blocks("2026-06-30T22:00:00Z", "2026-07-01T22:00:00Z"),
            ),
            graph(
                "m: all-day custom originalStartTimeZone falls back to the mailbox zone",
                &m_zoned(
                    "2026-12-12T00:00:00.0000000",
                    "2026-12-13T00:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true,"originalStartTimeZone":"tzone://Microsoft/Custom""#,
                ),
                Want::Blocks("2026-12-11T13:00:00Z", "2026-12-12T13:00:00Z"),
            )
            .in_zone(Tz::Australia__Sydney),
            graph(
                "m: all-day without a zone or a mailbox zone is a UTC day",
                &m_zoned(
                    "2026-12-12T00:00:00.0000000",
                    "2026-12-13T00:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true"#,
                ),
                Want::Blocks("2026-12-12T00:00:00Z", "2026-12-13T00:00:00Z"),
            ),
            graph(
                "m: three-day all-day event in Hawaii, exclusive end date",
                &m_zoned(
                    "2026-12-12T00:00:00.0000000",
                    "2026-12-15T00:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true,"originalStartTimeZone":"Hawaiian Standard Time""#,
                ),
                Want::Blocks("2026-12-12T10:00:00Z", "2026-12-15T10:00:00Z"),
            ),
            graph(
                "m: all-day with a missing end is invalid",
                r#"{"id":"AAMk3","isAllDay":true,"originalStartTimeZone":"UTC",
                    "start":{"dateTime":"2026-12-12T00:00:00.0000000","timeZone":"UTC"}}"#,
                Want::Invalid,
            ),
            graph(
                "m: all-day free",
                &m_zoned(
                    "2026-07-01T00:00:00.0000000",
                    "2026-07-02T00:00:00.0000000",
                    "UTC",
                    r#","isAllDay":true,"showAs":"free""#,
                ),
                Want::Free(FreeReason::ShowAsFree),
            ),
            graph(
                "m: ours by extended property",
                &m_timed(&format!(
                    r#","singleValueExtendedProperties":[{{"id":"{GRAPH_BOOKING_PROPERTY_ID}","value":"bk_7"}}]"#
                )),
                Want::Ours("bk_7"),
            ),
            graph(
                "m: ours by extended property with the GUID in upper case",
                &m_timed(
                    r#","singleValueExtendedProperties":[{"id":"String {6F2B8C1E-3D4A-4E5F-9A6B-7C8D9E0F1A2B} Name calsyncBookingId","value":"bk_8"}]"#,
                ),
                Want::Ours("bk_8"),
            ),
            graph(
                "m: ours by transactionId tag (delta cannot $expand properties)",
                &m_timed(&format!(r#","transactionId":"{ours_tag}""#)),
                Want::Ours("bk_123"),
            ),
            graph(
                "m: someone else's extended property is not ours",
                &m_timed(
                    r#","singleValueExtendedProperties":[{"id":"String {2f8c1e0a-7d3b-4c9e-9a51-6b0e4d2c8f17} Name bookingId","value":"bk_1"}]"#,
                ),
                M_SLOT,
            ),
            graph(
                "m: someone else's transactionId is not ours",
                &m_timed(r#","transactionId":"bk_123-v1""#),
                M_SLOT,
            ),
            graph(
                "m: series master is skipped (occurrences come separately)",
                &m_timed(r#","type":"seriesMaster""#),
                Want::Free(FreeReason::SeriesMaster),
            ),
            graph(
                "m: exception of a series blocks",
                &m_timed(r#","type":"exception","seriesMasterId":"AAMkM""#),
                M_SLOT,
            ),
            graph(
                "m: custom Windows zone is invalid",
                &m_zoned(
                    "2026-07-01T10:00:00.0000000",
                    "2026-07-01T11:00:00.0000000",
                    "tzone://Microsoft/Custom",
                    "",
                ),
                Want::Invalid,
            ),
            graph(
                "m: missing start",
                r#"{"id":"AAMk1","end":{"dateTime":"2026-07-01T14:00:00.0000000","timeZone":"UTC"}}"#,
                Want::Invalid,
            ),
        ]
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn busy_rule_table() {
        let cases = cases();
        assert!(cases.len() >= 40, "only {} cases", cases.len());
        let mut failures = Vec::new();
        for case in &cases {
            let got = match case.provider {
                Provider::Google(zone) => {
                    let event: GoogleEvent = serde_json::from_str(&case.json)
                        .unwrap_or_else(|e| panic!("{}: bad fixture: {e}", case.name));
                    google_busy(&event, zone, &case.policy)
                }
                Provider::Graph(zone) => {
                    let event: GraphEvent = serde_json::from_str(&case.json)
                        .unwrap_or_else(|e| panic!("{}: bad fixture: {e}", case.name));
                    graph_busy(&event, zone, &case.policy)
                }
            };
            let ok = match (&case.want, &got) {
                (Want::Blocks(s, e), BusyDecision::Blocks(i)) => {
                    i.start() == utc(s) && i.end() == utc(e)
                }
                (Want::Free(want), BusyDecision::Free(reason)) => want == reason,
                (Want::Ours(want), BusyDecision::Ours { booking_id }) => want == booking_id,
                (Want::Invalid, BusyDecision::Invalid(_)) => true,
                _ => false,
            };
            if !ok {
                failures.push(format!(
                    "{}: wanted {:?}, got {:?}",
                    case.name, case.want, got
                ));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn both_providers_are_covered_by_the_table() {
        let cases = cases();
        let google = cases
            .iter()
            .filter(|c| matches!(c.provider, Provider::Google(_)))
            .count();
        assert!(google >= 20 && cases.len() - google >= 20);
    }

    #[test]
    fn dst_all_day_lengths() {
        let event: GoogleEvent =
            serde_json::from_str(&g_all_day("2026-03-29", "2026-03-30", "")).unwrap();
        let BusyDecision::Blocks(i) =
            google_busy(&event, Tz::Europe__Berlin, &BusyPolicy::default())
        else {
            panic!("all-day event must block");
        };
        assert_eq!(i.end() - i.start(), chrono::Duration::hours(23));
    }

    /// One all-day day in a zone: (IANA name, Windows name, date, next date,
    /// expected start, expected end, hours). Expected instants are worked
    /// out by hand from each zone's rules (tzdata 2026/2027):
    /// - Sydney: AEST +10, AEDT +11; DST ends on the first Sunday of April,
    ///   starts on the first Sunday of October.
    /// - Auckland: NZST +12, NZDT +13; DST ends on the first Sunday of April,
    ///   starts on the last Sunday of September.
    /// - Berlin: CET +1, CEST +2; last Sundays of March and October.
    /// - New York: EST −5, EDT −4; second Sunday of March, first of November.
    #[rustfmt::skip]
    const ALL_DAY_DAYS: &[(&str, &str, &str, &str, &str, &str, i64)] = &[
        // ----------------------------------------------------- Sydney --
        ("Australia/Sydney", "AUS Eastern Standard Time", "2026-12-12", "2026-12-13",
            "2026-12-11T13:00:00Z", "2026-12-12T13:00:00Z", 24),
        ("Australia/Sydney", "AUS Eastern Standard Time", "2026-07-01", "2026-07-02",
            "2026-06-30T14:00:00Z", "2026-07-01T14:00:00Z", 24),
        ("Australia/Sydney", "AUS Eastern Standard Time", "2026-04-05", "2026-04-06",
            "2026-04-04T13:00:00Z", "2026-04-05T14:00:00Z", 25),
        ("Australia/Sydney", "AUS Eastern Standard Time", "2026-10-04", "2026-10-05",
            "2026-10-03T14:00:00Z", "2026-10-04T13:00:00Z", 23),
        ("Australia/Sydney", "AUS Eastern Standard Time", "2027-04-04", "2027-04-05",
            "2027-04-03T13:00:00Z", "2027-04-04T14:00:00Z", 25),
        ("Australia/Sydney", "AUS Eastern Standard Time", "2027-10-03", "2027-10-04",
            "2027-10-02T14:00:00Z", "2027-10-03T13:00:00Z", 23),
        // --------------------------------------------------- Auckland --
        ("Pacific/Auckland", "New Zealand Standard Time", "2026-12-12", "2026-12-13",
            "2026-12-11T11:00:00Z", "2026-12-12T11:00:00Z", 24),
        ("Pacific/Auckland", "New Zealand Standard Time", "2026-07-01", "2026-07-02",
            "2026-06-30T12:00:00Z", "2026-07-01T12:00:00Z", 24),
        ("Pacific/Auckland", "New Zealand Standard Time", "2026-04-05", "2026-04-06",
            "2026-04-04T11:00:00Z", "2026-04-05T12:00:00Z", 25),
        ("Pacific/Auckland", "New Zealand Standard Time", "2026-09-27", "2026-09-28",
            "2026-09-26T12:00:00Z", "2026-09-27T11:00:00Z", 23),
        ("Pacific/Auckland", "New Zealand Standard Time", "2027-04-04", "2027-04-05",
            "2027-04-03T11:00:00Z", "2027-04-04T12:00:00Z", 25),
        ("Pacific/Auckland", "New Zealand Standard Time", "2027-09-26", "2027-09-27",
            "2027-09-25T12:00:00Z", "2027-09-26T11:00:00Z", 23),
        // ----------------------------------------------------- Berlin --
        ("Europe/Berlin", "W. Europe Standard Time", "2026-12-12", "2026-12-13",
            "2026-12-11T23:00:00Z", "2026-12-12T23:00:00Z", 24),
        ("Europe/Berlin", "W. Europe Standard Time", "2026-07-01", "2026-07-02",
            "2026-06-30T22:00:00Z", "2026-07-01T22:00:00Z", 24),
        ("Europe/Berlin", "W. Europe Standard Time", "2026-03-29", "2026-03-30",
            "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23),
        ("Europe/Berlin", "W. Europe Standard Time", "2026-10-25", "2026-10-26",
            "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25),
        ("Europe/Berlin", "W. Europe Standard Time", "2027-03-28", "2027-03-29",
            "2027-03-27T23:00:00Z", "2027-03-28T22:00:00Z", 23),
        ("Europe/Berlin", "W. Europe Standard Time", "2027-10-31", "2027-11-01",
            "2027-10-30T22:00:00Z", "2027-10-31T23:00:00Z", 25),
        // --------------------------------------------------- New York --
        ("America/New_York", "Eastern Standard Time", "2026-12-12", "2026-12-13",
            "2026-12-12T05:00:00Z", "2026-12-13T05:00:00Z", 24),
        ("America/New_York", "Eastern Standard Time", "2026-07-01", "2026-07-02",
            "2026-07-01T04:00:00Z", "2026-07-02T04:00:00Z", 24),
        ("America/New_York", "Eastern Standard Time", "2026-03-08", "2026-03-09",
            "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23),
        ("America/New_York", "Eastern Standard Time", "2026-11-01", "2026-11-02",
            "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25),
        ("America/New_York", "Eastern Standard Time", "2027-03-14", "2027-03-15",
            "2027-03-14T05:00:00Z", "2027-03-15T04:00:00Z", 23),
        ("America/New_York", "Eastern Standard Time", "2027-11-07", "2027-11-08",
            "2027-11-07T04:00:00Z", "2027-11-08T05:00:00Z", 25),
    ];

    fn blocks(decision: &BusyDecision) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        match decision {
            BusyDecision::Blocks(i) => Some((i.start(), i.end())),
            _ => None,
        }
    }

    /// A Graph all-day event as Graph renders it to a client that asked for
    /// UTC: floating midnights labelled UTC, the event's zone (if any) in
    /// `originalStartTimeZone`.
    fn m_all_day(date: &str, next: &str, original_zone: Option<&str>) -> GraphEvent {
        let original = original_zone
            .map(|z| format!(r#","originalStartTimeZone":"{z}","originalEndTimeZone":"{z}""#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"id":"AAMkAllDay","isAllDay":true,"showAs":"oof",
                "start":{{"dateTime":"{date}T00:00:00.0000000","timeZone":"UTC"}},
                "end":{{"dateTime":"{next}T00:00:00.0000000","timeZone":"UTC"}}{original}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn all_day_events_are_days_in_their_zone_on_ordinary_and_dst_days() {
        let policy = BusyPolicy::default();
        let mut failures = Vec::new();
        let mut check = |what: String, got: &BusyDecision, want: (&str, &str), hours: i64| {
            let want = (utc(want.0), utc(want.1));
            match blocks(got) {
                Some(got) if got == want && got.1 - got.0 == chrono::Duration::hours(hours) => {}
                _ => failures.push(format!("{what}: wanted {want:?} ({hours} h), got {got:?}")),
            }
        };
        for &(iana, windows, date, next, start, end, hours) in ALL_DAY_DAYS {
            let zone: Tz = iana.parse().unwrap();
            let want = (start, end);
            // Google: the calendar's zone.
            let g: GoogleEvent = serde_json::from_str(&g_all_day(date, next, "")).unwrap();
            check(
                format!("google {iana} {date}"),
                &google_busy(&g, zone, &policy),
                want,
                hours,
            );
            // Graph: the event's own zone, by IANA or Windows name, in a UTC
            // mailbox and in a mailbox elsewhere (the event's zone wins).
            for name in [iana, windows] {
                for mailbox in [Tz::UTC, Tz::Asia__Tokyo] {
                    let m = m_all_day(date, next, Some(name));
                    check(
                        format!("graph {name:?} in a {mailbox} mailbox, {date}"),
                        &graph_busy(&m, mailbox, &policy),
                        want,
                        hours,
                    );
                }
            }
            // Graph: no real zone of its own → the mailbox's zone.
            for original in [
                None,
                Some("tzone://Microsoft/Custom"),
                Some("Mars Standard Time"),
                Some(""),
            ] {
                let m = m_all_day(date, next, original);
                check(
                    format!("graph {original:?} in a {iana} mailbox, {date}"),
                    &graph_busy(&m, zone, &policy),
                    want,
                    hours,
                );
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn graph_all_day_without_any_zone_is_a_utc_day() {
        let policy = BusyPolicy::default();
        for original in [None, Some("tzone://Microsoft/Custom")] {
            let m = m_all_day("2026-03-29", "2026-03-30", original);
            assert_eq!(
                blocks(&graph_busy(&m, Tz::UTC, &policy)),
                Some((utc("2026-03-29T00:00:00Z"), utc("2026-03-30T00:00:00Z"))),
                "{original:?}"
            );
        }
    }

    #[test]
    fn hawaii_all_day_in_a_utc_mailbox_is_ten_to_ten() {
        let m = m_all_day("2026-12-12", "2026-12-13", Some("Hawaiian Standard Time"));
        assert_eq!(
            blocks(&graph_busy(&m, Tz::UTC, &BusyPolicy::default())),
            Some((utc("2026-12-12T10:00:00Z"), utc("2026-12-13T10:00:00Z")))
        );
    }

    #[test]
    fn invalid_reasons_are_specific() {
        let event: GoogleEvent = serde_json::from_str(
            r#"{"id":"e","start":{"dateTime":"soon"},"end":{"dateTime":"2026-07-01T09:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            google_busy(&event, Tz::UTC, &BusyPolicy::default()),
            BusyDecision::Invalid(InvalidEvent::BadTime {
                field: TimeField::Start,
                reason: "unparseable dateTime \"soon\"".into()
            })
        );
        let event: GraphEvent = serde_json::from_str(&m_zoned(
            "2026-07-01T10:00:00",
            "2026-07-01T11:00:00",
            "Mars Standard Time",
            "",
        ))
        .unwrap();
        assert_eq!(
            graph_busy(&event, Tz::UTC, &BusyPolicy::default()),
            BusyDecision::Invalid(InvalidEvent::UnknownZone("Mars Standard Time".into()))
        );
    }

    #[test]
    fn booking_tags_round_trip_and_are_valid_google_ids() {
        for (booking, generation) in [("bk_123", 0), ("b", 7), ("ünïcödé:with:colons", 42)] {
            let tag = booking_tag(booking, generation);
            assert!(tag.starts_with(BOOKING_TAG_PREFIX));
            assert!(tag.bytes().all(|b| BASE32HEX.contains(&b)), "{tag}");
            assert!((5..=1024).contains(&tag.len()));
            assert_eq!(
                parse_booking_tag(&tag),
                Some((booking.to_owned(), generation))
            );
            // Instances of a recurring event carry a suffix.
            let instance = format!("{tag}_20261002T130000Z");
            assert_eq!(
                parse_booking_tag(&instance),
                Some((booking.to_owned(), generation))
            );
        }
        assert_ne!(booking_tag("bk_1", 0), booking_tag("bk_1", 1));
        let longest = booking_tag(&"x".repeat(200), u32::MAX);
        assert!(longest.len() <= 1024);
    }

    #[test]
    fn foreign_ids_are_not_booking_tags() {
        for id in [
            "",
            "cs",
            "abc",
            "cs4kq9ujg8tb1g2e0m3ncrh2a8",
            "csZZZ",
            "bk7q3v0ab12cd",
            "cs00000000",
            "bk_123-v1",
            "AAMkAD==",
        ] {
            assert_eq!(parse_booking_tag(id), None, "{id}");
        }
        // A valid payload without the prefix is not ours either.
        let tag = booking_tag("bk_1", 0);
        assert_eq!(parse_booking_tag(&tag[2..]), None);
    }
}

#[cfg(test)]
#[path = "busy_oracle_tests.rs"]
mod oracle_tests;
