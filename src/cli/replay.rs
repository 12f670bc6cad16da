//! `calsync replay`: rebuild the projections from the log, compare them
//! with the live tables, optionally swap them in.

use crate::config::GlobalArgs;
use crate::core::ids::ConnectionId;
use crate::database::Database;
use crate::replay::{self, ProgressMode, ReplayOptions, Report};
use clap::Args;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Compare the rebuilt tables with the live ones; exit non-zero on any
    /// difference (the default when --swap is not given).
    #[arg(long)]
    pub verify: bool,
    /// Rebuild, catch up with appends, and replace the differing live rows
    /// under a short lock (appends wait, readers do not).
    #[arg(long, conflicts_with = "verify")]
    pub swap: bool,
    /// Only this connection's stream and rows.
    #[arg(long, value_name = "ID")]
    pub connection: Option<String>,
    /// Also rewrite the actors' snapshots from the fold.
    #[arg(long)]
    pub snapshots: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Plain progress lines instead of a bar, even on a terminal.
    #[arg(long)]
    pub no_bar: bool,
}

pub async fn run(args: ReplayArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let (db, _) = Database::open(&global.settings()?).await?;
    let store = db.store();
    db.run_then_shutdown(answer(args, store)).await
}

async fn answer(args: ReplayArgs, store: crate::store::PgEventStore) -> anyhow::Result<()> {
    let options = ReplayOptions {
        connection: args
            .connection
            .as_deref()
            .map(ConnectionId::parse)
            .transpose()?,
        snapshots: args.snapshots,
        progress: if args.no_bar {
            ProgressMode::Lines
        } else {
            ProgressMode::Auto
        },
    };
    let report = if args.swap {
        replay::swap(&store, &options).await?
    } else {
        replay::verify(&store, &options).await?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    if !args.swap && !report.is_clean() {
        anyhow::bail!(
            "{} rows differ between the log and the live tables",
            report.differences
        );
    }
    Ok(())
}

fn print_text(r: &Report) {
    println!(
        "{} events read, {} connection streams, rebuilt in {:.2}s ({:.0} events/s)",
        r.events_read, r.streams, r.rebuild_seconds, r.events_per_second
    );
    for (table, rows) in &r.rows_written {
        println!("  {table}: {rows} rows rebuilt");
    }
    for t in r.tables.iter().filter(|t| t.total() > 0) {
        println!(
            "  {}: {} missing, {} extra, {} different",
            t.table, t.missing, t.extra, t.different
        );
        for d in &t.samples {
            println!(
                "    {:?} connection {} key {}",
                d.kind,
                d.connection_id.as_deref().unwrap_or("-"),
                d.key
            );
        }
    }
    if r.snapshots_written > 0 {
        println!("  {} snapshots written", r.snapshots_written);
    }
    match (r.swapped, r.differences) {
        (true, n) => println!(
            "swapped: {n} differing rows repaired ({} row writes) under a {:.3}s lock; total {:.2}s",
            r.rows_repaired,
            r.lock_seconds.unwrap_or_default(),
            r.seconds
        ),
        (false, 0) => println!("no differences; total {:.2}s", r.seconds),
        (false, n) => println!("{n} differences; total {:.2}s", r.seconds),
    }
}
