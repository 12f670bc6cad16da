//! `calsync allowlist …`: the provider and connection allowlists, enforced
//! in production mode. Changes go straight to the database; running servers
//! pick them up by polling the `settings` stream.

use super::flags::{open, report, Who};
use crate::config::GlobalArgs;
use crate::core::ids::{CalendarProvider, ConnectionId};
use crate::core::settings::SettingsCommand;
use crate::http::settings::allowlist_json;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum AllowlistCommand {
    /// Show both allowlists and whether they are enforced.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put a provider or a connection on the allowlist.
    Add(Target),
    /// Take a provider or a connection off the allowlist.
    Remove(Target),
}

/// Exactly one of `--provider` or `--connection`.
#[derive(Debug, Args)]
pub struct Target {
    /// google or microsoft
    #[arg(long, value_parser = parse_provider, conflicts_with = "connection", required_unless_present = "connection")]
    provider: Option<CalendarProvider>,
    /// A connection id (uuid).
    #[arg(long, value_parser = parse_connection)]
    connection: Option<ConnectionId>,
    #[command(flatten)]
    who: Who,
}

fn parse_provider(s: &str) -> Result<CalendarProvider, String> {
    CalendarProvider::parse(s).map_err(|e| e.to_string())
}

fn parse_connection(s: &str) -> Result<ConnectionId, String> {
    ConnectionId::parse(s).map_err(|e| e.to_string())
}

pub async fn run(cmd: AllowlistCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = open(global).await?;
    let (target, add) = match cmd {
        AllowlistCommand::List { json } => {
            let state = settings.current();
            if json {
                println!("{}", serde_json::to_string_pretty(&allowlist_json(&state))?);
                return Ok(());
            }
            let enforced = if state.production() {
                "enforced (production mode on)"
            } else {
                "not enforced (production mode off)"
            };
            println!("allowlists {enforced}");
            println!(
                "{:<11}  {:<36}  {:<25}  {:<24}  REASON",
                "KIND", "ENTRY", "ADDED AT", "BY"
            );
            let providers = state
                .providers
                .iter()
                .map(|(p, c)| ("provider", p.to_string(), c));
            let connections = state
                .connections
                .iter()
                .map(|(id, c)| ("connection", id.to_string(), c));
            for (kind, entry, c) in providers.chain(connections) {
                println!(
                    "{kind:<11}  {entry:<36}  {:<25}  {:<24}  {}",
                    c.at.to_rfc3339(),
                    c.by,
                    c.reason
                );
            }
            println!("settings version {}", state.version);
            return Ok(());
        }
        AllowlistCommand::Add(target) => (target, true),
        AllowlistCommand::Remove(target) => (target, false),
    };
    let reason = target.who.reason.clone();
    let (what, command) = match (target.provider, target.connection) {
        (Some(provider), None) => (
            format!("provider {provider}"),
            if add {
                SettingsCommand::AllowProvider { provider, reason }
            } else {
                SettingsCommand::UnlistProvider { provider, reason }
            },
        ),
        (None, Some(connection_id)) => (
            format!("connection {connection_id}"),
            if add {
                SettingsCommand::AllowConnection {
                    connection_id,
                    reason,
                }
            } else {
                SettingsCommand::UnlistConnection {
                    connection_id,
                    reason,
                }
            },
        ),
        _ => anyhow::bail!("give exactly one of --provider or --connection"),
    };
    let applied = settings.apply(command, target.who.actor()?).await?;
    let verb = if add { "allowlisted" } else { "unlisted" };
    report(&format!("{what} {verb}"), &applied);
    Ok(())
}
