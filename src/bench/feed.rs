//! `bench feed`: the platform feed pushed. Delivery latency — from an
//! append's commit (its `append` returned) to the receiver's 2xx — p50/p99
//! at a steady rate of busy changes (500/s by default), and the cost of a
//! subscriber on ingest: the append rate of concurrent writers with the
//! push workers delivering, over the rate without them.

use super::report::{percentile, Comparison, Figure, Machine, Report};
use super::setup::BenchDb;
use crate::core::events::ConnectionEvent;
use crate::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use crate::core::interval::Interval;
use crate::core::subscription::PushPolicy;
use crate::store::{EventStore, ExpectedVersion, NewEvent, PgEventStore};
use axum::extract::State;
use axum::http::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Busy changes per second in the latency run.
    pub rate: u64,
    /// Seconds of the latency run.
    pub seconds: u64,
    /// Connections the changes are spread over.
    pub connections: usize,
    /// Appends per ingest run (each side).
    pub ingest_appends: usize,
    /// Concurrent writers in the ingest runs.
    pub writers: usize,
}

impl FeedOptions {
    pub fn full() -> Self {
        FeedOptions {
            rate: 500,
            seconds: 20,
            connections: 50,
            ingest_appends: 20_000,
            writers: 16,
        }
    }

    pub fn quick() -> Self {
        FeedOptions {
            rate: 200,
            seconds: 3,
            connections: 10,
            ingest_appends: 1_000,
            writers: 8,
        }
    }
}

/// Arrival instants by the `from` of each `availability.changed`.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn hook(State(arrivals): State<Arrivals>, body: axum::body::Bytes) -> StatusCode {
    let now = Instant::now();
    if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) {
        let mut a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
        for e in body["events"].as_array().into_iter().flatten() {
            if let Some(from) = e["data"]["from"].as_str() {
                a.entry(from.to_string()).or_insert(now);
            }
        }
    }
    StatusCode::NO_CONTENT
}

fn cal() -> CalendarId {
    // A constant, valid calendar id.
    CalendarId::parse("primary").unwrap_or_else(|_| unreachable!())
}

async fn append(
    store: &PgEventStore,
    id: ConnectionId,
    event: &ConnectionEvent,
) -> anyhow::Result<()> {
    let (ty, payload) = event.to_parts()?;
    store
        .append(
            &id.stream(),
            ExpectedVersion::Any,
            vec![NewEvent::new(
                ty,
                event.schema_version(),
                payload.to_string(),
            )],
        )
        .await?;
    Ok(())
}

