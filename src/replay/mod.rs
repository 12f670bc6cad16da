//! `calsync replay`: rebuild every projection from the log with the live
//! path's own fold, prove it equals the live tables, and swap it in.
//!
//! - [`verify`]: in one `REPEATABLE READ` snapshot, fold every visible event
//!   into memory ([`fold`], [`model`]), `COPY` the rows into session-private
//!   shadow tables ([`write`]) and compare them with the live tables *as
//!   of the same snapshot* ([`compare`]). Projections are written in the
//!   append's transaction, so live tables and log agree in any snapshot:
//!   a `calsync serve` appending meanwhile causes no false difference.
//! - [`swap`]: the same rebuild, then catch-up with the store's `read_all`
//!   (never skips an uncommitted gap), then one transaction that locks the
//!   live tables against writers, folds the events committed up to the lock,
//!   and rewrites the live rows that differ ([`swap`](mod@swap)).
//!
//! No side effect runs: nothing but the log is read, no actor, provider,
//! webhook or outbound write is involved.

pub mod compare;
pub mod fold;
pub mod model;
pub mod progress;
pub mod read;
pub mod swap;
pub mod tables;
pub mod write;

pub use compare::{DiffKind, Difference, TableDiff};
pub use progress::ProgressMode;
pub use tables::{ProjectionTable, PROJECTION_TABLES};

use crate::core::ids::ConnectionId;
use crate::store::{EventStore, GlobalCursor, PgEventStore, StoreError};
use fold::Folder;
use progress::Progress;
use read::{fold_recorded, read_into, Range};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use write::Rows;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("event {stream} v{version} cannot be decoded: {reason}")]
    Decode {
        stream: String,
        version: u64,
        reason: String,
    },
    #[error("stream {stream} jumps from version {expected} to {found}")]
    Gap {
        stream: String,
        expected: u64,
        found: u64,
    },
    #[error("bad data: {0}")]
    BadData(String),
    /// A projection this build of replay does not know how to rebuild.
    #[error("replay does not support {0} yet")]
    Unsupported(String),
    #[error("the folding thread failed: {0}")]
    Worker(String),
    #[error("could not lock the live tables after {0} attempts (appends kept them busy)")]
    LockTimeout(u32),
}

/// What to replay and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Only this connection's stream and rows.
    pub connection: Option<ConnectionId>,
    /// Also write actor snapshots from the fold.
    pub snapshots: bool,
    pub progress: ProgressMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Verify,
    Swap,
}

/// The outcome of a replay (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub connection: Option<ConnectionId>,
    /// Events read from the log (every stream; catch-up included).
    pub events_read: u64,
    /// Connection streams folded.
    pub streams: u64,
    /// Rows written into each shadow table by the rebuild.
    pub rows_written: BTreeMap<String, u64>,
    pub snapshots_written: u64,
    /// Differing rows in all tables (for a swap: found, and repaired).
    pub differences: u64,
    pub tables: Vec<TableDiff>,
    pub swapped: bool,
    /// Live rows deleted and written by the swap.
    pub rows_repaired: u64,
    /// How long the live tables were locked against writers.
    pub lock_seconds: Option<f64>,
    /// Read and fold of the log (within the rebuild).
    pub read_seconds: f64,
    /// Read, fold and shadow write of the log (the rate below).
    pub rebuild_seconds: f64,
    pub events_per_second: f64,
    pub seconds: f64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.differences == 0
    }
}

/// Rebuilds every projection and compares it with the live tables, as of
/// one snapshot. Changes nothing live (unless `snapshots` is asked for).
pub async fn verify(store: &PgEventStore, options: &ReplayOptions) -> Result<Report, ReplayError> {
    let started = Instant::now();
    let client = session(store).await?;
    let tables = PROJECTION_TABLES;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let rebuilt = rebuild(&client, options, false).await;
    let result = match rebuilt {
        Ok((folder, rows_written, times)) => {
            let mut diffs = Vec::new();
            for table in tables {
                diffs.push(compare::compare_table(&client, table, options.connection).await?);
            }
            Ok((folder, rows_written, times, diffs))
        }
        Err(e) => Err(e),
    };
    // The shadow tables were created in this transaction: gone with it.
    let _ = client.batch_execute("ROLLBACK").await;
    let (folder, rows_written, times, diffs) = result?;
    let snapshots_written = if options.snapshots {
        save_snapshots(&client, &folder).await?
    } else {
        0
    };
    Ok(report(
        Mode::Verify,
        options,
        &folder,
        rows_written,
        snapshots_written,
        diffs,
        (0, None),
        times,
        started,
    ))
}

