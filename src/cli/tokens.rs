//! `calsync tokens …`: scoped API tokens, straight against the database.
//! A token is printed once, at creation; only its SHA-256 is stored. A
//! revocation holds on every node from its next request (they read the
//! table per request).

use crate::config::GlobalArgs;
use crate::core::tokens::parse_scopes;
use crate::database::Database;
use crate::store::tokens;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it (once): `--scope platform` for `/v1/*`,
    /// `admin` for `/admin/*`, `drills` for `/admin/drill/*` (repeatable).
    Create {
        /// The token's name: what audits record and `revoke` takes.
        #[arg(long)]
        name: String,
        /// platform, admin or drills (repeat or comma-separate).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// Print only the token (for scripts: `TOKEN=$(calsync tokens create …)`).
        #[arg(long)]
        quiet: bool,
    },
    /// List tokens (names, scopes, when created and revoked; never a token).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke the live token with this name.
    Revoke { name: String },
    /// The newest admin changes and the token that made each.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub async fn run(cmd: TokensCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let (db, _) = Database::open(&global.settings()?).await?;
    let store = db.store();
    match cmd {
        TokensCommand::Create {
            name,
            scopes,
            quiet,
        } => {
            let scopes = parse_scopes(&scopes)?;
            let (token, info) = tokens::create(&store, &name, &scopes, &who()).await?;
            if quiet {
                println!("{token}");
            } else {
                println!(
                    "token {:?} created with scopes {}; it is shown this once:",
                    info.name,
                    info.scopes.join(",")
                );
                println!("{token}");
            }
        }
        TokensCommand::List { json } => {
            let rows = tokens::list(&store).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!(
                "{:<24}  {:<22}  {:<25}  {:<16}  REVOKED",
                "NAME", "SCOPES", "CREATED AT", "BY"
            );
            for t in rows {
                let revoked = t.revoked_at.map_or("-".to_string(), |r| r.to_rfc3339());
                println!(
                    "{:<24}  {:<22}  {:<25}  {:<16}  {revoked}",
                    t.name,
                    t.scopes.join(","),
                    t.created_at.to_rfc3339(),
                    t.created_by
                );
            }
        }
        TokensCommand::Revoke { name } => {
            let info = tokens::revoke(&store, &name).await?;
            println!(
                "token {:?} revoked at {}; every node refuses it from now on",
                info.name,
                info.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            );
        }
        TokensCommand::Audit { limit, json } => {
            let rows = tokens::audit_log(&store, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            for r in rows {
                println!(
                    "{}  {:<24}  {:<6} {:<50} {}",
                    r.at.to_rfc3339(),
                    r.token_name,
                    r.method,
                    r.path,
                    r.status
                );
            }
        }
    }
    Ok(())
}
