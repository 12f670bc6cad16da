//! `calsync cluster status`: the nodes sharing this database, the slices
//! each holds, how old their leases are, and what waits in the inbox. Reads
//! the database only, so it works from any machine that reaches it.

use crate::cluster::leases::{self, ClusterStatus};
use crate::config::GlobalArgs;
use crate::database::Database;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes, their slices, lease ages, forwarded and inbox counts.
    Status(ClusterStatusArgs),
}

#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    /// Machine-readable output (one JSON document).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: ClusterCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Status(args) => {
            let (db, _) = Database::open(&global.settings()?).await?;
            let status = leases::status(&db.pool).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render(&status));
            }
            Ok(())
        }
    }
}

fn ms(v: Option<i64>) -> String {
    v.map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
}

/// The human table: one line per node, then the totals.
pub fn render(s: &ClusterStatus) -> String {
    let mut out = format!(
        "{:<28}  {:<8}  {:>6}  {:>9}  {:>10}  {:>9}  {:>7}  ADDRESS\n",
        "NODE", "STATE", "SLICES", "BEAT AGE", "LEASE AGE", "FORWARDED", "INBOXED"
    );
    for n in &s.nodes {
        let state = if n.stopping {
            "stopping"
        } else if n.live {
            "live"
        } else {
            "silent"
        };
        out.push_str(&format!(
            "{:<28}  {:<8}  {:>6}  {:>9}  {:>10}  {:>9}  {:>7}  {}\n",
            n.name,
            state,
            n.slices,
            ms(Some(n.beat_age_ms)),
            ms(n.oldest_lease_age_ms),
            n.forwarded,
            n.inboxed,
            n.address
        ));
    }
    out.push_str(&format!(
        "{} nodes; {} of 1024 slices unowned; {} notifications in the inbox (oldest {})\n",
        s.nodes.len(),
        s.slices_unowned,
        s.inbox_waiting,
        ms(s.oldest_inbox_age_ms)
    ));
    out
}
