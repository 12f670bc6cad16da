//! The pure domain core. Nothing in here performs I/O, awaits, or reads the
//! clock: every function takes `now` (and any randomness) as an argument, so
//! that the same code runs in production, in replay and in seeded simulations.

pub mod availability;
pub mod backoff;
pub mod busy;
pub mod busy_reach;
pub mod channels;
pub mod cluster;
pub mod connect;
pub mod decide;
pub mod dedupe;
pub mod events;
pub mod explain;
pub mod external_change;
pub mod fault;
pub mod gate;
pub mod group_availability;
pub mod ids;
pub mod inflight;
pub mod interval;
pub mod outbound;
pub mod pg_tls;
pub mod plan;
pub mod platform_events;
pub mod projection;
pub mod settings;
pub mod state;
pub mod subscription;
pub mod sync;
pub mod tokens;
pub mod tz;
pub mod window;
pub mod wire;
