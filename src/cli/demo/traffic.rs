//! The traffic phase: users editing their calendars at a steady rate (each
//! edit is a push notification to calsync), flaky notification delivery
//! (duplicated and replayed copies), one provider outage window, and a
//! couple of actor kills — with a live line every few seconds.

use super::accounts::Demoed;
use super::stats::{self, Snapshot};
use super::world::World;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::CalendarProvider;
use calsim::{FaultKind, FaultRule, NotificationFaults, Provider, Scenario};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// When things happen, relative to the start of the traffic phase.
#[derive(Debug, Clone)]
pub struct Plan {
    pub duration: Duration,
    /// External changes per second.
    pub rate: f64,
    pub outage_at: Duration,
    pub outage_len: Duration,
    pub kills_at: Vec<Duration>,
    pub live_every: Duration,
}

impl Plan {
    /// The outage starts a third of the way in and lasts about a sixth of
    /// the run (1.5–5 s); kills at a quarter and at two thirds; a live line
    /// every eighth of the run (2–5 s).
    pub fn for_run(duration: Duration, rate: f64) -> Plan {
        let secs = duration.as_secs_f64();
        Plan {
            duration,
            rate,
            outage_at: duration.mul_f64(0.35),
            outage_len: Duration::from_secs_f64((secs / 6.0).clamp(1.5, 5.0)),
            kills_at: vec![duration.mul_f64(0.25), duration.mul_f64(0.65)],
            live_every: Duration::from_secs_f64((secs / 8.0).clamp(2.0, 5.0)),
        }
    }
}

/// Notification faults during traffic: a quarter of notifications arrive
/// twice, a fifth again ~0.4 s later (a replay), all of which calsync must
/// answer `duplicate` without extra sync work.
pub fn flaky_delivery() -> NotificationFaults {
    NotificationFaults {
        duplicate_rate: 0.25,
        replay_rate: 0.2,
        replay_after_ms: 400,
        ..NotificationFaults::default()
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrafficReport {
    /// External changes by kind (`create`, `move`, `delete`).
    pub changes: BTreeMap<String, usize>,
    pub outage_len: Duration,
    /// Accounts whose actor was killed, with when (seconds into traffic).
    /// `kill_random` may pick the same actor twice: that is a restart too.
    pub killed: Vec<(String, f64)>,
}

impl TrafficReport {
    pub fn total_changes(&self) -> usize {
        self.changes.values().sum()
    }
}

pub async fn run(
    world: &World,
    demoed: &[Demoed],
    scenario: &Scenario,
    plan: &Plan,
    ledger: &mut super::bookings::Ledger,
) -> anyhow::Result<TrafficReport> {
    for provider in [Provider::Google, Provider::Graph] {
        world
            .sim
            .set_notification_faults(provider, flaky_delivery());
    }
    let google = world.sim.google();
    let graph = world.sim.graph();
    let mut report = TrafficReport {
        outage_len: plan.outage_len,
        ..TrafficReport::default()
    };
    let mut pending_kills = plan.kills_at.clone();
    let mut outage_started = false;
    let mut next_live = plan.live_every;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    while started.elapsed() < plan.duration {
        tick.tick().await;
        let label = scenario.mutate_once(&google, &graph);
        *report.changes.entry(label).or_default() += 1;
        // A booking change on every other tick: the outbound path under the
        // same duplicates, outage and kills as the inbound one.
        if report.total_changes() % 2 == 0 {
            ledger.step(world, demoed).await?;
        }
        let now = started.elapsed();
        if !outage_started && now >= plan.outage_at {
            outage_started = true;
            start_outage(world, demoed, plan.outage_len).await;
        }
        while pending_kills.first().is_some_and(|at| now >= *at) {
            pending_kills.remove(0);
            for id in world.connections.kill_random(1) {
                let account = demoed
                    .iter()
                    .find(|d| d.id == id)
                    .map(|d| d.account.clone())
                    .unwrap_or_else(|| id.to_string());
                println!(
                    "  [{:>5.1}s] killed the actor of {account} (ractor kill: no handler runs)",
                    now.as_secs_f64()
                );
                report.killed.push((account, now.as_secs_f64()));
            }
        }
        if now >= next_live {
            next_live += plan.live_every;
            let snap = stats::collect(world, demoed).await?;
            println!("  [{:>5.1}s] {}", now.as_secs_f64(), live_line(&snap));
        }
    }
    Ok(report)
}

/// Every Google API call answers 503 until the window ends. The Google
/// connections are asked to sync as the window opens (as a poll would),
/// so the outage is met even when few edits fall inside it.
async fn start_outage(world: &World, demoed: &[Demoed], len: Duration) {
    let until = world.sim.now()
        + chrono::Duration::from_std(len).unwrap_or_else(|_| chrono::Duration::seconds(5));
    world.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: None,
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::Outage { until },
        remaining: None,
    });
    println!(
        "  [outage] Google API answers 503 for {:.1} s: syncs fail, connections back off, then recover",
        len.as_secs_f64()
    );
    for d in demoed
        .iter()
        .filter(|d| d.provider == CalendarProvider::Google)
    {
        if let Err(e) = world
            .connections
            .command(d.id, ConnectionCommand::RequestSync, Uuid::new_v4())
            .await
        {
            tracing::warn!(account = %d.account, error = %e, "sync request refused");
        }
    }
}

pub fn live_line(s: &Snapshot) -> String {
    format!(
        "connections {} | busy intervals {} | notifications {} accepted, {} duplicates answered | syncs {} ok, {} failed | restarts {}",
        s.statuses(),
        s.busy_intervals,
        s.event("notification_accepted"),
        s.webhooks_duplicate,
        s.syncs_succeeded,
        s.syncs_failed,
        s.restarts,
    )
}
