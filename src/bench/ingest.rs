//! `bench ingest`: Google webhook notifications over HTTP on loopback —
//! valid, distinct, spread over many connections — authenticated, deduped
//! and durably committed by the connection actors, against `pgbench`
//! inserting one event-shaped row per transaction at the same concurrency
//! on the same server, alternating in the same run.

use super::loadgen::{LoadGen, LoadSpec, RequestTemplate};
use super::report::{percentile, Comparison, Figure, Machine, Report};
use super::setup::{self, BenchDb, Served};
use crate::actors::channel_task::secret_digest;
use crate::core::decide::ConnectionCommand;
use crate::core::dedupe::DedupeKey;
use crate::core::events::ConnectionEvent;
use crate::core::ids::{CalendarId, ConnectionId};
use crate::store::EventMetadata;
use anyhow::Context;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Connections the notifications are spread over.
    pub connections: usize,
    /// Concurrent HTTP clients, and pgbench's `-c`.
    pub concurrency: usize,
    /// Length of each measured run, calsync's and pgbench's alike.
    pub seconds: u64,
    /// Runs of each side (alternating calsync, pgbench).
    pub runs: usize,
    /// Where the HTTP load generator runs: a separate process, as pgbench
    /// is, unless asked otherwise (the figures before issue 22 had it in
    /// the server's process).
    pub load_gen: LoadGen,
}

impl IngestOptions {
    pub fn full() -> Self {
        IngestOptions {
            connections: 1000,
            concurrency: 32,
            seconds: 10,
            runs: 3,
            load_gen: LoadGen::InProcess,
        }
    }

    pub fn quick() -> Self {
        IngestOptions {
            connections: 100,
            concurrency: 32,
            seconds: 3,
            runs: 1,
            load_gen: LoadGen::InProcess,
        }
    }
}

/// A channel the load generator can notify: what Google would send.
#[derive(Clone)]
struct Channel {
    id: String,
    token: String,
    resource: String,
}

