//! A group-commit batch as one statement: every append's version check,
//! its events and its connection row in one `WITH ... INSERT`, run outside
//! an explicit transaction, so a batch costs one round trip and one commit.
//!
//! Why: at ingest's concurrency (32 clients, batches of about nine) the
//! transaction path spent 2.1 ms per batch, of which only 0.4 ms was the
//! COMMIT and its WAL flush; the rest was `BEGIN`, the version check, the
//! insert and the upsert, each waiting for a round trip on two shared
//! cores (measured in session 7, see BENCHMARKS.md, "ingest").
//!
//! A single statement is atomic on its own, and the version check and the
//! writes read one snapshot, so the guarantees are the transaction path's:
//! an append whose stream moved writes nothing (neither events nor its row)
//! and comes back as a `Conflict`; a concurrent writer of the same version
//! makes the unique index fail the statement, which the caller answers by
//! appending one by one. It takes the batches whose read-model changes are
//! connection rows only (notifications: the bulk of ingest); batches with
//! busy rows, calendars or bookings keep the transaction path.

use super::group_commit::{current_versions, Request};
use super::postgres::{row_to_event, EventBodies, PgEventStore, EVENT_COLUMNS};
use super::projections::{connection_unnest, connection_upsert_sql, ConnectionColumns};
use super::{ExpectedVersion, RecordedEvent, StoreError};
use crate::core::projection::RowChange;
use std::collections::HashMap;
use std::sync::OnceLock;
use tokio_postgres::types::ToSql;

/// One outcome per request of a batch, in batch order.
pub(super) type Outcomes = Vec<Result<Vec<RecordedEvent>, StoreError>>;

/// True if every append of `batch` can go through [`append`].
pub(super) fn fits(batch: &[Request]) -> bool {
    batch.iter().all(|r| {
        !r.events.is_empty()
            && r.changes
                .iter()
                .all(|c| matches!(c, RowChange::UpsertConnection(_)))
    })
}

/// Commits `batch` in one statement. `Err` means nothing was committed (the
/// statement failed as a whole); once it has committed, every problem is
/// the outcome of the requests it concerns, never a batch error, so the
/// caller never appends a committed request twice.
pub(super) async fn append(
    store: &PgEventStore,
    batch: &[Request],
) -> Result<Outcomes, StoreError> {
    let mut requests = RequestColumns::default();
    let mut events = EventRows::default();
    let mut rows = ConnectionColumns::default();
    let mut row_requests: Vec<i64> = Vec::new();
    for (i, r) in batch.iter().enumerate() {
        // Ordinal of the request in the statement (`WITH ORDINALITY`: from 1).
        let ordinal = i as i64 + 1;
        requests.streams.push(r.stream.as_str());
        requests.expected.push(expected_param(r.expected));
        for (k, event) in r.events.iter().enumerate() {
            events.requests.push(ordinal);
            events.offsets.push(k as i64 + 1);
            events.bodies.push(event);
        }
        for change in &r.changes {
            if let RowChange::UpsertConnection(row) = change {
                rows.push(row);
                row_requests.push(ordinal);
            }
        }
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &requests.streams,
        &requests.expected,
        &events.requests,
        &events.offsets,
        &events.bodies.types,
        &events.bodies.schema_versions,
        &events.bodies.payloads,
        &events.bodies.metadata,
        &row_requests,
    ];
    params.extend(rows.params());

    let client = store.pool().get().await?;
    let statement = client.prepare_cached(statement_sql()).await?;
    let stored = client.query(&statement, &params).await?;

    // Committed. Sort the stored events back to their requests.
    let mut by_stream: HashMap<&str, Vec<RecordedEvent>> = batch
        .iter()
        .map(|r| (r.stream.as_str(), Vec::new()))
        .collect();
    let mut unreadable = None;
    for row in &stored {
        match row_to_event(row) {
            Ok(event) => {
                if let Some(recorded) = by_stream.get_mut(event.stream.as_str()) {
                    recorded.push(event);
                }
            }
            Err(err) => unreadable = Some(err.to_string()),
        }
    }
    if let Some(err) = unreadable {
        // The log has the events; the request cannot be told which.
        return Ok(batch
            .iter()
            .map(|_| {
                Err(StoreError::BadData(format!(
                    "the batch committed but its events could not be read back: {err}"
                )))
            })
            .collect());
    }
    let mut outcomes: Outcomes = Vec::with_capacity(batch.len());
    let mut moved = Vec::new();
    for (i, r) in batch.iter().enumerate() {
        match by_stream
            .remove(r.stream.as_str())
            .filter(|e| !e.is_empty())
        {
            Some(mut recorded) => {
                recorded.sort_by_key(|e| e.version);
                outcomes.push(Ok(recorded));
            }
            None => {
                // Not written: its stream was not where the append expected.
                moved.push(i);
                outcomes.push(Ok(Vec::new()));
            }
        }
    }
    if !moved.is_empty() {
        let streams: Vec<&str> = moved.iter().map(|&i| batch[i].stream.as_str()).collect();
        let current = current_versions(&client, &streams).await;
        for i in moved {
            let r = &batch[i];
            outcomes[i] = match &current {
                Ok(current) => Err(StoreError::Conflict {
                    stream: r.stream.clone(),
                    expected: r.expected,
                    actual: current.get(r.stream.as_str()).copied().unwrap_or(0),
                }),
                Err(err) => Err(StoreError::Unavailable(format!(
                    "the append was refused (its stream moved) and its version could not be read: {err}"
                ))),
            };
        }
    }
    Ok(outcomes)
}

