//! Benchmarks (`calsync bench <name>`), each measured side by side with
//! raw PostgreSQL or against an absolute target from DESIGN.md, on a
//! private PostgreSQL with full durability started for the run.
//!
//! - [`ingest`]: webhooks over HTTP vs pgbench single-row INSERTs;
//! - [`actors`]: memory per idle actor, activation and passivation;
//! - [`recovery`]: kill → next input handled, with and without snapshots;
//! - [`latency`]: simulator change → busy interval visible;
//! - [`replay`]: projection rebuild vs a bare `COPY` read of the log;
//! - [`feed`]: platform feed delivery latency, and ingest with a subscriber
//!   vs without.
//! - [`scale`]: ingest and webhook -> busy latency with 1, 2 and 3 serve
//!   nodes on one PostgreSQL, and the per-node efficiency.
//! - [`availability`]: the booking page's availability query vs the bare
//!   busy-range query in pgbench.
//!
//! [`loadgen`] is the HTTP load generator, run as a separate process.
//!
//! Benchmarks are not timed tests: `tests/bench_smoke.rs` runs each at a
//! tiny size and checks only that figures come out.

pub mod actors;
pub mod availability;
pub mod feed;
pub mod ingest;
pub mod latency;
pub mod load;
pub mod loadgen;
pub mod recovery;
pub mod replay;
pub mod report;
pub mod scale;
pub mod setup;
mod stages;
mod visible;

pub use report::Report;
