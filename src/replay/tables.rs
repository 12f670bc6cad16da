//! The projection tables replay rebuilds, compares and swaps: the one place
//! that lists them. Adding a projection is one line here (plus its fold in
//! [`super::model`] and its row encoding in [`super::write`]).

use crate::store::projections::Tables;
use tokio_postgres::Client;

/// One read-model table folded from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectionTable {
    pub name: &'static str,
    /// The primary key: how rows of the live and rebuilt tables are paired.
    pub key: &'static [&'static str],
    /// The column naming the connection a row belongs to (reported with
    /// every difference; `--connection` restricts on it).
    pub connection_column: &'static str,
    /// Wall-clock columns (`now()` at write time): never compared.
    pub wall_clock: &'static [&'static str],
}

/// Every projection table, in the order the live path writes them inside
/// an append (busy rows, then calendars, then the connection row). The swap
/// locks them in this order, so it can never deadlock with an append.
pub const PROJECTION_TABLES: &[ProjectionTable] = &[
    ProjectionTable {
        name: "busy_intervals",
        key: &["connection_id", "calendar_id", "external_event_id"],
        connection_column: "connection_id",
        wall_clock: &[],
    },
    ProjectionTable {
        name: "ignored_events",
        key: &["connection_id", "calendar_id", "external_event_id"],
        connection_column: "connection_id",
        wall_clock: &[],
    },
    ProjectionTable {
        name: "connection_calendars",
        key: &["connection_id", "calendar_id"],
        connection_column: "connection_id",
        wall_clock: &[],
    },
    ProjectionTable {
        name: "channels",
        key: &["channel_id"],
        connection_column: "connection_id",
        wall_clock: &[],
    },
    ProjectionTable {
        name: "booking_events",
        key: &["booking_id", "connection_id"],
        connection_column: "connection_id",
        wall_clock: &["updated_at"],
    },
    ProjectionTable {
        name: "connections",
        key: &["connection_id"],
        connection_column: "connection_id",
        wall_clock: &["updated_at"],
    },
];

impl ProjectionTable {
    pub fn shadow(&self) -> String {
        Tables::Shadow.name(self.name)
    }
}

/// A column of a live table, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub sql_type: String,
}

impl Column {
    /// The column as a comparable expression: `json` has no equality
    /// operator, so it is compared as its stored text.
    pub fn comparable(&self, alias: &str) -> String {
        let col = format!("{alias}.{}", ident(&self.name));
        if self.sql_type == "json" {
            format!("{col}::text")
        } else {
            col
        }
    }
}

/// The live table's columns, from the catalog (so a column added to a
/// projection by a migration is compared without touching replay).
pub async fn columns(client: &Client, table: &str) -> Result<Vec<Column>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a WHERE a.attrelid = $1::text::regclass \
               AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&table],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Column {
                name: r.try_get(0)?,
                sql_type: r.try_get(1)?,
            })
        })
        .collect()
}

/// Creates the session's shadow tables, empty, shaped like the live ones
/// (columns, defaults, constraints) but without indexes: a bulk load into
/// an unindexed table, then one index build, is much faster.
///
/// They are temporary: private to the replay's session (two replays never
/// see each other's), unlogged (fast to fill) and gone when it ends.
pub async fn create_shadows(client: &Client) -> Result<(), tokio_postgres::Error> {
    for table in PROJECTION_TABLES {
        let shadow = ident(&table.shadow());
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS pg_temp.{shadow}; \
                 CREATE TEMP TABLE {shadow} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)",
                ident(table.name)
            ))
            .await?;
    }
    Ok(())
}

/// Analyzes the loaded shadow tables (the comparison's plan depends on
/// their size) and, with `keys`, gives them their primary keys: the swap's
/// catch-up deletes and upserts by key, and a duplicate key would be a
/// fold bug. A verify skips the keys: its comparison (`EXCEPT ALL` both
/// ways) uses no index, and reports a duplicated key as a difference.
/// The key build was a fifth of a verify's rebuild time.
pub async fn index_shadows(client: &Client, keys: bool) -> Result<(), tokio_postgres::Error> {
    for table in PROJECTION_TABLES {
        let shadow = ident(&table.shadow());
        if keys {
            let keys: Vec<String> = table.key.iter().map(|k| ident(k)).collect();
            client
                .batch_execute(&format!(
                    "ALTER TABLE {shadow} ADD PRIMARY KEY ({})",
                    keys.join(", ")
                ))
                .await?;
        }
        client.batch_execute(&format!("ANALYZE {shadow}")).await?;
    }
    Ok(())
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
