//! `bench scale`: the same work with one, two and three `calsync serve`
//! nodes (child processes, one cluster secret, docs/CLUSTER.md) on one
//! private PostgreSQL, the simulators in this process. For each node count,
//! on a fresh database:
//!
//! - **ingest**: valid, distinct Google notifications sent round-robin
//!   through every node by the load generator (a separate process,
//!   closed loop); a node that does not own the connection forwards it to
//!   the owner (or makes it durable in the inbox), so the accepted rate is
//!   the cluster's;
//! - **latency**: at a moderate steady rate, a change in the simulator, then
//!   its webhook POSTed to the next node round-robin, until the busy
//!   interval is visible in `busy_intervals` (the simulator's own push is
//!   dropped so that the benchmark chooses the node that receives it).
//!
//! Per-node efficiency is rate(N) ÷ (N × rate(1)). Every node, PostgreSQL,
//! the simulators and the load generator share one machine, so on a small
//! machine the figure says how CPU is shared, not how far the design scales.

use super::latency::wait_until_ready;
use super::loadgen::{LoadGen, LoadSpec, RequestTemplate};
use super::report::{percentile, Comparison, Figure, Machine, Report};
use super::visible::{self, VisibilityProbe, POLL};
use crate::drills::nodes::{evenly_spread, Nodes};
use anyhow::{anyhow, Context};
use calsim::{NotificationFaults, Provider};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ScaleOptions {
    /// Node counts measured, in order (the first should be 1: the
    /// efficiency is relative to it).
    pub node_counts: Vec<usize>,
    /// Google connections (each with a real push channel).
    pub connections: usize,
    /// Load generator clients of the ingest run.
    pub concurrency: usize,
    /// Seconds of the ingest run.
    pub seconds: u64,
    /// Changes per second of the latency run.
    pub rate: u64,
    /// Seconds of the latency run.
    pub latency_seconds: u64,
    /// The binary the nodes run (`None`: this process's own).
    pub exe: Option<PathBuf>,
    pub load_gen: LoadGen,
}

impl ScaleOptions {
    pub fn full(load_gen: LoadGen) -> Self {
        ScaleOptions {
            node_counts: vec![1, 2, 3],
            connections: 60,
            concurrency: 32,
            seconds: 10,
            rate: 50,
            latency_seconds: 10,
            exe: None,
            load_gen,
        }
    }

    pub fn quick(load_gen: LoadGen) -> Self {
        ScaleOptions {
            node_counts: vec![1, 2],
            connections: 8,
            concurrency: 8,
            seconds: 2,
            rate: 20,
            latency_seconds: 2,
            exe: None,
            load_gen,
        }
    }
}

/// What one node count measured.
struct Measured {
    nodes: usize,
    accepted_per_second: f64,
    errors: u64,
    ingest_p99: f64,
    latency_p50: f64,
    latency_p99: f64,
    missing: usize,
}

