//! Comparing live and rebuilt tables row for row, in SQL: `EXCEPT ALL` both
//! ways over the comparable columns (all but wall-clock ones), the two
//! sides paired by primary key into missing / extra / different rows.

use super::tables::{columns, ident, Column, ProjectionTable};
use super::ReplayError;
use crate::core::ids::ConnectionId;
use serde::Serialize;
use tokio_postgres::Client;

/// Differences kept per table in a report (all are counted).
pub const SAMPLES_PER_TABLE: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// The log says the row exists; the live table lacks it.
    Missing,
    /// The live table has a row the log does not explain.
    Extra,
    /// Both have the key; some comparable column differs.
    Different,
}

/// One differing row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub kind: DiffKind,
    pub connection_id: Option<String>,
    /// The primary key, column by column.
    pub key: serde_json::Value,
    /// The comparable columns as live has them / as the log rebuilds them.
    pub live: Option<serde_json::Value>,
    pub rebuilt: Option<serde_json::Value>,
}

/// The differences of one table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableDiff {
    pub table: String,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// The first [`SAMPLES_PER_TABLE`] differences, by key.
    pub samples: Vec<Difference>,
}

impl TableDiff {
    pub fn total(&self) -> u64 {
        self.missing + self.extra + self.different
    }
}

/// The `WHERE` restriction of a connection-scoped replay (a UUID formatted
/// here, safe to inline).
pub fn scope(table: &ProjectionTable, alias: &str, only: Option<ConnectionId>) -> String {
    match only {
        Some(id) => format!(
            "{alias}.{} = '{}'::uuid",
            ident(table.connection_column),
            id.as_uuid()
        ),
        None => "TRUE".into(),
    }
}

/// The live table's columns that are compared.
pub async fn comparable_columns(
    client: &Client,
    table: &ProjectionTable,
) -> Result<Vec<Column>, ReplayError> {
    Ok(columns(client, table.name)
        .await?
        .into_iter()
        .filter(|c| !table.wall_clock.contains(&c.name.as_str()))
        .collect())
}

/// Compares one table's live rows with its shadow rows.
pub async fn compare_table(
    client: &Client,
    table: &ProjectionTable,
    only: Option<ConnectionId>,
) -> Result<TableDiff, ReplayError> {
    let cols = comparable_columns(client, table).await?;
    let select = |alias: &str| -> String {
        cols.iter()
            .map(|c| format!("{} AS {}", c.comparable(alias), ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_match = table
        .key
        .iter()
        .map(|k| format!("lo.{k} = so.{k}", k = ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let key_json = table
        .key
        .iter()
        .map(|k| format!("'{k}', coalesce(lo.{q}, so.{q})", q = ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let first = ident(table.key[0]);
    let conn = ident(table.connection_column);
    let sql = format!(
        "WITH l AS (SELECT {sl} FROM {live} l WHERE {scl}), \
              s AS (SELECT {ss} FROM {shadow} s WHERE {scs}), \
              lo AS (SELECT * FROM l EXCEPT ALL SELECT * FROM s), \
              so AS (SELECT * FROM s EXCEPT ALL SELECT * FROM l) \
         SELECT CASE WHEN so.{first} IS NULL THEN 'extra' \
                     WHEN lo.{first} IS NULL THEN 'missing' ELSE 'different' END, \
                coalesce(lo.{conn}, so.{conn})::text, \
                json_build_object({key_json})::text, \
                CASE WHEN lo.{first} IS NULL THEN NULL ELSE row_to_json(lo)::text END, \
                CASE WHEN so.{first} IS NULL THEN NULL ELSE row_to_json(so)::text END \
         FROM lo FULL JOIN so ON {key_match} ORDER BY 3",
        sl = select("l"),
        ss = select("s"),
        live = ident(table.name),
        shadow = ident(&table.shadow()),
        scl = scope(table, "l", only),
        scs = scope(table, "s", only),
    );
    let rows = client.query(&sql, &[]).await?;
    let mut diff = TableDiff {
        table: table.name.to_string(),
        missing: 0,
        extra: 0,
        different: 0,
        samples: Vec::new(),
    };
    for row in &rows {
        let kind = match row.try_get::<_, &str>(0)? {
            "extra" => DiffKind::Extra,
            "missing" => DiffKind::Missing,
            _ => DiffKind::Different,
        };
        match kind {
            DiffKind::Missing => diff.missing += 1,
            DiffKind::Extra => diff.extra += 1,
            DiffKind::Different => diff.different += 1,
        }
        if diff.samples.len() < SAMPLES_PER_TABLE {
            diff.samples.push(Difference {
                kind,
                connection_id: row.try_get(1)?,
                key: json(row.try_get(2)?)?,
                live: row.try_get::<_, Option<&str>>(3)?.map(json).transpose()?,
                rebuilt: row.try_get::<_, Option<&str>>(4)?.map(json).transpose()?,
            });
        }
    }
    Ok(diff)
}

fn json(text: &str) -> Result<serde_json::Value, ReplayError> {
    serde_json::from_str(text).map_err(|e| ReplayError::BadData(format!("diff row: {e}")))
}
