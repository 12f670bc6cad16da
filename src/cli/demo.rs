//! `calsync demo`: the whole system on one machine with no set-up — a
//! private PostgreSQL, the provider simulators, calsync's actors and HTTP
//! server, all in this process — then traffic with faults, then a summary
//! an operator can check, ending in a consistency verdict.
//!
//! Phases: [`world`] wires everything (like `serve`), [`accounts`] creates
//! calendars and connections, [`traffic`] drives edits, duplicates, an
//! outage and kills, [`check`] runs the final sync and the consistency
//! check, [`summary`] prints the outcome.

mod accounts;
mod bookings;
mod check;
mod database;
mod stats;
mod summary;
mod traffic;
mod world;

use crate::actors::SendError;
use crate::config::GlobalArgs;
use crate::providers::ProviderError;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to drive traffic (e.g. 30s, 2m, 1500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Connections to create: half Google, half Microsoft.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub connections: u16,

    /// Stay up after the summary (Ctrl-C or SIGTERM to stop).
    #[arg(long)]
    pub keep_running: bool,

    /// Address of calsync's HTTP server (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Seed of the simulated calendars and edits (same seed, same calendars).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Why the demo stopped. Each says what went wrong in operator terms.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, #[source] std::io::Error),
    #[error("another demo is using {} ({}); stop it first", dir.display(), match pid {
        Some(pid) => format!("its PostgreSQL is pid {pid}"),
        None => "it holds the demo lock".to_string(),
    })]
    AlreadyRunning { dir: PathBuf, pid: Option<i32> },
    #[error("cannot prepare the demo database directory {}: {source}", dir.display())]
    Cleanup {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection for {0} refused a command: {1}")]
    Command(String, #[source] SendError),
    #[error(
        "only {synced} of {total} connections finished a first sync and {channels} have a push channel after {waited:?}"
    )]
    NotUp {
        synced: i64,
        channels: i64,
        total: i64,
        waited: Duration,
    },
    #[error("only {done} of {total} connections finished their final sync within {waited:?}")]
    FinalSyncTimeout {
        done: i64,
        total: i64,
        waited: Duration,
    },
    #[error("no credentials stored for {0}")]
    NoCredentials(String),
    #[error("reading {0}'s calendar for the consistency check failed: {1}")]
    Provider(String, #[source] ProviderError),
    #[error("interrupted before the summary (SIGINT or SIGTERM)")]
    Interrupted,
    #[error("consistency check FAILED: {missing} busy intervals missing, {extra} extra, {moved} with wrong times")]
    Inconsistent {
        missing: usize,
        extra: usize,
        moved: usize,
    },
}

/// How long the system gets to come up and to finish its final syncs.
const UP_WITHIN: Duration = Duration::from_secs(30);
const FINAL_SYNC_WITHIN: Duration = Duration::from_secs(30);
/// Quiet time after the last edit: replays (0.4 s) and push retries land.
const QUIET: Duration = Duration::from_millis(1500);

pub async fn run(args: DemoArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let began = Instant::now();
    let n = usize::from(args.connections);
    // Enough edits that every connection sees several in a short run.
    let rate = (n as f64 * 0.75).clamp(2.0, 40.0);
    println!(
        "calsync demo: {n} connections, {:.1} s of traffic, seed {}",
        args.duration.as_secs_f64(),
        args.seed
    );
    let world = world::World::start(global, args.listen, args.seed).await?;
    println!("  database    {}", world.db_note);
    println!(
        "  simulators  {} (Google Calendar v3 and Microsoft Graph)",
        world.sim.origin()
    );
    println!(
        "  calsync     {} (webhooks from the simulators come here)",
        world.base
    );
    println!("  admin token {}", world.admin_token);
    // Ctrl-C mid-run still stops everything cleanly (no orphaned cluster).
    let outcome = tokio::select! {
        outcome = drive(&world, &args, rate, began) => outcome,
        _ = super::serve::shutdown_signal() => Err(DemoError::Interrupted.into()),
    };
    let outcome = match outcome {
        Ok(c) if args.keep_running => {
            super::serve::shutdown_signal().await;
            Ok(c)
        }
        other => other,
    };
    println!("shutting down: actors, HTTP server, simulators, PostgreSQL");
    let stopped = world.shutdown().await;
    let consistency = outcome?;
    stopped?;
    if consistency.pass() {
        Ok(())
    } else {
        Err(DemoError::Inconsistent {
            missing: consistency.missing.len(),
            extra: consistency.extra.len(),
            moved: consistency.moved.len(),
        }
        .into())
    }
}

/// Everything between start-up and shut-down; the world is shut down
/// whatever this returns.
async fn drive(
    world: &world::World,
    args: &DemoArgs,
    rate: f64,
    began: Instant,
) -> anyhow::Result<check::Consistency> {
    world.enable_flags().await?;
    println!(
        "  flags       sync_enabled, jobs_enabled, webhooks_enabled turned on (actor `{}`)",
        world::OPERATOR
    );
    let n = usize::from(args.connections);
    let (scenario, accounts, events) = accounts::populate(world, args.seed, n, rate);
    let demoed = accounts::connect(world, accounts).await?;
    let up = accounts::wait_until_up(world, &demoed, UP_WITHIN).await?;
    println!(
        "  {n} connections created with {events} events; first syncs done and push channels open in {:.1} s",
        up.as_secs_f64()
    );
    println!("traffic: {rate:.1} edits/s, duplicated and replayed notifications, one outage, two actor kills");
    let plan = traffic::Plan::for_run(args.duration, rate);
    let mut ledger = bookings::Ledger::default();
    let traffic = traffic::run(world, &demoed, &scenario, &plan, &mut ledger).await?;
    // Quiet: stop the faults, let replays and retries land.
    world.sim.clear_faults();
    tokio::time::sleep(QUIET).await;
    ledger.settle(world, FINAL_SYNC_WITHIN).await?;
    let final_sync = check::final_sync(world, &demoed, FINAL_SYNC_WITHIN).await?;
    let mut consistency = check::check(world, &demoed).await?;
    consistency.outbound = ledger.verify(&consistency.ours);
    consistency.bookings = (ledger.created, ledger.rescheduled, ledger.cancelled);
    let snap = stats::collect(world, &demoed).await?;
    summary::print(&summary::Report {
        world,
        demoed: &demoed,
        traffic: &traffic,
        snap: &snap,
        consistency: &consistency,
        final_sync,
        elapsed: began.elapsed(),
        duration: args.duration,
        running: args.keep_running,
    });
    Ok(consistency)
}

/// `30s`, `2m`, `1500ms`, `1h`, or plain seconds (`45`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 30s, 2m, 1500ms)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s, m or h)")),
    };
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text:?} must be between 1ms and 24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("6"), Ok(Duration::from_secs(6)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
