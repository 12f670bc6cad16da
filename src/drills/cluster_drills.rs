//! `node-kill` and `rolling-restart`: three `serve` nodes in cluster mode
//! on one database (docs/CLUSTER.md), webhook traffic through all three.
//!
//! - `node-kill`: the node owning the most connections is SIGKILLed under
//!   traffic; the others take its slices within the lease's expiry.
//! - `rolling-restart`: each node in turn gets SIGTERM (hand-over, drain)
//!   and is started again, under traffic; no answer is a 5xx other than a
//!   503 that was retried.
//!
//! Both then check: every acknowledged notification is in the log exactly
//! once; every booking is one external event; busy time added during the
//! fault reaches the projections; `replay --verify` is clean.

use super::harness::google_request;
use super::nodes::{evenly_spread, Nodes};
use super::report::DrillReport;
use super::Sizes;
use crate::core::cluster::{LEASE_TTL, TICK};
use crate::core::dedupe::DedupeKey;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The drills this module runs.
pub const NAMES: [&str; 2] = ["node-kill", "rolling-restart"];

type Channel = (String, String, String);

struct Conn {
    id: String,
    email: String,
    pp: String,
    channel: Channel,
}

/// What the traffic saw: (channel, number) acknowledged, and the answers
/// that were not 2xx, by status (0: no answer).
#[derive(Default)]
struct Sent {
    acked: BTreeSet<(String, u64)>,
    unacked: Vec<(String, u64)>,
    errors: BTreeMap<u16, u64>,
}

