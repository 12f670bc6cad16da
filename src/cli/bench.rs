//! `calsync bench <name>`: the benchmarks of `src/bench/`, printed as text
//! and optionally written as JSON.

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
        /// Connections the notifications are spread over.
        #[arg(long)]
        connections: Option<usize>,
        /// Concurrent HTTP clients (and pgbench -c).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Seconds per measured run.
        #[arg(long)]
        seconds: Option<u64>,
        /// Runs of each side.
        #[arg(long)]
        runs: Option<usize>,
    },
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report: Report = match args.which {
        Which::Ingest {
            connections,
            concurrency,
            seconds,
            runs,
        } => {
            let mut o = if args.quick {
                bench::ingest::IngestOptions::quick()
            } else {
                bench::ingest::IngestOptions::full()
            };
            o.connections = connections.unwrap_or(o.connections).max(1);
            o.concurrency = concurrency.unwrap_or(o.concurrency).max(1);
            o.seconds = seconds.unwrap_or(o.seconds).max(1);
            o.runs = runs.unwrap_or(o.runs).max(1);
            bench::ingest::run(&o).await?
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
