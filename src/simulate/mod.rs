//! `calsync simulate`: a deterministic simulation of a whole node over
//! virtual days (issue 17; TigerBeetle's VOPR and FoundationDB's
//! simulation are the model).
//!
//! One seed drives everything: a node (supervisor, actors, front door,
//! settings, planner, outbound) on the in-memory store, with the provider
//! simulators in process (no sockets), on a single-threaded tokio runtime
//! whose clock is paused — time moves only when every task waits, so a
//! week passes in a second or two. The seed picks the calendars, the edits,
//! the bookings, the notification faults (dropped, duplicated, reordered),
//! the provider faults (5xx, 429 with `Retry-After`, 410, a permanently
//! missing calendar, revoked grants, lost responses, slow calls), actor
//! kills, node crashes and restarts on the surviving store, flag and
//! allowlist toggles, pauses, and short channel lifetimes.
//!
//! Invariants are checked as the run goes and at quiescence
//! ([`invariants`]); the same seed gives the same run, and a failing seed
//! prints the command that replays it.

pub mod invariants;
pub mod node;
pub mod stall;
pub mod wiring;
mod workload;

use sha2::{Digest, Sha256};

/// How big one run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    pub connections: usize,
    pub days: u32,
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            connections: 50,
            days: 7,
        }
    }
}

/// What one seed's run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub events: usize,
    pub provider_calls: usize,
    pub edits: usize,
    /// Edits of calsync's own events by the host (moves and deletions).
    pub host_edits: usize,
    /// `booking_externally_changed` events in the final log.
    pub host_edits_noticed: usize,
    pub bookings: usize,
    pub notifications_acked: usize,
    pub kills: usize,
    pub crashes: usize,
    pub fault_episodes: usize,
    pub settings_toggles: usize,
    /// Commands the node refused, by code (`node_down`, `busy`, …).
    pub refusals: std::collections::BTreeMap<String, usize>,
    /// Bookings sent again after the node could not take them.
    pub redeliveries: usize,
}

/// The outcome of one seed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub seed: u64,
    pub scale_connections: usize,
    pub scale_days: u32,
    /// SHA-256 of the final log (stream, version, type, payload) and the
    /// provider request trace: equal for equal seeds.
    pub digest: String,
    pub violations: Vec<String>,
    pub stats: Stats,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "calsync simulate --seed {} --days {} --connections {}",
            self.seed, self.scale_days, self.scale_connections
        )
    }
}

/// Runs one seed on a fresh single-threaded runtime with paused time.
pub fn run_seed(seed: u64, scale: Scale) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    runtime.block_on(workload::run(seed, scale))
}

/// The digest of a run: the log and the request trace, in order.
pub(crate) fn digest(
    events: &[crate::store::RecordedEvent],
    requests: &[calsim::RequestRecord],
) -> String {
    let mut hash = Sha256::new();
    for e in events {
        hash.update(e.stream.as_str().as_bytes());
        hash.update(e.version.to_le_bytes());
        hash.update(e.event_type.as_bytes());
        hash.update(e.payload.as_bytes());
    }
    for r in requests {
        hash.update(match r.provider {
            calsim::Provider::Google => b"G",
            calsim::Provider::Graph => b"M",
        });
        hash.update(r.endpoint.as_bytes());
        hash.update(r.method.as_bytes());
        hash.update(r.path.as_bytes());
        hash.update(r.query.as_deref().unwrap_or("").as_bytes());
        hash.update(r.status.to_le_bytes());
        hash.update(r.at.timestamp_millis().to_le_bytes());
    }
    hex::encode(hash.finalize())
}

/// Writes a run's log and request trace as text, one line each, so two
/// runs of a seed can be diffed (`CALSYNC_SIMULATE_DUMP=dir`).
pub(crate) fn dump(
    dir: &std::path::Path,
    seed: u64,
    events: &[crate::store::RecordedEvent],
    requests: &[calsim::RequestRecord],
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir)?;
    let mut log = String::new();
    for e in events {
        let _ = writeln!(
            log,
            "{} {} {} {}",
            e.stream.as_str(),
            e.version,
            e.event_type,
            e.payload
        );
    }
    let mut trace = String::new();
    for r in requests {
        let _ = writeln!(
            trace,
            "{} {:?} {} {} {}?{} {}",
            r.at.to_rfc3339(),
            r.provider,
            r.endpoint,
            r.method,
            r.path,
            r.query.as_deref().unwrap_or(""),
            r.status
        );
    }
    std::fs::write(dir.join(format!("seed-{seed}-events.txt")), log)?;
    std::fs::write(dir.join(format!("seed-{seed}-requests.txt")), trace)?;
    Ok(())
}
