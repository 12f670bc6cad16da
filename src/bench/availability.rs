//! `bench availability`: the query a booking page makes on every view.
//!
//! Platform providers with `connections` × `calendars` calendars each
//! (created through the actors) and `busy_rows` busy intervals each over
//! `days` days (bulk-loaded in the read model's row shape: a sync would
//! write the same rows). Then, alternating in the same run:
//!
//! - calsync: `concurrency` clients (a separate load-generator process)
//!   posting `POST /v1/providers/{id}/availability` for two-week windows at
//!   random offsets, weekly hours Monday–Friday 09:00–17:00 in
//!   Europe/Berlin, 30-minute slots, 10-minute buffers; closed loop, then
//!   paced at half the rate that reached;
//! - pgbench at the same concurrency, prepared, running the busy query
//!   calsync's store runs for the same windows on the same table;
//! - the group endpoint `POST /v1/availability` for all providers
//!   (`mode: all`), `group_concurrency` clients, closed loop then paced.
//!
//! The table is vacuumed after the bulk load, as autovacuum would leave it:
//! the busy read's index-only scans depend on the visibility map.

use super::loadgen::{LoadGen, LoadResult, LoadSpec, RequestTemplate};
use super::report::{percentile, Comparison, Figure, Machine, Report, Target};
use super::setup::{self, BenchDb, Served};
use crate::core::availability::{expand_weekly, SlotSpec, WeeklyRule};
use crate::core::busy_reach::busy_reach;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use crate::core::interval::Interval;
use anyhow::Context;
use chrono::{DateTime, Duration as TimeDelta, NaiveTime, Utc, Weekday};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::Instant;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct AvailabilityOptions {
    /// Platform providers; the first is the single-provider query's, all
    /// of them form the group.
    pub providers: usize,
    pub connections: usize,
    pub calendars: usize,
    /// Busy rows per provider.
    pub busy_rows: usize,
    /// Days the busy rows are spread over.
    pub days: i64,
    /// Days of each query's window.
    pub window_days: i64,
    /// Concurrent clients of the single query, and pgbench's `-c`.
    pub concurrency: usize,
    /// Concurrent clients of the group query.
    pub group_concurrency: usize,
    pub seconds: u64,
    pub runs: usize,
    /// Where the HTTP load generator runs.
    pub load_gen: LoadGen,
}

impl AvailabilityOptions {
    pub fn full(load_gen: LoadGen) -> Self {
        AvailabilityOptions {
            providers: 10,
            connections: 5,
            calendars: 10,
            busy_rows: 20_000,
            days: 182,
            window_days: 14,
            concurrency: 32,
            group_concurrency: 4,
            seconds: 10,
            runs: 3,
            load_gen,
        }
    }

    pub fn quick(load_gen: LoadGen) -> Self {
        AvailabilityOptions {
            providers: 3,
            connections: 2,
            calendars: 3,
            busy_rows: 2_000,
            days: 60,
            window_days: 14,
            concurrency: 8,
            group_concurrency: 2,
            seconds: 2,
            runs: 1,
            load_gen,
        }
    }
}

/// The targets of issue 22.
const TARGET_RATIO: f64 = 0.5;
const TARGET_P99_SINGLE_MS: f64 = 10.0;
const TARGET_P99_GROUP_MS: f64 = 30.0;
/// Distinct request bodies the load generator cycles through.
const BODIES: usize = 256;

fn provider_id(p: usize) -> String {
    format!("bench-pp-{p}")
}

