//! Reads behind the platform API: busy intervals of a platform provider in
//! a window, and how fresh they are.

use super::{PgEventStore, StoreError};
use crate::core::interval::{merge, Interval};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::LazyLock;
use tokio_postgres::types::ToSql;

/// One busy interval as the platform sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusyInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub provider: String,
    pub external_event_id: String,
    pub connection_id: uuid::Uuid,
    pub calendar_id: String,
}

/// How fresh the data behind an answer is, per connection and calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    pub connection_id: uuid::Uuid,
    pub provider: String,
    pub status: String,
    pub backoff_until: Option<DateTime<Utc>>,
    pub needs_reauthorization: bool,
    pub calendars: Vec<CalendarFreshness>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalendarFreshness {
    pub calendar_id: String,
    pub last_successful_sync: Option<DateTime<Utc>>,
}

/// The busy-range query: a provider's busy intervals overlapping
/// [`$2`, `$3`), oldest first (`bench availability` runs it bare in pgbench).
pub const BUSY_IN_SQL: &str =
    "SELECT starts_at, ends_at, provider, external_event_id, connection_id, calendar_id \
     FROM busy_intervals WHERE platform_provider_id = $1 \
       AND starts_at < $3 AND ends_at > $2 ORDER BY starts_at, ends_at";

/// Busy intervals overlapping `window`, oldest first.
pub async fn busy_in(
    store: &PgEventStore,
    platform_provider_id: &str,
    window: Interval,
) -> Result<Vec<BusyInterval>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            BUSY_IN_SQL,
            &[&platform_provider_id, &window.start(), &window.end()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(BusyInterval {
                start: r.try_get(0)?,
                end: r.try_get(1)?,
                provider: r.try_get(2)?,
                external_event_id: r.try_get(3)?,
                connection_id: r.try_get(4)?,
                calendar_id: r.try_get(5)?,
            })
        })
        .collect()
}

/// Freshness of every live connection of a platform provider, one row
/// per (connection, calendar).
const FRESHNESS_SQL: &str = "SELECT c.connection_id, c.provider, c.status, c.backoff_until, \
            c.needs_reauthorization IS NOT NULL, k.calendar_id, k.last_success_at \
     FROM connections c LEFT JOIN connection_calendars k USING (connection_id) \
     WHERE c.platform_provider_id = $1 AND c.status <> 'removed' \
     ORDER BY c.connection_id, k.calendar_id";

/// The busy spans an availability answer needs: start and end of each of
/// a provider's busy intervals overlapping one of the reach spans (sorted,
/// apart: [`crate::core::busy_reach`]) given as arrays of starts (`$2`),
/// ends (`$3`) and the previous span's end (`$4`, NULL for the first);
/// each interval once (at the first span it overlaps), unordered (the core
/// sorts and merges). Per span, two disjoint halves, so that neither scans
/// the provider's whole past: intervals starting at most a day before the
/// span (a bounded range of the `(platform_provider_id, starts_at)` index),
/// and longer ones that started earlier (longer than a day, so the partial
/// index of migrations 0011 and 0013 has them). Both halves are index-only
/// scans: the indexes carry the other bound (migration 0013).
/// The handler reads it as two arrays: [`BUSY_ARRAYS_SQL`].
pub const BUSY_SPANS_SQL: &str = "\
    SELECT b.starts_at, b.ends_at \
      FROM unnest($2::timestamptz[], $3::timestamptz[], $4::timestamptz[]) AS w(ws, we, pe), \
      LATERAL ( \
        SELECT starts_at, ends_at FROM busy_intervals \
         WHERE platform_provider_id = $1 AND starts_at < w.we AND ends_at > w.ws \
           AND starts_at >= greatest(w.ws - interval '1 day', w.pe) \
        UNION ALL \
        SELECT starts_at, ends_at FROM busy_intervals \
         WHERE platform_provider_id = $1 AND ends_at > w.ws \
           AND starts_at < w.ws - interval '1 day' \
           AND (w.pe IS NULL OR starts_at >= w.pe) \
           AND ends_at - starts_at > interval '1 day') AS b";

/// [`BUSY_SPANS_SQL`]'s intervals as one row of two arrays (starts, ends;
/// unordered): this is what the handler reads, and merges
/// ([`crate::core::interval::merge`]). An availability answer depends only
/// on the union of busy time: a slot overlaps a buffered merged interval
/// exactly when it overlaps one of the buffered intervals merged into it
/// (widening by the buffers distributes over the union of touching
/// intervals). A provider with 50 calendars has hundreds of overlapping
/// rows in a working week: decoding them row by row was a third of the
/// handler's CPU, and merging them in PostgreSQL (`range_agg`, which
/// sorts range values) was a fifth of the server's (BENCHMARKS.md,
/// "availability"); two arrays of timestamps cost neither.
/// `bench availability` runs exactly this in pgbench.
pub static BUSY_ARRAYS_SQL: LazyLock<String> = LazyLock::new(|| as_arrays(BUSY_SPANS_SQL));