/// Rebuilds every projection, catches up with appends committed meanwhile,
/// and makes the live tables equal to the rebuild under a short lock.
/// Safe beside a running `calsync serve`: its appends wait for the lock.
pub async fn swap(store: &PgEventStore, options: &ReplayOptions) -> Result<Report, ReplayError> {
    const ATTEMPTS: u32 = 40;
    let started = Instant::now();
    let client = session(store).await?;
    let tables = PROJECTION_TABLES;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await?;
    let xmin: i64 = client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?
        .try_get(0)?;
    let (mut folder, rows_written, times) = match rebuild(&client, options, true).await {
        Ok(r) => r,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    // Temporary tables outlive the transaction in this session.
    client.batch_execute("COMMIT").await?;
    folder.model.track_changes();
    // Every event below the snapshot's xmin was visible to it (all those
    // transactions had ended); events above it may or may not have been,
    // and the fold skips the versions it already has.
    let mut cursor = GlobalCursor {
        txid: xmin - 1,
        position: i64::MAX,
    };
    catch_up(store, &mut cursor, &mut folder).await?;
    let dirty = folder.model.take_dirty();
    write::write_shadows(&client, tables, &folder.model, Rows::Only(&dirty)).await?;
    let mut attempts = 0;
    loop {
        catch_up(store, &mut cursor, &mut folder).await?;
        attempts += 1;
        if swap::lock_live(&client, tables).await? {
            break;
        }
        if attempts >= ATTEMPTS {
            return Err(ReplayError::LockTimeout(attempts));
        }
        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempts.min(10)))).await;
    }
    let locked_at = Instant::now();
    match locked_swap(&client, tables, cursor, folder, options).await {
        Ok((folder, diffs, repaired)) => {
            client.batch_execute("COMMIT").await?;
            let lock_seconds = locked_at.elapsed().as_secs_f64();
            let snapshots_written = if options.snapshots {
                save_snapshots(&client, &folder).await?
            } else {
                0
            };
            drop_shadows(&client, tables).await?;
            Ok(report(
                Mode::Swap,
                options,
                &folder,
                rows_written,
                snapshots_written,
                diffs,
                (repaired, Some(lock_seconds)),
                times,
                started,
            ))
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Inside the lock: no append can write the live tables now, and every
/// append that wrote them before has committed (the lock waited for it).
/// So the events visible to the next statement are exactly those the live
/// tables reflect — including any committed out of `txid` order, which the
/// `read_all` watermark would still hold back. Fold them, then diff.
async fn locked_swap(
    client: &Client,
    tables: &[ProjectionTable],
    cursor: GlobalCursor,
    folder: Folder,
    options: &ReplayOptions,
) -> Result<(Folder, Vec<TableDiff>, u64), ReplayError> {
    let mut quiet = Progress::new(ProgressMode::Quiet, 0);
    let range = Range::After {
        txid: cursor.txid,
        position: cursor.position,
    };
    let mut folder = read_into(client, range, options.connection, folder, &mut quiet).await?;
    let dirty = folder.model.take_dirty();
    write::write_shadows(client, tables, &folder.model, Rows::Only(&dirty)).await?;
    let mut diffs = Vec::new();
    let mut repaired = 0;
    for table in tables {
        let diff = compare::compare_table(client, table, options.connection).await?;
        if diff.total() > 0 {
            let (deleted, written) = swap::apply_diff(client, table, options.connection).await?;
            repaired += deleted + written;
        }
        diffs.push(diff);
    }
    Ok((folder, diffs, repaired))
}

/// How long the rebuild's phases took, in seconds.
#[derive(Debug, Clone, Copy)]
struct Times {
    read: f64,
    rebuild: f64,
}

/// Reads the log visible to the open transaction into memory and writes
/// the rows into fresh shadow tables, with their primary keys if `keyed`
/// (see [`tables::index_shadows`]). Returns the fold, rows written per
/// table and the seconds it took.
async fn rebuild(
    client: &Client,
    options: &ReplayOptions,
    keyed: bool,
) -> Result<(Folder, BTreeMap<String, u64>, Times), ReplayError> {
    let started = Instant::now();
    let total = estimate(client, options.connection).await?;
    let mut progress = Progress::new(options.progress, total);
    let folder = read_into(
        client,
        Range::Visible,
        options.connection,
        Folder::new(options.connection),
        &mut progress,
    )
    .await?;
    progress.finish();
    let read_seconds = started.elapsed().as_secs_f64();
    tables::create_shadows(client).await?;
    let rows = write::write_shadows(client, PROJECTION_TABLES, &folder.model, Rows::All).await?;
    let written_seconds = started.elapsed().as_secs_f64();
    tables::index_shadows(client, keyed).await?;
    tracing::debug!(
        read_seconds,
        write_seconds = written_seconds - read_seconds,
        index_seconds = started.elapsed().as_secs_f64() - written_seconds,
        "replay rebuild stages"
    );
    let times = Times {
        read: read_seconds,
        rebuild: started.elapsed().as_secs_f64(),
    };
    Ok((folder, rows, times))
}

/// Folds what `read_all` returns after `cursor` until it has nothing more.
async fn catch_up(
    store: &PgEventStore,
    cursor: &mut GlobalCursor,
    folder: &mut Folder,
) -> Result<(), ReplayError> {
    const LIMIT: usize = 10_000;
    loop {
        let events = store.read_all(*cursor, LIMIT).await?;
        fold_recorded(folder, &events)?;
        match events.last() {
            Some(last) => *cursor = last.cursor(),
            None => return Ok(()),
        }
        if events.len() < LIMIT {
            return Ok(());
        }
    }
}

/// A session of its own, detached from the pool: its temporary shadow
/// tables die with it, whatever happens.
async fn session(store: &PgEventStore) -> Result<deadpool_postgres::ClientWrapper, ReplayError> {
    let pooled = store.pool().get().await?;
    let client = deadpool_postgres::Object::take(pooled);
    // The shadow tables are temporary, so they live in this session's
    // local buffers (8 MB by default): a rebuild of a large log would
    // spill them to the OS and read them back for the primary-key build,
    // the ANALYZE and the comparison. Room for them in memory, and for
    // the key build's sort, is allocated only as used and freed with the
    // session. `temp_buffers` cannot change once the session has used a
    // temporary table; a connection that did keeps its setting.
    client
        .batch_execute("SET maintenance_work_mem = '256MB'")
        .await?;
    if let Err(e) = client.batch_execute("SET temp_buffers = '256MB'").await {
        tracing::debug!(error = %e, "replay keeps the session's temp_buffers");
    }
    Ok(client)
}

/// Events to read, for the progress bar: the highest position is an upper
/// bound that costs one index probe.
async fn estimate(client: &Client, only: Option<ConnectionId>) -> Result<u64, ReplayError> {
    let row = match only {
        Some(id) => {
            client
                .query_one(
                    "SELECT count(*) FROM events WHERE stream = $1",
                    &[&id.stream().as_str()],
                )
                .await?
        }
        None => {
            client
                .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
                .await?
        }
    };
    Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
}

async fn save_snapshots(client: &Client, folder: &Folder) -> Result<u64, ReplayError> {
    let mut states = Vec::with_capacity(folder.streams.len());
    for s in folder.streams.iter().filter(|s| s.state.version > 0) {
        let json = serde_json::to_string(&s.state)
            .map_err(|e| ReplayError::BadData(format!("state of {}: {e}", s.stream)))?;
        states.push((s.stream.as_str().to_string(), s.state.version, json));
    }
    write::write_snapshots(client, &states).await
}

async fn drop_shadows(client: &Client, tables: &[ProjectionTable]) -> Result<(), ReplayError> {
    for t in tables {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS pg_temp.{}",
                tables::ident(&t.shadow())
            ))
            .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    mode: Mode,
    options: &ReplayOptions,
    folder: &Folder,
    rows_written: BTreeMap<String, u64>,
    snapshots_written: u64,
    tables: Vec<TableDiff>,
    (rows_repaired, lock_seconds): (u64, Option<f64>),
    times: Times,
    started: Instant,
) -> Report {
    Report {
        mode,
        connection: options.connection,
        events_read: folder.events_read,
        streams: folder.streams.len() as u64,
        rows_written,
        snapshots_written,
        differences: tables.iter().map(TableDiff::total).sum(),
        tables,
        swapped: mode == Mode::Swap,
        rows_repaired,
        lock_seconds,
        read_seconds: times.read,
        rebuild_seconds: times.rebuild,
        events_per_second: folder.events_read as f64 / times.rebuild.max(1e-6),
        seconds: started.elapsed().as_secs_f64(),
    }
}
