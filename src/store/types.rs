//! The data the event store takes and gives.

use crate::core::ids::StreamName;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The version a writer believes a stream is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this (≥ 1).
    Exact(u64),
    /// Append wherever the stream is (no concurrency check).
    Any,
}

impl ExpectedVersion {
    /// The expected version as a number, 0 meaning "no stream".
    pub fn from_version(version: u64) -> Self {
        if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
            ExpectedVersion::Any => f.write_str("any version"),
        }
    }
}

/// Context recorded with every event: who caused it and how to find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventMetadata {
    /// The id shared by everything one outside input caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The id of the input or event that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The webhook dedupe key, when the event records a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// The node (host / process) that wrote the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The incarnation of the actor that wrote the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
}

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i32,
    /// The JSON payload as text; stored and returned byte for byte.
    pub payload: String,
    pub metadata: EventMetadata,
}

impl NewEvent {
    pub fn new(
        event_type: impl Into<String>,
        schema_version: i32,
        payload: impl Into<String>,
    ) -> Self {
        NewEvent {
            event_type: event_type.into(),
            schema_version,
            payload: payload.into(),
            metadata: EventMetadata::default(),
        }
    }

    pub fn with_metadata(mut self, metadata: EventMetadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub position: i64,
    pub txid: i64,
    pub stream: StreamName,
    pub version: u64,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: String,
    pub metadata: EventMetadata,
    pub committed_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The cursor just after this event in the global order.
    pub fn cursor(&self) -> GlobalCursor {
        GlobalCursor {
            txid: self.txid,
            position: self.position,
        }
    }
}

/// A point in the global order of the log.
///
/// The global order is `(txid, position)`, not `position` alone: positions
/// are handed out at insert time, so a transaction that started earlier may
/// commit a lower position after a higher one is visible. Reading only below
/// the oldest running transaction id and ordering by `(txid, position)`
/// guarantees that nothing can ever be committed before a point already read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct GlobalCursor {
    pub txid: i64,
    pub position: i64,
}

impl GlobalCursor {
    /// Before the first event.
    pub const START: GlobalCursor = GlobalCursor {
        txid: 0,
        position: 0,
    };
}

/// A cached fold of a stream up to `version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub stream: StreamName,
    pub version: u64,
    pub schema_version: i32,
    /// The folded state as JSON text.
    pub state: String,
}
