//! `calsync bench <name>`: the benchmarks of `src/bench/` (see
//! BENCHMARKS.md), printed as text and optionally written as JSON.

use crate::bench::{self, Report};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
    /// Write the report as JSON to this file.
    #[arg(long, global = true, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// A smaller, faster run (seconds instead of minutes).
    #[arg(long, global = true)]
    pub quick: bool,
}

#[derive(Debug, Subcommand)]
pub enum Which {
    /// HTTP webhook ingest vs pgbench single-row INSERT, same concurrency.
    Ingest {
        /// Connections the notifications are spread over [1000].
        #[arg(long)]
        connections: Option<usize>,
        /// Concurrent HTTP clients, and pgbench -c [32].
        #[arg(long)]
        concurrency: Option<usize>,
        /// Seconds per measured run [10].
        #[arg(long)]
        seconds: Option<u64>,
        /// Runs of each side, alternating [3].
        #[arg(long)]
        runs: Option<usize>,
        /// Run the HTTP load generator inside the server's process instead
        /// of a separate one (how the figures before issue 22 were taken).
        #[arg(long)]
        in_process_client: bool,
    },
    /// Rebuild of every projection vs a bare COPY of the log.
    Replay {
        /// Events in the log [1000000].
        #[arg(long)]
        events: Option<u64>,
        /// Runs of each side, alternating [3].
        #[arg(long)]
        runs: Option<usize>,
    },
    /// Memory per idle actor, activation rate, passivation.
    Actors {
        /// Fresh connections to activate [100000].
        #[arg(long)]
        connections: Option<usize>,
        /// Connections with a full dedupe window, activated first [5000].
        #[arg(long)]
        windowed: Option<usize>,
    },
    /// Kill → next input handled, with and without snapshots.
    Recovery {
        /// Events in the stream [10000].
        #[arg(long)]
        events: Option<u64>,
        /// Kills per variant [200].
        #[arg(long)]
        kills: Option<usize>,
    },
    /// Simulator change → busy interval visible, at a steady rate.
    Latency {
        /// Google connections [100].
        #[arg(long)]
        connections: Option<usize>,
        /// Changes per second [500].
        #[arg(long)]
        rate: Option<u64>,
        /// Seconds of changes [30].
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Platform feed: webhook delivery latency p50/p99 at a steady rate,
    /// and ingest with a push subscriber vs without.
    Feed {
        /// Busy changes per second [500].
        #[arg(long)]
        rate: Option<u64>,
        /// Seconds of changes [20].
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// The booking page's availability query (single provider and a
    /// group) vs the bare busy-range query in pgbench.
    Availability {
        /// Platform providers; all of them form the group [10].
        #[arg(long)]
        providers: Option<usize>,
        /// Busy rows per provider [20000].
        #[arg(long)]
        busy_rows: Option<usize>,
        /// Concurrent clients of the single query, and pgbench -c [32].
        #[arg(long)]
        concurrency: Option<usize>,
        /// Concurrent clients of the group query [4].
        #[arg(long)]
        group_concurrency: Option<usize>,
        /// Seconds per measured run [10].
        #[arg(long)]
        seconds: Option<u64>,
        /// Runs of each side, alternating [3].
        #[arg(long)]
        runs: Option<usize>,
        /// Run the HTTP load generator inside this process instead of a
        /// separate one (for comparison with older figures).
        #[arg(long)]
        in_process_client: bool,
    },
    /// Ingest and webhook -> busy latency with 1, 2 and 3 serve nodes on
    /// one PostgreSQL, and the per-node efficiency (`--quick`: 1 and 2).
    Scale {
        /// Google connections [60].
        #[arg(long)]
        connections: Option<usize>,
        /// Concurrent load generator clients of the ingest run [32].
        #[arg(long)]
        concurrency: Option<usize>,
        /// Seconds of the ingest run per node count [10].
        #[arg(long)]
        seconds: Option<u64>,
        /// Changes per second of the latency run [50].
        #[arg(long)]
        rate: Option<u64>,
        /// Seconds of the latency run per node count [10].
        #[arg(long)]
        latency_seconds: Option<u64>,
    },
    /// The HTTP load generator (a spec as JSON on stdin, the result as
    /// JSON on stdout); the benchmarks spawn it as a separate process.
    #[command(hide = true)]
    LoadGen,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let quick = args.quick;
    let report: Report = match args.which {
        Which::LoadGen => return bench::loadgen::serve_stdio().await,
        Which::Availability {
            providers,
            busy_rows,
            concurrency,
            group_concurrency,
            seconds,
            runs,
            in_process_client,
        } => {
            let load_gen = if in_process_client {
                bench::loadgen::LoadGen::InProcess
            } else {
                bench::loadgen::LoadGen::this_binary()?
            };
            let mut o = pick(
                quick,
                bench::availability::AvailabilityOptions::full(load_gen.clone()),
                bench::availability::AvailabilityOptions::quick(load_gen),
            );
            o.providers = providers.unwrap_or(o.providers).max(1);
            o.busy_rows = busy_rows.unwrap_or(o.busy_rows).max(1);
            o.concurrency = concurrency.unwrap_or(o.concurrency).max(1);
            o.group_concurrency = group_concurrency.unwrap_or(o.group_concurrency).max(1);
            o.seconds = seconds.unwrap_or(o.seconds).max(1);
            o.runs = runs.unwrap_or(o.runs).max(1);
            bench::availability::run(&o).await?
        }
        Which::Ingest {
            connections,
            concurrency,
            seconds,
            runs,
            in_process_client,
        } => {
            let mut o = pick(
                quick,
                bench::ingest::IngestOptions::full(),
                bench::ingest::IngestOptions::quick(),
            );
            if !in_process_client {
                o.load_gen = bench::loadgen::LoadGen::this_binary()?;
            }
            o.connections = connections.unwrap_or(o.connections).max(1);
            o.concurrency = concurrency.unwrap_or(o.concurrency).max(1);
            o.seconds = seconds.unwrap_or(o.seconds).max(1);
            o.runs = runs.unwrap_or(o.runs).max(1);
            bench::ingest::run(&o).await?
        }
        Which::Replay { events, runs } => {
            let mut o = pick(
                quick,
                bench::replay::ReplayBenchOptions::full(),
                bench::replay::ReplayBenchOptions::quick(),
            );
            o.events = events.unwrap_or(o.events).max(1);
            o.runs = runs.unwrap_or(o.runs).max(1);
            bench::replay::run(&o).await?
        }
        Which::Actors {
            connections,
            windowed,
        } => {
            let mut o = pick(
                quick,
                bench::actors::ActorsOptions::full(),
                bench::actors::ActorsOptions::quick(),
            );
            o.connections = connections.unwrap_or(o.connections).max(1);
            o.windowed = windowed.unwrap_or(o.windowed).max(1);
            bench::actors::run(&o).await?
        }
        Which::Recovery { events, kills } => {
            let mut o = pick(
                quick,
                bench::recovery::RecoveryOptions::full(),
                bench::recovery::RecoveryOptions::quick(),
            );
            o.events = events.unwrap_or(o.events).max(2);
            o.kills = kills.unwrap_or(o.kills).max(1);
            bench::recovery::run(&o).await?
        }
        Which::Latency {
            connections,
            rate,
            seconds,
        } => {
            let mut o = pick(
                quick,
                bench::latency::LatencyOptions::full(),
                bench::latency::LatencyOptions::quick(),
            );
            o.connections = connections.unwrap_or(o.connections).max(1);
            o.rate = rate.unwrap_or(o.rate).max(1);
            o.seconds = seconds.unwrap_or(o.seconds).max(1);
            bench::latency::run(&o).await?
        }
        Which::Scale {
            connections,
            concurrency,
            seconds,
            rate,
            latency_seconds,
        } => {
            let load_gen = bench::loadgen::LoadGen::this_binary()?;
            let mut o = pick(
                quick,
                bench::scale::ScaleOptions::full(load_gen.clone()),
                bench::scale::ScaleOptions::quick(load_gen),
            );
            o.connections = connections.unwrap_or(o.connections).max(1);
            o.concurrency = concurrency.unwrap_or(o.concurrency).max(1);
            o.seconds = seconds.unwrap_or(o.seconds).max(1);
            o.rate = rate.unwrap_or(o.rate).max(1);
            o.latency_seconds = latency_seconds.unwrap_or(o.latency_seconds).max(1);
            bench::scale::run(&o).await?
        }
        Which::Feed { rate, seconds } => {
            let mut o = pick(
                quick,
                bench::feed::FeedOptions::full(),
                bench::feed::FeedOptions::quick(),
            );
            o.rate = rate.unwrap_or(o.rate).max(1);
            o.seconds = seconds.unwrap_or(o.seconds).max(1);
            bench::feed::run(&o).await?
        }
    };
    print!("{}", report.to_text());
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The full-size options, or the quick ones with `--quick`.
fn pick<T>(quick: bool, full: T, quick_options: T) -> T {
    if quick {
        quick_options
    } else {
        full
    }
}
