//! `bench recovery`: kill a connection's actor (ractor `kill`: no handler
//! runs) and time until its next input is committed and answered by the
//! new incarnation — with a snapshot to start from, and without one (the
//! whole stream folded). p50/p99 over many kills.

use super::load::{self, History};
use super::report::{percentile, Figure, Machine, Report, Target};
use super::setup::{self, BenchDb};
use crate::actors::{ActorSettings, Connections, SendError};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::ConnectionId;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    /// Events in the connection's stream before the drills.
    pub events: u64,
    /// Kills per variant (with and without snapshots).
    pub kills: usize,
}

impl RecoveryOptions {
    pub fn full() -> Self {
        RecoveryOptions {
            events: 10_000,
            kills: 200,
        }
    }

    pub fn quick() -> Self {
        RecoveryOptions {
            events: 2_000,
            kills: 20,
        }
    }
}

pub async fn run(options: &RecoveryOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let db = BenchDb::start(16).await?;
    let mut report = Report::new("recovery", Machine::detect(db.server_version().await));
    report.config("stream_events", options.events);
    report.config("kills_per_variant", options.kills);
    report.config(
        "method",
        "one connection with a bulk-loaded stream (created + notifications); per drill: \
         Connections::kill, then AcceptNotification retried until a new incarnation commits \
         it; timed from the kill to the answer",
    );
    let now = chrono::Utc::now();
    let mut history = History::created(0, now)?;
    for n in 1..options.events.max(2) {
        history.notify(n, now)?;
    }
    let client = db.client().await?;
    load::insert(&client, &history.rows).await?;
    client.batch_execute("VACUUM ANALYZE events").await?;
    let id = history.id;

    // With snapshots: the first commit after a full fold saves one (the
    // actor snapshots every 100 events), and every incarnation starts from it.
    let with = drills(&db, id, setup::actor_settings(), options.kills, false).await?;
    let snapshots: i64 = client
        .query_one("SELECT count(*) FROM snapshots", &[])
        .await?
        .get(0);
    // Without: no snapshot is ever saved or found; every start folds it all.
    let settings = ActorSettings {
        snapshot_every: u64::MAX,
        ..setup::actor_settings()
    };
    client.batch_execute("DELETE FROM snapshots").await?;
    let without = drills(&db, id, settings, options.kills, true).await?;

    for (label, run) in [("with snapshots", &with), ("without snapshots", &without)] {
        report.figure(Figure::single(
            &format!("{label}: p50"),
            "ms",
            percentile(&run.ms, 50.0),
        ));
        report.figure(Figure::single(
            &format!("{label}: p99"),
            "ms",
            percentile(&run.ms, 99.0),
        ));
        report.figure(Figure::single(
            &format!("{label}: max"),
            "ms",
            percentile(&run.ms, 100.0),
        ));
        report.figure(Figure::single(
            &format!("{label}: kills timed"),
            "kills",
            run.ms.len() as f64,
        ));
        report.figure(Figure::single(
            &format!("{label}: retries (input reached the dead actor)"),
            "count",
            run.retries as f64,
        ));
    }
    report.figure(Figure::single(
        "snapshots present in the with-snapshot run",
        "rows",
        snapshots as f64,
    ));
    report.targets.push(Target::at_most(
        "p99 kill -> next input handled, with snapshots",
        percentile(&with.ms, 99.0),
        50.0,
        "ms",
    ));
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

struct Drills {
    ms: Vec<f64>,
    retries: u64,
}

async fn drills(
    db: &BenchDb,
    id: ConnectionId,
    settings: ActorSettings,
    kills: usize,
    drop_snapshots: bool,
) -> anyhow::Result<Drills> {
    let connections = Connections::start(db.store.clone(), settings).await?;
    let mut number = 10_000_000u64 + if drop_snapshots { 5_000_000 } else { 0 };
    let mut next = || {
        number += 1;
        ConnectionCommand::AcceptNotification {
            key: format!("google:bench-recovery:{number}"),
            channel_id: "bench-recovery".into(),
        }
    };
    // Warm: the first activation folds the stream (and saves a snapshot
    // when allowed).
    connections
        .command(id, next(), Uuid::new_v4())
        .await
        .map_err(|e| anyhow::anyhow!("first input: {e}"))?;
    let client = db.client().await?;
    let mut out = Drills {
        ms: Vec::with_capacity(kills),
        retries: 0,
    };
    for _ in 0..kills {
        if drop_snapshots {
            client.batch_execute("DELETE FROM snapshots").await?;
        }
        let before = connections.incarnation(id).unwrap_or(0);
        let t = Instant::now();
        if !connections.kill(id) {
            anyhow::bail!("the actor was not active before a kill");
        }
        loop {
            match connections.command(id, next(), Uuid::new_v4()).await {
                Ok(_) if connections.incarnation(id).unwrap_or(0) > before => break,
                // The dead actor's mailbox, or the registry not updated yet:
                // what a real caller retrying would see.
                Ok(_) | Err(SendError::Stopped | SendError::Unavailable(_)) => {
                    out.retries += 1;
                    tokio::task::yield_now().await;
                }
                Err(e) => anyhow::bail!("input after a kill: {e}"),
            }
            if t.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the actor did not come back within 30 s");
            }
        }
        out.ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    connections.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(out)
}
