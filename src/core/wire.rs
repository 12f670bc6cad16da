//! Serde types for provider event JSON as calsync receives it: Google Calendar
//! v3 `Event` and Microsoft Graph `event` (including delta `@removed` stubs),
//! plus the list/delta page envelopes.
//!
//! Parsing is tolerant on purpose: one odd event must never fail a whole sync
//! page, because a stuck page means a stuck connection. So
//! - unknown fields are ignored, absent or `null` optional fields default;
//! - enum-like strings parse case-insensitively and keep unknown values in
//!   `Other(String)`; the busy rules decide what an unknown value means;
//! - times stay strings here and are interpreted by [`GoogleEventDateTime::when`]
//!   and [`GraphDateTimeTimeZone::wall_time`], so a malformed time makes one
//!   event invalid instead of the page unparseable;
//! - page items are [`Lenient`]: an item that does not fit its type at all is
//!   kept as raw JSON with the error.
//!
//! Only fields the inbound path uses are modelled (see
//! `shared/PROVIDERS.md` §2 and §4).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// Declares an enum-like provider string: known values (matched ASCII
/// case-insensitively, serialised in the provider's spelling) plus
/// `Other(String)` for anything new.
macro_rules! provider_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version of calsync does not know.
            Other(String),
        }

        impl $name {
            /// The provider's spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(other) => other,
                }
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $(if value.eq_ignore_ascii_case($wire) {
                    return Self::$variant;
                })+
                Self::Other(value.to_owned())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Ok(Self::from(raw.as_str()))
            }
        }
    };
}

/// `null` → `T::default()`. Providers send explicit nulls for absent lists and
/// flags (Graph does, e.g. `"attendees": null`), which plain `#[serde(default)]`
/// rejects.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn parse_instant(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A page item that either fits its type or is kept raw with the reason, so
/// the sync engine can record it and move on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Lenient<T> {
    Parsed(T),
    Malformed {
        raw: serde_json::Value,
        error: String,
    },
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        Ok(match T::deserialize(&raw) {
            Ok(parsed) => Lenient::Parsed(parsed),
            Err(error) => Lenient::Malformed {
                raw,
                error: error.to_string(),
            },
        })
    }
}

// ---------------------------------------------------------------- Google --

provider_enum!(
    /// `Event.status`. Absent means `confirmed`.
    GoogleEventStatus {
        Confirmed => "confirmed",
        Tentative => "tentative",
        Cancelled => "cancelled",
    }
);

provider_enum!(
    /// `Event.transparency`. Absent means `opaque`.
    GoogleTransparency {
        Opaque => "opaque",
        Transparent => "transparent",
    }
);

provider_enum!(
    /// `Event.eventType`. Absent means `default`.
    GoogleEventType {
        Default => "default",
        OutOfOffice => "outOfOffice",
        FocusTime => "focusTime",
        WorkingLocation => "workingLocation",
        Birthday => "birthday",
        FromGmail => "fromGmail",
    }
);

provider_enum!(
    /// `Event.attendees[].responseStatus`.
    GoogleResponseStatus {
        NeedsAction => "needsAction",
        Declined => "declined",
        Tentative => "tentative",
        Accepted => "accepted",
    }
);

/// A Google Calendar v3 `Event`. A deleted event (tombstone) may carry only
/// `id` and `status: "cancelled"`, so everything but `id` is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleEvent {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default)]
    pub status: Option<GoogleEventStatus>,
    #[serde(default)]
    pub transparency: Option<GoogleTransparency>,
    #[serde(default)]
    pub event_type: Option<GoogleEventType>,
    #[serde(default)]
    pub start: Option<GoogleEventDateTime>,
    #[serde(default)]
    pub end: Option<GoogleEventDateTime>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub attendees: Vec<GoogleAttendee>,
    #[serde(default)]
    pub recurring_event_id: Option<String>,
    #[serde(default)]
    pub original_start_time: Option<GoogleEventDateTime>,
    #[serde(default)]
    pub extended_properties: Option<GoogleExtendedProperties>,
    #[serde(default)]
    pub etag: Option<String>,
    /// RFC 3339 last-modification time; see [`GoogleEvent::updated_at`].
    #[serde(default)]
    pub updated: Option<String>,
    #[serde(default, rename = "iCalUID")]
    pub ical_uid: Option<String>,
    #[serde(default)]
    pub organizer: Option<GoogleOrganizer>,
}

impl GoogleEvent {
    /// `status`, with Google's default (`confirmed`) when absent.
    pub fn status(&self) -> GoogleEventStatus {
        self.status.clone().unwrap_or(GoogleEventStatus::Confirmed)
    }

