//! The event store in memory, for the deterministic simulation: the same
//! contract as PostgreSQL's (the contract tests in `tests/event_store.rs`
//! run against both) — atomic appends with expected-version conflicts,
//! gap-free stream versions, one global order, payloads kept byte for byte
//! and refused when they are not JSON, snapshots that only move forward,
//! and read models changed in the same "transaction" as the events (one
//! lock covers the version check, the insert and the row changes).
//!
//! The read models are replay's in-memory tables ([`crate::replay::model`]),
//! so the simulation's projections obey exactly the SQL's semantics. A
//! switch makes every call answer `Unavailable`, as a database outage does.

use super::{
    EventStore, ExpectedVersion, GlobalCursor, NewEvent, RecordedEvent, Snapshot, StoreError,
};
use crate::core::ids::{ConnectionId, StreamName};
use crate::core::projection::RowChange;
use crate::replay::model::Model;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Sealed credentials as the `credentials` table keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub sealed: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    events: Vec<RecordedEvent>,
    /// Each stream's events, as indexes into `events`.
    streams: BTreeMap<StreamName, Vec<usize>>,
    snapshots: BTreeMap<StreamName, Snapshot>,
    credentials: BTreeMap<ConnectionId, SealedRow>,
    model: Model,
}

/// A cheap handle: clones share one store.
/// Called with the stream's name on every committed append.
pub type AppendHook = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    down: Arc<AtomicBool>,
    /// Told of every committed append (the simulation counts them to see a
    /// node that spins).
    on_append: Arc<std::sync::OnceLock<AppendHook>>,
    /// Where commit times come from (the simulation's clock).
    clock: Arc<dyn crate::ports::Clock>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(Arc::new(crate::ports::SystemClock))
    }
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn crate::ports::Clock>) -> Self {
        MemoryStore {
            inner: Arc::default(),
            down: Arc::default(),
            on_append: Arc::default(),
            clock,
        }
    }

    /// Calls `hook` with the stream's name after every committed append
    /// (set once; later calls are ignored).
    pub fn on_append(&self, hook: AppendHook) {
        let _ = self.on_append.set(hook);
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the in-memory store is down".into(),
            ));
        }
        // A poisoned lock only means a panic elsewhere; the data is whole
        // (every change happens under one lock, after all checks).
        Ok(self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every call fails with `Unavailable` while `down` (an outage).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn stream_version(&self, stream: &StreamName) -> Result<u64, StoreError> {
        Ok(self
            .lock()?
            .streams
            .get(stream)
            .map_or(0, |s| s.len() as u64))
    }

    /// Every event in the global order (for digests and replay checks).
    pub fn all_events(&self) -> Result<Vec<RecordedEvent>, StoreError> {
        Ok(self.lock()?.events.clone())
    }

    /// Reads the read models under the lock.
    pub fn with_model<T>(&self, f: impl FnOnce(&Model) -> T) -> Result<T, StoreError> {
        Ok(f(&self.lock()?.model))
    }

    pub fn put_sealed(&self, id: ConnectionId, row: SealedRow) -> Result<(), StoreError> {
        self.lock()?.credentials.insert(id, row);
        Ok(())
    }

    pub fn get_sealed(&self, id: ConnectionId) -> Result<Option<SealedRow>, StoreError> {
        Ok(self.lock()?.credentials.get(&id).cloned())
    }

    fn append_now(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        changes: Vec<RowChange>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if events.is_empty() {
            return Err(StoreError::BadData("append of zero events".into()));
        }
        for e in &events {
            // The log stores `json`: text that is not JSON is refused.
            serde_json::from_str::<serde::de::IgnoredAny>(&e.payload)
                .map_err(|err| StoreError::BadData(format!("event payload: {err}")))?;
        }
        let committed_at: DateTime<Utc> = self.clock.now();
        let mut inner = self.lock()?;
        let actual = inner.streams.get(stream).map_or(0, |s| s.len() as u64);
        let ok = match expected {
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
            ExpectedVersion::Any => true,
        };
        if !ok {
            return Err(StoreError::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        // The read models first: they refuse only a change they do not know
        // (a programming error), and then nothing of the append is kept.
        for change in &changes {
            if let RowChange::EraseCredentials { connection_id } = change {
                inner.credentials.remove(connection_id);
            }
        }
        inner
            .model
            .apply(changes)
            .map_err(|e| StoreError::BadData(e.to_string()))?;
        // One append, one "transaction": its events share a txid.
        let txid = inner.events.last().map_or(1, |e| e.txid + 1);
        let mut recorded = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let position = inner.events.len() as i64 + 1;
            let event = RecordedEvent {
                position,
                txid,
                stream: stream.clone(),
                version: actual + i as u64 + 1,
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
                metadata: e.metadata,
                committed_at,
            };
            let index = inner.events.len();
            inner.events.push(event.clone());
            inner.streams.entry(stream.clone()).or_default().push(index);
            recorded.push(event);
        }
        drop(inner);
        if let Some(hook) = self.on_append.get() {
            hook(stream.as_str());
        }
        Ok(recorded)
    }
}

impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.append_now(stream, expected, events, Vec::new())
    }

    async fn append_with(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        changes: Vec<RowChange>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.append_now(stream, expected, events, changes)
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock()?;
        let Some(indexes) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|i| inner.events[*i].clone())
            .collect())
    }

    /// Every append is committed when it returns, so there is never a gap
    /// to wait for: the global order is simply the insertion order.
    async fn read_all(
        &self,
        after: GlobalCursor,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .events
            .iter()
            .filter(|e| e.cursor() > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.lock()?.snapshots.get(stream).cloned())
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let newer = inner
            .snapshots
            .get(&snapshot.stream)
            .is_none_or(|s| s.version <= snapshot.version);
        if newer {
            inner
                .snapshots
                .insert(snapshot.stream.clone(), snapshot.clone());
        }
        Ok(())
    }
}