pub async fn run(options: &IngestOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    // Enough pooled connections that the pool never limits the clients:
    // each request holds one for the channel lookup, then one for the append.
    let db = BenchDb::start(options.concurrency * 2 + 8).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let served = Served::start(&db, setup::actor_settings(), None, Some(listener)).await?;
    let base = served
        .base
        .clone()
        .context("the HTTP server has no address")?;
    let channels = open_channels(&served, options.connections).await?;
    create_baseline_table(&db).await?;
    let script = pgbench_script()?;

    let mut report = Report::new("ingest", Machine::detect(db.server_version().await));
    report.config("connections", options.connections);
    report.config("concurrency", options.concurrency);
    report.config("seconds_per_run", options.seconds);
    report.config("runs", options.runs);
    report.config("load_generator", options.load_gen.describe());
    report.config(
        "durability",
        "fsync on (PostgreSQL defaults), same server for both",
    );
    report.config(
        "calsync",
        "POST /webhooks/google (headers only) -> flag + header checks -> channel lookup + \
         constant-time token check -> connection actor: dedupe window, append \
         notification_accepted + read models in one transaction -> 200; sync off \
         (no provider runtime) so only ingest is measured",
    );
    report.config(
        "pgbench",
        format!(
            "pgbench -n -c {} -j 2 -T {} : one INSERT of an event-shaped row into bench_events \
             (LIKE events INCLUDING ALL) per transaction",
            options.concurrency, options.seconds
        ),
    );

    let requests = notifications(&base, &channels);
    let mut counter = 1;
    let (mut rates, mut p50s, mut p99s, mut errors) = (vec![], vec![], vec![], vec![]);
    let (mut pg_rates, mut pg_latency) = (vec![], vec![]);
    let (mut flooded_rates, mut scrape_rates) = (vec![], vec![]);
    for _ in 0..options.runs {
        let run = load(&requests, options, &mut counter).await?;
        rates.push(run.accepted as f64 / run.seconds);
        // The same load while /metrics is scraped as fast as it answers:
        // scrapes render memory, so ingest must keep its rate.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood = tokio::spawn(scrape_flood(base.clone(), stop.clone()));
        let flooded = load(&requests, options, &mut counter).await?;
        stop.store(true, Ordering::Relaxed);
        let scrapes = flood.await?;
        flooded_rates.push(flooded.accepted as f64 / flooded.seconds);
        scrape_rates.push(scrapes as f64 / flooded.seconds);
        p50s.push(percentile(&run.latencies_ms, 50.0));
        p99s.push(percentile(&run.latencies_ms, 99.0));
        errors.push(run.errors as f64);
        let pg = db
            .pgbench(&script, options.concurrency, options.seconds)
            .await?;
        pg_rates.push(pg.tps);
        pg_latency.push(pg.latency_avg_ms);
    }
    let committed = count_notifications(&db).await?;
    report.figure(Figure::new("calsync accepted/s", "req/s", rates));
    report.figure(Figure::new("calsync latency p50", "ms", p50s));
    report.figure(Figure::new("calsync latency p99", "ms", p99s));
    report.figure(Figure::new(
        "calsync non-2xx or failed requests",
        "count",
        errors,
    ));
    report.figure(Figure::new(
        "calsync accepted/s during a /metrics flood",
        "req/s",
        flooded_rates,
    ));
    report.figure(Figure::new(
        "/metrics scrapes/s during the flood",
        "req/s",
        scrape_rates,
    ));
    report.figure(Figure::new("pgbench single-row INSERT", "tps", pg_rates));
    report.figure(Figure::new("pgbench latency average", "ms", pg_latency));
    report.figure(Figure::single(
        "notification_accepted events committed",
        "events",
        committed as f64,
    ));
    report.comparisons.push(Comparison::new(
        "ingest accepted/s vs pgbench INSERT tps",
        report.median_of("calsync accepted/s").unwrap_or(0.0),
        "pgbench",
        report.median_of("pgbench single-row INSERT").unwrap_or(0.0),
        Some(1.0),
    ));
    report.comparisons.push(Comparison::new(
        "ingest accepted/s during a /metrics flood vs without",
        report
            .median_of("calsync accepted/s during a /metrics flood")
            .unwrap_or(0.0),
        "no flood",
        report.median_of("calsync accepted/s").unwrap_or(0.0),
        Some(0.9),
    ));
    report.notes.push(format!(
        "the /metrics flood: {SCRAPERS} clients scraping every {} ms (about 100/s) \
         while the same ingest load runs; scrapes render memory and never take a \
         database connection",
        SCRAPE_PAUSE.as_millis()
    ));
    report.notes.push(
        "notifications for different connections that arrive together are committed in one \
         transaction (group commit, src/store/group_commit.rs; see calsync_append_batch_size); \
         the load generator, calsync and PostgreSQL share the machine's CPUs; the load \
         generator runs where load_generator says (a separate process, like pgbench, by default)"
            .into(),
    );
    served.stop();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Creates `n` connections through their actors and records one open push
/// channel on each, exactly as the channel task would after `events.watch`
/// (same command, same stored digest), so the token is known here.
async fn open_channels(served: &Served, n: usize) -> anyhow::Result<Vec<Channel>> {
    let made = setup::create_connections(&served.connections, "ingest", n).await?;
    let channels: Vec<(ConnectionId, Channel)> = made
        .iter()
        .enumerate()
        .map(|(i, (id, _))| {
            (
                *id,
                Channel {
                    id: format!("bench-channel-{i}"),
                    token: Uuid::new_v4().simple().to_string(),
                    resource: format!("bench-resource-{i}"),
                },
            )
        })
        .collect();
    let connections = &served.connections;
    setup::for_each_concurrent(channels.clone(), 32, |(id, ch)| async move {
        let command = ConnectionCommand::RecordChannelOpened {
            calendar: CalendarId::parse("primary")?,
            channel_id: ch.id.clone(),
            resource_id: ch.resource.clone(),
            secret_sha256: secret_digest(&ch.token),
            expires_at: chrono::Utc::now() + chrono::Duration::days(7),
        };
        connections
            .command(id, command, Uuid::new_v4())
            .await
            .with_context(|| format!("opening channel {}", ch.id))?;
        Ok(())
    })
    .await?;
    Ok(channels.into_iter().map(|(_, c)| c).collect())
}

/// Clients of the /metrics flood, and the pause each takes between two
/// scrapes: 100 scrapes/s together, 1,500 times what one Prometheus
/// scraping every 15 s asks (an unpaced flood would only measure how CPU
/// is shared on this 2-core machine).
const SCRAPERS: usize = 4;
const SCRAPE_PAUSE: Duration = Duration::from_millis(40);

/// Scrapes `/metrics` with [`SCRAPERS`] clients until `stop`; how many
/// scrapes were answered 200.
async fn scrape_flood(base: String, stop: Arc<std::sync::atomic::AtomicBool>) -> u64 {
    let client = reqwest::Client::new();
    let url = format!("{base}/metrics");
    let mut scrapers = Vec::new();
    for _ in 0..SCRAPERS {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        scrapers.push(tokio::spawn(async move {
            let mut answered = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = client.get(&url).send().await {
                    if r.status().is_success() && r.bytes().await.is_ok() {
                        answered += 1;
                    }
                }
                tokio::time::sleep(SCRAPE_PAUSE).await;
            }
            answered
        }));
    }
    let mut total = 0;
    for s in scrapers {
        total += s.await.unwrap_or(0);
    }
    total
}