/// A spans query (as [`BUSY_SPANS_SQL`], perhaps rewritten to read its
/// spans from a table) wrapped as [`BUSY_ARRAYS_SQL`] wraps it.
pub fn as_arrays(spans_sql: &str) -> String {
    format!(
        "SELECT coalesce(array_agg(s.starts_at), '{{}}'), coalesce(array_agg(s.ends_at), '{{}}') \
           FROM ({spans_sql}) AS s"
    )
}

/// The FROM item of [`BUSY_SPANS_SQL`] that takes the reach spans.
pub const BUSY_SPANS_REACH: &str =
    "unnest($2::timestamptz[], $3::timestamptz[], $4::timestamptz[])";

/// What an availability answer needs of one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AvailabilityInputs {
    /// Busy time overlapping the window: merged spans, ascending and apart.
    pub busy: Vec<Interval>,
    pub freshness: Vec<Freshness>,
}

/// Busy spans overlapping `reach` (sorted, apart: see
/// [`crate::core::busy_reach`]) and freshness of every provider in `ids`,
/// in their order: on one pooled connection, with prepared statements,
/// every query sent at once (tokio-postgres pipelines them), so a group of
/// N costs one round trip's wait instead of 2·N.
pub async fn availability_inputs(
    store: &PgEventStore,
    ids: &[String],
    reach: &[Interval],
) -> Result<Vec<AvailabilityInputs>, StoreError> {
    let client = store.pool().get().await?;
    let (spans, fresh) = futures::try_join!(
        client.prepare_cached(&BUSY_ARRAYS_SQL),
        client.prepare_cached(FRESHNESS_SQL)
    )?;
    let starts: Vec<DateTime<Utc>> = reach.iter().map(|r| r.start()).collect();
    let ends: Vec<DateTime<Utc>> = reach.iter().map(|r| r.end()).collect();
    let previous: Vec<Option<DateTime<Utc>>> = std::iter::once(None)
        .chain(reach.iter().map(|r| Some(r.end())))
        .take(reach.len())
        .collect();
    let (starts, ends, previous) = (&starts, &ends, &previous);
    let per_provider = ids.iter().map(|id| {
        let (spans, fresh, client) = (&spans, &fresh, &client);
        async move {
            let busy_params: [&(dyn ToSql + Sync); 4] = [id, starts, ends, previous];
            let fresh_params: [&(dyn ToSql + Sync); 1] = [id];
            // One row: an aggregate without GROUP BY always answers one.
            let (row, fresh) = futures::try_join!(
                client.query_one(spans, &busy_params),
                client.query(fresh, &fresh_params)
            )?;
            let starts: Vec<DateTime<Utc>> = row.try_get(0)?;
            let ends: Vec<DateTime<Utc>> = row.try_get(1)?;
            // The table's CHECK keeps ends after starts.
            let busy = merge(
                starts
                    .into_iter()
                    .zip(ends)
                    .filter_map(|(s, e)| Interval::new(s, e).ok())
                    .collect(),
            );
            Ok::<_, StoreError>(AvailabilityInputs {
                busy,
                freshness: freshness_rows(&fresh)?,
            })
        }
    });
    futures::future::try_join_all(per_provider).await
}

/// Freshness of every live connection of a platform provider.
pub async fn freshness(
    store: &PgEventStore,
    platform_provider_id: &str,
) -> Result<Vec<Freshness>, StoreError> {
    let client = store.pool().get().await?;
    let statement = client.prepare_cached(FRESHNESS_SQL).await?;
    let rows = client.query(&statement, &[&platform_provider_id]).await?;
    freshness_rows(&rows)
}

/// Folds [`FRESHNESS_SQL`]'s rows into one [`Freshness`] per connection.
fn freshness_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<Freshness>, StoreError> {
    let mut out: Vec<Freshness> = Vec::new();
    for r in rows {
        let id: uuid::Uuid = r.try_get(0)?;
        if out.last().map(|f| f.connection_id) != Some(id) {
            out.push(Freshness {
                connection_id: id,
                provider: r.try_get(1)?,
                status: r.try_get(2)?,
                backoff_until: r.try_get(3)?,
                needs_reauthorization: r.try_get(4)?,
                calendars: Vec::new(),
            });
        }
        if let Some(calendar_id) = r.try_get::<_, Option<String>>(5)? {
            if let Some(last) = out.last_mut() {
                last.calendars.push(CalendarFreshness {
                    calendar_id,
                    last_successful_sync: r.try_get(6)?,
                });
            }
        }
    }
    Ok(out)
}
