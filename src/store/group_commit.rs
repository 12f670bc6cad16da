//! Group commit: appends to different streams that wait at the same moment
//! share one transaction, one multi-row `INSERT` and one `COMMIT` — and
//! when their read-model changes are connection rows only (notifications),
//! one statement in all (see [`super::batch_statement`]).
//!
//! Why: an append is a handful of statements and a commit; at ingest's
//! concurrency PostgreSQL spends its CPU parsing, planning and committing
//! one notification at a time. Merging the appends that queue up while a
//! batch is in flight divides that work by the batch size without adding
//! latency when there is no queue (a lone append is a batch of one).
//!
//! Guarantees are those of a single append: each request's events are
//! atomic, versions gap-free, a moved stream is a typed `Conflict` for that
//! request only. Anything unexpected in a batch (a unique violation from a
//! concurrent writer, bad data in one request) rolls the batch back and
//! replays its requests one by one on the direct path, so one bad request
//! never fails its neighbours.

use super::batch_statement;
use super::postgres::{row_to_event, stored_version, EventColumns, PgEventStore};
use super::projections::{self, Tables};
use super::{ExpectedVersion, NewEvent, RecordedEvent, StoreError};
use crate::core::ids::StreamName;
use crate::core::projection::RowChange;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Appends merged into one transaction at most.
pub const MAX_BATCH: usize = 128;

/// Batches in flight at once (each holds one pooled connection while it
/// commits). Two keeps the database busy while the next batch gathers.
pub const WORKERS: usize = 2;

/// Appends waiting for a worker; beyond this, callers wait to enqueue.
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<Vec<RecordedEvent>, StoreError>>;

/// An append the queue did not take, handed back whole.
pub(super) type Unsent = (Vec<NewEvent>, Vec<RowChange>);

/// One append waiting to be committed.
pub(super) struct Request {
    pub stream: StreamName,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub changes: Vec<RowChange>,
    enqueued: Instant,
    reply: Reply,
}

/// The queue in front of the batch workers. Cheap to clone.
#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Starts the workers on the current tokio runtime.
    pub fn start(store: PgEventStore) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WORKERS {
            tokio::spawn(work(store.clone(), receiver.clone()));
        }
        GroupCommit { queue }
    }

    /// Queues an append and waits for its outcome. When the workers are
    /// gone (their runtime shut down) the append comes back unsent, for the
    /// caller to append directly.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        changes: Vec<RowChange>,
    ) -> Result<Result<Vec<RecordedEvent>, StoreError>, Unsent> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            stream: stream.clone(),
            expected,
            events,
            changes,
            enqueued: Instant::now(),
            reply,
        };
        if let Err(unsent) = self.queue.send(request).await {
            return Err((unsent.0.events, unsent.0.changes));
        }
        // A worker that took the append and vanished (its runtime stopped
        // mid-batch) leaves the outcome unknown: retry later, as for a
        // connection lost during COMMIT.
        Ok(outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the group-commit worker stopped".into(),
            ))
        }))
    }
}

/// One worker: take whatever is queued (up to [`MAX_BATCH`], one request
/// per stream), commit it as one batch, answer, repeat.
async fn work(store: PgEventStore, receiver: Arc<Mutex<mpsc::Receiver<Request>>>) {
    let mut carry: Vec<Request> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut carry);
        if batch.is_empty() {
            let mut queue = receiver.lock().await;
            match queue.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            drain(&mut queue, &mut batch);
        } else if let Ok(mut queue) = receiver.try_lock() {
            // Never wait for the queue with work in hand: the worker holding
            // it may be waiting for an append that never comes.
            drain(&mut queue, &mut batch);
        }
        // Two appends to one stream in one batch would both be checked
        // against the version before the batch: the later one waits.
        let mut seen = std::collections::HashSet::new();
        let (now, later): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|r| seen.insert(r.stream.as_str().to_string()));
        carry = later;
        commit(&store, now).await;
    }
}

/// Adds what is queued right now to `batch`, up to [`MAX_BATCH`].
fn drain(queue: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
}

