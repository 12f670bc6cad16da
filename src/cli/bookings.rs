//! `calsync bookings show ID`: where a booking stands in every external
//! calendar it goes to — the first thing support asks; `calsync bookings
//! retry ID`: write a booking that failed for good again (same idempotency
//! key, so never a second event).

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
    /// Try a failed booking's write again on every connection that has it.
    Retry { booking_id: String },
}

pub async fn run(cmd: BookingsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let (db, _) = Database::open(&global.settings()?).await?;
    match cmd {
        BookingsCommand::Retry { booking_id } => {
            let rows = crate::store::read_models::booking_events(&db.store(), &booking_id).await?;
            if rows.is_empty() {
                anyhow::bail!("no booking {booking_id} has reached any connection");
            }
            // Recorded on each connection's stream like any input (a running
            // server's actor is fenced by the version and folds it).
            let connections = crate::actors::Connections::start(
                db.store(),
                crate::actors::ActorSettings::default(),
            )
            .await?;
            let mut result = Ok(());
            for row in rows {
                let Some(id) = row["connection_id"]
                    .as_str()
                    .and_then(|c| crate::core::ids::ConnectionId::parse(c).ok())
                else {
                    continue;
                };
                let command = crate::core::decide::ConnectionCommand::RetryBooking {
                    booking_id: booking_id.clone(),
                };
                match connections.command(id, command, uuid::Uuid::new_v4()).await {
                    Ok(ack) if ack.appended > 0 => println!("{id}\tretry recorded"),
                    Ok(_) => println!("{id}\tnothing to retry (not failed)"),
                    Err(e) => {
                        println!("{id}\t{e}");
                        result = Err(anyhow::anyhow!("some connections refused the retry"));
                    }
                }
            }
            connections.shutdown();
            result
        }
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