    /// The attendee entry that is the calendar owner, if the event has
    /// attendees at all (an event without guests has none).
    pub fn self_attendee(&self) -> Option<&GoogleAttendee> {
        self.attendees.iter().find(|a| a.is_self)
    }

    /// True when this calendar's owner is a guest, not the organizer: the
    /// event is someone else's copy (same event id as the organizer's).
    pub fn is_invitation(&self) -> bool {
        let organizer_is_other = self.organizer.as_ref().is_some_and(|o| !o.is_self);
        let guest_entry = self.self_attendee().is_some_and(|me| !me.organizer);
        organizer_is_other || guest_entry
    }

    /// A value from `extendedProperties.private`.
    pub fn private_property(&self, name: &str) -> Option<&str> {
        self.extended_properties
            .as_ref()
            .and_then(|p| p.private.get(name))
            .map(String::as_str)
    }

    /// `updated` as an instant, if present and well-formed.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated.as_deref().and_then(parse_instant)
    }
}

/// `Event.start` / `Event.end` / `originalStartTime`: either an all-day
/// `date` or a `dateTime` with an optional IANA `timeZone`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleEventDateTime {
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub date_time: Option<String>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// What a [`GoogleEventDateTime`] means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoogleWhen {
    /// An all-day boundary (`date`); an end date is exclusive.
    Date(NaiveDate),
    /// A `dateTime` with an offset: a definite instant.
    Instant(DateTime<FixedOffset>),
    /// A `dateTime` without offset, to be read in `time_zone` (or, when that is
    /// absent too, in the calendar's zone).
    Local {
        wall: NaiveDateTime,
        time_zone: Option<String>,
    },
}

/// Why a provider time value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireTimeError {
    #[error("neither date nor dateTime is present")]
    Missing,
    #[error("unparseable date {0:?}")]
    BadDate(String),
    #[error("unparseable dateTime {0:?}")]
    BadDateTime(String),
}

/// Accepts `2026-10-02T15:00:00`, with optional fractional seconds (Graph
/// sends seven digits).
fn parse_wall(raw: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok()
}

impl GoogleEventDateTime {
    /// Interprets the value. `dateTime` wins when both are present, because a
    /// timed value is the more specific one.
    pub fn when(&self) -> Result<GoogleWhen, WireTimeError> {
        if let Some(raw) = &self.date_time {
            if let Ok(instant) = DateTime::parse_from_rfc3339(raw.trim()) {
                return Ok(GoogleWhen::Instant(instant));
            }
            return parse_wall(raw)
                .map(|wall| GoogleWhen::Local {
                    wall,
                    time_zone: self.time_zone.clone(),
                })
                .ok_or_else(|| WireTimeError::BadDateTime(raw.clone()));
        }
        if let Some(raw) = &self.date {
            return NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
                .map(GoogleWhen::Date)
                .map_err(|_| WireTimeError::BadDate(raw.clone()));
        }
        Err(WireTimeError::Missing)
    }
}

/// `Event.attendees[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleAttendee {
    #[serde(default)]
    pub email: Option<String>,
    /// True on the entry that is the calendar owner.
    #[serde(default, rename = "self", deserialize_with = "null_as_default")]
    pub is_self: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub organizer: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub resource: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub optional: bool,
    #[serde(default)]
    pub response_status: Option<GoogleResponseStatus>,
}

/// `Event.organizer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleOrganizer {
    #[serde(default)]
    pub email: Option<String>,
    /// True when the calendar owner is the organizer.
    #[serde(default, rename = "self", deserialize_with = "null_as_default")]
    pub is_self: bool,
}

/// `Event.extendedProperties`: string maps private to this calendar's copy or
/// shared with all attendees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoogleExtendedProperties {
    #[serde(default, deserialize_with = "null_as_default")]
    pub private: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub shared: BTreeMap<String, String>,
}

/// One page of `events.list`. `next_sync_token` appears only on the last page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoogleEventsPage {
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<Lenient<GoogleEvent>>,
    #[serde(default)]
    pub next_page_token: Option<String>,
    #[serde(default)]
    pub next_sync_token: Option<String>,
    /// The calendar's own zone: the zone of all-day events.
    #[serde(default)]
    pub time_zone: Option<String>,
}

// ----------------------------------------------------------------- Graph --

provider_enum!(
    /// `event.showAs` (freeBusyStatus).
    GraphShowAs {
        Free => "free",
        Tentative => "tentative",
        Busy => "busy",
        Oof => "oof",
        WorkingElsewhere => "workingElsewhere",
        Unknown => "unknown",
    }
);

