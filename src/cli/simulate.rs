//! `calsync simulate`: the deterministic simulation of whole nodes over
//! virtual days (see `src/simulate/`). `--seed S` replays one run;
//! `--seeds N` runs N seeds from `--from` and reports each failure with the
//! command that replays it.

use crate::simulate::{run_seed, Outcome, Scale};
use clap::Args;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Run exactly this seed (prints its digest: equal seeds, equal runs).
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// How many seeds to run, starting at `--from`.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Virtual days per run.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Connections per run (half Google, half Microsoft).
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Seeds run at once (default: the machine's cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Write every outcome as JSON here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<std::path::PathBuf>,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let scale = Scale {
        connections: args.connections,
        days: args.days,
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.from..args.from + args.seeds).collect(),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let started = Instant::now();
    let outcomes = run_many(seeds, scale, jobs).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed()).collect();
    for o in &outcomes {
        println!(
            "seed {:>6}  {}  {} events, {} provider calls, {} edits ({} of ours, {} noticed), {} bookings, {} kills, {} crashes  digest {}",
            o.seed,
            if o.passed() { "PASS" } else { "FAIL" },
            o.stats.events,
            o.stats.provider_calls,
            o.stats.edits,
            o.stats.host_edits,
            o.stats.host_edits_noticed,
            o.stats.bookings,
            o.stats.kills,
            o.stats.crashes,
            &o.digest[..16]
        );
    }
    for o in &failed {
        println!(
            "\nseed {} broke an invariant; first: {}",
            o.seed, o.violations[0]
        );
        for v in o.violations.iter().skip(1).take(4) {
            println!("  also: {v}");
        }
        println!("replay: {}", o.replay_command());
    }
    let days = outcomes.len() as f64 * f64::from(scale.days);
    println!(
        "\n{} seeds × {} days × {} connections in {elapsed:.1} s: {:.2} seeds/s, {:.1} virtual days/s; {} failed",
        outcomes.len(),
        scale.days,
        scale.connections,
        outcomes.len() as f64 / elapsed,
        days / elapsed,
        failed.len()
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&outcomes)?)?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} of {} seeds failed", failed.len(), outcomes.len())
    }
}

/// Runs `seeds` on `jobs` threads, each seed on a runtime of its own.
pub async fn run_many(seeds: Vec<u64>, scale: Scale, jobs: usize) -> anyhow::Result<Vec<Outcome>> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(seeds.into_iter()));
    let mut workers = Vec::new();
    for _ in 0..jobs {
        let queue = queue.clone();
        workers.push(tokio::task::spawn_blocking(move || {
            let mut done = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some(seed) = next else {
                    return done;
                };
                done.push(run_seed(seed, scale).unwrap_or_else(|e| Outcome {
                    seed,
                    scale_connections: scale.connections,
                    scale_days: scale.days,
                    digest: String::new(),
                    violations: vec![format!("the run itself failed: {e:#}")],
                    stats: Default::default(),
                }));
            }
        }));
    }
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await?);
    }
    outcomes.sort_by_key(|o| o.seed);
    Ok(outcomes)
}
