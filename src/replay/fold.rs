//! Folding the log into the in-memory read models with the live path's own
//! functions: `ConnectionEvent::from_json` (`from_parts` without the
//! intermediate `serde_json::Value`; upcasting included),
//! `ConnectionState::evolve` and `connection_changes`.
//!
//! The live path calls `connection_changes(id, &state_after, &events)` once
//! per append. One append is one transaction, so its events share a
//! transaction id and are adjacent in the global order `(txid, position)`:
//! replay regroups them by `(stream, txid)` and makes the very same call.
//!
//! Across streams, appends are applied in `(txid, position)` order. The
//! live tables see them in commit order, which differs only for concurrent
//! transactions; that matters only where two streams write the same row —
//! a busy row keyed by (platform provider, provider, external event id)
//! written by two connections of one platform provider in overlapping
//! transactions. The log does not record commit order, so such a row may
//! be reported as different (and a swap settles it on the log's order).

use super::model::{HashMap, Model};
use super::ReplayError;
use crate::core::events::ConnectionEvent;
use crate::core::ids::{ConnectionId, StreamName};
use crate::core::projection::connection_changes;
use crate::core::state::ConnectionState;

/// One event as read from the log, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct LogEvent<'a> {
    pub stream: &'a str,
    pub version: u64,
    pub txid: i64,
    pub event_type: &'a str,
    pub schema_version: i32,
    pub payload: &'a [u8],
}

/// One connection stream's fold.
#[derive(Debug)]
pub struct StreamFold {
    pub id: ConnectionId,
    pub stream: StreamName,
    pub state: ConnectionState,
    /// The last version read (folded, or pending in the open append).
    seen: u64,
}

/// The whole replay state: every connection's fold and the read models.
#[derive(Debug, Default)]
pub struct Folder {
    only: Option<ConnectionId>,
    /// Stream name → index in `streams`; `None` for streams that have no
    /// projection (`settings`, …).
    index: HashMap<String, Option<usize>>,
    pub streams: Vec<StreamFold>,
    pub model: Model,
    /// The append being gathered: stream index and transaction id.
    open: Option<(usize, i64)>,
    pending: Vec<ConnectionEvent>,
    /// Events read (all streams) and events folded (connection streams).
    pub events_read: u64,
    pub events_folded: u64,
}

impl Folder {
    pub fn new(only: Option<ConnectionId>) -> Self {
        Folder {
            only,
            ..Folder::default()
        }
    }

    /// Takes one event, in global order. Events of a stream at or below the
    /// version already folded are skipped (the catch-up re-reads some).
    pub fn push(&mut self, event: LogEvent<'_>) -> Result<(), ReplayError> {
        self.push_decoded(event, None)
    }

    /// Like [`Folder::push`], with the payload possibly decoded already
    /// (by [`decode`] on another thread); a decoding error counts only if
    /// the event is folded.
    pub fn push_decoded(
        &mut self,
        event: LogEvent<'_>,
        decoded: Option<Result<ConnectionEvent, ReplayError>>,
    ) -> Result<(), ReplayError> {
        self.events_read += 1;
        let Some(idx) = self.stream_index(event.stream) else {
            return Ok(());
        };
        let seen = self.streams[idx].seen;
        if event.version <= seen {
            return Ok(());
        }
        if event.version != seen + 1 {
            return Err(ReplayError::Gap {
                stream: event.stream.to_string(),
                expected: seen + 1,
                found: event.version,
            });
        }
        if self.open != Some((idx, event.txid)) {
            self.flush()?;
            self.open = Some((idx, event.txid));
        }
        let decoded = match decoded {
            Some(result) => result?,
            None => decode(&event)?,
        };
        self.pending.push(decoded);
        self.streams[idx].seen = event.version;
        self.events_folded += 1;
        Ok(())
    }

    /// Folds the append being gathered and applies its row changes.
    pub fn flush(&mut self) -> Result<(), ReplayError> {
        let Some((idx, _)) = self.open.take() else {
            return Ok(());
        };
        let fold = &mut self.streams[idx];
        fold.state = std::mem::take(&mut fold.state).fold(&self.pending);
        let changes = connection_changes(fold.id, &fold.state, &self.pending);
        self.pending.clear();
        self.model.apply(changes)
    }

    fn stream_index(&mut self, stream: &str) -> Option<usize> {
        // Most events continue the append being gathered: skip the hash.
        if let Some((idx, _)) = self.open {
            if self.streams[idx].stream.as_str() == stream {
                return Some(idx);
            }
        }
        if let Some(idx) = self.index.get(stream) {
            return *idx;
        }
        let name = StreamName::parse(stream).ok();
        let id = name
            .as_ref()
            .and_then(|n| n.connection())
            .filter(|id| self.only.is_none_or(|only| only == *id));
        let idx = match (id, name) {
            (Some(id), Some(stream)) => {
                self.streams.push(StreamFold {
                    id,
                    stream,
                    state: ConnectionState::default(),
                    seen: 0,
                });
                Some(self.streams.len() - 1)
            }
            _ => None,
        };
        self.index.insert(stream.to_string(), idx);
        idx
    }
}

/// True for the streams replay folds (the others are only counted).
pub fn is_projected(stream: &str) -> bool {
    stream.starts_with(StreamName::CONNECTION_PREFIX)
}

/// Decodes a stored event exactly as the actor's `recover` does.
pub fn decode(event: &LogEvent<'_>) -> Result<ConnectionEvent, ReplayError> {
    let fail = |reason: String| ReplayError::Decode {
        stream: event.stream.to_string(),
        version: event.version,
        reason,
    };
    ConnectionEvent::from_json(event.event_type, event.schema_version, event.payload)
        .map_err(|e| fail(e.to_string()))
}