provider_enum!(
    /// `event.type`.
    GraphEventType {
        SingleInstance => "singleInstance",
        Occurrence => "occurrence",
        Exception => "exception",
        SeriesMaster => "seriesMaster",
    }
);

provider_enum!(
    /// `event.responseStatus.response`.
    GraphResponse {
        None => "none",
        Organizer => "organizer",
        TentativelyAccepted => "tentativelyAccepted",
        Accepted => "accepted",
        Declined => "declined",
        NotResponded => "notResponded",
    }
);

/// A Microsoft Graph `event`, or a delta `@removed` stub (which carries only
/// `id` and `@removed`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphEvent {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default, rename = "@odata.etag")]
    pub odata_etag: Option<String>,
    #[serde(default)]
    pub change_key: Option<String>,
    #[serde(default, rename = "iCalUId")]
    pub ical_uid: Option<String>,
    #[serde(default)]
    pub show_as: Option<GraphShowAs>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_cancelled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub is_all_day: bool,
    #[serde(default, rename = "type")]
    pub event_type: Option<GraphEventType>,
    #[serde(default)]
    pub series_master_id: Option<String>,
    #[serde(default)]
    pub start: Option<GraphDateTimeTimeZone>,
    #[serde(default)]
    pub end: Option<GraphDateTimeTimeZone>,
    /// The zone the event was created in: a Windows or IANA name, or
    /// `tzone://Microsoft/Custom` for a legacy custom zone of desktop
    /// Outlook. Graph renders an all-day event's `start`/`end` as floating
    /// midnights labelled with the *requested* zone, so this is where the
    /// zone of its dates is (see `core::busy::graph_all_day_zone`).
    #[serde(default)]
    pub original_start_time_zone: Option<String>,
    #[serde(default)]
    pub response_status: Option<GraphResponseStatus>,
    /// RFC 3339; see [`GraphEvent::last_modified_at`].
    #[serde(default)]
    pub last_modified_date_time: Option<String>,
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// Present only when requested with `$expand` (not possible on delta).
    #[serde(default, deserialize_with = "null_as_default")]
    pub single_value_extended_properties: Vec<GraphExtendedProperty>,
    #[serde(default, rename = "@removed")]
    pub removed: Option<GraphRemoved>,
}

impl GraphEvent {
    /// The owner's response, if Graph sent one.
    pub fn response(&self) -> Option<&GraphResponse> {
        self.response_status.as_ref()?.response.as_ref()
    }

    /// The value of the single-value extended property with this id. Property
    /// ids are compared ASCII case-insensitively: Graph may change the case of
    /// the GUID it echoes.
    pub fn extended_property(&self, property_id: &str) -> Option<&str> {
        self.single_value_extended_properties
            .iter()
            .find(|p| p.id.eq_ignore_ascii_case(property_id))
            .and_then(|p| p.value.as_deref())
    }

    /// `lastModifiedDateTime` as an instant, if present and well-formed.
    pub fn last_modified_at(&self) -> Option<DateTime<Utc>> {
        self.last_modified_date_time
            .as_deref()
            .and_then(parse_instant)
    }
}

/// `dateTimeTimeZone`: a wall time without offset plus a zone name (Windows
/// or IANA).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphDateTimeTimeZone {
    #[serde(default, deserialize_with = "null_as_default")]
    pub date_time: String,
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl GraphDateTimeTimeZone {
    /// The wall time, with up to 7 (or more) fractional digits. A value that
    /// carries an offset anyway is read as that instant's UTC wall time, and
    /// [`GraphDateTimeTimeZone::has_offset`] tells the caller to treat the
    /// zone as UTC.
    pub fn wall_time(&self) -> Result<NaiveDateTime, WireTimeError> {
        parse_wall(&self.date_time)
            .or_else(|| parse_instant(&self.date_time).map(|t| t.naive_utc()))
            .ok_or_else(|| WireTimeError::BadDateTime(self.date_time.clone()))
    }

    /// True when `dateTime` carries its own offset (not what Graph documents,
    /// but cheap to survive).
    pub fn has_offset(&self) -> bool {
        parse_wall(&self.date_time).is_none() && parse_instant(&self.date_time).is_some()
    }
}

/// `event.responseStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphResponseStatus {
    #[serde(default)]
    pub response: Option<GraphResponse>,
    #[serde(default)]
    pub time: Option<String>,
}

