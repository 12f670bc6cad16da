//! Making the live tables equal the rebuilt ones, under a short lock.
//!
//! Why a diff and not `TRUNCATE` + copy or a table rename: `EXCLUSIVE`
//! mode blocks writers (appends wait, they do not fail) but not readers,
//! who keep seeing the old rows until commit; only differing rows are
//! written, so the lock lasts as long as the comparison, unchanged rows
//! keep their `updated_at`, and indexes, constraints and grants of the
//! live tables are untouched (a rename would swap all of them).

use super::compare::{comparable_columns, scope};
use super::tables::{columns, ident, ProjectionTable};
use super::ReplayError;
use crate::core::ids::ConnectionId;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// How long one attempt waits for a table lock. Shorter than PostgreSQL's
/// default `deadlock_timeout` (1 s), so if a lock cycle ever formed, this
/// side would give up first, never an append.
const LOCK_TIMEOUT_MS: u32 = 500;

/// Locks the live tables in [`super::tables::PROJECTION_TABLES`] order
/// (writers block; readers do not). `Ok(false)`: a lock was not granted in
/// time and the transaction is rolled back; try again.
pub async fn lock_live(client: &Client, tables: &[ProjectionTable]) -> Result<bool, ReplayError> {
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'"
        ))
        .await?;
    for table in tables {
        let locked = client
            .batch_execute(&format!(
                "LOCK TABLE {} IN EXCLUSIVE MODE",
                ident(table.name)
            ))
            .await;
        match locked {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                client.batch_execute("ROLLBACK").await?;
                return Ok(false);
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
        }
    }
    Ok(true)
}

/// Rewrites the live rows of `table` that differ from its shadow: deletes
/// keys the log does not have, upserts rows missing or different. Returns
/// rows deleted and rows written.
///
/// Under `--connection`, a busy row whose key another connection owns in
/// the live table is left alone: this replay folded one stream only and
/// cannot know who wrote the key last.
pub async fn apply_diff(
    client: &Client,
    table: &ProjectionTable,
    only: Option<ConnectionId>,
) -> Result<(u64, u64), ReplayError> {
    let all = columns(client, table.name).await?;
    let compared = comparable_columns(client, table).await?;
    let live = ident(table.name);
    let shadow = ident(&table.shadow());
    let key_eq = table
        .key
        .iter()
        .map(|k| format!("l.{k} = s.{k}", k = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let deleted = client
        .execute(
            &format!(
                "DELETE FROM {live} l WHERE {} AND NOT EXISTS \
                 (SELECT 1 FROM {shadow} s WHERE {} AND {key_eq})",
                scope(table, "l", only),
                scope(table, "s", only),
            ),
            &[],
        )
        .await?;
    let names: Vec<String> = all.iter().map(|c| ident(&c.name)).collect();
    let from_shadow: Vec<String> = names.iter().map(|c| format!("s.{c}")).collect();
    let row = |alias: &str| {
        compared
            .iter()
            .map(|c| c.comparable(alias))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let updates: Vec<String> = all
        .iter()
        .filter(|c| !table.key.contains(&c.name.as_str()))
        .map(|c| format!("{n} = EXCLUDED.{n}", n = ident(&c.name)))
        .collect();
    let on_conflict = if updates.is_empty() {
        "DO NOTHING".to_string()
    } else {
        format!("DO UPDATE SET {}", updates.join(", "))
    };
    let first = ident(table.key[0]);
    let keys: Vec<String> = table.key.iter().map(|k| ident(k)).collect();
    let written = client
        .execute(
            &format!(
                "INSERT INTO {live} ({cols}) SELECT {src} FROM {shadow} s \
                 LEFT JOIN {live} l ON {key_eq} \
                 WHERE {scs} AND (l.{first} IS NULL OR ({scl} AND ROW({lr}) IS DISTINCT FROM ROW({sr}))) \
                 ON CONFLICT ({keys}) {on_conflict}",
                cols = names.join(", "),
                src = from_shadow.join(", "),
                scs = scope(table, "s", only),
                scl = scope(table, "l", only),
                lr = row("l"),
                sr = row("s"),
                keys = keys.join(", "),
            ),
            &[],
        )
        .await?;
    Ok((deleted, written))
}