/// The expected version as the statement takes it: -1 for any, 0 for no
/// stream (a stream at version 0 has no events), else the exact version.
/// The statement's `ok` test is then `first_version`'s rule (group
/// commit's), written in SQL so the check and the insert are one round
/// trip.
fn expected_param(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => 0,
        // Versions fit in i64: a stream would need 2^63 events to overflow.
        ExpectedVersion::Exact(v) => v as i64,
    }
}

#[derive(Default)]
struct RequestColumns<'a> {
    streams: Vec<&'a str>,
    expected: Vec<i64>,
}

/// The events of a batch, each tied to its request.
#[derive(Default)]
struct EventRows<'a> {
    /// Which request (its ordinal) each event belongs to.
    requests: Vec<i64>,
    /// The event's place in its request, from 1: its version is the
    /// stream's current version plus this.
    offsets: Vec<i64>,
    bodies: EventBodies<'a>,
}

/// The statement: `req` reads each stream's version, `ok` keeps the
/// appends whose expectation holds, `ins` writes their events in request
/// order (positions follow it) and `rows` their connection rows — the
/// latest per connection, as the transaction path does.
fn statement_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let (arrays, names) = connection_unnest(10);
        let source = format!(
            "(SELECT DISTINCT ON (c.i) c.* \
               FROM unnest($9::bigint[], {arrays}) AS c(ri, {names}) \
               WHERE c.ri IN (SELECT ri FROM ok) \
               ORDER BY c.i, c.ri DESC) AS u"
        );
        format!(
            "WITH req AS ( \
               SELECT r.ri, r.stream, r.expected, \
                 (SELECT coalesce(max(e.version), 0) FROM events e WHERE e.stream = r.stream) \
                   AS current \
               FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS r(stream, expected, ri)), \
             ok AS (SELECT ri, stream, current FROM req \
               WHERE expected < 0 OR expected = current), \
             ins AS ( \
               INSERT INTO events (stream, version, event_type, schema_version, payload, metadata) \
               SELECT ok.stream, ok.current + u.k, u.t, u.s, u.p::json, u.m::json \
               FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::int[], $7::text[], \
                 $8::text[]) WITH ORDINALITY AS u(ri, k, t, s, p, m, o) \
               JOIN ok ON ok.ri = u.ri \
               ORDER BY u.o \
               RETURNING {EVENT_COLUMNS}), \
             rows AS ({upsert}) \
           SELECT * FROM ins",
            upsert = connection_upsert_sql("connections", &source)
        )
    })
}