struct LoadRun {
    accepted: u64,
    errors: u64,
    seconds: f64,
    latencies_ms: Vec<f64>,
}

/// What Google would send: one request per channel, headers only, the
/// message number `{n}` distinct over the whole benchmark.
fn notifications(base: &str, channels: &[Channel]) -> Vec<RequestTemplate> {
    channels
        .iter()
        .map(|ch| RequestTemplate {
            url: format!("{base}/webhooks/google"),
            headers: vec![
                ("X-Goog-Channel-ID".into(), ch.id.clone()),
                ("X-Goog-Channel-Token".into(), ch.token.clone()),
                ("X-Goog-Resource-ID".into(), ch.resource.clone()),
                ("X-Goog-Resource-State".into(), "exists".into()),
                ("X-Goog-Message-Number".into(), "{n}".into()),
            ],
            body: None,
        })
        .collect()
}

/// `concurrency` clients of the load generator, each sending its next
/// notification as soon as the previous one is answered, for `seconds`,
/// round-robin over the channels.
async fn load(
    requests: &[RequestTemplate],
    options: &IngestOptions,
    counter: &mut u64,
) -> anyhow::Result<LoadRun> {
    let result = options
        .load_gen
        .run(&LoadSpec {
            requests: requests.to_vec(),
            concurrency: options.concurrency,
            seconds: options.seconds as f64,
            counter_start: *counter,
            rate: None,
        })
        .await?;
    *counter = result.counter_end;
    Ok(LoadRun {
        accepted: result.ok,
        errors: result.errors,
        seconds: result.seconds,
        latencies_ms: result.latencies_ms,
    })
}

async fn create_baseline_table(db: &BenchDb) -> anyhow::Result<()> {
    db.client()
        .await?
        .batch_execute("CREATE TABLE bench_events (LIKE events INCLUDING ALL)")
        .await?;
    Ok(())
}

/// One INSERT of a row shaped like calsync's: a real
/// `notification_accepted` payload and the metadata an actor writes.
fn pgbench_script() -> anyhow::Result<String> {
    let event = ConnectionEvent::NotificationAccepted {
        key: DedupeKey::google("bench-channel-123", 123_456)
            .as_str()
            .to_string(),
        channel_id: "bench-channel-123".into(),
        received_at: chrono::Utc::now(),
    };
    let (event_type, payload) = event.to_parts()?;
    let metadata = serde_json::to_string(&EventMetadata {
        correlation_id: Some(Uuid::new_v4()),
        causation_id: Some(Uuid::new_v4()),
        node: Some("bench-node:12345".into()),
        incarnation: Some(1),
        ..Default::default()
    })?;
    let quote = |s: &str| s.replace('\'', "''");
    Ok(format!(
        "\\set s random(1, 1000000000)\n\\set v random(1, 1000000000)\n\
         INSERT INTO bench_events (stream, version, event_type, schema_version, payload, metadata) \
         VALUES ('connection-' || :s, :v, '{event_type}', 1, '{}', '{}');\n",
        quote(&payload.to_string()),
        quote(&metadata)
    ))
}

async fn count_notifications(db: &BenchDb) -> anyhow::Result<i64> {
    Ok(db
        .client()
        .await?
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'notification_accepted'",
            &[],
        )
        .await?
        .get(0))
}
