//! Test support shared by the integration tests, the drills and the
//! benchmarks: one private PostgreSQL cluster per process, a fresh database
//! per test.
//!
//! Each database is cloned from a migrated template (`CREATE DATABASE …
//! TEMPLATE`), which takes tens of milliseconds, so no test ever shares
//! state with another. The cluster dies with the process (parent-death
//! signal) and its directory is swept by the next run.

use crate::database;
use crate::pg::{Cluster, Durability};
use crate::store::{migrate, PgEventStore};
use deadpool_postgres::Pool;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use tokio_postgres::NoTls;

const TEMPLATE: &str = "calsync_template";

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static TEMPLATE_READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The process-wide test cluster (fsync off: tests only).
pub fn cluster() -> &'static Cluster {
    let result = CLUSTER
        .get_or_init(|| Cluster::start_temporary(Durability::Fast).map_err(|e| e.to_string()));
    match result {
        Ok(cluster) => cluster,
        // A test cannot run without its database: fail loudly, never skip.
        Err(e) => panic!("cannot start the private test PostgreSQL: {e}"),
    }
}

/// A fresh, migrated database of its own.
pub struct TestDb {
    pub name: String,
    pub pool: Pool,
    pub config: tokio_postgres::Config,
    /// One store per test database: its clones share the group-commit queue.
    store: PgEventStore,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let cluster = cluster();
        TEMPLATE_READY
            .get_or_init(|| async {
                create_template(cluster)
                    .await
                    .unwrap_or_else(|e| panic!("cannot create the template database: {e:#}"))
            })
            .await;
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(cluster, "postgres").await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let config = tokio_postgres::Config::from_str(&cluster.connection_string(&name))
            .unwrap_or_else(|e| panic!("bad test connection string: {e}"));
        let pool = database::pool(config.clone(), 32)
            .unwrap_or_else(|e| panic!("cannot build the test pool: {e}"));
        TestDb {
            store: PgEventStore::new(pool.clone()),
            name,
            pool,
            config,
        }
    }

    /// The libpq connection string, usable as `DATABASE_URL`.
    pub fn url(&self) -> String {
        cluster().connection_string(&self.name)
    }

    pub fn store(&self) -> PgEventStore {
        self.store.clone()
    }

    /// A store on this database connected as `role` (which must exist).
    pub fn store_as(&self, role: &str) -> PgEventStore {
        let mut config = self.config.clone();
        config.user(role);
        let pool = database::pool(config, 32)
            .unwrap_or_else(|e| panic!("cannot build the pool of {role}: {e}"));
        PgEventStore::new(pool)
    }

    /// The connection string as `role`, usable as `DATABASE_URL`.
    pub fn url_as(&self, role: &str) -> String {
        self.url().replace("user=postgres", &format!("user={role}"))
    }

    /// A direct (unpooled) connection, for tests that hold transactions.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.name));
        tokio::spawn(connection);
        client
    }
}

async fn connect(cluster: &Cluster, db: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&cluster.connection_string(db), NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster: {e}"));
    tokio::spawn(connection);
    client
}

async fn create_template(cluster: &Cluster) -> anyhow::Result<()> {
    database::ensure_database(cluster, TEMPLATE).await?;
    let (mut client, connection) =
        tokio_postgres::connect(&cluster.connection_string(TEMPLATE), NoTls).await?;
    let task = tokio::spawn(connection);
    migrate::run(&mut client).await?;
    drop(client);
    // CREATE DATABASE … TEMPLATE fails while anyone is connected to the
    // template: wait for this connection to be fully closed.
    let _ = task.await;
    Ok(())
}

/// The `promtool` to check alert rules and `/metrics` with: the one on
/// `PATH`, else installed once per process by `ops/install-promtool.sh`
/// (Debian's `prometheus` package, the binary only), so a plain `cargo
/// test` on a fresh machine checks the rules instead of skipping them.
/// Panics with what to do when it cannot be had: a missing checker must
/// fail the test, never pass it silently.
pub fn promtool() -> &'static str {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let on_path = std::process::Command::new("promtool")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if on_path {
            return Ok(());
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/install-promtool.sh");
        let out = std::process::Command::new("bash")
            .arg(script)
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{script} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(why) = ready {
        panic!(
            "promtool is missing and could not be installed ({why}); install Debian's \
             `prometheus` package or put promtool on PATH: the alert rules and /metrics \
             are not checked without it"
        );
    }
    "promtool"
}