pub async fn run(options: &AvailabilityOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    anyhow::ensure!(
        options.days > options.window_days,
        "--days must exceed the window"
    );
    let db = BenchDb::start(options.concurrency * 2 + 8).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let served = Served::start(&db, setup::actor_settings(), None, Some(listener)).await?;
    let base = served
        .base
        .clone()
        .context("the HTTP server has no address")?;
    let t0 = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc();
    let loading = Instant::now();
    for p in 0..options.providers {
        let calendars = create_provider(&served, options, p).await?;
        load_busy(&db, options, p, &calendars, t0).await?;
    }
    // As autovacuum leaves a table after a bulk insert: statistics, and the
    // visibility map that lets index-only scans skip the heap.
    db.client().await?.batch_execute("VACUUM ANALYZE").await?;
    let load_seconds = loading.elapsed().as_secs_f64();

    let mut report = Report::new("availability", Machine::detect(db.server_version().await));
    report.config("providers", options.providers);
    report.config("connections_per_provider", options.connections);
    report.config("calendars_per_connection", options.calendars);
    report.config("busy_rows_per_provider", options.busy_rows);
    report.config("days_of_busy_rows", options.days);
    report.config("window_days", options.window_days);
    report.config("concurrency", options.concurrency);
    report.config("group_concurrency", options.group_concurrency);
    report.config("seconds_per_run", options.seconds);
    report.config("runs", options.runs);
    report.config("load_generator", options.load_gen.describe());
    report.config(
        "request",
        "weekly hours Mon-Fri 09:00-17:00 Europe/Berlin, 30-minute slots, 10-minute buffers, \
         window at a random day offset",
    );
    report.config(
        "calsync",
        "POST /v1/providers/{id}/availability: busy rows in the window + freshness of every \
         connection and calendar -> weekly hours expanded in the zone -> free slots -> JSON",
    );
    report.config(
        "pgbench",
        format!(
            "pgbench -n -M prepared -c {} -j 2 -T {}: the handler's busy query (BUSY_ARRAYS_SQL) \
             for the same provider and the same requests' spans, read from a {BODIES}-row table \
             bench_reach by a random id (rows fetched, no slots, no freshness)",
            options.concurrency, options.seconds
        ),
    );
    report.config(
        "durability",
        "fsync on (PostgreSQL defaults), same server for both",
    );

    let auth = vec![
        (
            "Authorization".to_string(),
            format!("Bearer {}", setup::ADMIN_TOKEN),
        ),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let max_offset = options.days - options.window_days;
    let offsets: Vec<i64> = (0..BODIES)
        .map(|_| rng.random_range(0..=max_offset))
        .collect();
    let single: Vec<RequestTemplate> = offsets
        .iter()
        .map(|offset| RequestTemplate {
            url: format!("{base}/v1/providers/{}/availability", provider_id(0)),
            headers: auth.clone(),
            body: Some(request_body(t0, *offset, options, None).to_string()),
        })
        .collect();
    let ids: Vec<String> = (0..options.providers).map(provider_id).collect();
    let group: Vec<RequestTemplate> = (0..BODIES)
        .map(|_| RequestTemplate {
            url: format!("{base}/v1/availability"),
            headers: auth.clone(),
            body: Some(
                request_body(t0, rng.random_range(0..=max_offset), options, Some(&ids)).to_string(),
            ),
        })
        .collect();

    // One request of each, checked, before timing anything.
    let considered = sanity(&single[0], &group[0]).await?;
    load_reach(&db, t0, &offsets, options).await?;
    let script = pgbench_script();

    let (mut single_closed, mut single_paced) = (Series::default(), Series::default());
    let (mut group_closed, mut group_paced) = (Series::default(), Series::default());
    let (mut pg_rates, mut pg_latency) = (vec![], vec![]);
    let mut errors = vec![];
    let mut counter = 0;
    for _ in 0..options.runs {
        let (run, paced) =
            closed_then_paced(options, &single, options.concurrency, &mut counter).await?;
        single_closed.push(&run);
        single_paced.push(&paced);
        let pg = db
            .pgbench_with(
                &script,
                options.concurrency,
                options.seconds,
                &["-M", "prepared"],
            )
            .await?;
        pg_rates.push(pg.tps);
        pg_latency.push(pg.latency_avg_ms);
        let (g, gp) =
            closed_then_paced(options, &group, options.group_concurrency, &mut counter).await?;
        group_closed.push(&g);
        group_paced.push(&gp);
        errors.push((run.errors + paced.errors + g.errors + gp.errors) as f64);
    }
    report.figure(Figure::single("load: seconds", "s", load_seconds));
    report.figure(Figure::single(
        "merged busy spans considered per single query",
        "spans",
        considered.0 as f64,
    ));
    report.figure(Figure::single(
        "merged busy spans considered per group query",
        "spans",
        considered.1 as f64,
    ));
    single_closed.report(&mut report, "single");
    single_paced.report(&mut report, "single at half that rate");
    report.figure(Figure::new("pgbench busy-range query", "tps", pg_rates));
    report.figure(Figure::new("pgbench latency average", "ms", pg_latency));
    group_closed.report(&mut report, "group");
    group_paced.report(&mut report, "group at half that rate");
    report.figure(Figure::new("non-2xx or failed requests", "count", errors));
    report.comparisons.push(Comparison::new(
        "availability queries/s vs pgbench busy-range query tps",
        report.median_of("single: queries/s").unwrap_or(0.0),
        "pgbench",
        report.median_of("pgbench busy-range query").unwrap_or(0.0),
        Some(TARGET_RATIO),
    ));
    report.targets.push(Target::at_most(
        &format!("single provider p99 at {} clients", options.concurrency),
        report.median_of("single: latency p99").unwrap_or(f64::MAX),
        TARGET_P99_SINGLE_MS,
        "ms",
    ));
    report.targets.push(Target::at_most(
        &format!(
            "single provider p99 at {} clients paced at half the saturated rate",
            options.concurrency
        ),
        report
            .median_of("single at half that rate: latency p99")
            .unwrap_or(f64::MAX),
        TARGET_P99_SINGLE_MS,
        "ms",
    ));
    report.targets.push(Target::at_most(
        &format!(
            "group of {} p99 at {} clients",
            options.providers, options.group_concurrency
        ),
        report.median_of("group: latency p99").unwrap_or(f64::MAX),
        TARGET_P99_GROUP_MS,
        "ms",
    ));
    report.targets.push(Target::at_most(
        &format!(
            "group of {} p99 at {} clients paced at half the saturated rate",
            options.providers, options.group_concurrency
        ),
        report
            .median_of("group at half that rate: latency p99")
            .unwrap_or(f64::MAX),
        TARGET_P99_GROUP_MS,
        "ms",
    ));
    report.notes.push(format!(
        "closed loop, {} clients each waiting for its answer keep the server saturated, so \
         their latency is queueing (clients / rate); the paced runs send at half that rate \
         (open loop, latency from the scheduled send), single and group alike",
        options.concurrency
    ));
    report.notes.push(
        "latency is measured by the load generator (a separate process unless run from a \
         library test), from send to the last byte of the answer; the load generator, calsync \
         and PostgreSQL share the machine's CPUs, as pgbench and PostgreSQL do"
            .into(),
    );
    served.stop();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn measure(
    options: &AvailabilityOptions,
    requests: &[RequestTemplate],
    concurrency: usize,
    counter: &mut u64,
) -> anyhow::Result<LoadResult> {
    measure_at(options, requests, concurrency, None, counter).await
}

/// Closed loop, then the same clients at half the rate they just
/// saturated: the latency a booking page sees when the server is not a
/// queue.
async fn closed_then_paced(
    options: &AvailabilityOptions,
    requests: &[RequestTemplate],
    concurrency: usize,
    counter: &mut u64,
) -> anyhow::Result<(LoadResult, LoadResult)> {
    let closed = measure(options, requests, concurrency, counter).await?;
    let rate = closed.per_second() / 2.0;
    let paced = measure_at(options, requests, concurrency, Some(rate), counter).await?;
    Ok((closed, paced))
}

/// Queries/s and latency percentiles of one kind of run, over the runs.
#[derive(Default)]
struct Series {
    rates: Vec<f64>,
    p50s: Vec<f64>,
    p99s: Vec<f64>,
}

impl Series {
    fn push(&mut self, run: &LoadResult) {
        self.rates.push(run.per_second());
        self.p50s.push(percentile(&run.latencies_ms, 50.0));
        self.p99s.push(percentile(&run.latencies_ms, 99.0));
    }

    /// As `{name}: queries/s`, `{name}: latency p50` and `… p99`.
    fn report(self, report: &mut Report, name: &str) {
        report.figure(Figure::new(
            &format!("{name}: queries/s"),
            "req/s",
            self.rates,
        ));
        report.figure(Figure::new(
            &format!("{name}: latency p50"),
            "ms",
            self.p50s,
        ));
        report.figure(Figure::new(
            &format!("{name}: latency p99"),
            "ms",
            self.p99s,
        ));
    }
}

/// [`measure`] closed-loop (`rate` None) or open-loop at `rate` req/s.
async fn measure_at(
    options: &AvailabilityOptions,
    requests: &[RequestTemplate],
    concurrency: usize,
    rate: Option<f64>,
    counter: &mut u64,
) -> anyhow::Result<LoadResult> {
    let result = options
        .load_gen
        .run(&LoadSpec {
            requests: requests.to_vec(),
            concurrency,
            seconds: options.seconds as f64,
            counter_start: *counter,
            rate,
        })
        .await?;
    *counter = result.counter_end;
    Ok(result)
}

/// An availability request for the window starting `offset` days after
/// `t0`; with `group`, the group endpoint's body for those providers.
fn request_body(
    t0: DateTime<Utc>,
    offset: i64,
    options: &AvailabilityOptions,
    group: Option<&[String]>,
) -> serde_json::Value {
    let from = t0 + TimeDelta::days(offset);
    let rules: Vec<serde_json::Value> = ["Mon", "Tue", "Wed", "Thu", "Fri"]
        .iter()
        .map(|d| json!({"weekday": d, "start": "09:00:00", "end": "17:00:00"}))
        .collect();
    let mut body = json!({
        "from": from,
        "to": from + TimeDelta::days(options.window_days),
        "slot_minutes": 30,
        "buffer_before_minutes": 10,
        "buffer_after_minutes": 10,
        "weekly": {"time_zone": "Europe/Berlin", "rules": rules},
    });
    if let Some(ids) = group {
        body["platform_provider_ids"] = json!(ids);
        body["mode"] = json!("all");
    }
    body
}

/// One single and one group request, checked; the merged busy spans each
/// considered.
async fn sanity(single: &RequestTemplate, group: &RequestTemplate) -> anyhow::Result<(u64, u64)> {
    let client = reqwest::Client::new();
    let mut considered = Vec::new();
    for t in [single, group] {
        let mut r = client.post(&t.url);
        for (name, value) in &t.headers {
            r = r.header(name, value);
        }
        let answer = r.body(t.body.clone().unwrap_or_default()).send().await?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await?;
        anyhow::ensure!(status.is_success(), "{} answered {status}: {body}", t.url);
        anyhow::ensure!(body["slots"].is_array(), "no slots from {}: {body}", t.url);
        let n = match body["providers"].as_array() {
            Some(ps) => ps
                .iter()
                .filter_map(|p| p["busy_considered"].as_u64())
                .sum(),
            None => body["busy_considered"].as_u64().unwrap_or(0),
        };
        anyhow::ensure!(n > 0, "{} considered no busy time: {body}", t.url);
        considered.push(n);
    }
    Ok((considered[0], considered[1]))
}

/// Creates provider `p`'s connections through the actors, each with
/// `calendars` calendars; returns (connection, calendar) pairs.
async fn create_provider(
    served: &Served,
    options: &AvailabilityOptions,
    p: usize,
) -> anyhow::Result<Vec<(ConnectionId, String)>> {
    let calendars: Vec<CalendarId> = (0..options.calendars)
        .map(|k| CalendarId::parse(format!("cal-{k}@group.calendar.google.com")))
        .collect::<Result<_, _>>()?;
    let mut made = Vec::new();
    for c in 0..options.connections {
        let id = ConnectionId::new_random();
        let command = ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse(provider_id(p))?,
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse(format!("avail-{p}-{c}@example.com"))?,
            calendars: calendars.clone(),
            destination_calendar: calendars.first().cloned(),
        };
        served
            .connections
            .command(id, command, Uuid::new_v4())
            .await
            .with_context(|| format!("creating connection {c} of provider {p}"))?;
        made.extend(calendars.iter().map(|k| (id, k.as_str().to_string())));
    }
    Ok(made)
}

/// `busy_rows` busy intervals for provider `p` over `days` days from `t0`
/// in the read model's row shape, spread over its calendars: 30–120
/// minutes on a 15-minute grid, one in fifty a whole day.
async fn load_busy(
    db: &BenchDb,
    options: &AvailabilityOptions,
    p: usize,
    calendars: &[(ConnectionId, String)],
    t0: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(p as u64);
    let client = db.client().await?;
    let quarters = options.days * 24 * 4;
    for chunk in (0..options.busy_rows).collect::<Vec<_>>().chunks(5000) {
        let (mut conns, mut cals, mut ids, mut starts, mut ends) =
            (vec![], vec![], vec![], vec![], vec![]);
        for &i in chunk {
            let (connection, calendar) = &calendars[i % calendars.len()];
            let (start, end) = if rng.random_range(0..50) == 0 {
                let start = t0 + TimeDelta::days(rng.random_range(0..options.days));
                (start, start + TimeDelta::days(1))
            } else {
                let start = t0 + TimeDelta::minutes(15 * rng.random_range(0..quarters));
                (
                    start,
                    start + TimeDelta::minutes(30 * rng.random_range(1..=4)),
                )
            };
            conns.push(connection.as_uuid());
            cals.push(calendar.as_str());
            ids.push(format!("evt{p}x{i}"));
            starts.push(start);
            ends.push(end);
        }
        client
            .execute(
                "INSERT INTO busy_intervals (platform_provider_id, provider, external_event_id, \
                   connection_id, calendar_id, starts_at, ends_at, generation) \
                 SELECT $1, 'google', e, c, k, s, x, 1 \
                 FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], \
                             $6::timestamptz[]) AS u(c, k, e, s, x)",
                &[&provider_id(p), &conns, &cals, &ids, &starts, &ends],
            )
            .await?;
    }
    Ok(())
}

/// What the handler reads for each single request: the spans of its
/// weekly hours widened by the buffers, as the arrays `BUSY_ARRAYS_SQL`
/// takes, in a table pgbench picks from.
async fn load_reach(
    db: &BenchDb,
    t0: DateTime<Utc>,
    offsets: &[i64],
    options: &AvailabilityOptions,
) -> anyhow::Result<()> {
    let client = db.client().await?;
    client
        .batch_execute(
            "CREATE TABLE bench_reach (id int PRIMARY KEY, ws timestamptz[] NOT NULL, \
               we timestamptz[] NOT NULL, pe timestamptz[] NOT NULL)",
        )
        .await?;
    let nine = NaiveTime::from_hms_opt(9, 0, 0).context("09:00")?;
    let five = NaiveTime::from_hms_opt(17, 0, 0).context("17:00")?;
    let rules: Vec<WeeklyRule> = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ]
    .iter()
    .map(|d| (*d, nine, five))
    .collect();
    let spec = SlotSpec::new(TimeDelta::minutes(30))
        .with_buffers(TimeDelta::minutes(10), TimeDelta::minutes(10));
    for (id, offset) in offsets.iter().enumerate() {
        let from = t0 + TimeDelta::days(*offset);
        let range = Interval::new(from, from + TimeDelta::days(options.window_days))?;
        let reach = busy_reach(
            &expand_weekly(&rules, chrono_tz::Tz::Europe__Berlin, range),
            &spec,
        );
        let ws: Vec<DateTime<Utc>> = reach.iter().map(|r| r.start()).collect();
        let we: Vec<DateTime<Utc>> = reach.iter().map(|r| r.end()).collect();
        let pe: Vec<Option<DateTime<Utc>>> = std::iter::once(None)
            .chain(reach.iter().map(|r| Some(r.end())))
            .take(reach.len())
            .collect();
        client
            .execute(
                "INSERT INTO bench_reach VALUES ($1, $2, $3, $4)",
                &[&(id as i32), &ws, &we, &pe],
            )
            .await?;
    }
    client.batch_execute("ANALYZE bench_reach").await?;
    Ok(())
}

/// The handler's busy query for provider 0, the spans of one of the
/// single requests picked at random, as pgbench runs it.
fn pgbench_script() -> String {
    use crate::store::availability::{as_arrays, BUSY_SPANS_REACH, BUSY_SPANS_SQL};
    let spans = BUSY_SPANS_SQL
        .replace(BUSY_SPANS_REACH, "bench_reach q, unnest(q.ws, q.we, q.pe)")
        .replace("$1", &format!("'{}'", provider_id(0)));
    let sql = as_arrays(&format!("{spans} WHERE q.id = :i"));
    format!("\\set i random(0, {})\n{sql};\n", BODIES - 1)
}
