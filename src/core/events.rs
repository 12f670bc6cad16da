//! The events of a connection's stream: the vocabulary of the log.
//!
//! Each variant has a stable type name (its serde tag, stored in the log's
//! `event_type` column) and a schema version (stored beside it). Events are
//! immutable: when a variant's shape must change, its version goes up and
//! [`upcast`] learns to lift the old payload; stored rows are never rewritten.

use super::ids::{CalendarId, CalendarProvider, ExternalAccount, PlatformProviderId};
use super::interval::Interval;
use super::outbound::{Booking, OutboundOp, WriteOutcome};
use super::state::WindowBase;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Everything that can happen to a connection, as recorded in its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ConnectionEvent {
    /// A platform provider linked an external calendar account.
    ConnectionCreated {
        platform_provider_id: PlatformProviderId,
        provider: CalendarProvider,
        account: ExternalAccount,
        calendars: Vec<CalendarId>,
        destination_calendar: Option<CalendarId>,
    },
    /// The set of calendars whose busy time blocks availability changed, or
    /// the calendar that receives outbound bookings.
    CalendarsSelected {
        calendars: Vec<CalendarId>,
        destination_calendar: Option<CalendarId>,
    },
    /// An operator or the platform paused the connection: no provider calls.
    ConnectionPaused {
        reason: String,
    },
    ConnectionResumed {},
    /// The connection is gone; its stream stays as history.
    ConnectionRemoved {
        reason: String,
    },
    /// Credentials were stored or rotated. The secret itself lives in the
    /// credentials table, encrypted; the log only records that it changed.
    CredentialsChanged {
        at: DateTime<Utc>,
    },
    /// The connection's sealed grant was deleted (with its removal): the
    /// credentials table holds nothing of it any more.
    CredentialsErased {
        at: DateTime<Utc>,
    },
    /// The supervisor gave up restarting this connection's actor: it failed
    /// `restarts` times within `window_secs`. No work runs until lifted.
    ConnectionQuarantined {
        restarts: u32,
        window_secs: u64,
        last_error: String,
        at: DateTime<Utc>,
    },
    /// An operator lifted the quarantine.
    QuarantineLifted {
        at: DateTime<Utc>,
    },
    /// A push notification was durably accepted. `key` is its dedupe key;
    /// the dedupe window is folded from these events.
    NotificationAccepted {
        key: String,
        channel_id: String,
        received_at: DateTime<Utc>,
    },
    /// A full sync of `calendar` began: rows seen from now on carry
    /// `generation`; when the round completes, older rows are swept.
    FullSyncStarted {
        calendar: CalendarId,
        generation: u64,
        reason: String,
        /// The window this round lists (absent in rounds recorded before
        /// windows were recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<WindowBase>,
    },
    /// An external event was seen. `blocks` is the busy time it blocks
    /// (`None`: it blocks nothing — free, declined, cancelled…); `ours` names
    /// the booking when it is calsync's own outbound event.
    ExternalEventSeen {
        calendar: CalendarId,
        event_id: String,
        blocks: Option<Interval>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ours: Option<String>,
        /// The busy rule that made it block (with `blocks`; absent in
        /// events recorded before explanations).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<super::explain::BusyRule>,
        /// Why the rules ignored it (without `blocks`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ignored: Option<super::explain::IgnoreReason>,
        /// An ignored event's times, when they could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        span: Option<Interval>,
    },
    /// The provider reported the event deleted.
    ExternalEventRemoved {
        calendar: CalendarId,
        event_id: String,
        /// Why it blocks nothing now (`cancelled`; absent in events
        /// recorded before explanations).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<super::explain::IgnoreReason>,
        /// Its times, when the provider still sent them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        span: Option<Interval>,
    },
    /// A sync round of `calendar` completed; `cursor` starts the next one.
    SyncRoundCompleted {
        calendar: CalendarId,
        cursor: String,
        /// Set when the round was a full sync: rows of older generations
        /// are gone at the provider.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        swept_generation: Option<u64>,
        at: DateTime<Utc>,
        /// The calendar's zone as the provider reported it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zone: Option<String>,
    },
    /// A connection-wide failure (throttling, the token endpoint, an
    /// unreadable grant): the connection backs off until `backoff_until`.
    /// (Recorded before per-calendar failures existed, it was also used for
    /// a calendar's failure.)
    SyncFailed {
        kind: String,
        message: String,
        consecutive_failures: u32,
        backoff_until: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// One calendar's sync failed; the other calendars carry on. With
    /// `unavailable`, the provider refuses this calendar (404, 403…) and
    /// it is probed again at `retry_at`; otherwise it backs off until then.
    CalendarSyncFailed {
        calendar: CalendarId,
        kind: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        unavailable: bool,
        failures: u32,
        retry_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Opening, renewing or closing a calendar's channel failed; upkeep of
    /// that calendar's channel backs off until `retry_at`.
    ChannelUpkeepFailed {
        calendar: CalendarId,
        op: String,
        kind: String,
        message: String,
        failures: u32,
        retry_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// The grant is gone: no provider calls until the user re-authorises.
    ReauthorizationRequired {
        reason: String,
    },
    /// New credentials arrived after a re-authorisation.
    Reauthorized {
        at: DateTime<Utc>,
    },
    /// A push channel (Google) or subscription (Graph) is live. Only a hash
    /// of its secret is recorded; the secret itself went to the provider.
    ChannelOpened {
        calendar: CalendarId,
        channel_id: String,
        resource_id: String,
        secret_sha256: String,
        expires_at: DateTime<Utc>,
        /// When the provider granted it (absent in older events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// The channel's expiry moved (Graph renewal).
    ChannelRenewed {
        channel_id: String,
        expires_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// The channel is stopped or gone; late notifications on it are
    /// accepted during a grace period, then refused.
    ChannelClosed {
        channel_id: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// These selected calendars are shared as free/busy only (no event
    /// details): they are synced through the provider's free/busy query.
    FreeBusyOnlySelected {
        calendars: Vec<CalendarId>,
    },
    /// The platform sent a booking version newer than any seen before.
    BookingReceived {
        booking: Booking,
    },
    /// About to write `op` for the booking at `version`: recorded before the
    /// provider call, so a crash leaves an intent to complete, never a
    /// write nobody knows about.
    OutboundIntentRecorded {
        booking_id: String,
        version: u64,
        op: OutboundOp,
    },
    /// The provider confirmed the write of `version`.
    OutboundWriteSucceeded {
        booking_id: String,
        version: u64,
        outcome: WriteOutcome,
    },
    /// The write failed. Transient: it stays pending and is retried at
    /// `retry_at`. `permanent`: retrying cannot help; the booking is
    /// `failed` until it changes or an operator retries it. (Events
    /// recorded before per-booking backoff carry neither.)
    OutboundWriteFailed {
        booking_id: String,
        kind: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failures: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        permanent: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// An operator asked to try a failed booking's write again.
    OutboundRetryRequested {
        booking_id: String,
        at: DateTime<Utc>,
    },
    /// Someone changed the booking's own event in the external calendar
    /// (moved, deleted, declined). `policy` is what calsync does about it,
    /// decided when it was seen: `notify` stops writing the booking until
    /// a newer version arrives; `restore` writes it back. Declines are
    /// only reported.
    BookingExternallyChanged {
        booking_id: String,
        version: u64,
        change: super::external_change::ExternalChange,
        policy: super::external_change::ExternalChangePolicy,
        at: DateTime<Utc>,
    },
}

impl ConnectionEvent {
    /// The stable name stored in the log's `event_type` column.
    pub fn event_type(&self) -> &'static str {
        match self {
            ConnectionEvent::ConnectionCreated { .. } => "connection_created",
            ConnectionEvent::CalendarsSelected { .. } => "calendars_selected",
            ConnectionEvent::ConnectionPaused { .. } => "connection_paused",
            ConnectionEvent::ConnectionResumed { .. } => "connection_resumed",
            ConnectionEvent::ConnectionRemoved { .. } => "connection_removed",
            ConnectionEvent::CredentialsChanged { .. } => "credentials_changed",
            ConnectionEvent::CredentialsErased { .. } => "credentials_erased",
            ConnectionEvent::ConnectionQuarantined { .. } => "connection_quarantined",
            ConnectionEvent::QuarantineLifted { .. } => "quarantine_lifted",
            ConnectionEvent::NotificationAccepted { .. } => "notification_accepted",
            ConnectionEvent::FullSyncStarted { .. } => "full_sync_started",
            ConnectionEvent::ExternalEventSeen { .. } => "external_event_seen",
            ConnectionEvent::ExternalEventRemoved { .. } => "external_event_removed",
            ConnectionEvent::SyncRoundCompleted { .. } => "sync_round_completed",
            ConnectionEvent::SyncFailed { .. } => "sync_failed",
            ConnectionEvent::CalendarSyncFailed { .. } => "calendar_sync_failed",
            ConnectionEvent::ChannelUpkeepFailed { .. } => "channel_upkeep_failed",
            ConnectionEvent::ReauthorizationRequired { .. } => "reauthorization_required",
            ConnectionEvent::Reauthorized { .. } => "reauthorized",
            ConnectionEvent::ChannelOpened { .. } => "channel_opened",
            ConnectionEvent::ChannelRenewed { .. } => "channel_renewed",
            ConnectionEvent::ChannelClosed { .. } => "channel_closed",
            ConnectionEvent::FreeBusyOnlySelected { .. } => "free_busy_only_selected",
            ConnectionEvent::BookingReceived { .. } => "booking_received",
            ConnectionEvent::OutboundIntentRecorded { .. } => "outbound_intent_recorded",
            ConnectionEvent::OutboundWriteSucceeded { .. } => "outbound_write_succeeded",
            ConnectionEvent::OutboundWriteFailed { .. } => "outbound_write_failed",
            ConnectionEvent::OutboundRetryRequested { .. } => "outbound_retry_requested",
            ConnectionEvent::BookingExternallyChanged { .. } => "booking_externally_changed",
        }
    }

    /// The current schema version of this event type's payload.
    pub fn schema_version(&self) -> i32 {
        1
    }

    /// Splits the event into the `(event_type, payload)` pair the log stores.
    pub fn to_parts(&self) -> Result<(&'static str, serde_json::Value), EventDecodeError> {
        Ok((self.event_type(), untag(self, self.event_type())?))
    }

    /// Rebuilds an event from the log's `(event_type, schema_version, payload)`.
    pub fn from_parts(
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Self, EventDecodeError> {
        retag(event_type, upcast(event_type, schema_version, payload)?)
    }

    /// [`ConnectionEvent::from_parts`] from the stored payload's JSON text,
    /// without building a `serde_json::Value` first: a payload stored at
    /// its type's current schema version needs no upcast (the identity), so
    /// it is deserialised straight into the variant `event_type` names.
    /// Anything else — an older version, or a payload the direct path
    /// refuses — takes the `from_parts` path, which upcasts and reports
    /// errors exactly as before.
    pub fn from_json(
        event_type: &str,
        schema_version: i32,
        payload: &[u8],
    ) -> Result<Self, EventDecodeError> {
        if let Ok(event) = tagged_from_slice::<ConnectionEvent>(event_type, payload) {
            // The variant's current version: equal means nothing to upcast.
            if event.schema_version() == schema_version {
                return Ok(event);
            }
        }
        let payload = serde_json::from_slice(payload).map_err(EventDecodeError::Json)?;
        Self::from_parts(event_type, schema_version, payload)
    }
}

/// The payload of an externally tagged enum value (`{"<type>": payload}`),
/// the shape every event enum serialises to.
pub fn untag<T: Serialize>(
    value: &T,
    event_type: &str,
) -> Result<serde_json::Value, EventDecodeError> {
    match serde_json::to_value(value).map_err(EventDecodeError::Json)? {
        serde_json::Value::Object(mut map) if map.len() == 1 => map
            .remove(event_type)
            .ok_or_else(|| EventDecodeError::Shape(event_type.to_string())),
        _ => Err(EventDecodeError::Shape(event_type.to_string())),
    }
}

/// The inverse of [`untag`]: an enum value from its type name and payload.
pub fn retag<T: serde::de::DeserializeOwned>(
    event_type: &str,
    payload: serde_json::Value,
) -> Result<T, EventDecodeError> {
    let mut tagged = serde_json::Map::with_capacity(1);
    tagged.insert(event_type.to_string(), payload);
    serde_json::from_value(serde_json::Value::Object(tagged)).map_err(EventDecodeError::Json)
}

/// [`retag`] straight from JSON text: deserialises an externally tagged
/// enum as if it were `{"<event_type>": <payload>}`, the variant's fields
/// read from `payload` as `retag`'s `serde_json::Value` would present them.
pub fn tagged_from_slice<'de, T: Deserialize<'de>>(
    event_type: &'de str,
    payload: &'de [u8],
) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let value = T::deserialize(Tagged {
        tag: event_type,
        payload: &mut de,
    })?;
    // Only whitespace may follow, as `serde_json::from_slice` requires.
    de.end()?;
    Ok(value)
}

/// A deserializer that presents `tag` as an enum's variant name and the
/// JSON in `payload` as that variant's content.
struct Tagged<'a, 'de> {
    tag: &'de str,
    payload: &'a mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
}

impl<'de> serde::Deserializer<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_enum(self)
    }

    /// Only enums are tagged: anything else is a caller's mistake.
    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom(
            "a tagged payload decodes only into an enum",
        ))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

impl<'de> serde::de::EnumAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;
    type Variant = Self;

    fn variant_seed<V: serde::de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), Self::Error> {
        let tag = serde::de::value::BorrowedStrDeserializer::<serde_json::Error>::new(self.tag);
        Ok((seed.deserialize(tag)?, self))
    }
}

impl<'de> serde::de::VariantAccess<'de> for Tagged<'_, 'de> {
    type Error = serde_json::Error;

    /// `retag` presents a unit variant's payload as a value that must be
    /// `null`.
    fn unit_variant(self) -> Result<(), Self::Error> {
        <()>::deserialize(self.payload)
    }

    fn newtype_variant_seed<T: serde::de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Self::Error> {
        seed.deserialize(self.payload)
    }

    fn tuple_variant<V: serde::de::Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_seq(self.payload, visitor)
    }

    /// Like `Value`'s struct variants, only an object is accepted.
    fn struct_variant<V: serde::de::Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        serde::Deserializer::deserialize_map(self.payload, visitor)
    }
}

