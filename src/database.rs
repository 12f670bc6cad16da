//! Opening calsync's database: an existing server from `DATABASE_URL`, or a
//! private cluster started on the spot. Either way the schema is migrated
//! and a connection pool is returned.

use crate::config::{defaults, DatabaseSource, Settings};
use crate::pg::tls::DbConnect;
use crate::pg::{Cluster, ClusterOptions};
use crate::store::migrate::{self, MigrationReport};
use crate::store::PgEventStore;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

/// How long a caller waits for a pooled connection before the database
/// counts as unavailable (and the HTTP edge answers 503).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// An open database: the pool, and the private cluster if calsync runs one
/// (kept alive as long as this value).
#[derive(Clone)]
pub struct Database {
    pub pool: Pool,
    pub cluster: Option<Arc<Cluster>>,
    /// Where the database is, for operators (no password).
    pub location: String,
    /// One store per process: its clones share the group-commit queue.
    store: PgEventStore,
}

impl Database {
    /// Connects (starting the private cluster if configured), creates the
    /// database if it is missing and applies pending migrations.
    pub async fn open(settings: &Settings) -> anyhow::Result<(Database, MigrationReport)> {
        let (connect, cluster, location) = match &settings.database {
            DatabaseSource::Url(url) => {
                let mut connect = DbConnect::from_url(url)?;
                session_settings(&mut connect.config);
                let location = format!("{} ({})", redact(&connect.config), connect.describe());
                (connect, None, location)
            }
            DatabaseSource::Private(dir) => {
                let options = ClusterOptions::new(dir);
                let cluster =
                    tokio::task::spawn_blocking(move || Cluster::start(options)).await??;
                let mut config = tokio_postgres::Config::from_str(
                    &cluster.connection_string(defaults::DB_NAME),
                )?;
                session_settings(&mut config);
                ensure_database(&cluster, defaults::DB_NAME).await?;
                let location = format!(
                    "private cluster in {} (socket {})",
                    cluster.data_dir().display(),
                    cluster.socket_dir().display()
                );
                (DbConnect::plain(config), Some(Arc::new(cluster)), location)
            }
        };
        let pool = pool_with(&connect, settings.db_pool_size)?;
        let mut client = connect.connect().await?;
        let report = migrate::run(&mut client).await?;
        drop(client);
        Ok((
            Database {
                store: PgEventStore::new(pool.clone()),
                pool,
                cluster,
                location,
            },
            report,
        ))
    }

    /// Whether this connection's role is a superuser, and whether it owns
    /// the event log (and so could drop the trigger that keeps it
    /// append-only). `serve` should be neither (`calsync migrate
    /// --runtime-role`).
    pub async fn privileges(&self) -> anyhow::Result<Privileges> {
        let client = self.store.pool().get().await?;
        let row = client
            .query_one(
                "SELECT r.rolsuper, \
                        COALESCE((SELECT pg_has_role(current_user, c.relowner, 'USAGE') \
                                  FROM pg_class c WHERE c.oid = to_regclass('events')), false), \
                        current_user::text \
                 FROM pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await?;
        Ok(Privileges {
            superuser: row.try_get(0)?,
            owner: row.try_get(1)?,
            role: row.try_get(2)?,
        })
    }

    pub fn store(&self) -> PgEventStore {
        self.store.clone()
    }

    /// An orderly end: the pool's connections close first (their tasks are
    /// aborted, so none of them reports the server going away as a
    /// `deadpool.postgres` "Connection error" warning), then the private
    /// cluster, if this was its last holder, stops with a checkpoint.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.pool.close();
        let cluster = self.cluster.clone();
        drop(self);
        if let Some(cluster) = cluster.and_then(Arc::into_inner) {
            tokio::task::spawn_blocking(move || cluster.stop(crate::pg::StopMode::Fast)).await??;
        }
        Ok(())
    }

