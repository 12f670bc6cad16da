//! `calsync connections …`: manage connections against the database.
//!
//! Commands run through an in-process connection actor with the same
//! optimistic concurrency as `serve`: if a server is running, its actor for
//! that connection is fenced on its next input and refolds, so both stay
//! correct without talking to each other.

use crate::actors::{ActorSettings, Connections};
use crate::config::GlobalArgs;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::ConnectionId;
use crate::database::Database;
use crate::http::CreateConnection;
use clap::Subcommand;
use uuid::Uuid;

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// Create a connection.
    Add {
        #[arg(long)]
        platform_provider: String,
        /// google or microsoft
        #[arg(long)]
        provider: String,
        #[arg(long)]
        account: String,
        /// Calendars whose busy time blocks availability (repeatable).
        #[arg(long = "calendar")]
        calendars: Vec<String>,
        /// Calendar that receives bookings.
        #[arg(long)]
        destination: Option<String>,
    },
    /// Connect an account through the provider's consent screen (OAuth
    /// code flow via a running server): prints the URL, waits for the return.
    Connect(super::connect::ConnectArgs),
    /// List connections with their status.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One connection in full.
    Show {
        id: String,
    },
    Pause {
        id: String,
        #[arg(long, default_value = "operator")]
        reason: String,
    },
    Resume {
        id: String,
    },
    Remove {
        id: String,
        #[arg(long, default_value = "operator")]
        reason: String,
    },
}

pub async fn run(cmd: ConnectionsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    if let ConnectionsCommand::Connect(args) = cmd {
        return super::connect::run(args).await;
    }
    let (db, _) = Database::open(&global.settings()?).await?;
    let store = db.store();
    db.run_then_shutdown(answer(cmd, store)).await
}

async fn answer(cmd: ConnectionsCommand, store: crate::store::PgEventStore) -> anyhow::Result<()> {
    let (id, command) = match cmd {
        // (Handled above, before a database is opened.)
        ConnectionsCommand::Connect(args) => return super::connect::run(args).await,
        ConnectionsCommand::List { json } => {
            let rows = crate::store::read_models::connections(&store, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<36}  {:<11}  {:<9}  {:<24}  ACCOUNT",
                    "ID", "STATUS", "PROVIDER", "PLATFORM PROVIDER"
                );
                for r in rows {
                    println!(
                        "{:<36}  {:<11}  {:<9}  {:<24}  {}",
                        r["connection_id"].as_str().unwrap_or(""),
                        r["status"].as_str().unwrap_or(""),
                        r["provider"].as_str().unwrap_or(""),
                        r["platform_provider_id"].as_str().unwrap_or(""),
                        r["account"].as_str().unwrap_or("")
                    );
                }
            }
            return Ok(());
        }
        ConnectionsCommand::Show { id } => {
            let id = ConnectionId::parse(&id)?;
            let rows = crate::store::read_models::connections(&store, Some(id)).await?;
            let row = rows
                .first()
                .ok_or_else(|| anyhow::anyhow!("no connection {id}"))?;
            println!("{}", serde_json::to_string_pretty(row)?);
            return Ok(());
        }
        ConnectionsCommand::Add {
            platform_provider,
            provider,
            account,
            calendars,
            destination,
        } => CreateConnection {
            id: None,
            platform_provider_id: platform_provider,
            provider,
            account,
            calendars,
            destination_calendar: destination,
            free_busy_calendars: Vec::new(),
        }
        .into_command()
        .map_err(|e| anyhow::anyhow!(e.message))?,
        ConnectionsCommand::Pause { id, reason } => (
            ConnectionId::parse(&id)?,
            ConnectionCommand::Pause { reason },
        ),
        ConnectionsCommand::Resume { id } => (ConnectionId::parse(&id)?, ConnectionCommand::Resume),
        ConnectionsCommand::Remove { id, reason } => (
            ConnectionId::parse(&id)?,
            ConnectionCommand::Remove { reason },
        ),
    };
    let connections = Connections::start(store, ActorSettings::default()).await?;
    let result = connections.command(id, command, Uuid::new_v4()).await;
    connections.shutdown();
    let ack = result?;
    println!(
        "{id}\tversion {}\t({} event(s) appended)",
        ack.version, ack.appended
    );
    Ok(())
}
