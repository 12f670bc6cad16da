//! The world a benchmark runs in: a private PostgreSQL with full
//! durability (fsync on, PostgreSQL's defaults — never the test cluster's
//! fsync=off), calsync's schema, the feature flags on, the connection
//! actors, and (when asked) calsync's HTTP server on loopback. Plus the
//! raw-PostgreSQL side of each comparison: `pgbench` against the same
//! server.

use crate::actors::runtime::SyncRuntime;
use crate::actors::{ActorSettings, Connections};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use crate::core::settings::{Actor, Flag, SettingsCommand};
use crate::http::{self, AppState};
use crate::pg::{Cluster, Durability};
use crate::settings::SettingsHandle;
use crate::store::{migrate, PgEventStore};
use anyhow::Context;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use uuid::Uuid;

const DB_NAME: &str = "calsync_bench";

/// A private cluster with calsync's schema, deleted when dropped.
pub struct BenchDb {
    pub cluster: Arc<Cluster>,
    pub store: PgEventStore,
    pub config: tokio_postgres::Config,
}

/// The pool closes before the cluster stops: its connections end quietly
/// instead of each reporting the server's shutdown as a `deadpool.postgres`
/// "Connection error" warning at the end of every benchmark.
impl Drop for BenchDb {
    fn drop(&mut self) {
        self.store.pool().close();
    }
}

impl BenchDb {
    /// Starts a fresh cluster with `Durability::Full` and a pool of
    /// `pool_size` connections.
    pub async fn start(pool_size: usize) -> anyhow::Result<BenchDb> {
        let cluster =
            tokio::task::spawn_blocking(|| Cluster::start_temporary(Durability::Full)).await??;
        crate::database::ensure_database(&cluster, DB_NAME).await?;
        let mut config = tokio_postgres::Config::from_str(&cluster.connection_string(DB_NAME))?;
        // The sessions `calsync serve` opens (pgbench keeps the server's).
        crate::database::session_settings(&mut config);
        let db = BenchDb {
            cluster: Arc::new(cluster),
            store: PgEventStore::new(crate::database::pool(config.clone(), pool_size)?),
            config,
        };
        let mut client = db.client().await?;
        migrate::run(&mut client).await?;
        Ok(db)
    }

    /// A direct connection (bulk loads, polling, statistics).
    pub async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// `PostgreSQL 15.x …` as the server reports it.
    pub async fn server_version(&self) -> String {
        match self.client().await {
            Ok(c) => match c.query_one("SHOW server_version", &[]).await {
                Ok(row) => format!("PostgreSQL {}", row.get::<_, String>(0)),
                Err(_) => "PostgreSQL (unknown version)".into(),
            },
            Err(_) => "PostgreSQL (unreachable)".into(),
        }
    }

    /// The settings stream with every feature flag on (they default to
    /// OFF, and the webhook edge answers 403 while they are).
    pub async fn settings_all_on(&self) -> anyhow::Result<SettingsHandle> {
        let settings =
            SettingsHandle::start(self.store.clone(), Duration::from_millis(200)).await?;
        for flag in [Flag::SyncEnabled, Flag::JobsEnabled, Flag::WebhooksEnabled] {
            settings
                .apply(
                    SettingsCommand::SetFlag {
                        flag,
                        enabled: true,
                        reason: "benchmark".into(),
                    },
                    Actor::parse("bench")?,
                )
                .await?;
        }
        Ok(settings)
    }

    /// Runs pgbench with `script` against this database and returns what
    /// it measured.
    pub async fn pgbench(
        &self,
        script: &str,
        clients: usize,
        seconds: u64,
    ) -> anyhow::Result<PgBench> {
        self.pgbench_with(script, clients, seconds, &[]).await
    }