/// The `n`-th busy change: a unique interval (its start is the key).
fn change(n: u64) -> (ConnectionEvent, String) {
    let base =
        chrono::DateTime::<chrono::Utc>::from_timestamp(1_900_000_000, 0).unwrap_or_default();
    let start = base + chrono::TimeDelta::minutes(n as i64);
    let event = ConnectionEvent::ExternalEventSeen {
        calendar: cal(),
        event_id: format!("b{n}"),
        blocks: Interval::new(start, start + chrono::TimeDelta::seconds(30)).ok(),
        ours: None,
        rule: None,
        ignored: None,
        span: None,
    };
    (
        event,
        serde_json::json!(start)
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

async fn connections(store: &PgEventStore, n: usize) -> anyhow::Result<Vec<ConnectionId>> {
    let mut ids = Vec::new();
    for k in 0..n {
        let id = ConnectionId::new_random();
        append(
            store,
            id,
            &ConnectionEvent::ConnectionCreated {
                platform_provider_id: PlatformProviderId::parse(format!("bench-{k}"))?,
                provider: CalendarProvider::Google,
                account: ExternalAccount::parse(format!("bench{k}@example.com"))?,
                calendars: vec![cal()],
                destination_calendar: Some(cal()),
            },
        )
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// Appends `total` changes from `writers` concurrent writers; appends/s.
async fn ingest(
    store: &PgEventStore,
    ids: &[ConnectionId],
    first: u64,
    total: usize,
    writers: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    // Each writer appends to streams of its own (concurrent appends to one
    // stream would conflict on its version).
    for w in 0..writers {
        let mine: Vec<ConnectionId> = ids.iter().skip(w).step_by(writers).copied().collect();
        let (store, ids, next) = (store.clone(), mine, next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n as usize >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let Some(&id) = ids.get(n as usize % ids.len().max(1)) else {
                    return Ok(());
                };
                append(&store, id, &change(first + n).0).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(options: &FeedOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let db = BenchDb::start(32).await?;
    let mut report = Report::new("feed", Machine::detect(db.server_version().await));
    report.config("rate_per_second", options.rate);
    report.config("seconds", options.seconds);
    report.config("connections", options.connections);
    report.config("ingest_appends", options.ingest_appends);
    report.config("writers", options.writers);
    report.config(
        "method",
        "busy changes appended straight to connection streams; one push subscription to an \
         axum receiver on loopback (2xx at once); latency = receiver arrival - append returned \
         (commit); ingest = appends/s of concurrent writers, with the push workers delivering \
         vs with none",
    );
    let store = db.store.clone();
    let ids = connections(&store, options.connections.max(options.writers)).await?;

    // Ingest without a subscriber.
    let without = ingest(&store, &ids, 0, options.ingest_appends, options.writers).await?;

    // A subscriber from now on.
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let head = crate::feed::head(&store).await?;
    crate::feed::subscriptions::create(&store, &url, Vec::new(), head).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _push = crate::feed::push::spawn(
        store.clone(),
        PushPolicy::default(),
        crate::feed::push::alone(),
        stop.clone(),
    );

    let first = options.ingest_appends as u64;
    let with = ingest(&store, &ids, first, options.ingest_appends, options.writers).await?;

    // Latency at a steady rate, after the subscriber caught up.
    let caught_up = first + options.ingest_appends as u64;
    let total = options.rate * options.seconds;
    let mut committed: HashMap<String, Instant> = HashMap::new();
    let tick = Duration::from_millis(10);
    let per_tick = (options.rate as f64 / 100.0).max(1.0);
    let mut interval = tokio::time::interval(tick);
    let mut sent = 0u64;
    let mut owed = 0.0;
    while sent < total {
        interval.tick().await;
        owed += per_tick;
        while owed >= 1.0 && sent < total {
            owed -= 1.0;
            let n = caught_up + 1_000_000 + sent;
            let (event, key) = change(n);
            append(&store, ids[sent as usize % ids.len()], &event).await?;
            committed.insert(key, Instant::now());
            sent += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            committed.keys().all(|k| a.contains_key(k))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    server.abort();
    let arrived = arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ms: Vec<f64> = committed
        .iter()
        .filter_map(|(k, at)| {
            arrived
                .get(k)
                .map(|r| r.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    report.figure(Figure::single(
        "delivery latency p50 (commit → receiver 2xx)",
        "ms",
        percentile(&ms, 50.0),
    ));
    report.figure(Figure::single(
        "delivery latency p99 (commit → receiver 2xx)",
        "ms",
        percentile(&ms, 99.0),
    ));
    report.figure(Figure::single(
        "events delivered in the latency run",
        "events",
        ms.len() as f64,
    ));
    report.figure(Figure::single(
        "events appended in the latency run",
        "events",
        committed.len() as f64,
    ));
    report.figure(Figure::single(
        "ingest without a subscriber",
        "appends/s",
        without,
    ));
    report.figure(Figure::single(
        "ingest with a subscriber",
        "appends/s",
        with,
    ));
    report.comparisons.push(Comparison::new(
        "ingest with a subscriber delivering",
        with,
        "ingest without a subscriber",
        without,
        None,
    ));
    report.notes.push(
        "the push worker re-reads the feed every 200 ms when idle, so latency is about half \
         that plus the delivery itself; the machine is shared with other builds unless stated"
            .into(),
    );
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
