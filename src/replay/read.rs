//! Reading the log fast: one `COPY (SELECT … ORDER BY txid, position) TO
//! STDOUT (FORMAT binary)` stream, rows handed in batches to a blocking
//! thread that decodes and folds while the next batch is read.

use super::fold::{decode, is_projected, Folder, LogEvent};
use super::progress::Progress;
use super::ReplayError;
use crate::core::events::ConnectionEvent;
use crate::core::ids::ConnectionId;
use crate::store::RecordedEvent;
use futures::{pin_mut, StreamExt};
use postgres_types::{FromSql, Type};
use std::collections::VecDeque;
use tokio_postgres::binary_copy::{BinaryCopyOutRow, BinaryCopyOutStream};
use tokio_postgres::Client;

/// Rows handed to the folding thread at a time.
const BATCH: usize = 4096;

/// The columns read, in the order [`row_event`] expects them.
const COLUMNS: &str = "stream, version, txid, event_type, schema_version, payload";
const TYPES: [Type; 6] = [
    Type::TEXT,
    Type::INT8,
    Type::XID8,
    Type::TEXT,
    Type::INT4,
    Type::JSON,
];

/// Which events a read covers.
#[derive(Debug, Clone, Copy)]
pub enum Range {
    /// Everything visible to the current transaction's snapshot.
    Visible,
    /// Visible events after a point of the global order `(txid, position)`.
    After { txid: i64, position: i64 },
}

/// The `COPY` statement for `range`, optionally one connection's stream.
/// COPY takes no parameters; every value inlined is a number or a UUID
/// formatted here, never outside text.
pub fn copy_sql(range: Range, only: Option<ConnectionId>) -> String {
    let mut filters = vec!["TRUE".to_string()];
    if let Range::After { txid, position } = range {
        filters.push(format!("(txid, position) > ('{txid}'::xid8, {position})"));
    }
    if let Some(id) = only {
        filters.push(format!("stream = '{}'", id.stream().as_str()));
    }
    format!(
        "COPY (SELECT {COLUMNS} FROM events WHERE {} ORDER BY txid, position) \
         TO STDOUT (FORMAT binary)",
        filters.join(" AND ")
    )
}

/// A batch of rows and, once decoded, their payloads (connection streams
/// only). Batches go round: reader → decoder → fold → back to the reader
/// empty, so their buffers are allocated once per read, not once per
/// batch (freeing a large buffer made glibc consolidate its free lists:
/// 7–10% of replay's CPU samples).
#[derive(Default)]
struct Batch {
    rows: Vec<BinaryCopyOutRow>,
    decoded: Vec<Option<Result<ConnectionEvent, ReplayError>>>,
}

/// Streams `range` into `folder`. Three stages overlap: this task reads
/// rows, blocking tasks decode batches in parallel (JSON parsing is most
/// of the work), one thread folds them in log order.
pub async fn read_into(
    client: &Client,
    range: Range,
    only: Option<ConnectionId>,
    mut folder: Folder,
    progress: &mut Progress,
) -> Result<Folder, ReplayError> {
    let decoders = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let copy = client.copy_out(&copy_sql(range, only)).await?;
    let rows = BinaryCopyOutStream::new(copy, &TYPES);
    pin_mut!(rows);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(decoders);
    // Emptied batches on their way back; never more than are in flight.
    let (recycle, recycled) = std::sync::mpsc::channel::<Batch>();
    let worker = tokio::task::spawn_blocking(move || {
        while let Some(mut batch) = rx.blocking_recv() {
            for (row, decoded) in batch.rows.drain(..).zip(batch.decoded.drain(..)) {
                folder.push_decoded(row_event(&row)?, decoded)?;
            }
            // The reader may have finished: then the batch is just dropped.
            let _ = recycle.send(batch);
        }
        folder.flush()?;
        Ok::<Folder, ReplayError>(folder)
    });
    // Decoding batches in flight, oldest first: handed on in read order.
    let mut inflight = VecDeque::new();
    let mut batch = Batch::default();
    let mut fold_open = true;
    loop {
        let row = rows.next().await.transpose()?;
        let end = row.is_none();
        batch.rows.extend(row);
        if batch.rows.len() == BATCH || (end && !batch.rows.is_empty()) {
            progress.inc(batch.rows.len() as u64);
            let next = recycled.try_recv().unwrap_or_default();
            let full = std::mem::replace(&mut batch, next);
            inflight.push_back(tokio::task::spawn_blocking(move || decode_batch(full)));
        }
        while fold_open && (inflight.len() >= decoders || (end && !inflight.is_empty())) {
            let Some(next) = inflight.pop_front() else {
                break;
            };
            let decoded = next
                .await
                .map_err(|e| ReplayError::Worker(e.to_string()))??;
            // A closed channel means the fold stopped on an error: it is
            // reported below.
            fold_open = tx.send(decoded).await.is_ok();
        }
        if end || !fold_open {
            break;
        }
    }
    drop(tx);
    worker
        .await
        .map_err(|e| ReplayError::Worker(e.to_string()))?
}

/// Decodes the payloads of a batch's rows.
fn decode_batch(mut batch: Batch) -> Result<Batch, ReplayError> {
    batch.decoded.clear();
    batch.decoded.reserve(batch.rows.len());
    for row in &batch.rows {
        let event = row_event(row)?;
        batch
            .decoded
            .push(is_projected(event.stream).then(|| decode(&event)));
    }
    Ok(batch)
}

/// Folds events already read through the store (the catch-up).
pub fn fold_recorded(folder: &mut Folder, events: &[RecordedEvent]) -> Result<(), ReplayError> {
    for e in events {
        folder.push(LogEvent {
            stream: e.stream.as_str(),
            version: e.version,
            txid: e.txid,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            payload: e.payload.as_bytes(),
        })?;
    }
    folder.flush()
}

fn row_event(row: &BinaryCopyOutRow) -> Result<LogEvent<'_>, ReplayError> {
    let version: i64 = row.try_get(1)?;
    Ok(LogEvent {
        stream: row.try_get(0)?,
        version: u64::try_from(version)
            .map_err(|_| ReplayError::BadData(format!("negative version {version}")))?,
        txid: xid8(row.try_get::<Raw>(2)?.0)?,
        event_type: row.try_get(3)?,
        schema_version: row.try_get(4)?,
        payload: row.try_get::<Raw>(5)?.0,
    })
}

/// `xid8` is sent as 8 big-endian bytes; it fits in `i64` for the first
/// 2^63 transactions, as the store's `txid::text::bigint` assumes too.
fn xid8(raw: &[u8]) -> Result<i64, ReplayError> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| ReplayError::BadData("xid8 is not 8 bytes".into()))?;
    i64::try_from(u64::from_be_bytes(bytes))
        .map_err(|_| ReplayError::BadData("xid8 beyond i64".into()))
}

/// A column's bytes as sent (binary format). The `json` send format is its
/// text, so payloads reach `serde_json` without a copy.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8 || *ty == Type::JSON
    }
}
