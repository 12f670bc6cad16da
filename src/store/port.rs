//! The store the shell runs on: PostgreSQL in production and tests, the
//! in-memory store in the deterministic simulation. One enum (like the
//! provider client) rather than a generic parameter threaded through every
//! actor: the shell calls only what both offer.

use super::memory::{MemoryStore, SealedRow};
use super::{
    EventStore, ExpectedVersion, GlobalCursor, NewEvent, PgEventStore, RecordedEvent, Snapshot,
    StoreError,
};
use crate::core::ids::{ConnectionId, StreamName};
use crate::core::projection::RowChange;
use chrono::{DateTime, Utc};
use std::future::Future;

#[derive(Clone)]
pub enum Store {
    Postgres(PgEventStore),
    Memory(MemoryStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Store::Postgres(_) => "Store::Postgres",
            Store::Memory(_) => "Store::Memory",
        })
    }
}

impl From<PgEventStore> for Store {
    fn from(s: PgEventStore) -> Self {
        Store::Postgres(s)
    }
}

impl From<MemoryStore> for Store {
    fn from(s: MemoryStore) -> Self {
        Store::Memory(s)
    }
}

/// Where sealed credentials are kept (the `credentials` table, or memory).
pub trait SealedCredentials: Send + Sync {
    fn put_sealed(
        &self,
        id: ConnectionId,
        row: SealedRow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn get_sealed(
        &self,
        id: ConnectionId,
    ) -> impl Future<Output = Result<Option<SealedRow>, StoreError>> + Send;
}

impl SealedCredentials for PgEventStore {
    async fn put_sealed(&self, id: ConnectionId, row: SealedRow) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "INSERT INTO credentials (connection_id, key_id, nonce, sealed) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (connection_id) DO UPDATE SET key_id = EXCLUDED.key_id, \
                   nonce = EXCLUDED.nonce, sealed = EXCLUDED.sealed, updated_at = now()",
                &[&id.as_uuid(), &row.key_id, &row.nonce, &row.sealed],
            )
            .await?;
        Ok(())
    }

    async fn get_sealed(&self, id: ConnectionId) -> Result<Option<SealedRow>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT key_id, nonce, sealed FROM credentials WHERE connection_id = $1",
                &[&id.as_uuid()],
            )
            .await?;
        row.map(|r| {
            Ok(SealedRow {
                key_id: r.try_get(0)?,
                nonce: r.try_get(1)?,
                sealed: r.try_get(2)?,
            })
        })
        .transpose()
    }
}

impl SealedCredentials for MemoryStore {
    async fn put_sealed(&self, id: ConnectionId, row: SealedRow) -> Result<(), StoreError> {
        MemoryStore::put_sealed(self, id, row)
    }

    async fn get_sealed(&self, id: ConnectionId) -> Result<Option<SealedRow>, StoreError> {
        MemoryStore::get_sealed(self, id)
    }
}

impl SealedCredentials for Store {
    async fn put_sealed(&self, id: ConnectionId, row: SealedRow) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.put_sealed(id, row).await,
            Store::Memory(s) => MemoryStore::put_sealed(s, id, row),
        }
    }

    async fn get_sealed(&self, id: ConnectionId) -> Result<Option<SealedRow>, StoreError> {
        match self {
            Store::Postgres(s) => s.get_sealed(id).await,
            Store::Memory(s) => MemoryStore::get_sealed(s, id),
        }
    }
}

impl Store {
    pub fn as_postgres(&self) -> Option<&PgEventStore> {
        match self {
            Store::Postgres(s) => Some(s),
            Store::Memory(_) => None,
        }
    }

    pub async fn stream_version(&self, stream: &StreamName) -> Result<u64, StoreError> {
        match self {
            Store::Postgres(s) => s.stream_version(stream).await,
            Store::Memory(s) => s.stream_version(stream),
        }
    }

    /// Connections the read model shows quarantined (kept so after a
    /// restart).
    pub async fn quarantined_connections(&self) -> Result<Vec<ConnectionId>, StoreError> {
        match self {
            Store::Postgres(s) => {
                let client = s.pool().get().await?;
                let rows = client
                    .query(
                        "SELECT connection_id FROM connections WHERE status = 'quarantined'",
                        &[],
                    )
                    .await?;
                rows.iter()
                    .map(|r| Ok(ConnectionId::from_uuid(r.try_get(0)?)))
                    .collect()
            }
            Store::Memory(s) => s.with_model(|m| {
                m.connections
                    .values()
                    .filter(|c| c.status == "quarantined")
                    .map(|c| c.connection_id)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect()
            }),
        }
    }

    /// Candidates for a poll: live connections whose least recently synced
    /// calendar is older than `cutoff` (or never synced), at most `limit`.
    /// Only candidates: each actor's planner decides.
    pub async fn poll_candidates(
        &self,
        cutoff: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ConnectionId>, StoreError> {
        match self {
            Store::Postgres(s) => {
                let client = s.pool().get().await?;
                let rows = client
                    .query(
                        "SELECT c.connection_id FROM connections c \
                         JOIN connection_calendars k USING (connection_id) \
                         WHERE c.status IN ('active', 'backoff', 'degraded') \
                         GROUP BY c.connection_id \
                         HAVING bool_or(k.last_success_at IS NULL) OR min(k.last_success_at) < $1 \
                         LIMIT $2",
                        &[&cutoff, &(limit as i64)],
                    )
                    .await?;
                rows.iter()
                    .map(|r| Ok(ConnectionId::from_uuid(r.try_get(0)?)))
                    .collect()
            }
            Store::Memory(s) => s.with_model(|m| {
                let live = |status: &str| matches!(status, "active" | "backoff" | "degraded");
                let mut due: Vec<ConnectionId> = m
                    .connections
                    .values()
                    .filter(|c| live(&c.status))
                    .filter(|c| {
                        m.calendars.get(&c.connection_id).is_some_and(|rows| {
                            !rows.is_empty()
                                && rows
                                    .iter()
                                    .any(|k| k.last_success_at.is_none_or(|t| t < cutoff))
                        })
                    })
                    .map(|c| c.connection_id)
                    .collect();
                due.sort();
                due.truncate(limit);
                due
            }),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Postgres($s) => $call.await,
            Store::Memory($s) => $call.await,
        }
    };
}

impl EventStore for Store {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.append(stream, expected, events))
    }

    async fn append_with(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        changes: Vec<RowChange>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.append_with(stream, expected, events, changes))
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.read_stream(stream, from_version, limit))
    }

    async fn read_all(
        &self,
        after: GlobalCursor,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        delegate!(self, s => s.read_all(after, limit))
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        delegate!(self, s => s.load_snapshot(stream))
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        delegate!(self, s => s.save_snapshot(snapshot))
    }
}
