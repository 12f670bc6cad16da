//! `bench latency`: an external change in the Google simulator → its push
//! notification to calsync's HTTP edge → the connection actor → a sync
//! against the simulator → the busy interval visible in `busy_intervals`
//! (what the platform API reads). Changes arrive at a steady rate spread
//! over many connections; the simulator answers instantly.

use super::report::{percentile, Figure, Machine, Report, Target};
use super::setup::{self, BenchDb, Served};
use super::stages::{self, Change};
use super::visible::{self, VisibilityProbe, POLL};
use crate::actors::runtime::SyncRuntime;
use crate::providers::{AuthSession, ProviderEndpoints};
use crate::store::credentials::CredentialVault;
use anyhow::Context;
use calsim::{SimConfig, Simulators};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LatencyOptions {
    /// Google connections the changes are spread over.
    pub connections: usize,
    /// Calendar changes per second, all connections together.
    pub rate: u64,
    /// Seconds of steady changes.
    pub seconds: u64,
}

impl LatencyOptions {
    pub fn full() -> Self {
        LatencyOptions {
            connections: 100,
            rate: 500,
            seconds: 30,
        }
    }

    pub fn quick() -> Self {
        LatencyOptions {
            connections: 20,
            rate: 100,
            seconds: 5,
        }
    }
}

