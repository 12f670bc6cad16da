//! When a change's busy interval became visible in `busy_intervals` (what
//! the platform API reads), for the latency benchmarks.
//!
//! The probe looks every [`POLL`] for the rows it still waits for, each by
//! its primary key `(connection_id, calendar_id, external_event_id)`. An
//! earlier probe filtered on `external_event_id = ANY($1)` alone, which no
//! index serves: every look scanned the whole table once per pending id,
//! and at 500 changes/s that scan was about a fifth of the machine's CPU
//! (`texteq`, `ExecEvalScalarArrayOp` at the top of PostgreSQL's profile) —
//! the apparatus was slowing down what it measured.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the probe looks (its resolution).
pub(super) const POLL: Duration = Duration::from_millis(2);

/// Where a change's busy row will appear and when the change was made.
struct Waiting {
    connection: String,
    calendar: String,
    made: Instant,
}

/// One change that became visible: how long it took, and the wall-clock
/// time it was seen (to line up with the log's and the simulator's times).
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub event_id: String,
    pub ms: f64,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
struct Book {
    waiting: HashMap<String, Waiting>,
    seen: Vec<Seen>,
}

/// A running probe; [`VisibilityProbe::expect`] a change just after making it.
pub(super) struct VisibilityProbe {
    book: Arc<Mutex<Book>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn lock(book: &Mutex<Book>) -> MutexGuard<'_, Book> {
    // A poisoned lock only means the probe task panicked mid-update of a
    // map of plain values; what is in it is still usable.
    book.lock().unwrap_or_else(|e| e.into_inner())
}

impl VisibilityProbe {
    pub async fn start(client: tokio_postgres::Client) -> anyhow::Result<Self> {
        // The table is small enough early on that the planner prefers a
        // hash join over a scan of it; each look must stay a handful of
        // index probes however large the table grows.
        client
            .batch_execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
            .await?;
        let statement = client
            .prepare(
                "SELECT b.external_event_id \
                   FROM unnest($1::text[], $2::text[], $3::text[]) AS w(connection, calendar, id) \
                   JOIN busy_intervals b \
                     ON b.connection_id = w.connection::uuid \
                    AND b.calendar_id = w.calendar \
                    AND b.external_event_id = w.id",
            )
            .await?;
        let book: Arc<Mutex<Book>> = Arc::default();
        let shared = book.clone();
        let task = tokio::spawn(async move {
            loop {
                let (connections, calendars, ids) = {
                    let book = lock(&shared);
                    let mut lists = (Vec::new(), Vec::new(), Vec::new());
                    for (id, w) in &book.waiting {
                        lists.0.push(w.connection.clone());
                        lists.1.push(w.calendar.clone());
                        lists.2.push(id.clone());
                    }
                    lists
                };
                if !ids.is_empty() {
                    let rows = client
                        .query(&statement, &[&connections, &calendars, &ids])
                        .await?;
                    let (now, at) = (Instant::now(), chrono::Utc::now());
                    let mut book = lock(&shared);
                    for row in rows {
                        let id: String = row.get(0);
                        if let Some(w) = book.waiting.remove(&id) {
                            let ms = now.duration_since(w.made).as_secs_f64() * 1000.0;
                            book.seen.push(Seen {
                                event_id: id,
                                ms,
                                at,
                            });
                        }
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Ok(VisibilityProbe { book, task })
    }

    /// Waits for event `id` in `calendar` of `connection` (made just now).
    pub fn expect(&self, id: String, connection: &str, calendar: &str) {
        lock(&self.book).waiting.insert(
            id,
            Waiting {
                connection: connection.to_string(),
                calendar: calendar.to_string(),
                made: Instant::now(),
            },
        );
    }

    /// Waits up to `tail` for what is still pending, then stops: what was
    /// seen, and how many changes never became visible.
    pub async fn finish(self, tail: Duration) -> anyhow::Result<(Vec<Seen>, usize)> {
        let deadline = Instant::now() + tail;
        while Instant::now() < deadline && !lock(&self.book).waiting.is_empty() {
            if self.task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.task.is_finished() {
            // The probe stopped on its own: that is a failed query, not a
            // slow system; say so instead of reporting "never visible".
            self.task.await??;
            anyhow::bail!("the visibility probe stopped");
        }
        self.task.abort();
        let book = lock(&self.book);
        Ok((book.seen.clone(), book.waiting.len()))
    }
}

/// Each Google connection's calendar, as the read model holds it (the
/// benchmarks give every connection one calendar).
pub(super) async fn calendar_of_connections(
    client: &tokio_postgres::Client,
) -> anyhow::Result<HashMap<String, String>> {
    per_connection(
        client,
        "SELECT connection_id::text, calendar_id FROM connection_calendars",
    )
    .await
}

/// Each connection's live push channel id.
pub(super) async fn channel_of_connections(
    client: &tokio_postgres::Client,
) -> anyhow::Result<HashMap<String, String>> {
    per_connection(
        client,
        "SELECT connection_id::text, channel_id FROM channels WHERE closed_at IS NULL",
    )
    .await
}

/// `sql`'s rows of (connection id, text) as a map.
async fn per_connection(
    client: &tokio_postgres::Client,
    sql: &str,
) -> anyhow::Result<HashMap<String, String>> {
    Ok(client
        .query(sql, &[])
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}
