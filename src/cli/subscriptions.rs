//! `calsync subscriptions …`: the platform feed's push subscriptions, from
//! the operator's side (the same operations as `/v1/subscriptions`).

use crate::config::GlobalArgs;
use crate::core::platform_events::parse_types;
use crate::database::Database;
use crate::feed::subscriptions;
use crate::feed::FeedCursor;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Every subscription: status, cursor, failures, dead-letter state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create one; prints its secret, this once.
    Create {
        /// The receiver (https, or http to a loopback address).
        #[arg(long)]
        url: String,
        /// Comma-separated event types [default: all].
        #[arg(long, default_value = "")]
        types: String,
        /// `now`, `start` or a feed cursor [default: now].
        #[arg(long, default_value = "now")]
        after: String,
    },
    /// Stop deliveries and erase the secret.
    Delete { id: uuid::Uuid },
    /// Restart deliveries from a cursor (`start`, `now` or a feed cursor):
    /// how a dead-lettered subscription is resumed.
    Replay {
        id: uuid::Uuid,
        #[arg(long)]
        cursor: String,
    },
}

async fn cursor(db: &Database, text: &str) -> anyhow::Result<FeedCursor> {
    Ok(match text {
        "now" => crate::feed::head(&db.store()).await?,
        "start" => FeedCursor::START,
        other => FeedCursor::decode(other)?,
    })
}

pub async fn run(cmd: SubscriptionsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let (db, _) = Database::open(&global.settings()?).await?;
    let store = db.store();
    match cmd {
        SubscriptionsCommand::List { json } => {
            let mut rows = Vec::new();
            for id in subscriptions::ids(&store).await? {
                let s = subscriptions::load(&store, id).await?;
                if !s.deleted {
                    rows.push((id, s));
                }
            }
            if json {
                let out: Vec<_> = rows
                    .iter()
                    .map(|(id, s)| serde_json::json!({"id": id, "state": s}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<11}  {:>9}  {:>8}  URL / LAST ERROR",
                "ID", "STATUS", "DELIVERED", "ATTEMPTS"
            );
            for (id, s) in rows {
                println!(
                    "{:<36}  {:<11}  {:>9}  {:>8}  {}{}",
                    id,
                    s.status(),
                    s.delivered_events,
                    s.attempts,
                    s.url,
                    s.last_error.map(|e| format!("  ({e})")).unwrap_or_default()
                );
            }
        }
        SubscriptionsCommand::Create { url, types, after } => {
            let types = parse_types(&types)?;
            let after = cursor(&db, &after).await?;
            let created = subscriptions::create(&store, &url, types, after).await?;
            println!("id      {}", created.id);
            println!("secret  {}   (shown this once)", created.secret);
        }
        SubscriptionsCommand::Delete { id } => {
            subscriptions::delete(&store, id).await?;
            println!("{id}\tdeleted");
        }
        SubscriptionsCommand::Replay { id, cursor: text } => {
            let from = cursor(&db, &text).await?;
            let s = subscriptions::replay(&store, id, from).await?;
            println!("{id}\t{} from {}", s.status(), s.cursor);
        }
    }
    Ok(())
}