pub async fn run(options: &LatencyOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let db = BenchDb::start(48).await?;
    let sim = Simulators::start(SimConfig::default()).await?;
    let settings = db.settings_all_on().await?;
    let endpoints = ProviderEndpoints {
        google_api: sim.google_base_url(),
        google_token: sim.google_token_url(),
        graph_api: sim.graph_base_url(),
        graph_token: sim.graph_token_url("common"),
    };
    let vault = CredentialVault::random();
    let mut runtime = SyncRuntime::new(
        endpoints,
        vault.clone(),
        db.store.clone(),
        Arc::new(settings.clone()),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    runtime.webhook_base = Some(format!("http://{}", listener.local_addr()?));
    let served = Served::start_with(
        &db,
        settings,
        setup::actor_settings(),
        Some(Arc::new(runtime)),
        Some(listener),
    )
    .await?;

    let mut report = Report::new("latency", Machine::detect(db.server_version().await));
    report.config("connections", options.connections);
    report.config("changes_per_second", options.rate);
    report.config("seconds", options.seconds);
    report.config("poll_resolution_ms", POLL.as_millis() as u64);
    report.config(
        "visibility",
        "each pending busy row looked up by primary key every poll_resolution_ms",
    );
    report.config(
        "path",
        "simulator upsert_event -> Google push (HTTP) -> /webhooks/google -> actor commits \
         notification -> sync task: events.list with sync token -> RecordPage -> \
         busy_intervals row committed; visibility polled from the database",
    );

    // Connections through the real path: the simulator's accounts, sealed
    // credentials, Create through the actors; channels open by themselves.
    let accounts: Vec<String> = (0..options.connections)
        .map(|i| format!("latency-{i}@example.com"))
        .collect();
    let made = setup::create_connections_with(
        &served.connections,
        &accounts,
        |account| {
            let a = sim.google().create_account(account);
            AuthSession {
                client_id: a.client_id,
                client_secret: a.client_secret,
                refresh_token: a.refresh_token,
                access_token: None,
                access_expires_at: None,
                refresh_token_rotated: false,
                access_token_refreshed: false,
            }
        },
        &vault,
        &db,
    )
    .await?;
    let client = db.client().await?;
    wait_until_ready(&client, made.len()).await?;

    // Where each change will show: its connection's calendar and channel.
    let calendar_of = visible::calendar_of_connections(&client).await?;
    let channel_of = visible::channel_of_connections(&client).await?;
    let places: Vec<(String, String, String)> = made
        .iter()
        .map(|id| {
            let id = id.to_string();
            let calendar = calendar_of.get(&id).cloned().unwrap_or_default();
            let channel = channel_of.get(&id).cloned().unwrap_or_default();
            (id, calendar, channel)
        })
        .collect();

    // Steady changes: event `lat<n>` for tomorrow on connection n mod N.
    let probe = VisibilityProbe::start(db.client().await?).await?;
    let period = Duration::from_secs_f64(1.0 / options.rate.max(1) as f64);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = options.rate * options.seconds;
    let tomorrow = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc()
        + chrono::Duration::days(1);
    let gen_started = Instant::now();
    let changes_from = chrono::Utc::now();
    let mut changes = Vec::with_capacity(total as usize);
    for n in 0..total {
        ticker.tick().await;
        let i = (n as usize) % accounts.len();
        let (connection, calendar, channel) = &places[i];
        let start = tomorrow + chrono::Duration::minutes((n % 600) as i64);
        // Google ids are base32hex (a-v, 0-9), at least 5 characters.
        let id = format!("lat{n:07}");
        let event = serde_json::json!({
            "id": id,
            "summary": "busy",
            "start": {"dateTime": start.to_rfc3339()},
            "end": {"dateTime": (start + chrono::Duration::minutes(30)).to_rfc3339()},
        });
        probe.expect(id.clone(), connection, calendar);
        changes.push(Change {
            event_id: id,
            account: accounts[i].clone(),
            connection: connection.clone(),
            channel: channel.clone(),
            made: chrono::Utc::now(),
        });
        sim.google()
            .upsert_event(&accounts[i], "primary", event)
            .map_err(|e| anyhow::anyhow!("simulator refused a change: {e:?}"))?;
    }
    let gen_seconds = gen_started.elapsed().as_secs_f64();
    let (seen, missing) = probe.finish(Duration::from_secs(20)).await?;
    let ms: Vec<f64> = seen.iter().map(|s| s.ms).collect();
    let notifications: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'notification_accepted'",
            &[],
        )
        .await?
        .get(0);

    // Where the commits went: what each change cost the log.
    for row in client
        .query(
            "SELECT event_type, count(*) FROM events WHERE stream LIKE 'connection-%' \
             GROUP BY 1 ORDER BY 2 DESC",
            &[],
        )
        .await?
    {
        let (event_type, n): (String, i64) = (row.get(0), row.get(1));
        report.figure(Figure::single(
            &format!("log: {event_type}"),
            "events",
            n as f64,
        ));
    }
    // What the changes cost the provider: every API request the simulator
    // logged from the first change on (the changes themselves are made
    // through the simulator's own API, not logged). The floor is one
    // incremental list per burst of changes on a connection.
    let calls = sim.requests_since(changes_from);
    let log = stages::log_times(&client, changes_from).await?;
    stages::report_stages(
        &mut report,
        &changes,
        &log,
        &sim.deliveries(),
        &calls,
        &seen,
    );
    let lists = calls.iter().filter(|r| r.endpoint == "events.list").count();
    report.figure(Figure::single(
        "provider calls per change",
        "calls",
        calls.len() as f64 / total.max(1) as f64,
    ));
    report.figure(Figure::single(
        "events.list calls per change",
        "calls",
        lists as f64 / total.max(1) as f64,
    ));
    report.figure(Figure::single("changes made", "changes", total as f64));
    report.figure(Figure::single(
        "achieved change rate",
        "changes/s",
        total as f64 / gen_seconds,
    ));
    report.figure(Figure::single(
        "notifications committed",
        "events",
        notifications as f64,
    ));
    report.figure(Figure::single(
        "busy intervals seen",
        "intervals",
        ms.len() as f64,
    ));
    report.figure(Figure::single(
        "never visible within 20 s",
        "changes",
        missing as f64,
    ));
    report.figure(Figure::single("latency p50", "ms", percentile(&ms, 50.0)));
    report.figure(Figure::single("latency p90", "ms", percentile(&ms, 90.0)));
    report.figure(Figure::single("latency p99", "ms", percentile(&ms, 99.0)));
    report.figure(Figure::single("latency max", "ms", percentile(&ms, 100.0)));
    report.targets.push(Target::at_most(
        "p99 change -> busy interval visible",
        percentile(&ms, 99.0),
        100.0,
        "ms",
    ));
    served.stop();
    sim.shutdown().await;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Every connection has an open push channel and a finished first sync.
pub(super) async fn wait_until_ready(
    client: &tokio_postgres::Client,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM channels WHERE closed_at IS NULL), \
                        (SELECT count(*) FROM connection_calendars WHERE has_cursor)",
                &[],
            )
            .await?;
        let (channels, synced): (i64, i64) = (row.get(0), row.get(1));
        if channels as usize >= n && synced as usize >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "after 120 s only {channels} of {n} channels open and {synced} first syncs done"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
