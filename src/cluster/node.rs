//! The lease task: one per node. Every [`TICK`] it heartbeats, reads the
//! lease table, asks [`crate::core::cluster::plan`] what to do, releases
//! (after stopping those slices' actors), renews and claims, stops the
//! actors of any slice it lost, and drains the inbox of the slices it
//! holds. On SIGTERM, [`ClusterNode::leave`] hands everything over.

use super::leases;
use super::link::{ClusterLink, Owner};
use super::metric_names as m;
use crate::actors::{Connections, SendError};
use crate::core::cluster::{plan, slice_of, BELIEF, SLICES, STOP_BOUND, TICK};
use crate::core::ids::ConnectionId;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Inbox rows drained per tick (the rest wait for the next).
const DRAIN_BATCH: i64 = 256;

/// The running lease task of this node.
pub struct ClusterNode {
    link: Arc<ClusterLink>,
    connections: Connections,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Summary of one tick (logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    pub held: usize,
    pub claimed: usize,
    pub released: usize,
    pub lost: usize,
    pub drained: usize,
}

impl ClusterNode {
    /// Attaches `link` to `connections`, runs one tick at once (so a lone
    /// node serves everything the moment it is ready) and starts the task.
    pub async fn join(link: Arc<ClusterLink>, connections: Connections) -> anyhow::Result<Self> {
        connections.attach_cluster(link.clone())?;
        let first = tick(&link, &connections).await?;
        tracing::info!(node = %link.node, held = first.held, claimed = first.claimed,
            "joined the cluster");
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(link.clone(), connections.clone(), stop.clone()));
        Ok(ClusterNode {
            link,
            connections,
            stop,
            task,
        })
    }

    pub fn link(&self) -> &Arc<ClusterLink> {
        &self.link
    }

    /// SIGTERM: take nothing more, stop every actor (bounded), release
    /// every slice so the others claim them at their next tick, and forget
    /// this node. Requests arriving meanwhile are forwarded or inboxed.
    pub async fn leave(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let link = &self.link;
        let _guard = link.tick_lock.lock().await;
        link.start_draining();
        if let Err(e) = leases::mark_stopping(&link.pool, &link.node).await {
            tracing::warn!(error = %e, "cannot mark this node as stopping");
        }
        let held = link.held_slices();
        link.clear_held();
        stop_actors(&self.connections, |_| true).await;
        match leases::release(&link.pool, &link.node, &held).await {
            Ok(n) => tracing::info!(node = %link.node, released = n, "left the cluster"),
            Err(e) => tracing::warn!(error = %e,
                "cannot release this node's slices; they free up when the leases expire"),
        }
        let _ = leases::forget(&link.pool, &link.node).await;
    }
}

async fn run(link: Arc<ClusterLink>, connections: Connections, stop: CancellationToken) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let result = tokio::time::timeout(BELIEF, tick(&link, &connections)).await;
        let failed = match result {
            Ok(Ok(report)) => {
                if report.claimed + report.released + report.lost > 0 {
                    tracing::info!(node = %link.node, held = report.held, claimed = report.claimed,
                        released = report.released, lost = report.lost, "slices moved");
                }
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(node = %link.node, error = %e, "lease tick failed");
                true
            }
            Err(_) => {
                tracing::warn!(node = %link.node, "lease tick timed out");
                true
            }
        };
        if failed {
            metrics::counter!(m::LEASE_TICK_FAILURES, "node" => link.node.clone()).increment(1);
        }
        // Whatever happened, an owner whose belief ran out stops its actors
        // now: the others may claim its slices a stop bound from now.
        if link.belief_expired() && connections.count_where(|_| true) > 0 {
            tracing::warn!(node = %link.node, "lease belief expired; stopping every actor");
            stop_actors(&connections, |_| true).await;
        }
    }
}

/// Stops the actors `gone` selects, waits for them up to [`STOP_BOUND`]
/// less a second, and kills the stragglers.
async fn stop_actors(connections: &Connections, gone: impl Fn(ConnectionId) -> bool + Copy) {
    if connections.stop_where(gone) == 0 {
        return;
    }
    let deadline = Instant::now() + STOP_BOUND.saturating_sub(Duration::from_secs(1));
    while connections.count_where(gone) > 0 && Instant::now() < deadline {
        // Poll interval: the registry is asked again right after.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = connections.kill_where(gone);
    if killed > 0 {
        tracing::warn!(killed, "actors did not stop within the bound; killed");
    }
}

fn in_slices(slices: &BTreeSet<u16>) -> impl Fn(ConnectionId) -> bool + Copy + '_ {
    move |id| slices.contains(&slice_of(&id.as_uuid()))
}