    /// Runs `work` on this database, then shuts it down in order whatever
    /// `work` returned: what one-shot operator commands do.
    pub async fn run_then_shutdown<T, F>(self, work: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = anyhow::Result<T>>,
    {
        let result = work.await;
        let closed = self.shutdown().await;
        let value = result?;
        closed?;
        Ok(value)
    }
}

/// Settings of every calsync session, unless the configured options set
/// them already:
/// - `client_min_messages=warning`: server messages below WARNING (e.g.
///   `NOTICE: relation … already exists, skipping`) are not sent: the
///   driver would log each one at INFO, and an operator command prints its
///   answer only;
/// - `jit=off`: calsync's queries are short index reads and small writes,
///   never long enough to win back a compilation. The availability read's
///   estimated cost grows with its reach spans (≈ 2,900 each), so past
///   about 35 spans (seven weeks of weekdays) it passes `jit_above_cost`:
///   measured on 200,000 busy rows, 30 spans ran in 1.6 ms and 36 spans in
///   10.5–51 ms, 8–10 ms of it compiling, on every execution.
pub fn session_settings(config: &mut tokio_postgres::Config) {
    let mut options = config.get_options().unwrap_or_default().to_string();
    for (name, setting) in [
        ("client_min_messages", "-c client_min_messages=warning"),
        ("jit", "-c jit=off"),
    ] {
        let named = options
            .split_whitespace()
            .any(|o| o.starts_with(&format!("{name}=")));
        if !named {
            if !options.is_empty() {
                options.push(' ');
            }
            options.push_str(setting);
        }
    }
    config.options(&options);
}

/// A plain-text connection pool over `config` (the private cluster's
/// socket) that gives up waiting after [`POOL_WAIT`].
pub fn pool(config: tokio_postgres::Config, size: usize) -> anyhow::Result<Pool> {
    pool_with(&DbConnect::plain(config), size)
}

/// A connection pool with `connect`'s TLS.
pub fn pool_with(connect: &DbConnect, size: usize) -> anyhow::Result<Pool> {
    let config = connect.config.clone();
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &connect.tls {
        None => Manager::from_config(config, NoTls, manager_config),
        Some(tls) => Manager::from_config(config, tls.clone(), manager_config),
    };
    Ok(Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
        .runtime(Runtime::Tokio1)
        .build()?)
}

/// Creates `name` on the cluster if it does not exist yet.
pub async fn ensure_database(cluster: &Cluster, name: &str) -> anyhow::Result<()> {
    let (client, connection) =
        tokio_postgres::connect(&cluster.connection_string("postgres"), NoTls).await?;
    let conn_task = tokio::spawn(connection);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        // The name is one of ours, never user input; quote it anyway.
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(e) = client.batch_execute(&sql).await {
            // Another process may have created it at the same moment.
            if e.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(e.into());
            }
        }
    }
    drop(client);
    let _ = conn_task.await;
    Ok(())
}

/// Where a connection string leads, without its password, for logs.
fn redact(cfg: &tokio_postgres::Config) -> String {
    format!(
        "{:?} db={}",
        cfg.get_hosts(),
        cfg.get_dbname().unwrap_or("(default)")
    )
}

/// What the connected role may do beyond what `serve` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    pub superuser: bool,
    /// Owns the event log (or is a member of its owner).
    pub owner: bool,
    pub role: String,
}

#[cfg(test)]
mod tests {
    use super::session_settings;

    fn options_after(existing: Option<&str>) -> String {
        let mut config = tokio_postgres::Config::new();
        if let Some(existing) = existing {
            config.options(existing);
        }
        session_settings(&mut config);
        config.get_options().unwrap_or_default().to_string()
    }

    #[test]
    fn sessions_get_quiet_notices_and_no_jit_unless_configured_otherwise() {
        assert_eq!(
            options_after(None),
            "-c client_min_messages=warning -c jit=off"
        );
        assert_eq!(
            options_after(Some("-c jit=on")),
            "-c jit=on -c client_min_messages=warning"
        );
        assert_eq!(
            options_after(Some(
                "-c client_min_messages=notice -c statement_timeout=5s"
            )),
            "-c client_min_messages=notice -c statement_timeout=5s -c jit=off"
        );
    }
}
