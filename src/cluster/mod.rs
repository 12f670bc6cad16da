//! Several `serve` nodes on one PostgreSQL (docs/CLUSTER.md): the shell
//! around [`crate::core::cluster`].
//!
//! - [`link`]: what this node knows of the cluster — the slices it holds
//!   and until when, who owns the others, the cluster secret — and how it
//!   reaches an owner (forward over internal HTTP, or the inbox).
//! - [`leases`]: the SQL of the `nodes`, `leases` and `inbox` tables.
//! - [`node`]: the lease task: heartbeat, claim, renew, release, stop the
//!   actors of lost slices, drain the inbox; and the hand-over on SIGTERM.
//! - [`http`]: the internal routes peers forward to, behind the secret.
//! - [`wire`]: what those routes carry.
//!
//! Cluster mode is on when a cluster secret is configured. Without one,
//! `serve` is a lone node exactly as before: it runs every connection and
//! must be the only node on its database.

pub mod http;
pub mod leases;
pub mod link;
pub mod node;
pub mod wire;

pub use link::ClusterLink;
pub use node::ClusterNode;

/// Metric names of the cluster (ops/METRICS.md), every one labelled `node`.
pub mod metric_names {
    pub const SLICES_HELD: &str = "calsync_cluster_slices_held";
    pub const FORWARDED: &str = "calsync_cluster_forwarded_total";
    pub const INBOXED: &str = "calsync_cluster_inboxed_total";
    pub const INBOX_DRAINED: &str = "calsync_cluster_inbox_drained_total";
    pub const SLICES_LOST: &str = "calsync_cluster_slices_lost_total";
    pub const LEASE_TICK_FAILURES: &str = "calsync_cluster_lease_tick_failures_total";
}
