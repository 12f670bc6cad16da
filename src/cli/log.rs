//! `calsync log`: look at the event log as an operator would.

use crate::config::GlobalArgs;
use crate::core::ids::StreamName;
use crate::database::Database;
use crate::store::{EventStore, GlobalCursor, RecordedEvent};
use clap::Subcommand;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Print the newest events (of one stream, or all), optionally following.
    Tail {
        /// Only this stream (e.g. connection-<uuid>, settings).
        #[arg(long)]
        stream: Option<String>,
        /// How many recent events to print first.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: usize,
        /// Keep printing new events as they are committed.
        #[arg(long, short = 'f')]
        follow: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print one event in full by its global position.
    Show {
        position: i64,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: LogCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let (db, _) = Database::open(&global.settings()?).await?;
    let store = db.store();
    db.run_then_shutdown(answer(cmd, store)).await
}

async fn answer(cmd: LogCommand, store: crate::store::PgEventStore) -> anyhow::Result<()> {
    match cmd {
        LogCommand::Show { position, json } => match store.event_at(position).await? {
            Some(event) => {
                println!("{}", render(&event, json, true));
                Ok(())
            }
            None => anyhow::bail!("no event at position {position}"),
        },
        LogCommand::Tail {
            stream,
            lines,
            follow,
            json,
        } => {
            let stream = stream.map(StreamName::parse).transpose()?;
            let recent = store.last_events(stream.as_ref(), lines).await?;
            let mut cursor = recent
                .last()
                .map(|e| e.cursor())
                .unwrap_or(GlobalCursor::START);
            let mut version = recent.last().map(|e| e.version + 1).unwrap_or(1);
            for event in &recent {
                println!("{}", render(event, json, false));
            }
            if !follow {
                return Ok(());
            }
            loop {
                let batch = match &stream {
                    Some(s) => store.read_stream(s, version, 500).await?,
                    None => store.read_all(cursor, 500).await?,
                };
                for event in &batch {
                    println!("{}", render(event, json, false));
                    cursor = event.cursor();
                    version = event.version + 1;
                }
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

fn render(event: &RecordedEvent, json: bool, full: bool) -> String {
    if json {
        let payload: serde_json::Value =
            serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
        return serde_json::json!({
            "position": event.position,
            "txid": event.txid,
            "stream": event.stream.as_str(),
            "version": event.version,
            "type": event.event_type,
            "schema_version": event.schema_version,
            "committed_at": event.committed_at,
            "metadata": event.metadata,
            "payload": payload,
        })
        .to_string();
    }
    let head = format!(
        "#{:<8} {} {}@{} {} v{}",
        event.position,
        event.committed_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        event.stream,
        event.version,
        event.event_type,
        event.schema_version
    );
    if full {
        let meta = serde_json::to_string_pretty(&event.metadata).unwrap_or_default();
        format!("{head}\nmetadata: {meta}\npayload:  {}", event.payload)
    } else {
        format!("{head} {}", event.payload)
    }
}
