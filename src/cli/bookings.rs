//! `calsync bookings show ID`: where a booking stands in every external
//! calendar it goes to — the first thing support asks.

use crate::config::GlobalArgs;
use crate::database::Database;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BookingsCommand {
    /// A booking's external events: state, event id, versions, last error.
    Show {
        booking_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: BookingsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let (db, _) = Database::open(&global.settings()?).await?;
    match cmd {
        BookingsCommand::Show { booking_id, json } => {
            let rows = crate::store::read_models::booking_events(&db.store(), &booking_id).await?;
            if rows.is_empty() {
                anyhow::bail!("no booking {booking_id} has reached any connection");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<8}  {:<8}  {:<8}  {:<24}  LAST ERROR",
                "CONNECTION", "STATE", "VERSION", "WRITTEN", "EXTERNAL EVENT"
            );
            for r in rows {
                let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                let num = |k: &str| r[k].as_i64().map(|v| v.to_string()).unwrap_or("-".into());
                println!(
                    "{:<36}  {:<8}  {:<8}  {:<8}  {:<24}  {}",
                    text("connection_id"),
                    text("state"),
                    num("booking_version"),
                    num("written_version"),
                    text("external_event_id"),
                    text("last_error")
                );
            }
            Ok(())
        }
    }
}