pub async fn run(options: &ScaleOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    anyhow::ensure!(
        !options.node_counts.is_empty(),
        "bench scale: no node counts"
    );
    let mut measured = Vec::new();
    let mut postgres = String::new();
    for &n in &options.node_counts {
        let nodes = Nodes::start_with("bench-scale", n.max(1), options.exe.clone()).await?;
        if postgres.is_empty() {
            postgres = nodes.h.postgres_version().await.unwrap_or_default();
        }
        let result = measure(&nodes, n.max(1), options).await;
        nodes.stop().await;
        measured.push(result.with_context(|| format!("bench scale with {n} node(s)"))?);
    }

    let mut report = Report::new("scale", Machine::detect(postgres));
    report.config("node_counts", &options.node_counts);
    report.config("connections", options.connections);
    report.config("ingest_concurrency", options.concurrency);
    report.config("ingest_seconds", options.seconds);
    report.config("latency_changes_per_second", options.rate);
    report.config("latency_seconds", options.latency_seconds);
    report.config("load_generator", options.load_gen.describe());
    report.config("poll_resolution_ms", POLL.as_millis() as u64);
    report.config(
        "topology",
        "N calsync serve child processes (cluster secret, 1,024 leased slices) on one \
         private PostgreSQL (fsync on), a fresh database per node count; simulators in \
         the benchmark's process",
    );
    report.config(
        "ingest",
        "POST /webhooks/google round-robin over every node; a non-owner forwards to the \
         owner over /internal (or the inbox); sync_enabled off so only ingest is measured",
    );
    report.config(
        "latency",
        "simulator upsert_event (its push dropped) -> webhook POSTed to the next node \
         round-robin -> owner's actor -> events.list -> busy_intervals row visible \
         (polled from the database)",
    );
    for m in &measured {
        let at = |what: &str| format!("{} node(s): {what}", m.nodes);
        report.figure(Figure::single(
            &at("accepted/s"),
            "req/s",
            m.accepted_per_second,
        ));
        report.figure(Figure::single(
            &at("ingest non-2xx or failed"),
            "count",
            m.errors as f64,
        ));
        report.figure(Figure::single(
            &at("ingest latency p99"),
            "ms",
            m.ingest_p99,
        ));
        report.figure(Figure::single(
            &at("webhook -> busy p50"),
            "ms",
            m.latency_p50,
        ));
        report.figure(Figure::single(
            &at("webhook -> busy p99"),
            "ms",
            m.latency_p99,
        ));
        report.figure(Figure::single(
            &at("never visible within 20 s"),
            "changes",
            m.missing as f64,
        ));
    }
    if let Some(one) = measured.iter().find(|m| m.nodes == 1) {
        for m in measured.iter().filter(|m| m.nodes > 1) {
            report.comparisons.push(Comparison::new(
                &format!("ingest: per-node efficiency with {} nodes", m.nodes),
                m.accepted_per_second,
                &format!("{} x the 1-node rate", m.nodes),
                m.nodes as f64 * one.accepted_per_second,
                None,
            ));
            report.comparisons.push(Comparison::new(
                &format!("ingest: {} nodes vs 1 node", m.nodes),
                m.accepted_per_second,
                "1 node",
                one.accepted_per_second,
                None,
            ));
            report.comparisons.push(Comparison::new(
                &format!("webhook -> busy p99: {} nodes vs 1 node", m.nodes),
                m.latency_p99,
                "1 node",
                one.latency_p99,
                None,
            ));
        }
    }
    report.notes.push(format!(
        "this machine has {} CPU(s) shared by every node, PostgreSQL, the simulators and the \
         load generator: the run is CPU-bound, so more nodes add forwarding hops and lease \
         work without adding CPU, and per-node efficiency well below 1 is expected here; \
         it measures the cluster's overhead on fixed hardware, not scale-out on separate \
         machines (see BENCHMARKS.md, capacity model)",
        report.machine.cpus
    ));
    report.notes.push(
        "no targets: the issue asks for the figures and the ratios only; efficiency = \
         accepted/s with N nodes / (N x accepted/s with 1 node)"
            .into(),
    );
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Google connections, ready; ingest; latency — on `n` running nodes.
async fn measure(nodes: &Nodes, n: usize, options: &ScaleOptions) -> anyhow::Result<Measured> {
    let h = &nodes.h;
    // The benchmark, not the simulator, chooses which node gets a push.
    h.sim.set_notification_faults(
        Provider::Google,
        NotificationFaults {
            drop_rate: 1.0,
            ..NotificationFaults::default()
        },
    );
    // Leases settled: every slice held, evenly.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !evenly_spread(&nodes.sample().await, n) {
        if Instant::now() > deadline {
            return Err(anyhow!("{n} node(s) did not share the slices within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Connections through the admin API of node 0 (forwarded to owners).
    let accounts: Vec<String> = (0..options.connections.max(1))
        .map(|i| format!("scale-{i}@example.com"))
        .collect();
    let mut ids = Vec::with_capacity(accounts.len());
    for chunk in accounts.chunks(8) {
        let made = futures::future::join_all(chunk.iter().map(|a| async move {
            let pp = format!("pp-{a}");
            h.google_connection(a, &pp).await
        }))
        .await;
        for id in made {
            ids.push(id?);
        }
    }
    let client = h.db().await?;
    wait_until_ready(&client, ids.len()).await?;
    // Each account's live channel, as the simulator holds it.
    let channel_of_connection = visible::channel_of_connections(&client).await?;
    let sim_channels: HashMap<String, (String, String, String)> = h
        .sim
        .google()
        .channels()
        .into_iter()
        .filter(|c| !c.stopped)
        .map(|c| {
            (
                c.id.clone(),
                (c.id, c.token.unwrap_or_default(), c.resource_id),
            )
        })
        .collect();
    let channels: Vec<(String, String, String)> = ids
        .iter()
        .map(|id| {
            channel_of_connection
                .get(id)
                .and_then(|ch| sim_channels.get(ch))
                .cloned()
                .ok_or_else(|| anyhow!("no live channel for connection {id}"))
        })
        .collect::<anyhow::Result<_>>()?;

    let calendar_of = visible::calendar_of_connections(&client).await?;
    let places: Vec<(String, String)> = ids
        .iter()
        .map(|id| (id.clone(), calendar_of.get(id).cloned().unwrap_or_default()))
        .collect();
    let (latency_p50, latency_p99, missing) =
        latency(nodes, &accounts, &places, &channels, options).await?;

    // Ingest only: no syncs behind the notifications.
    h.set_flag("sync_enabled", false).await?;
    // Settings are polled every 250 ms on every node.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut requests = Vec::with_capacity(channels.len() * n);
    for channel in &channels {
        for node in &nodes.nodes {
            requests.push(RequestTemplate {
                url: format!("{}/webhooks/google", node.base),
                headers: vec![
                    ("X-Goog-Channel-ID".into(), channel.0.clone()),
                    ("X-Goog-Channel-Token".into(), channel.1.clone()),
                    ("X-Goog-Resource-ID".into(), channel.2.clone()),
                    ("X-Goog-Resource-State".into(), "exists".into()),
                    ("X-Goog-Message-Number".into(), "{n}".into()),
                ],
                body: None,
            });
        }
    }
    let result = options
        .load_gen
        .run(&LoadSpec {
            requests,
            concurrency: options.concurrency.max(1),
            seconds: options.seconds.max(1) as f64,
            // Above every number the latency run used.
            counter_start: 100_000_000,
            rate: None,
        })
        .await?;
    Ok(Measured {
        nodes: n,
        accepted_per_second: result.per_second(),
        errors: result.errors,
        ingest_p99: percentile(&result.latencies_ms, 99.0),
        latency_p50,
        latency_p99,
        missing,
    })
}

/// Steady changes, each followed by its webhook to the next node:
/// (p50 ms, p99 ms, changes never visible).
/// `places[i]` is account i's connection id and calendar.
async fn latency(
    nodes: &Nodes,
    accounts: &[String],
    places: &[(String, String)],
    channels: &[(String, String, String)],
    options: &ScaleOptions,
) -> anyhow::Result<(f64, f64, usize)> {
    let h = &nodes.h;
    let probe = VisibilityProbe::start(h.db().await?).await?;
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate.max(1) as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let tomorrow = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc()
        + chrono::Duration::days(1);
    let total = options.rate.max(1) * options.latency_seconds.max(1);
    let mut sends = tokio::task::JoinSet::new();
    for k in 0..total {
        ticker.tick().await;
        let i = (k as usize) % accounts.len();
        let start = tomorrow + chrono::Duration::minutes((k % 600) as i64);
        // Google ids are base32hex (a-v, 0-9), at least 5 characters.
        let id = format!("sca{k:07}");
        let event = serde_json::json!({
            "id": id,
            "summary": "busy",
            "start": {"dateTime": start.to_rfc3339()},
            "end": {"dateTime": (start + chrono::Duration::minutes(30)).to_rfc3339()},
        });
        probe.expect(id, &places[i].0, &places[i].1);
        h.sim
            .google()
            .upsert_event(&accounts[i], "primary", event)
            .map_err(|e| anyhow!("simulator refused a change: {e:?}"))?;
        let base = nodes.nodes[(k as usize) % nodes.nodes.len()].base.clone();
        let (http, channel) = (h.http.clone(), channels[i].clone());
        sends.spawn(async move {
            crate::drills::harness::google_request(&http, &base, &channel, 1_000_000 + k)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        });
    }
    while sends.join_next().await.is_some() {}
    let (seen, missing) = probe.finish(Duration::from_secs(20)).await?;
    let ms: Vec<f64> = seen.iter().map(|s| s.ms).collect();
    Ok((percentile(&ms, 50.0), percentile(&ms, 99.0), missing))
}