/// Commits `batch`, answering every request.
async fn commit(store: &PgEventStore, batch: Vec<Request>) {
    let one_statement = batch_statement::fits(&batch);
    if batch.len() == 1 && !one_statement {
        // Nothing to merge: the direct path is the same transaction.
        for r in batch {
            let outcome = store
                .append_direct(&r.stream, r.expected, r.events, &r.changes)
                .await;
            finish(r.reply, outcome);
        }
        return;
    }
    if batch.len() > 1 {
        crate::metrics::append_batch(batch.len());
    }
    let outcomes = if one_statement {
        batch_statement::append(store, &batch).await
    } else {
        try_batch(store, &batch).await
    };
    match outcomes {
        Ok(outcomes) => {
            for (r, outcome) in batch.into_iter().zip(outcomes) {
                match &outcome {
                    Ok(recorded) => crate::metrics::events_appended(
                        r.stream.as_str(),
                        recorded.len(),
                        r.enqueued.elapsed(),
                    ),
                    Err(_) => crate::metrics::append_conflict(r.stream.as_str()),
                }
                finish(r.reply, outcome);
            }
        }
        Err(StoreError::Unavailable(message)) => {
            // Nothing was committed and one by one would fail the same way.
            for r in batch {
                let outcome = Err(StoreError::Unavailable(message.clone()));
                finish(r.reply, outcome);
            }
        }
        Err(_) => {
            // Rolled back: each request on its own, so only the culprit fails.
            let outcomes =
                futures::future::join_all(batch.iter().map(|r| {
                    store.append_direct(&r.stream, r.expected, r.events.clone(), &r.changes)
                }))
                .await;
            for (r, outcome) in batch.into_iter().zip(outcomes) {
                finish(r.reply, outcome);
            }
        }
    }
}

/// Hands `outcome` to the caller, who may have given up waiting (its
/// outcome is in the log anyway).
fn finish(reply: Reply, outcome: Result<Vec<RecordedEvent>, StoreError>) {
    let _ = reply.send(outcome);
}

const VERSIONS_SQL: &str =
    "SELECT s, (SELECT coalesce(max(version), 0) FROM events WHERE stream = s) \
     FROM unnest($1::text[]) AS u(s)";

/// The last version of each of `streams` (0 for a stream with no events).
pub(super) async fn current_versions(
    client: &impl deadpool_postgres::GenericClient,
    streams: &[&str],
) -> Result<HashMap<String, u64>, StoreError> {
    let statement = client.prepare_cached(VERSIONS_SQL).await?;
    let mut current = HashMap::with_capacity(streams.len());
    for row in client.query(&statement, &[&streams]).await? {
        let stream: String = row.try_get(0)?;
        current.insert(stream, stored_version(row.try_get(1)?)?);
    }
    Ok(current)
}

/// The batch in one transaction: per-request outcomes, or the error that
/// rolled the whole batch back.
async fn try_batch(
    store: &PgEventStore,
    batch: &[Request],
) -> Result<Vec<Result<Vec<RecordedEvent>, StoreError>>, StoreError> {
    let mut client = store.pool().get().await?;
    let tx = client.transaction().await?;
    let streams: Vec<&str> = batch.iter().map(|r| r.stream.as_str()).collect();
    let current = current_versions(&tx, &streams).await?;
    // Each request's first version, or its conflict.
    let firsts: Vec<Result<u64, StoreError>> = batch
        .iter()
        .map(|r| {
            let at = current.get(r.stream.as_str()).copied().unwrap_or(0);
            first_version(&r.stream, r.expected, at)
        })
        .collect();
    let mut columns = EventColumns::default();
    for (r, first) in batch.iter().zip(&firsts) {
        if let Ok(first) = first {
            columns.push(r.stream.as_str(), *first, &r.events);
        }
    }
    if columns.is_empty() {
        return Ok(firsts.into_iter().map(|f| f.map(|_| Vec::new())).collect());
    }
    // Rows come back in push order: each accepted append's events, in turn.
    let mut rows = columns.insert(&tx).await?.into_iter();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (r, first) in batch.iter().zip(firsts) {
        let outcome = match first {
            Err(conflict) => Err(conflict),
            Ok(first) => {
                let mut recorded = Vec::with_capacity(r.events.len());
                for version in first..first + r.events.len() as u64 {
                    let event = rows.next().map(|row| row_to_event(&row)).transpose()?;
                    // Checked before COMMIT: a mismatch rolls the batch back.
                    match event {
                        Some(e) if e.stream == r.stream && e.version == version => recorded.push(e),
                        _ => {
                            return Err(StoreError::BadData(format!(
                                "{} version {version} not returned in order",
                                r.stream
                            )))
                        }
                    }
                }
                Ok(recorded)
            }
        };
        outcomes.push(outcome);
    }
    let changes: Vec<&[RowChange]> = batch
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| outcome.is_ok())
        .map(|(r, _)| r.changes.as_slice())
        .collect();
    projections::apply_many(&*tx, Tables::Live, &changes).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// The version the first event of an append gets, or why it may not.
pub(super) fn first_version(
    stream: &StreamName,
    expected: ExpectedVersion,
    current: u64,
) -> Result<u64, StoreError> {
    match expected {
        ExpectedVersion::Any => Ok(current + 1),
        ExpectedVersion::NoStream if current == 0 => Ok(1),
        ExpectedVersion::Exact(v) if v == current => Ok(v + 1),
        _ => Err(StoreError::Conflict {
            stream: stream.clone(),
            expected,
            actual: current,
        }),
    }
}
