//! The platform feed: one more reader of the log's global order.
//!
//! [`FeedReader`] reads the log with `read_all` (the same `(txid, position)`
//! watermark replay uses: never past a transaction that may still commit)
//! and turns each connection event into platform events with the pure
//! [`crate::core::platform_events`] step, folding each connection's stream
//! as it goes. A [`FeedCursor`] names a point in that order — a log event
//! and how many of its platform events were already taken — so it is
//! stable across restarts and across nodes: it depends on the log alone.
//!
//! - [`FeedReader::read`] — one page after a cursor (pull: `GET /v1/changes`);
//! - [`push`] — signed webhooks, one worker per subscription
//!   ([`subscriptions`]), in order, at least once.

pub mod cursor;
pub mod push;
pub mod subscriptions;

pub use cursor::{CursorError, FeedCursor};

use crate::core::events::ConnectionEvent;
use crate::core::ids::{ConnectionId, StreamName};
use crate::core::platform_events::{FeedConnection, LogPoint, PlatformEvent, PlatformEventType};
use crate::store::{EventStore, GlobalCursor, RecordedEvent, StoreError};
use std::collections::HashMap;
use std::sync::Mutex;

/// The most log events one page examines (a page of a filtered feed may
/// come back short, or empty, with a cursor further on: ask again).
pub const SCAN_LIMIT: usize = 5_000;
/// Log events read per `read_all` call.
const BATCH: usize = 500;
/// Connection folds kept between reads; beyond, the cache starts over.
const CACHE_LIMIT: usize = 20_000;

/// One page of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    pub events: Vec<PlatformEvent>,
    /// Where the next page starts (past everything examined).
    pub next: FeedCursor,
    /// True when the page stopped at `limit` or the scan limit with more
    /// of the log possibly left to examine.
    pub has_more: bool,
}

/// Reads platform events from the log. Keeps each connection's fold between
/// reads (a cache: a miss folds the stream again from its start).
pub struct FeedReader<S> {
    store: S,
    folds: Mutex<HashMap<ConnectionId, (u64, FeedConnection)>>,
}

impl<S: EventStore> FeedReader<S> {
    pub fn new(store: S) -> Self {
        FeedReader {
            store,
            folds: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Up to `limit` platform events after `after`, of `types` (all when
    /// empty), in the log's global order.
    pub async fn read(
        &self,
        after: FeedCursor,
        limit: usize,
        types: &[PlatformEventType],
    ) -> Result<FeedPage, StoreError> {
        let mut events = Vec::new();
        let mut next = after;
        // A partly taken log event is read again, its first `taken` skipped.
        let mut from = after.resume_point();
        let mut scanned = 0usize;
        loop {
            let batch = self.store.read_all(from, BATCH).await?;
            let exhausted = batch.len() < BATCH;
            for recorded in &batch {
                scanned += 1;
                from = recorded.cursor();
                let derived = self.derive(recorded).await?;
                let skip = if after.is_partial_at(recorded) {
                    after.taken as usize
                } else {
                    0
                };
                for (index, event) in derived.into_iter().enumerate().skip(skip) {
                    if events.len() == limit {
                        // Stop inside this log event: resume at `index`.
                        // Nothing of this event taken yet: the cursor stays
                        // after the previous one.
                        let next = match index {
                            0 => next,
                            _ => FeedCursor::partial(recorded, index as u32),
                        };
                        return Ok(FeedPage {
                            events,
                            next,
                            has_more: true,
                        });
                    }
                    if types.is_empty() || types.contains(&event.event_type) {
                        events.push(event);
                    }
                }
                next = FeedCursor::after(recorded);
                if scanned >= SCAN_LIMIT {
                    return Ok(FeedPage {
                        events,
                        next,
                        has_more: true,
                    });
                }
            }
            if exhausted {
                return Ok(FeedPage {
                    events,
                    next,
                    has_more: false,
                });
            }
        }
    }

    /// The platform events of one log event (none for streams that are not
    /// connections).
    async fn derive(&self, recorded: &RecordedEvent) -> Result<Vec<PlatformEvent>, StoreError> {
        let Some(connection) = recorded.stream.connection() else {
            return Ok(Vec::new());
        };
        let event = decode(recorded)?;
        let mut fold = self
            .fold_before(connection, &recorded.stream, recorded.version)
            .await?;
        let derived = fold.step(connection, &event, point(recorded));
        let mut folds = self.folds.lock().unwrap_or_else(|p| p.into_inner());
        if folds.len() >= CACHE_LIMIT {
            folds.clear();
        }
        folds.insert(connection, (recorded.version, fold));
        Ok(derived)
    }

    /// The connection's fold of versions `1..version`.
    async fn fold_before(
        &self,
        connection: ConnectionId,
        stream: &StreamName,
        version: u64,
    ) -> Result<FeedConnection, StoreError> {
        let cached = {
            let folds = self.folds.lock().unwrap_or_else(|p| p.into_inner());
            folds.get(&connection).cloned()
        };
        let (mut at, mut fold) = match cached {
            Some((v, fold)) if v < version => (v, fold),
            _ => (0, FeedConnection::default()),
        };
        while at + 1 < version {
            let wanted = (version - 1 - at) as usize;
            let events = self
                .store
                .read_stream(stream, at + 1, wanted.min(BATCH))
                .await?;
            if events.is_empty() {
                break;
            }
            for recorded in &events {
                if recorded.version >= version {
                    break;
                }
                fold.step(connection, &decode(recorded)?, point(recorded));
                at = recorded.version;
            }
        }
        Ok(fold)
    }
}

fn decode(recorded: &RecordedEvent) -> Result<ConnectionEvent, StoreError> {
    ConnectionEvent::from_json(
        &recorded.event_type,
        recorded.schema_version,
        recorded.payload.as_bytes(),
    )
    .map_err(|e| StoreError::BadData(format!("event at position {}: {e}", recorded.position)))
}

fn point(recorded: &RecordedEvent) -> LogPoint {
    LogPoint {
        position: recorded.position,
        committed_at: recorded.committed_at,
    }
}

/// The cursor after the newest event the feed may read now (`after=now`).
pub async fn head(store: &crate::store::PgEventStore) -> Result<FeedCursor, StoreError> {
    let last = store.last_events(None, 1).await?;
    Ok(last
        .last()
        .map(FeedCursor::after)
        .unwrap_or(FeedCursor::START))
}

impl FeedCursor {
    /// Where `read_all` must start so the cursor's event (or the one after
    /// it) comes first.
    fn resume_point(&self) -> GlobalCursor {
        if self.taken > 0 {
            // Just before this event: nothing sorts between (txid, p - 1)
            // and (txid, p) (positions are unique integers).
            GlobalCursor {
                txid: self.txid,
                position: self.position - 1,
            }
        } else {
            GlobalCursor {
                txid: self.txid,
                position: self.position,
            }
        }
    }

    fn is_partial_at(&self, recorded: &RecordedEvent) -> bool {
        self.taken > 0 && self.txid == recorded.txid && self.position == recorded.position
    }
}