    /// [`BenchDb::pgbench`] with extra pgbench options (e.g. `-M prepared`).
    pub async fn pgbench_with(
        &self,
        script: &str,
        clients: usize,
        seconds: u64,
        extra: &[&str],
    ) -> anyhow::Result<PgBench> {
        let dir = tempdir()?;
        let path = dir.join("script.sql");
        std::fs::write(&path, script)?;
        let threads = clients.clamp(1, 2);
        let mut cmd = Command::new("pgbench");
        cmd.arg("-h")
            .arg(self.cluster.socket_dir())
            .args([
                "-p",
                &self.cluster.port().to_string(),
                "-U",
                "postgres",
                "-n",
            ])
            .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
            .args(extra)
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(&path)
            .arg(DB_NAME);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await?
            .context("running pgbench (apt-get install postgresql-client)")?;
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            anyhow::bail!(
                "pgbench failed: {}{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        PgBench::parse(&stdout).with_context(|| format!("unexpected pgbench output:\n{stdout}"))
    }
}

/// What pgbench printed.
#[derive(Debug, Clone, Copy)]
pub struct PgBench {
    pub tps: f64,
    pub latency_avg_ms: f64,
    pub transactions: u64,
}

impl PgBench {
    fn parse(out: &str) -> Option<PgBench> {
        let value = |prefix: &str| -> Option<&str> {
            out.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        };
        Some(PgBench {
            tps: value("tps =")?.parse().ok()?,
            latency_avg_ms: value("latency average =")?.parse().ok()?,
            transactions: value("number of transactions actually processed:")?
                .split('/')
                .next()?
                .parse()
                .ok()?,
        })
    }
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("calsync-bench-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Actor settings for benchmarks: nothing passivates or quarantines
/// behind the benchmark's back.
pub fn actor_settings() -> ActorSettings {
    ActorSettings {
        idle_timeout: Duration::from_secs(3600),
        max_restarts: u32::MAX,
        ..ActorSettings::default()
    }
}

/// The actors and (optionally) the HTTP server in front of them.
pub struct Served {
    pub connections: Connections,
    pub settings: SettingsHandle,
    /// `http://127.0.0.1:PORT` when served.
    pub base: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Served {
    /// Starts the supervisor (with `sync` if given) and, with `listener`,
    /// calsync's HTTP server on it — the same wiring as `calsync serve`.
    pub async fn start(
        db: &BenchDb,
        actors: ActorSettings,
        sync: Option<Arc<SyncRuntime>>,
        listener: Option<tokio::net::TcpListener>,
    ) -> anyhow::Result<Served> {
        let settings = db.settings_all_on().await?;
        Served::start_with(db, settings, actors, sync, listener).await
    }

    /// Like [`Served::start`] with settings made earlier (the sync
    /// runtime's gates are those settings).
    pub async fn start_with(
        db: &BenchDb,
        settings: SettingsHandle,
        actors: ActorSettings,
        sync: Option<Arc<SyncRuntime>>,
        listener: Option<tokio::net::TcpListener>,
    ) -> anyhow::Result<Served> {
        let connections = Connections::start_with_sync(db.store.clone(), actors, sync).await?;
        let mut base = None;
        let mut shutdown = None;
        if let Some(listener) = listener {
            base = Some(format!("http://{}", listener.local_addr()?));
            let state = AppState {
                connect: None,
                channels: Default::default(),
                store: db.store.clone(),
                connections: connections.clone(),
                admin_token: Some(ADMIN_TOKEN.into()),
                drills_enabled: false,
                settings: settings.clone(),
                webhooks: Default::default(),
            };
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(http::serve(listener, state, async {
                let _ = rx.await;
            }));
            shutdown = Some(tx);
        }
        Ok(Served {
            connections,
            settings,
            base,
            shutdown,
        })
    }

    pub fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.connections.shutdown();
    }
}

/// The admin token of benchmark servers (loopback only, thrown away).
pub const ADMIN_TOKEN: &str = "bench-admin";

/// The command that creates a Google connection for `account` with its
/// primary calendar selected.
pub fn create_google(account: &str) -> anyhow::Result<ConnectionCommand> {
    let primary = CalendarId::parse("primary")?;
    Ok(ConnectionCommand::Create {
        platform_provider_id: PlatformProviderId::parse(format!("pp-{account}"))?,
        provider: CalendarProvider::Google,
        account: ExternalAccount::parse(account)?,
        calendars: vec![primary.clone()],
        destination_calendar: Some(primary),
    })
}

/// Runs `f` over `items` with at most `concurrency` in flight, failing on
/// the first error.
pub async fn for_each_concurrent<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    f: F,
) -> anyhow::Result<()>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use futures::StreamExt;
    let mut results = futures::stream::iter(items.into_iter().map(f)).buffer_unordered(concurrency);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// Creates `n` Google connections through their actors (the real path).
pub async fn create_connections(
    connections: &Connections,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<(ConnectionId, String)>> {
    let made: Vec<(ConnectionId, String)> = (0..n)
        .map(|i| {
            (
                ConnectionId::new_random(),
                format!("{prefix}-{i}@example.com"),
            )
        })
        .collect();
    for_each_concurrent(made.clone(), 32, |(id, account)| async move {
        let command = create_google(&account)?;
        connections
            .command(id, command, Uuid::new_v4())
            .await
            .with_context(|| format!("creating {account}"))?;
        Ok(())
    })
    .await?;
    Ok(made)
}

/// Creates one Google connection per account through the actors, with
/// the OAuth grant `grant(account)` sealed in the vault first (what the
/// admin API does), so the actors sync and open channels by themselves.
pub async fn create_connections_with(
    connections: &Connections,
    accounts: &[String],
    grant: impl Fn(&str) -> crate::providers::AuthSession,
    vault: &crate::store::credentials::CredentialVault,
    db: &BenchDb,
) -> anyhow::Result<Vec<ConnectionId>> {
    let mut made = Vec::with_capacity(accounts.len());
    for account in accounts {
        let id = ConnectionId::new_random();
        vault.save(&db.store, id, &grant(account)).await?;
        made.push((id, account.clone()));
    }
    for_each_concurrent(made.clone(), 16, |(id, account)| async move {
        connections
            .command(id, create_google(&account)?, Uuid::new_v4())
            .await
            .with_context(|| format!("creating {account}"))?;
        Ok(())
    })
    .await?;
    Ok(made.into_iter().map(|(id, _)| id).collect())
}

/// This process's resident set size in bytes (`VmRSS` in
/// `/proc/self/status`, which is in kB and needs no page size).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Is `program` on `PATH` (for the pgbench check)?
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_is_parsed() {
        let out = "transaction type: s.sql\nnumber of transactions actually processed: 1234\n\
                   number of failed transactions: 0 (0.000%)\nlatency average = 2.130 ms\n\
                   initial connection time = 3.1 ms\ntps = 15012.345678 (without initial connection time)\n";
        let p = PgBench::parse(out).unwrap();
        assert_eq!(p.transactions, 1234);
        assert!((p.tps - 15012.345678).abs() < 1e-6);
        assert!((p.latency_avg_ms - 2.13).abs() < 1e-9);
    }
}
