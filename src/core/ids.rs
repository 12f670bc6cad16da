//! Identifier newtypes. Each one can only hold a valid value ("parse, don't
//! validate"), so the rest of the code never re-checks them.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Why a string is not a valid identifier of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub reason: String,
}

/// One external calendar connection (one account at one calendar provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnectionId(Uuid);

impl ConnectionId {
    pub fn new_random() -> Self {
        ConnectionId(Uuid::new_v4())
    }
    pub fn from_uuid(id: Uuid) -> Self {
        ConnectionId(id)
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        Uuid::parse_str(s.trim())
            .map(ConnectionId)
            .map_err(|e| InvalidId {
                kind: "connection id",
                reason: e.to_string(),
            })
    }
    /// The name of this connection's event stream.
    pub fn stream(&self) -> StreamName {
        StreamName(format!("{}{}", StreamName::CONNECTION_PREFIX, self.0))
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The name of an event stream in the log: `connection-<uuid>`, `settings`, …
///
/// Stream names are short printable ASCII so they are safe in logs, URLs and
/// CLI output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    pub const CONNECTION_PREFIX: &'static str = "connection-";
    pub const MAX_LEN: usize = 200;

    pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
        let s = s.into();
        let bad = |reason: &str| InvalidId {
            kind: "stream name",
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(bad("longer than 200 bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(bad("only ASCII letters, digits and - _ . : are allowed"));
        }
        Ok(StreamName(s))
    }

    /// The platform-wide settings stream (feature flags, allowlists).
    pub fn settings() -> Self {
        StreamName("settings".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The connection this stream belongs to, if it is a connection stream.
    pub fn connection(&self) -> Option<ConnectionId> {
        self.0
            .strip_prefix(Self::CONNECTION_PREFIX)
            .and_then(|rest| ConnectionId::parse(rest).ok())
    }
}

impl TryFrom<String> for StreamName {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StreamName::parse(s)
    }
}

impl From<StreamName> for String {
    fn from(s: StreamName) -> String {
        s.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which external calendar service a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalendarProvider {
    Google,
    Microsoft,
}

impl CalendarProvider {
    pub const ALL: [CalendarProvider; 2] = [CalendarProvider::Google, CalendarProvider::Microsoft];

    pub fn as_str(&self) -> &'static str {
        match self {
            CalendarProvider::Google => "google",
            CalendarProvider::Microsoft => "microsoft",
        }
    }

    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        match s.trim().to_ascii_lowercase().as_str() {
            "google" => Ok(CalendarProvider::Google),
            "microsoft" | "graph" | "outlook" | "office365" => Ok(CalendarProvider::Microsoft),
            other => Err(InvalidId {
                kind: "calendar provider",
                reason: format!("{other:?} is not one of google, microsoft"),
            }),
        }
    }
}

impl fmt::Display for CalendarProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declares a newtype over a bounded, non-empty, printable string.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                if s.is_empty() {
                    return Err(InvalidId { kind: $kind, reason: "empty".into() });
                }
                if s.len() > Self::MAX_LEN {
                    return Err(InvalidId {
                        kind: $kind,
                        reason: format!("longer than {} bytes", Self::MAX_LEN),
                    });
                }
                if s.chars().any(|c| c.is_control()) {
                    return Err(InvalidId { kind: $kind, reason: "contains control characters".into() });
                }
                Ok($name(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// The platform's id of the person who takes bookings (whose availability
    /// the busy intervals block).
    PlatformProviderId,
    "platform provider id",
    200
);
text_id!(
    /// A calendar at the external provider (`primary`, an e-mail address, a
    /// Graph calendar id).
    CalendarId,
    "calendar id",
    1024
);
text_id!(
    /// An event id at the external provider.
    ExternalEventId,
    "external event id",
    1024
);
text_id!(
    /// The account at the external provider (e-mail address or UPN).
    ExternalAccount,
    "external account",
    320
);
text_id!(
    /// The platform's booking id.
    BookingId,
    "booking id",
    200
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_stream_names_round_trip() {
        let id = ConnectionId::new_random();
        let stream = id.stream();
        assert!(stream.as_str().starts_with("connection-"));
        assert_eq!(stream.connection(), Some(id));
        assert_eq!(StreamName::settings().connection(), None);
    }

    #[test]
    fn stream_names_reject_unsafe_text() {
        assert!(StreamName::parse("").is_err());
        assert!(StreamName::parse("a b").is_err());
        assert!(StreamName::parse("x'; drop table events;--").is_err());
        assert!(StreamName::parse("x".repeat(201)).is_err());
        assert!(StreamName::parse("settings").is_ok());
    }

    #[test]
    fn text_ids_reject_empty_long_and_control_characters() {
        assert!(BookingId::parse("").is_err());
        assert!(BookingId::parse("a\u{0}b").is_err());
        assert!(BookingId::parse("b".repeat(201)).is_err());
        assert_eq!(BookingId::parse("bk_1").unwrap().as_str(), "bk_1");
        assert!(serde_json::from_str::<BookingId>("\"\"").is_err());
    }

    #[test]
    fn providers_parse_case_insensitively_and_reject_others() {
        assert_eq!(
            CalendarProvider::parse("Google").unwrap(),
            CalendarProvider::Google
        );
        assert_eq!(
            CalendarProvider::parse("microsoft").unwrap(),
            CalendarProvider::Microsoft
        );
        assert!(CalendarProvider::parse("yahoo").is_err());
    }
}
