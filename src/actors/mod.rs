//! Connection actors and their supervisor (ractor): the shell around the
//! core's decisions. Imports run one way:
//! front door → supervisor → connection actor → tasks, with the leaves
//! ([`ack`], [`mailbox`], [`runtime`]) shared.
//!
//! - [`front_door`]: what HTTP handlers and the CLI call: bounded admission
//!   (a typed `Busy` instead of unbounded mailboxes), activation on demand,
//!   one commit for identical notifications in flight.
//! - [`supervisor`]: ours, not ractor's (ractor restarts nothing by itself):
//!   lazy activation, restart with backoff, quarantine after too many
//!   restarts, passivation of idle actors and waking them on time.
//! - [`registry`]: which actor serves which connection on this node.
//! - [`connection`]: one actor per connection, the single writer of its
//!   stream: receive, decide, append, plan, start tasks, arm one timer.
//! - [`sync_task`], [`channel_task`], [`outbound_task`]: the provider calls
//!   the planner asked for, reporting back through a [`task_support::Recorder`].

pub mod ack;
pub mod channel_task;
pub mod connection;
pub mod front_door;
pub mod mailbox;
pub mod outbound_task;
pub mod registry;
pub mod runtime;
pub mod supervisor;
pub mod sync_task;
pub mod task_support;

pub use ack::{Ack, SendError};
pub use front_door::Connections;

use std::time::Duration;

/// Tunables of the actor system. Defaults are documented in
/// `calsync.example.toml` under `[actors]`.
#[derive(Debug, Clone)]
pub struct ActorSettings {
    /// Save a snapshot after this many events since the last one.
    pub snapshot_every: u64,
    /// Passivate an actor idle for this long.
    pub idle_timeout: Duration,
    /// Inputs queued for one actor before callers get `Busy`.
    pub mailbox_bound: usize,
    /// Restarts allowed within `restart_window` before quarantine.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// First restart delay; doubles per recent failure up to `restart_max_delay`.
    pub restart_base_delay: Duration,
    pub restart_max_delay: Duration,
    /// How long a caller waits for an actor's answer.
    pub call_timeout: Duration,
    /// Name of this node, recorded in every event's metadata.
    pub node: String,
    /// How often the supervisor looks for passivated connections whose
    /// periodic poll is due.
    pub poll_sweep_every: Duration,
}

impl Default for ActorSettings {
    fn default() -> Self {
        ActorSettings {
            snapshot_every: 100,
            idle_timeout: Duration::from_secs(600),
            mailbox_bound: 1024,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            restart_base_delay: Duration::from_millis(50),
            restart_max_delay: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            node: default_node_name(),
            poll_sweep_every: Duration::from_secs(30),
        }
    }
}

fn default_node_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into());
    format!("{host}:{}", std::process::id())
}

impl ActorSettings {
    /// Delay before the `n`-th restart within the window (n ≥ 1).
    pub fn restart_delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.restart_base_delay
            .saturating_mul(factor)
            .min(self.restart_max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delays_double_and_are_capped() {
        let s = ActorSettings::default();
        assert_eq!(s.restart_delay(1), Duration::from_millis(50));
        assert_eq!(s.restart_delay(2), Duration::from_millis(100));
        assert_eq!(s.restart_delay(4), Duration::from_millis(400));
        assert_eq!(s.restart_delay(40), s.restart_max_delay);
    }
}
