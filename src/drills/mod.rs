//! Failure drills: each starts its own PostgreSQL, the provider simulators
//! and `calsync serve` as a separate process, drives traffic, injects one
//! fault and checks DESIGN.md's guarantees from the outside (HTTP answers,
//! the simulators' request logs and calendars, the log, the projections,
//! `calsync replay --verify`). `calsync validate` runs them and writes the
//! go/no-go report; `ops/drills/README.md` says what each proves.

pub mod harness;
pub mod nodes;
pub mod report;

mod actor_kill;
mod allowlist;
mod cluster_drills;
mod database_outage;
mod degradation;
mod gates;
mod idempotency;
mod inbound;
mod isolation;
mod malformed;
mod outbound;
mod platform_feed;
mod provider_outage;
mod replay_storm;

use harness::Harness;
use report::DrillReport;
use std::time::Instant;

/// Every drill, in the order `calsync validate` runs them.
pub const ALL: [&str; 15] = [
    "allowlist",
    "gates",
    "isolation",
    "inbound",
    "outbound",
    "idempotency",
    "provider-outage",
    "database-outage",
    "malformed-webhooks",
    "replay-storm",
    "graceful-degradation",
    "actor-kill",
    "node-kill",
    "rolling-restart",
    "platform-feed",
];

/// How big a drill runs: `--quick` for CI, the full sizes for a release.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub quick: bool,
}

impl Sizes {
    /// `quick` in CI, `full` otherwise.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// The sizes of every drill, for the report's configuration section.
pub fn configuration(sizes: Sizes) -> serde_json::Value {
    serde_json::json!({
        "inbound_events": sizes.pick(5, 50),
        "outbound_bookings": sizes.pick(6, 50),
        "idempotency_notifications": sizes.pick(20, 500),
        "provider_outage_seconds": sizes.pick(5, 60),
        "database_outage_seconds": sizes.pick(5, 30),
        "malformed_requests": sizes.pick(120, 1000),
        "replay_storm_copies": sizes.pick(200, 10_000),
        "replay_storm_distinct": sizes.pick(200, 10_000),
        "actor_kills": sizes.pick(20, 1000),
        "actor_kill_connections": sizes.pick(5, 50),
        "serve_sigkills": 1,
        "cluster_nodes": 3,
        "cluster_connections": sizes.pick(3, 9),
        "platform_feed_external_changes": sizes.pick(100, 1000),
        "platform_feed_bookings": sizes.pick(4, 20),
        "postgres": "private cluster, fsync on (Durability::Full)",
        "simulators": "calsim in the drill process, SimConfig::for_tests",
        "serve": "calsync serve child process, production backoff policy",
    })
}

/// Runs one drill end to end; never panics, a harness failure is a FAIL.
pub async fn run(name: &str, sizes: Sizes) -> DrillReport {
    // Several-node drills bring their own world (three serve nodes).
    if cluster_drills::NAMES.contains(&name) {
        return cluster_drills::run(name, sizes).await;
    }
    let mut report = DrillReport::new(name, sizes.quick);
    let started = Instant::now();
    eprintln!("[{name}] starting PostgreSQL, simulators and calsync serve");
    match Harness::start(name).await {
        Err(e) => {
            eprintln!("[{name}] cannot start: {e:#}");
            report.error = Some(format!("harness: {e:#}"));
        }
        Ok(mut h) => {
            if let Err(e) = dispatch(name, &mut h, &mut report, sizes).await {
                eprintln!("[{name}] stopped early: {e:#}");
                report.error = Some(format!("{e:#}"));
            }
            // Every drill ends with the log and the projections agreeing.
            if h.serve_pid().is_none() {
                let _ = h.start_serve().await;
            }
            match h.replay_verify().await {
                Ok((clean, differences, events)) => report.check(
                    "replay --verify: projections equal the log",
                    clean,
                    format!("{events} events replayed, {differences} rows differ"),
                ),
                Err(e) => report.check(
                    "replay --verify: projections equal the log",
                    false,
                    format!("could not run: {e:#}"),
                ),
            };
            report.measure("serve_starts", h.serve_starts);
            if !report.passed() {
                // Keep serve's log for the post-mortem; the work dir goes.
                let kept = std::env::temp_dir().join(format!("calsync-drill-{name}-serve.log"));
                if std::fs::copy(&h.serve_log, &kept).is_ok() {
                    report.measure("serve_log", kept.display().to_string());
                }
            }
            h.stop().await;
        }
    }
    report.duration_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[{name}] {} in {:.1} s",
        if report.passed() { "PASS" } else { "FAIL" },
        report.duration_seconds
    );
    report
}

async fn dispatch(
    name: &str,
    h: &mut Harness,
    r: &mut DrillReport,
    sizes: Sizes,
) -> anyhow::Result<()> {
    match name {
        "allowlist" => allowlist::run(h, r, sizes).await,
        "gates" => gates::run(h, r, sizes).await,
        "isolation" => isolation::run(h, r, sizes).await,
        "inbound" => inbound::run(h, r, sizes).await,
        "outbound" => outbound::run(h, r, sizes).await,
        "idempotency" => idempotency::run(h, r, sizes).await,
        "provider-outage" => provider_outage::run(h, r, sizes).await,
        "database-outage" => database_outage::run(h, r, sizes).await,
        "malformed-webhooks" => malformed::run(h, r, sizes).await,
        "replay-storm" => replay_storm::run(h, r, sizes).await,
        "graceful-degradation" => degradation::run(h, r, sizes).await,
        "actor-kill" => actor_kill::run(h, r, sizes).await,
        "platform-feed" => platform_feed::run(h, r, sizes).await,
        other => anyhow::bail!("no drill {other:?}; drills: {}", ALL.join(", ")),
    }
}

/// Latency summary in milliseconds: (p50, max).
pub fn p50_max(mut ms: Vec<u128>) -> (u128, u128) {
    ms.sort_unstable();
    let p50 = ms.get(ms.len() / 2).copied().unwrap_or(0);
    (p50, ms.last().copied().unwrap_or(0))
}