/// One round of the lease protocol. Serialised with [`ClusterNode::leave`].
pub async fn tick(link: &ClusterLink, connections: &Connections) -> anyhow::Result<TickReport> {
    let _guard = link.tick_lock.lock().await;
    if link.is_draining() {
        return Ok(TickReport::default());
    }
    let started = Instant::now();
    leases::heartbeat(
        &link.pool,
        &link.node,
        &link.address,
        link.forwarded.load(Ordering::Relaxed),
        link.inboxed.load(Ordering::Relaxed),
    )
    .await?;
    let snap = leases::snapshot(&link.pool).await?;
    let decided = plan(&link.node, &snap.live, &snap.leases, snap.now);
    let before: BTreeSet<u16> = link.held_slices().into_iter().collect();

    let mut report = TickReport::default();
    if !decided.release.is_empty() {
        // Stop first, release after: the next owner never overlaps us.
        link.drop_held(&decided.release);
        let releasing: BTreeSet<u16> = decided.release.iter().copied().collect();
        stop_actors(connections, in_slices(&releasing)).await;
        report.released = leases::release(&link.pool, &link.node, &decided.release).await? as usize;
    }
    let renewed = leases::renew(&link.pool, &link.node, &decided.renew).await?;
    let claimed = leases::claim(&link.pool, &link.node, &decided.claim).await?;
    let now_held: BTreeSet<u16> = renewed.iter().chain(claimed.iter()).copied().collect();
    link.set_held(&now_held.iter().copied().collect::<Vec<_>>(), started);
    let lost: BTreeSet<u16> = before
        .difference(&now_held)
        .filter(|s| !decided.release.contains(s))
        .copied()
        .collect();
    if !lost.is_empty() {
        tracing::warn!(node = %link.node, lost = lost.len(), "lost slices (renewal came too late)");
        metrics::counter!(m::SLICES_LOST, "node" => link.node.clone()).increment(lost.len() as u64);
        stop_actors(connections, in_slices(&lost)).await;
    }
    let mut owners: Vec<Option<Owner>> = vec![None; usize::from(SLICES)];
    for (i, lease) in snap.leases.iter().enumerate() {
        if let (Some(node), Some(address)) = (&lease.owner, &snap.addresses[i]) {
            if let Some(slot) = owners.get_mut(usize::from(lease.slice)) {
                *slot = Some(Owner {
                    node: node.clone(),
                    address: address.clone(),
                });
            }
        }
    }
    for s in &now_held {
        owners[usize::from(*s)] = Some(Owner {
            node: link.node.clone(),
            address: link.address.clone(),
        });
    }
    for s in &decided.release {
        owners[usize::from(*s)] = None;
    }
    link.set_owners(owners);
    report.held = now_held.len();
    report.claimed = claimed.len();
    report.lost = lost.len();
    metrics::gauge!(m::SLICES_HELD, "node" => link.node.clone()).set(now_held.len() as f64);
    report.drained = drain_inbox(link, connections).await?;
    Ok(report)
}

/// Commits the inbox's waiting notifications of the slices held, oldest
/// first; stops at the first one that should be retried later.
async fn drain_inbox(link: &ClusterLink, connections: &Connections) -> anyhow::Result<usize> {
    let held = link.held_slices();
    let rows = leases::inbox_take(&link.pool, &held, DRAIN_BATCH).await?;
    let mut drained = 0;
    for row in rows {
        let id = ConnectionId::from_uuid(row.connection);
        if !link.owns(id) {
            break;
        }
        match connections.notify_here(id, row.key, row.channel_id).await {
            // Committed, a duplicate of a committed one, or for a connection
            // that takes no notifications: done with it either way.
            Ok(_) | Err(SendError::Quarantined | SendError::Rejected(_)) => {
                leases::inbox_done(&link.pool, row.id).await?;
                drained += 1;
            }
            Err(e) => {
                tracing::info!(connection_id = %id, error = %e, "inbox drain paused");
                break;
            }
        }
    }
    if drained > 0 {
        metrics::counter!(m::INBOX_DRAINED, "node" => link.node.clone()).increment(drained as u64);
    }
    Ok(drained)
}
