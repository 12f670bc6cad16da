//! Schema migrations: the ordered SQL files in `schema/`, compiled into the
//! binary, applied once each and recorded with a checksum.
//!
//! Safe from several processes at once: the whole run holds a session-level
//! advisory lock, so a second `calsync migrate` (or a second node starting)
//! waits and then finds nothing to do. An applied migration whose file was
//! edited afterwards stops the run: history is never silently rewritten.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. Add new files here; never edit applied ones.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_event_log",
        sql: include_str!("../../schema/0001_event_log.sql"),
    },
    Migration {
        version: 2,
        name: "0002_connections",
        sql: include_str!("../../schema/0002_connections.sql"),
    },
    Migration {
        version: 3,
        name: "0003_busy_intervals",
        sql: include_str!("../../schema/0003_busy_intervals.sql"),
    },
    Migration {
        version: 4,
        name: "0004_channels",
        sql: include_str!("../../schema/0004_channels.sql"),
    },
    Migration {
        version: 5,
        name: "0005_booking_events",
        sql: include_str!("../../schema/0005_booking_events.sql"),
    },
    Migration {
        version: 6,
        name: "0006_failure_isolation",
        sql: include_str!("../../schema/0006_failure_isolation.sql"),
    },
    Migration {
        version: 7,
        name: "0007_cluster",
        sql: include_str!("../../schema/0007_cluster.sql"),
    },
    Migration {
        version: 8,
        name: "0008_platform_feed",
        sql: include_str!("../../schema/0008_platform_feed.sql"),
    },
    Migration {
        version: 9,
        name: "0009_api_tokens",
        sql: include_str!("../../schema/0009_api_tokens.sql"),
    },
    Migration {
        version: 10,
        name: "0010_explanations",
        sql: include_str!("../../schema/0010_explanations.sql"),
    },
    Migration {
        version: 11,
        name: "0011_busy_long_intervals",
        sql: include_str!("../../schema/0011_busy_long_intervals.sql"),
    },
    Migration {
        version: 12,
        name: "0012_oauth_connect",
        sql: include_str!("../../schema/0012_oauth_connect.sql"),
    },
    Migration {
        version: 13,
        name: "0013_busy_index_only",
        sql: include_str!("../../schema/0013_busy_index_only.sql"),
    },
];

/// An arbitrary constant naming calsync's migration lock.
const MIGRATION_LOCK_KEY: i64 = 0x6361_6c73_796e_6301;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "migration {version} ({name}) was edited after it was applied \
         (checksum {applied} in the database, {current} in this build); \
         add a new migration instead of changing an applied one"
    )]
    Edited {
        version: i32,
        name: String,
        applied: String,
        current: String,
    },
    #[error(
        "the database has migration {version} applied, which this build does not know; \
         run a newer calsync"
    )]
    Unknown { version: i32 },
    #[error("migration {name} failed: {source}")]
    Failed {
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database error while migrating: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub already_applied: usize,
}

pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Applies every pending migration of this build, each in its own transaction.
pub async fn run(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    run_with(client, MIGRATIONS).await
}

/// Applies `migrations` (a build's list; tests pass edited lists).
pub async fn run_with(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = run_locked(client, migrations).await;
    // Unlock even on failure; if this fails the session end releases it.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    result
}

async fn run_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    // A runtime role without DDL rights may check that nothing is pending:
    // create the table only when it is missing (CREATE … IF NOT EXISTS still
    // needs the right to create).
    let exists: bool = client
        .query_one("SELECT to_regclass('calsync_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS calsync_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
            )
            .await?;
    }
    let applied: Vec<(i32, String, String)> = client
        .query(
            "SELECT version, name, checksum FROM calsync_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();

    for (version, name, sum) in &applied {
        match migrations.iter().find(|m| m.version == *version) {
            None => return Err(MigrateError::Unknown { version: *version }),
            Some(m) if checksum(m.sql) != *sum => {
                return Err(MigrateError::Edited {
                    version: *version,
                    name: name.clone(),
                    applied: sum.clone(),
                    current: checksum(m.sql),
                })
            }
            Some(_) => {}
        }
    }

    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: applied.len(),
    };
    for m in migrations {
        if applied.iter().any(|(v, _, _)| *v == m.version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(m.sql)
            .await
            .map_err(|source| MigrateError::Failed {
                name: m.name.to_string(),
                source,
            })?;
        tx.execute(
            "INSERT INTO calsync_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(migration = m.name, "applied migration");
        report.applied.push(m.name.to_string());
    }
    Ok(report)
}

/// The name of the role `serve` runs as: a plain SQL identifier
/// (lower-case letters, digits, `_`; 1–63 bytes; not starting with a digit
/// or `pg_`), so it can be quoted into GRANT statements safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRole(String);

impl RuntimeRole {
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && !name.starts_with("pg_")
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(RuntimeRole(name.to_string()))
        } else {
            Err(format!(
                "runtime role {name:?}: use 1-63 lower-case letters, digits and _, \
                 not starting with a digit or pg_"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RuntimeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RuntimeRole::parse(s)
    }
}

/// The statements giving `role` exactly what `serve` needs, and no more:
/// it logs in (no password is set: use the server's authentication, or
/// `ALTER ROLE … PASSWORD`), reads and writes the read models, the
/// credentials and the leases, appends to `events` but never updates or
/// deletes a row of it, reads the migration record, and owns nothing, so
/// it can neither change the schema nor drop the trigger that keeps the log
/// append-only. Idempotent: run after every migration (new tables).
pub fn runtime_grants(role: &RuntimeRole) -> String {
    let r = role.as_str();
    format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}') THEN \
             CREATE ROLE \"{r}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT; \
           END IF; \
           EXECUTE format('GRANT CONNECT ON DATABASE %I TO \"{r}\"', current_database()); \
         END $$;
         GRANT USAGE ON SCHEMA public TO \"{r}\";
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO \"{r}\";
         REVOKE UPDATE, DELETE, TRUNCATE ON events FROM \"{r}\";
         REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON calsync_migrations FROM \"{r}\";
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO \"{r}\";"
    )
}

/// Creates (if missing) and grants the runtime role; run as the owner.
pub async fn grant_runtime_role(client: &Client, role: &RuntimeRole) -> Result<(), MigrateError> {
    client
        .batch_execute(&runtime_grants(role))
        .await
        .map_err(|source| MigrateError::Failed {
            name: format!("runtime role {}", role.as_str()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_role_names_are_plain_identifiers() {
        for ok in ["calsync_rt", "rt", "a1_b2"] {
            assert!(RuntimeRole::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1rt",
            "pg_rt",
            "Rt",
            "rt\"; DROP",
            "r t",
            &"r".repeat(64),
        ] {
            assert!(RuntimeRole::parse(bad).is_err(), "{bad}");
        }
        let sql = runtime_grants(&RuntimeRole::parse("rt").unwrap());
        assert!(sql.contains("REVOKE UPDATE, DELETE, TRUNCATE ON events"));
    }

    #[test]
    fn migrations_are_numbered_in_order_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }

    #[test]
    fn checksums_change_when_the_sql_changes() {
        assert_ne!(
            checksum("CREATE TABLE a ()"),
            checksum("CREATE TABLE a ( )")
        );
        assert_eq!(checksum("x").len(), 64);
    }
}
