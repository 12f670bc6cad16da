//! calsync — an event-sourced calendar sync engine for booking platforms.
//!
//! The crate is split the way `../shared/DESIGN.md` asks: a pure functional
//! core and a thin imperative shell around it.
//!
//! - [`core`] — pure domain logic: events, state folds, decisions, busy rules,
//!   availability overlay, backoff policy, dedupe window, external ids.
//!   No I/O, no async, no clock reads: time and randomness come in as arguments.
//! - [`store`] — the append-only PostgreSQL event log (the source of truth),
//!   snapshots and migrations.
//! - [`pg`] — a private PostgreSQL cluster started from the machine's binaries
//!   when no `DATABASE_URL` is configured (used by `serve`, `demo` and tests).
//! - [`config`] — configuration: flags, then `CALSYNC_*` / `DATABASE_URL`, then
//!   an optional TOML file, then documented defaults.
//! - [`http`] — the HTTP surface of `calsync serve`.
//! - [`cli`] — the `calsync` command line.
//! - [`metrics`] — Prometheus metric names and recording helpers.
//! - [`drills`] — failure drills against real processes and the validation report.

pub mod actors;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod core;
pub mod database;
pub mod drills;
pub mod feed;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod pg;
pub mod ports;
pub mod providers;
pub mod replay;
pub mod settings;
pub mod simulate;
pub mod store;
pub mod testkit;
