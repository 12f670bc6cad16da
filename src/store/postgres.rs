//! [`EventStore`] on PostgreSQL through a `deadpool-postgres` pool.

use super::group_commit::{first_version, GroupCommit};
use super::projections::{self, Tables};
use super::{
    EventMetadata, EventStore, ExpectedVersion, GlobalCursor, NewEvent, RecordedEvent, Snapshot,
    StoreError,
};
use crate::core::ids::StreamName;
use crate::core::projection::RowChange;
use deadpool_postgres::Pool;
use std::sync::{Arc, OnceLock};
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;

/// The columns every event query selects, in the order [`row_to_event`] reads.
pub(super) const EVENT_COLUMNS: &str =
    "position, txid::text::bigint, stream, version, event_type, \
     schema_version, payload::text, metadata::text, committed_at";

/// The PostgreSQL event store. Cheap to clone: clones share the pool and
/// the group-commit queue, so keep one store per process and clone it.
#[derive(Clone)]
pub struct PgEventStore {
    pool: Pool,
    /// Started on the first append (it needs the tokio runtime); `None` for
    /// the direct store the group-commit workers themselves use.
    group: Option<Arc<OnceLock<GroupCommit>>>,
}

impl PgEventStore {
    /// A store whose concurrent appends to different streams are committed
    /// together (see [`super::group_commit`]).
    pub fn new(pool: Pool) -> Self {
        PgEventStore {
            pool,
            group: Some(Arc::new(OnceLock::new())),
        }
    }

    /// A store that commits every append in its own transaction.
    pub fn direct(pool: Pool) -> Self {
        PgEventStore { pool, group: None }
    }

    fn group_commit(&self) -> Option<&GroupCommit> {
        let group = self.group.as_ref()?;
        if let Some(started) = group.get() {
            return Some(started);
        }
        // Outside a runtime there are no workers to start.
        tokio::runtime::Handle::try_current().ok()?;
        Some(group.get_or_init(|| GroupCommit::start(Self::direct(self.pool.clone()))))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The last version of `stream` (0 if it has no events).
    pub async fn stream_version(&self, stream: &StreamName) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        current_version(&**client, stream).await
    }

    /// One event by its global position.
    pub async fn event_at(&self, position: i64) -> Result<Option<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position = $1");
        let row = client.query_opt(&sql, &[&position]).await?;
        row.as_ref().map(row_to_event).transpose()
    }

    /// The newest `limit` events (optionally of one stream), oldest first:
    /// what an operator wants to see first when tailing the log.
    pub async fn last_events(
        &self,
        stream: Option<&StreamName>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let limit = limit_param(limit);
        let rows = match stream {
            Some(s) => {
                let sql = format!(
                    "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 \
                     ORDER BY version DESC LIMIT $2) t ORDER BY version"
                );
                client.query(&sql, &[&s.as_str(), &limit]).await?
            }
            None => {
                let sql = format!(
                    "SELECT * FROM (SELECT {EVENT_COLUMNS} FROM events \
                     WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY txid DESC, position DESC LIMIT $1) t ORDER BY 2, 1"
                );
                client.query(&sql, &[&limit]).await?
            }
        };
        rows.iter().map(row_to_event).collect()
    }

    /// One append in its own transaction (the group-commit workers' path,
    /// and the fallback when a batch must be replayed request by request).
    pub(super) async fn append_direct(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        changes: &[RowChange],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let started = std::time::Instant::now();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The append is ingest's hot path: cached prepared statements save
        // PostgreSQL a parse and plan, and us a round trip, per statement.
        let current = {
            let statement = tx.prepare_cached(CURRENT_VERSION_SQL).await?;
            let row = tx.query_one(&statement, &[&stream.as_str()]).await?;
            stored_version(row.try_get(0)?)?
        };
        let first = first_version(stream, expected, current).inspect_err(|_| {
            crate::metrics::append_conflict(stream.as_str());
        })?;
        let mut columns = EventColumns::default();
        columns.push(stream.as_str(), first, &events);
        let rows = match columns.insert(&tx).await {
            Ok(rows) => rows,
            Err(err) if err.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                // A concurrent writer committed the same version first. The
                // unique index made us wait for it, so it is visible now.
                drop(tx);
                let actual = current_version(&**client, stream).await?;
                crate::metrics::append_conflict(stream.as_str());
                return Err(StoreError::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                });
            }
            Err(err) => return Err(err.into()),
        };
        let recorded = rows
            .iter()
            .map(row_to_event)
            .collect::<Result<Vec<_>, _>>()?;
        projections::apply(&*tx, Tables::Live, changes).await?;
        tx.commit().await?;
        crate::metrics::events_appended(stream.as_str(), recorded.len(), started.elapsed());
        Ok(recorded)
    }

    /// True if the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.append_with(stream, expected, events, Vec::new()).await
    }

    async fn append_with(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        changes: Vec<RowChange>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if events.is_empty() {
            return Err(StoreError::BadData("append of zero events".into()));
        }
        let (events, changes) = match self.group_commit() {
            Some(group) => match group.append(stream, expected, events, changes).await {
                Ok(outcome) => return outcome,
                // The workers are gone (their runtime shut down).
                Err(unsent) => unsent,
            },
            None => (events, changes),
        };
        self.append_direct(stream, expected, events, &changes).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream = $1 AND version >= $2 \
             ORDER BY version LIMIT $3"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &stream.as_str(),
                    &version_param(from_version)?,
                    &limit_param(limit),
                ],
            )
            .await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn read_all(
        &self,
        after: GlobalCursor,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.pool.get().await?;
        // The watermark and the rows come from the same statement snapshot:
        // every transaction below xmin has finished, so nothing can still be
        // committed into the range returned.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE (txid, position) > ($1::text::xid8, $2) \
               AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY txid, position LIMIT $3"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &after.txid.to_string(),
                    &after.position,
                    &limit_param(limit),
                ],
            )
            .await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT version, schema_version, state::text FROM snapshots WHERE stream = $1",
                &[&stream.as_str()],
            )
            .await?;
        row.map(|row| {
            Ok(Snapshot {
                stream: stream.clone(),
                version: stored_version(row.try_get(0)?)?,
                schema_version: row.try_get(1)?,
                state: row.try_get(2)?,
            })
        })
        .transpose()
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        // Only move a snapshot forward: a slow writer must not replace a newer
        // snapshot with an older one.
        client
            .execute(
                "INSERT INTO snapshots (stream, version, schema_version, state) \
                 VALUES ($1, $2, $3, $4::text::json) \
                 ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version, \
                   schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, \
                   saved_at = now() \
                 WHERE snapshots.version <= EXCLUDED.version",
                &[
                    &snapshot.stream.as_str(),
                    &version_param(snapshot.version)?,
                    &snapshot.schema_version,
                    &snapshot.state,
                ],
            )
            .await?;
        Ok(())
    }
}

