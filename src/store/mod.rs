//! The event store: the append-only log every other part of calsync folds.
//!
//! [`EventStore`] is the port; [`PgEventStore`] implements it on PostgreSQL,
//! [`MemoryStore`] in memory (the deterministic simulation), and [`Store`]
//! is either, for the shell.
//! Errors say what the caller should do: [`StoreError::Conflict`] — re-read
//! and decide again (or stop: someone else owns the stream);
//! [`StoreError::Unavailable`] — retry later (answer 503 upstream);
//! [`StoreError::BadData`] — never retry, it will fail the same way again.

pub mod availability;
mod batch_statement;
pub mod credentials;
mod errors;
pub mod explain;
mod group_commit;
pub mod memory;
pub mod migrate;
mod port;
mod postgres;
pub mod projections;
pub mod read_models;
pub mod status;
pub mod tokens;
mod types;

pub use errors::StoreError;
pub use memory::MemoryStore;
pub use port::{SealedCredentials, Store};
pub use postgres::PgEventStore;
pub use types::{EventMetadata, ExpectedVersion, GlobalCursor, NewEvent, RecordedEvent, Snapshot};

use crate::core::ids::StreamName;
use crate::core::projection::RowChange;
use std::future::Future;

/// What every event store offers. Implemented by PostgreSQL in production
/// and by in-memory fakes in deterministic simulations.
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream` atomically, if the stream is at
    /// `expected`. Returns the recorded events (with versions and positions).
    fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Like [`EventStore::append`], and applies `changes` to the read models
    /// in the same transaction: the read models never lag the log.
    fn append_with(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        changes: Vec<RowChange>,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Events of one stream with `version >= from_version`, in version order.
    fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// Events of all streams after `after`, in global order, never returning
    /// an event while an earlier one may still commit.
    fn read_all(
        &self,
        after: GlobalCursor,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    fn load_snapshot(
        &self,
        stream: &StreamName,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