/// One `singleValueExtendedProperties` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphExtendedProperty {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// The `@removed` marker of a delta item (`reason`: `deleted`, or `changed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphRemoved {
    #[serde(default)]
    pub reason: Option<String>,
}

/// One page of `calendarView/delta`: either `next_link` (keep paging) or
/// `delta_link` (round complete; store the whole URL).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphDeltaPage {
    #[serde(default, deserialize_with = "null_as_default")]
    pub value: Vec<Lenient<GraphEvent>>,
    #[serde(default, rename = "@odata.nextLink")]
    pub next_link: Option<String>,
    #[serde(default, rename = "@odata.deltaLink")]
    pub delta_link: Option<String>,
}

/// One changed (or removed) event as a provider sent it during sync. The
/// busy rules ([`crate::core::busy`]) decide what it means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProviderChange {
    Google(GoogleEvent),
    Graph(GraphEvent),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_full_event_parses() {
        let json = r#"{ "kind": "calendar#event", "id": "bk7q3v0ab12cd", "etag": "\"3456789012345000\"",
          "status": "confirmed", "transparency": "opaque", "eventType": "default",
          "iCalUID": "bk7q3v0ab12cd@google.com", "sequence": 0, "updated": "2026-10-01T08:00:00.000Z",
          "start": { "dateTime": "2026-10-02T15:00:00+02:00", "timeZone": "Europe/Berlin" },
          "end":   { "dateTime": "2026-10-02T16:00:00+02:00", "timeZone": "Europe/Berlin" },
          "attendees": [ { "email": "alice@example.com", "self": true, "responseStatus": "accepted" } ],
          "recurringEventId": "r9x8", "originalStartTime": { "dateTime": "2026-10-02T15:00:00+02:00" },
          "extendedProperties": { "private": { "bookingId": "bk_123" } } }"#;
        let event: GoogleEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.id, "bk7q3v0ab12cd");
        assert_eq!(event.status(), GoogleEventStatus::Confirmed);
        assert_eq!(event.transparency, Some(GoogleTransparency::Opaque));
        assert_eq!(event.ical_uid.as_deref(), Some("bk7q3v0ab12cd@google.com"));
        assert_eq!(event.recurring_event_id.as_deref(), Some("r9x8"));
        assert_eq!(event.private_property("bookingId"), Some("bk_123"));
        let me = event.self_attendee().unwrap();
        assert_eq!(me.response_status, Some(GoogleResponseStatus::Accepted));
        assert_eq!(
            event.updated_at(),
            Some("2026-10-01T08:00:00Z".parse::<DateTime<Utc>>().unwrap())
        );
        let start = event.start.as_ref().unwrap().when().unwrap();
        assert_eq!(
            start,
            GoogleWhen::Instant(DateTime::parse_from_rfc3339("2026-10-02T15:00:00+02:00").unwrap())
        );
    }

    #[test]
    fn google_tombstone_with_only_id_and_status_parses() {
        let event: GoogleEvent =
            serde_json::from_str(r#"{"id":"abc","status":"cancelled"}"#).unwrap();
        assert_eq!(event.status(), GoogleEventStatus::Cancelled);
        assert!(event.start.is_none() && event.attendees.is_empty());
    }

    #[test]
    fn enum_strings_are_case_insensitive_with_an_other_fallback() {
        let event: GoogleEvent = serde_json::from_str(
            r#"{"id":"a","status":"CANCELLED","transparency":"Transparent","eventType":"holographicMeeting"}"#,
        )
        .unwrap();
        assert_eq!(event.status, Some(GoogleEventStatus::Cancelled));
        assert_eq!(event.transparency, Some(GoogleTransparency::Transparent));
        assert_eq!(
            event.event_type,
            Some(GoogleEventType::Other("holographicMeeting".into()))
        );
        // Serialisation uses the provider's spelling, unknowns verbatim.
        assert_eq!(
            serde_json::to_string(&GraphShowAs::WorkingElsewhere).unwrap(),
            r#""workingElsewhere""#
        );
        assert_eq!(
            serde_json::to_string(&GraphShowAs::Other("Busier".into())).unwrap(),
            r#""Busier""#
        );
    }

    #[test]
    fn google_time_shapes() {
        let date = GoogleEventDateTime {
            date: Some("2026-03-29".into()),
            ..Default::default()
        };
        assert_eq!(
            date.when(),
            Ok(GoogleWhen::Date(
                NaiveDate::from_ymd_opt(2026, 3, 29).unwrap()
            ))
        );
        let local = GoogleEventDateTime {
            date_time: Some("2026-10-02T15:00:00".into()),
            time_zone: Some("Europe/Berlin".into()),
            ..Default::default()
        };
        assert!(matches!(local.when(), Ok(GoogleWhen::Local { .. })));
        let bad = GoogleEventDateTime {
            date: Some("29/03/2026".into()),
            ..Default::default()
        };
        assert_eq!(bad.when(), Err(WireTimeError::BadDate("29/03/2026".into())));
        assert_eq!(
            GoogleEventDateTime::default().when(),
            Err(WireTimeError::Missing)
        );
    }

    #[test]
    fn graph_full_event_parses() {
        let json = r#"{ "id": "AAMkAD", "@odata.etag": "W/\"DwAAABYAAA\"", "changeKey": "DwAAABYAAA",
          "iCalUId": "0400", "type": "occurrence", "seriesMasterId": "AAMkADM",
          "showAs": "Busy", "isCancelled": false, "isAllDay": false, "sensitivity": "normal",
          "start": { "dateTime": "2026-10-02T13:00:00.0000000", "timeZone": "UTC" },
          "end":   { "dateTime": "2026-10-02T14:00:00.0000000", "timeZone": "UTC" },
          "responseStatus": { "response": "accepted", "time": "2026-09-30T10:00:00Z" },
          "lastModifiedDateTime": "2026-09-30T10:00:00Z", "transactionId": null,
          "originalStartTimeZone": "AUS Eastern Standard Time", "originalEndTimeZone": "AUS Eastern Standard Time",
          "singleValueExtendedProperties": [ { "id": "String {ABC} Name x", "value": "v" } ] }"#;
        let event: GraphEvent = serde_json::from_str(json).unwrap();
        assert_eq!(
            event.original_start_time_zone.as_deref(),
            Some("AUS Eastern Standard Time")
        );
        assert_eq!(event.odata_etag.as_deref(), Some("W/\"DwAAABYAAA\""));
        assert_eq!(event.show_as, Some(GraphShowAs::Busy));
        assert_eq!(event.event_type, Some(GraphEventType::Occurrence));
        assert_eq!(event.response(), Some(&GraphResponse::Accepted));
        assert_eq!(event.extended_property("string {abc} name X"), Some("v"));
        assert_eq!(event.transaction_id, None);
        let start = event.start.as_ref().unwrap();
        assert_eq!(
            start.wall_time().unwrap(),
            NaiveDateTime::parse_from_str("2026-10-02T13:00:00", "%Y-%m-%dT%H:%M:%S").unwrap()
        );
        assert!(!start.has_offset());
        assert!(event.last_modified_at().is_some());
    }

    #[test]
    fn graph_wall_time_keeps_seven_fractional_digits() {
        let t = GraphDateTimeTimeZone {
            date_time: "2026-10-02T13:00:00.1234567".into(),
            time_zone: Some("Pacific Standard Time".into()),
        };
        assert_eq!(
            t.wall_time().unwrap().and_utc().timestamp_subsec_nanos(),
            123_456_700
        );
    }

    #[test]
    fn graph_removed_stub_and_nulls_parse() {
        let removed: GraphEvent = serde_json::from_str(
            r##"{"@odata.type":"#microsoft.graph.event","id":"AAMkAD=","@removed":{"reason":"deleted"}}"##,
        )
        .unwrap();
        assert_eq!(removed.removed.unwrap().reason.as_deref(), Some("deleted"));
        let nulls: GraphEvent = serde_json::from_str(
            r#"{"id":"x","isCancelled":null,"singleValueExtendedProperties":null,"showAs":null}"#,
        )
        .unwrap();
        assert!(!nulls.is_cancelled && nulls.show_as.is_none());
    }

    #[test]
    fn a_malformed_item_does_not_fail_its_page() {
        let page: GoogleEventsPage = serde_json::from_str(
            r#"{"items":[{"id":"ok"},{"id":"bad","attendees":"not a list"}],"nextSyncToken":"tok"}"#,
        )
        .unwrap();
        assert!(matches!(&page.items[0], Lenient::Parsed(e) if e.id == "ok"));
        assert!(matches!(&page.items[1], Lenient::Malformed { .. }));
        assert_eq!(page.next_sync_token.as_deref(), Some("tok"));

        let delta: GraphDeltaPage = serde_json::from_str(
            r#"{"value":[{"id":"a","isAllDay":"yes"}],"@odata.deltaLink":"https://x/delta?$deltatoken=1"}"#,
        )
        .unwrap();
        assert!(matches!(&delta.value[0], Lenient::Malformed { .. }));
        assert!(delta.delta_link.is_some() && delta.next_link.is_none());
    }
}
