//! Every benchmark's library entry point runs at a tiny size and reports
//! positive figures, so the benchmark code cannot silently rot. These are
//! not timed tests: nothing here asserts a speed.

use calsync::bench::loadgen::LoadGen;
use calsync::bench::{actors, availability, ingest, latency, recovery, replay, scale, Report};

fn positive(report: &Report, names: &[&str]) {
    for name in names {
        let value = report
            .median_of(name)
            .unwrap_or_else(|| panic!("{} reports no figure {name:?}", report.benchmark));
        assert!(
            value.is_finite() && value > 0.0,
            "{}: {name} = {value}\n{}",
            report.benchmark,
            report.to_text()
        );
    }
    assert!(
        report.figures.iter().all(|f| f.median.is_finite()),
        "{}",
        report.to_text()
    );
    // The JSON form is what `--json` writes.
    assert!(serde_json::to_string(report).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_reports_its_rate_and_the_pgbench_ratio() {
    let report = ingest::run(&ingest::IngestOptions {
        connections: 4,
        concurrency: 4,
        seconds: 1,
        runs: 1,
        load_gen: LoadGen::Process(env!("CARGO_BIN_EXE_calsync").into()),
    })
    .await
    .unwrap();
    positive(
        &report,
        &[
            "calsync accepted/s",
            "calsync latency p99",
            "calsync accepted/s during a /metrics flood",
            "/metrics scrapes/s during the flood",
            "pgbench single-row INSERT",
        ],
    );
    assert!(report.comparisons[0].ratio > 0.0);
    assert!(report.comparisons[1].what.contains("/metrics flood"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_report_memory_per_actor_and_activation_rate() {
    let report = actors::run(&actors::ActorsOptions {
        connections: 40,
        windowed: 10,
        window: 100,
        concurrency: 8,
    })
    .await
    .unwrap();
    positive(
        &report,
        &[
            "fresh actors activated",
            "fresh: activation rate",
            "fresh: passivated",
            "full window: activation rate",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_reports_percentiles_with_and_without_snapshots() {
    let report = recovery::run(&recovery::RecoveryOptions {
        events: 300,
        kills: 3,
    })
    .await
    .unwrap();
    positive(
        &report,
        &[
            "with snapshots: p99",
            "without snapshots: p99",
            "with snapshots: kills timed",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_reports_change_to_busy_interval_percentiles() {
    let report = latency::run(&latency::LatencyOptions {
        connections: 2,
        rate: 20,
        seconds: 1,
    })
    .await
    .unwrap();
    positive(
        &report,
        &[
            "busy intervals seen",
            "latency p50",
            "latency p99",
            "events.list calls per change",
            "stage 2 notification commit (received -> answered) p50",
            "stage 5 page commit (page txn began -> visible) p99",
        ],
    );
    // Every change is followed through the simulator's logs and the event
    // log; one that cannot be matched would leave its stages unreported.
    assert_eq!(
        report.median_of("changes traced through every stage"),
        report.median_of("changes made"),
        "{}",
        report.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_the_rebuild_rate_against_copy() {
    let report = replay::run(&replay::ReplayBenchOptions {
        events: 2_000,
        per_connection: 200,
        runs: 1,
    })
    .await
    .unwrap();
    positive(
        &report,
        &["replay rebuild", "COPY to /dev/null", "events loaded"],
    );
    assert!(report.comparisons[0].ratio > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_reports_delivery_latency_and_the_ingest_ratio() {
    let report = calsync::bench::feed::run(&calsync::bench::feed::FeedOptions {
        rate: 100,
        seconds: 1,
        connections: 4,
        ingest_appends: 200,
        writers: 4,
    })
    .await
    .unwrap();
    positive(
        &report,
        &[
            "delivery latency p99 (commit → receiver 2xx)",
            "events delivered in the latency run",
            "ingest without a subscriber",
            "ingest with a subscriber",
        ],
    );
    assert_eq!(
        report.median_of("events delivered in the latency run"),
        report.median_of("events appended in the latency run"),
        "every event of the latency run was delivered"
    );
    assert!(report.comparisons[0].ratio > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_reports_rates_percentiles_and_the_pgbench_ratio() {
    // The load generator runs as the real binary's hidden subcommand, in
    // its own process, as `calsync bench availability` runs it.
    let report = availability::run(&availability::AvailabilityOptions {
        providers: 2,
        connections: 2,
        calendars: 2,
        busy_rows: 300,
        days: 30,
        window_days: 14,
        concurrency: 4,
        group_concurrency: 2,
        seconds: 1,
        runs: 1,
        load_gen: LoadGen::Process(env!("CARGO_BIN_EXE_calsync").into()),
    })
    .await
    .unwrap();
    positive(
        &report,
        &[
            "single: queries/s",
            "single: latency p99",
            "single at half that rate: latency p99",
            "pgbench busy-range query",
            "group: queries/s",
            "group: latency p99",
            "group at half that rate: latency p99",
            "merged busy spans considered per single query",
            "merged busy spans considered per group query",
        ],
    );
    assert_eq!(report.median_of("non-2xx or failed requests"), Some(0.0));
    assert!(report.comparisons[0].ratio > 0.0);
    assert_eq!(report.targets.len(), 4, "{}", report.to_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_reports_each_node_count_and_the_efficiency() {
    let exe: std::path::PathBuf = env!("CARGO_BIN_EXE_calsync").into();
    let mut options = scale::ScaleOptions::quick(LoadGen::Process(exe.clone()));
    options.exe = Some(exe);
    options.connections = 4;
    options.concurrency = 4;
    options.seconds = 1;
    options.rate = 10;
    options.latency_seconds = 1;
    let report = scale::run(&options).await.unwrap();
    positive(
        &report,
        &[
            "1 node(s): accepted/s",
            "2 node(s): accepted/s",
            "1 node(s): webhook -> busy p50",
            "2 node(s): webhook -> busy p99",
        ],
    );
    for what in [
        "ingest: per-node efficiency with 2 nodes",
        "ingest: 2 nodes vs 1 node",
        "webhook -> busy p99: 2 nodes vs 1 node",
    ] {
        let c = report
            .comparisons
            .iter()
            .find(|c| c.what == what)
            .unwrap_or_else(|| panic!("no comparison {what:?}\n{}", report.to_text()));
        assert!(c.ratio > 0.0, "{what}: {}\n{}", c.ratio, report.to_text());
    }
    assert_eq!(
        report.median_of("2 node(s): never visible within 20 s"),
        Some(0.0),
        "{}",
        report.to_text()
    );
}