/// Notifications round-robin over the channels and the nodes until `stop`;
/// a failed one is retried on the next node (what a load balancer does).
fn traffic(
    http: reqwest::Client,
    bases: Vec<String>,
    channels: Vec<Channel>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Sent> {
    tokio::spawn(async move {
        let mut sent = Sent::default();
        // Far above the simulator's own message numbers (it pushes when a
        // calendar changes), so no key of ours repeats one of its.
        let mut n = 1_000_000u64;
        let mut node = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for ch in &channels {
                let mut ok = false;
                for _ in 0..200 {
                    node += 1;
                    let base = &bases[node % bases.len()];
                    let status = google_request(&http, base, ch, n)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    if (200..300).contains(&status) {
                        ok = true;
                        break;
                    }
                    *sent.errors.entry(status).or_insert(0) += 1;
                    // Retry pause, as a provider's redelivery would.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if ok {
                    sent.acked.insert((ch.0.clone(), n));
                } else {
                    sent.unacked.push((ch.0.clone(), n));
                }
            }
            n += 1;
            // Pace: about 100 notifications a second across the channels.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent
    })
}

/// Runs one cluster drill end to end; a harness failure is a FAIL.
pub async fn run(name: &str, sizes: Sizes) -> DrillReport {
    let mut report = DrillReport::new(name, sizes.quick);
    let started = Instant::now();
    eprintln!("[{name}] starting PostgreSQL, simulators and three calsync serve nodes");
    match Nodes::start(name, 3).await {
        Err(e) => {
            eprintln!("[{name}] cannot start: {e:#}");
            report.error = Some(format!("harness: {e:#}"));
        }
        Ok(mut nodes) => {
            let result = match name {
                "node-kill" => node_kill(&mut nodes, &mut report, sizes).await,
                _ => rolling_restart(&mut nodes, &mut report, sizes).await,
            };
            if let Err(e) = result {
                eprintln!("[{name}] stopped early: {e:#}");
                report.error = Some(format!("{e:#}"));
            }
            match nodes.h.replay_verify().await {
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
            if !report.passed() {
                for node in &nodes.nodes {
                    let kept = std::env::temp_dir()
                        .join(format!("calsync-drill-{name}-{}.log", node.name));
                    if std::fs::copy(&node.log, &kept).is_ok() {
                        report.measure(&format!("log_{}", node.name), kept.display().to_string());
                    }
                }
            }
            nodes.stop().await;
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

async fn setup(nodes: &mut Nodes, n: usize, tag: &str) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    for i in 0..n {
        nodes.use_node(i % nodes.nodes.len());
        let email = format!("{tag}{i}@example.com");
        let pp = format!("pp-{tag}{i}");
        let (id, channel) = nodes.h.google_ready(&email, &pp).await?;
        conns.push(Conn {
            id,
            email,
            pp,
            channel,
        });
    }
    Ok(conns)
}

/// Posts a booking through any live node, retrying 503s (a slice moving).
async fn book(nodes: &mut Nodes, conn: &Conn, booking: &str, hour: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = 0;
    loop {
        k += 1;
        let live: Vec<usize> = (0..nodes.nodes.len())
            .filter(|i| nodes.nodes[*i].is_running())
            .collect();
        nodes.use_node(live[k % live.len()]);
        match nodes.h.book(booking, &conn.pp, hour).await {
            Ok((s, _)) if (200..300).contains(&s) => return Ok(()),
            Ok((s, body)) if s != 503 => anyhow::bail!("booking {booking} answered {s}: {body}"),
            _ if Instant::now() > deadline => anyhow::bail!("booking {booking} never accepted"),
            // Retry pause after a 503 or no answer.
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Adds one external event per connection (busy time to converge on).
fn add_external(nodes: &Nodes, conns: &[Conn], hour: i64) -> anyhow::Result<Vec<String>> {
    let (start, end) = super::harness::tomorrow(hour);
    conns
        .iter()
        .map(|c| {
            let e = nodes
                .h
                .sim
                .google()
                .upsert_event(
                    &c.email,
                    "primary",
                    json!({
                        "summary": "external during the fault",
                        "start": {"dateTime": start.to_rfc3339()},
                        "end": {"dateTime": end.to_rfc3339()},
                    }),
                )
                .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
            Ok(e["id"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// The checks both drills end with.
async fn verify(
    nodes: &mut Nodes,
    r: &mut DrillReport,
    conns: &[Conn],
    mut sent: Sent,
    bookings: &[(usize, String)],
    external: &[String],
) -> anyhow::Result<()> {
    // The provider redelivers what was never acknowledged.
    let live: Vec<String> = nodes
        .nodes
        .iter()
        .filter(|n| n.is_running())
        .map(|n| n.base.clone())
        .collect();
    for (ch_id, n) in std::mem::take(&mut sent.unacked) {
        let Some(c) = conns.iter().find(|c| c.channel.0 == ch_id) else {
            continue;
        };
        for k in 0..50 {
            let s = google_request(&nodes.h.http, &live[k % live.len()], &c.channel, n)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if (200..300).contains(&s) {
                sent.acked.insert((ch_id.clone(), n));
                break;
            }
            // Redelivery pause.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Inboxed notifications are committed by their owners within a tick.
    let drained = super::harness::eventually(Duration::from_secs(15), || async {
        nodes
            .h
            .count("SELECT count(*) FROM inbox")
            .await
            .unwrap_or(-1)
            == 0
    })
    .await;
    r.check(
        "the inbox is drained by the owners",
        drained.is_some(),
        format!("inbox empty after {drained:?}"),
    );
    let rows = nodes
        .h
        .db()
        .await?
        .query(
            "SELECT payload->>'key', count(*) FROM events \
             WHERE event_type = 'notification_accepted' GROUP BY 1",
            &[],
        )
        .await?;
    let logged: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let twice: Vec<&String> = logged
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(k, _)| k)
        .collect();
    let duplicates = twice.len();
    let missing = sent
        .acked
        .iter()
        .filter(|(ch, n)| !logged.contains_key(DedupeKey::google(ch, *n).as_str()))
        .count();
    r.check(
        "every acknowledged notification is logged exactly once",
        missing == 0 && duplicates == 0 && !sent.acked.is_empty(),
        format!(
            "{} acknowledged: {missing} missing from the log, {duplicates} logged twice {:?}; \
             non-2xx answers retried on another node: {:?}",
            sent.acked.len(),
            twice.iter().take(5).collect::<Vec<_>>(),
            sent.errors
        ),
    );
    let bad_5xx: u64 = sent
        .errors
        .iter()
        .filter(|(s, _)| (500..600).contains(*s) && **s != 503)
        .map(|(_, n)| *n)
        .sum();
    r.check(
        "no 5xx answer other than a retried 503",
        bad_5xx == 0,
        format!(
            "answers by status (0: connection refused by a stopped node): {:?}",
            sent.errors
        ),
    );
    r.measure("notifications_acknowledged", sent.acked.len());

    // Each booking is exactly one live external event.
    let mut problems = Vec::new();
    let one_each = super::harness::eventually(Duration::from_secs(30), || {
        problems.clear();
        for (i, booking) in bookings {
            let title = format!("booking {booking}");
            let n = nodes
                .h
                .sim
                .google()
                .stored_events(&conns[*i].email, "primary")
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["status"] != "cancelled" && e["summary"] == title)
                .count();
            if n != 1 {
                problems.push(format!("{booking}: {n} events"));
            }
        }
        let ok = problems.is_empty();
        async move { ok }
    })
    .await;
    r.check(
        "every booking is exactly one external event (0 duplicates)",
        one_each.is_some(),
        format!("{} bookings; problems: {problems:?}", bookings.len()),
    );

    // Busy time added during the fault reaches the projections (pushes
    // through live nodes; the owners sync).
    let mut number = 9_000_000u64;
    let converged = super::harness::eventually(Duration::from_secs(30), || {
        number += 1;
        let n = number;
        let nodes = &*nodes;
        let live = live.clone();
        async move {
            let mut all = true;
            for (c, ext) in conns.iter().zip(external) {
                let seen = nodes
                    .h
                    .count(&format!(
                        "SELECT count(*) FROM busy_intervals WHERE connection_id = '{}' \
                         AND external_event_id = '{}'",
                        c.id,
                        ext.replace('\'', "")
                    ))
                    .await
                    .unwrap_or(0);
                if seen != 1 {
                    all = false;
                    let _ = google_request(&nodes.h.http, &live[0], &c.channel, n)
                        .send()
                        .await;
                }
            }
            all
        }
    })
    .await;
    r.check(
        "busy time converges on every connection",
        converged.is_some(),
        format!(
            "{} external events added during the fault, all busy after {converged:?}",
            external.len()
        ),
    );
    Ok(())
}

async fn node_kill(nodes: &mut Nodes, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let conns = setup(nodes, sizes.pick(3, 9), "kill").await?;
    let mut bookings = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let id = format!("bk-before-{i}");
        book(nodes, c, &id, 9).await?;
        bookings.push((i, id));
    }
    let bases: Vec<String> = nodes.nodes.iter().map(|n| n.base.clone()).collect();
    let channels: Vec<Channel> = conns.iter().map(|c| c.channel.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(nodes.h.http.clone(), bases, channels, stop.clone());
    // Traffic through all three before the kill.
    tokio::time::sleep(Duration::from_millis(sizes.pick(1000, 5000))).await;

    // The node owning the most connections dies.
    let mut owned: BTreeMap<String, usize> = BTreeMap::new();
    for c in &conns {
        if let Some(o) = nodes.owner_of(&c.id).await? {
            *owned.entry(o).or_insert(0) += 1;
        }
    }
    let victim_name = owned
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| "node-0".into());
    let victim = nodes.index_of(&victim_name).unwrap_or(0);
    nodes.kill(victim).await?;
    let killed_at = Instant::now();
    eprintln!(
        "[node-kill] SIGKILLed {victim_name} (owner of {:?} connections)",
        owned.get(&victim_name)
    );
    let external = add_external(nodes, &conns, 14)?;
    for (i, c) in conns.iter().enumerate() {
        let id = format!("bk-during-{i}");
        book(nodes, c, &id, 11).await?;
        bookings.push((i, id));
    }
    let taken = super::harness::eventually(Duration::from_secs(30), || async {
        evenly_spread(&nodes.sample().await, 2)
    })
    .await
    .map(|_| killed_at.elapsed());
    let bound = LEASE_TTL + TICK * 2;
    r.check(
        "the killed node's slices are taken over within the lease's expiry",
        taken.is_some_and(|t| t <= bound),
        format!("two survivors hold all 1024 slices evenly {taken:?} after the SIGKILL (bound {bound:?})"),
    );
    r.measure("takeover_ms", taken.map(|t| t.as_millis()));
    tokio::time::sleep(Duration::from_millis(sizes.pick(1000, 5000))).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await?;
    verify(nodes, r, &conns, sent, &bookings, &external).await
}

async fn rolling_restart(
    nodes: &mut Nodes,
    r: &mut DrillReport,
    sizes: Sizes,
) -> anyhow::Result<()> {
    let conns = setup(nodes, sizes.pick(3, 9), "roll").await?;
    let mut bookings = Vec::new();
    let bases: Vec<String> = nodes.nodes.iter().map(|n| n.base.clone()).collect();
    let channels: Vec<Channel> = conns.iter().map(|c| c.channel.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(nodes.h.http.clone(), bases, channels, stop.clone());
    let mut external = Vec::new();
    let mut clean_exits = 0;
    let mut rebalanced = 0;
    for i in 0..nodes.nodes.len() {
        // Traffic before each restart.
        tokio::time::sleep(Duration::from_millis(sizes.pick(500, 3000))).await;
        let status = nodes.terminate(i).await?;
        if status.success() {
            clean_exits += 1;
        }
        let ext = add_external(
            nodes,
            &conns[i % conns.len()..=i % conns.len()],
            15 + i as i64,
        )?;
        external.push((i % conns.len(), ext[0].clone()));
        let c = &conns[i % conns.len()];
        let id = format!("bk-roll-{i}");
        book(nodes, c, &id, 8 + i as i64).await?;
        bookings.push((i % conns.len(), id));
        nodes.spawn(i).await?;
        if super::harness::eventually(Duration::from_secs(20), || async {
            evenly_spread(&nodes.sample().await, 3)
        })
        .await
        .is_some()
        {
            rebalanced += 1;
        }
    }
    r.check(
        "every node exits cleanly on SIGTERM and its share comes back after the restart",
        clean_exits == 3 && rebalanced == 3,
        format!(
            "{clean_exits} of 3 clean exits; even spread regained after {rebalanced} of 3 restarts"
        ),
    );
    tokio::time::sleep(Duration::from_millis(sizes.pick(500, 3000))).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await?;
    // The i-th external event is connection i's (i < 3 ≤ connections):
    // verify() pairs them in order.
    let external: Vec<String> = external.into_iter().map(|(_, e)| e).collect();
    verify(nodes, r, &conns, sent, &bookings, &external).await
}