/// Why a stored event could not be turned back into a [`ConnectionEvent`].
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    #[error("event payload is not valid for its type: {0}")]
    Json(#[source] serde_json::Error),
    #[error("event {0} does not serialise to a single tagged object")]
    Shape(String),
    #[error("event {event_type} has schema version {version}, newer than this build understands")]
    FutureVersion { event_type: String, version: i32 },
}

/// Lifts a stored payload to the current schema version of its type.
///
/// Every event type is at version 1 today. When a type moves to version 2,
/// its arm here converts a version-1 payload; readers never see old shapes.
pub fn upcast(
    event_type: &str,
    schema_version: i32,
    payload: serde_json::Value,
) -> Result<serde_json::Value, EventDecodeError> {
    match schema_version {
        1 => Ok(payload),
        v => Err(EventDecodeError::FutureVersion {
            event_type: event_type.to_string(),
            version: v,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> ConnectionEvent {
        ConnectionEvent::ConnectionCreated {
            platform_provider_id: PlatformProviderId::parse("prov-1").unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse("alice@example.com").unwrap(),
            calendars: vec![CalendarId::parse("primary").unwrap()],
            destination_calendar: Some(CalendarId::parse("primary").unwrap()),
        }
    }

    #[test]
    fn events_split_into_type_and_payload_and_back() {
        for event in [
            created(),
            ConnectionEvent::ConnectionPaused {
                reason: "operator".into(),
            },
            ConnectionEvent::ConnectionResumed {},
        ] {
            let (ty, payload) = event.to_parts().unwrap();
            assert_eq!(ty, event.event_type());
            let back = ConnectionEvent::from_parts(ty, event.schema_version(), payload).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn the_type_name_is_the_stable_snake_case_tag() {
        let (ty, payload) = created().to_parts().unwrap();
        assert_eq!(ty, "connection_created");
        assert_eq!(payload["provider"], "google");
    }

    #[test]
    fn unknown_types_fields_and_future_versions_are_rejected() {
        assert!(ConnectionEvent::from_parts("no_such_event", 1, serde_json::json!({})).is_err());
        assert!(ConnectionEvent::from_parts(
            "connection_resumed",
            1,
            serde_json::json!({"surprise": 1})
        )
        .is_err());
        assert!(matches!(
            ConnectionEvent::from_parts("connection_resumed", 2, serde_json::json!({})),
            Err(EventDecodeError::FutureVersion { .. })
        ));
    }

    #[test]
    fn decoding_from_text_agrees_with_decoding_from_a_value() {
        for (ty, version, text) in [
            ("connection_resumed", 1, "{}"),
            ("connection_resumed", 1, " {} \n"),
            ("connection_paused", 1, r#"{"reason":"operator"}"#),
            ("connection_paused", 1, r#"["operator"]"#),
            ("connection_paused", 1, r#"{"reason":"operator","extra":1}"#),
            ("connection_paused", 1, r#"{"reason":"operator"} trailing"#),
            ("connection_paused", 1, r#"{"reason":"a","reason":"b"}"#),
            ("connection_paused", 1, r#"{}"#),
            ("connection_paused", 2, r#"{"reason":"operator"}"#),
            ("no_such_event", 1, "{}"),
            ("connection_resumed", 1, "null"),
        ] {
            let via_value = serde_json::from_slice(text.as_bytes())
                .map_err(EventDecodeError::Json)
                .and_then(|payload| ConnectionEvent::from_parts(ty, version, payload));
            let direct = ConnectionEvent::from_json(ty, version, text.as_bytes());
            assert_eq!(
                direct.as_ref().ok(),
                via_value.as_ref().ok(),
                "{ty} v{version} {text}"
            );
            assert_eq!(
                direct.map_err(|e| e.to_string()).err(),
                via_value.map_err(|e| e.to_string()).err(),
                "{ty} v{version} {text}"
            );
        }
        let (ty, payload) = created().to_parts().unwrap();
        let text = payload.to_string();
        assert_eq!(
            ConnectionEvent::from_json(ty, 1, text.as_bytes()).unwrap(),
            created()
        );
    }
}
