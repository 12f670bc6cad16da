//! `bench replay`: rebuild every projection from a log of ≥ 1,000,000
//! events with `calsync replay`'s library entry point (`replay::verify`:
//! read, fold, write shadow tables, compare), against a bare
//! `COPY (SELECT * FROM events) TO '/dev/null'` of the same log on the same
//! server, alternating in the same run.

use super::load::{self, History};
use super::report::{Comparison, Figure, Machine, Report};
use super::setup::BenchDb;
use crate::replay::{self, ProgressMode, ReplayOptions};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct ReplayBenchOptions {
    /// Events in the log (at least; whole connection histories are loaded).
    pub events: u64,
    /// Events per connection history.
    pub per_connection: u64,
    pub runs: usize,
}

impl ReplayBenchOptions {
    pub fn full() -> Self {
        ReplayBenchOptions {
            events: 1_000_000,
            per_connection: 500,
            runs: 3,
        }
    }

    pub fn quick() -> Self {
        ReplayBenchOptions {
            events: 50_000,
            per_connection: 500,
            runs: 1,
        }
    }
}

pub async fn run(options: &ReplayBenchOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let db = BenchDb::start(8).await?;
    let mut report = Report::new("replay", Machine::detect(db.server_version().await));
    report.config("events_target", options.events);
    report.config("events_per_connection", options.per_connection);
    report.config("runs", options.runs);
    report.config(
        "history",
        "per connection: connection_created, then rounds of 2 notification_accepted + one \
         sync page of 3 timed busy events (external_event_seen, sync round completed), \
         decided by the pure core and bulk-loaded",
    );
    report.config(
        "calsync",
        "replay::verify: COPY binary read, parallel JSON decode, fold, COPY into shadow \
         tables; rate = events read / rebuild seconds (comparison excluded)",
    );
    report.config(
        "baseline",
        "COPY (SELECT * FROM events) TO '/dev/null' (server side)",
    );

    let load_started = Instant::now();
    let loaded = load_log(&db, options).await?;
    report.figure(Figure::single("events loaded", "events", loaded as f64));
    report.figure(Figure::single(
        "bulk load time",
        "s",
        load_started.elapsed().as_secs_f64(),
    ));
    // The live tables must be the fold of the log for verify to come out
    // clean: one swap writes them (not timed).
    let quiet = ReplayOptions {
        progress: ProgressMode::Quiet,
        ..Default::default()
    };
    let swapped = replay::swap(&db.store, &quiet).await?;
    report.figure(Figure::single(
        "rows written by the initial swap",
        "rows",
        swapped.rows_repaired as f64,
    ));

    let client = db.client().await?;
    let (mut ours, mut copies, mut diffs) = (vec![], vec![], vec![]);
    let (mut reads, mut writes) = (vec![], vec![]);
    for _ in 0..options.runs {
        let r = replay::verify(&db.store, &quiet).await?;
        ours.push(r.events_read as f64 / r.rebuild_seconds.max(1e-9));
        reads.push(r.read_seconds);
        writes.push(r.rebuild_seconds - r.read_seconds);
        diffs.push(r.differences as f64);
        let t = Instant::now();
        let copied = client
            .execute("COPY (SELECT * FROM events) TO '/dev/null'", &[])
            .await?;
        copies.push(copied as f64 / t.elapsed().as_secs_f64());
    }
    report.figure(Figure::new("replay rebuild", "events/s", ours));
    report.figure(Figure::new("rebuild: read, decode, fold", "s", reads));
    report.figure(Figure::new("rebuild: shadow write, analyze", "s", writes));
    report.figure(Figure::new("COPY to /dev/null", "rows/s", copies));
    report.figure(Figure::new("differences found by verify", "rows", diffs));
    report.comparisons.push(Comparison::new(
        "replay rebuild events/s vs COPY rows/s",
        report.median_of("replay rebuild").unwrap_or(0.0),
        "COPY",
        report.median_of("COPY to /dev/null").unwrap_or(0.0),
        Some(0.3),
    ));
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Loads connection histories until the log holds `options.events`.
async fn load_log(db: &BenchDb, options: &ReplayBenchOptions) -> anyhow::Result<u64> {
    let client = db.client().await?;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    let mut total = 0u64;
    let mut index = 0usize;
    while total < options.events {
        let mut h = History::created(index, now)?;
        index += 1;
        let mut round = 0u64;
        let mut number = 0u64;
        while (h.version as u64) < options.per_connection {
            for _ in 0..2 {
                number += 1;
                h.notify(number, now)?;
            }
            h.sync_round(round, 3, now)?;
            round += 1;
        }
        total += h.version as u64;
        rows.append(&mut h.rows);
        if rows.len() >= 50_000 {
            load::insert(&client, &rows).await?;
            rows.clear();
        }
    }
    load::insert(&client, &rows).await?;
    client.batch_execute("VACUUM ANALYZE events").await?;
    Ok(total)
}