const CURRENT_VERSION_SQL: &str = "SELECT coalesce(max(version), 0) FROM events WHERE stream = $1";

async fn current_version(
    client: &impl GenericClient,
    stream: &StreamName,
) -> Result<u64, StoreError> {
    let row = client
        .query_one(CURRENT_VERSION_SQL, &[&stream.as_str()])
        .await?;
    stored_version(row.try_get(0)?)
}

/// The rows of one multi-row `INSERT` into `events`, for one append or a
/// whole group-commit batch (several streams).
#[derive(Default)]
pub(super) struct EventColumns<'a> {
    streams: Vec<&'a str>,
    versions: Vec<i64>,
    bodies: EventBodies<'a>,
}

/// What every stored event carries besides its place (stream, version),
/// as parameter arrays: one entry per event.
#[derive(Default)]
pub(super) struct EventBodies<'a> {
    pub types: Vec<&'a str>,
    pub schema_versions: Vec<i32>,
    pub payloads: Vec<&'a str>,
    pub metadata: Vec<String>,
}

impl<'a> EventBodies<'a> {
    pub fn push(&mut self, event: &'a NewEvent) {
        self.types.push(event.event_type.as_str());
        self.schema_versions.push(event.schema_version);
        self.payloads.push(event.payload.as_str());
        self.metadata.push(metadata_json(&event.metadata));
    }
}

impl<'a> EventColumns<'a> {
    /// Adds `events` of `stream` with versions `first..`.
    pub fn push(&mut self, stream: &'a str, first: u64, events: &'a [NewEvent]) {
        for (i, event) in events.iter().enumerate() {
            self.streams.push(stream);
            // Versions fit in i64: a stream would need 2^63 events to overflow.
            self.versions.push((first + i as u64) as i64);
            self.bodies.push(event);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Inserts the rows in push order (positions follow it) in one
    /// statement and returns the stored rows in that order.
    pub async fn insert(
        &self,
        client: &deadpool_postgres::Transaction<'_>,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let sql = format!(
            "INSERT INTO events (stream, version, event_type, schema_version, payload, metadata) \
             SELECT st, v, t, s, p::json, m::json \
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::text[], $6::text[]) \
               WITH ORDINALITY AS u(st, v, t, s, p, m, o) \
             ORDER BY o \
             RETURNING {EVENT_COLUMNS}"
        );
        let statement = client.prepare_cached(&sql).await?;
        let mut rows = client
            .query(
                &statement,
                &[
                    &self.streams,
                    &self.versions,
                    &self.bodies.types,
                    &self.bodies.schema_versions,
                    &self.bodies.payloads,
                    &self.bodies.metadata,
                ],
            )
            .await?;
        // RETURNING order is not guaranteed by SQL; positions follow the
        // insert order, and callers rely on it.
        rows.sort_by_key(|row| row.try_get::<_, i64>(0).unwrap_or(i64::MAX));
        Ok(rows)
    }
}

fn metadata_json(metadata: &EventMetadata) -> String {
    // Serialising a struct of strings, numbers and uuids cannot fail.
    serde_json::to_string(metadata).unwrap_or_else(|_| "{}".to_string())
}

pub(super) fn row_to_event(row: &Row) -> Result<RecordedEvent, StoreError> {
    let stream: String = row.try_get(2)?;
    let metadata: String = row.try_get(7)?;
    Ok(RecordedEvent {
        position: row.try_get(0)?,
        txid: row.try_get(1)?,
        stream: StreamName::parse(stream).map_err(|e| StoreError::BadData(e.to_string()))?,
        version: stored_version(row.try_get(3)?)?,
        event_type: row.try_get(4)?,
        schema_version: row.try_get(5)?,
        payload: row.try_get(6)?,
        metadata: serde_json::from_str(&metadata)
            .map_err(|e| StoreError::BadData(format!("event metadata: {e}")))?,
        committed_at: row.try_get(8)?,
    })
}

pub(super) fn stored_version(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::BadData(format!("negative stream version {v}")))
}

fn version_param(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::BadData(format!("stream version {v} too large")))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
