//! Bulk-loading realistic connection histories straight into the log.
//!
//! Creating 100,000 connections or a 1,000,000-event log through the
//! actors would take longer than the benchmark itself, so the histories
//! are *decided* by the pure core (`decide` + `evolve`, exactly the events
//! an actor would append) and written with multi-row INSERTs in the shape
//! the store writes: same columns, gap-free versions from 1, payload and
//! metadata JSON as `PgEventStore::append` stores them. Read models are
//! not written: the benchmarks that load this way rebuild state from the
//! log (activation, recovery, replay), which is what they measure.

use super::setup;
use crate::core::decide::{decide, ConnectionCommand};
use crate::core::dedupe::DedupeKey;
use crate::core::events::ConnectionEvent;
use crate::core::ids::{CalendarId, ConnectionId};
use crate::core::state::ConnectionState;
use crate::core::sync::FetchedPage;
use crate::core::wire::ProviderChange;
use crate::store::EventMetadata;
use chrono::{DateTime, Duration, Utc};

/// One row of `events` as the store writes it.
pub struct Row {
    pub stream: String,
    pub version: i64,
    pub event_type: &'static str,
    pub payload: String,
}

/// A connection's history built by the pure core.
pub struct History {
    pub id: ConnectionId,
    pub state: ConnectionState,
    /// Rows not yet written (callers may drain them between batches).
    pub rows: Vec<Row>,
    /// The last version handed out.
    pub version: i64,
}

impl History {
    /// A created Google connection (its `connection_created` event).
    pub fn created(index: usize, now: DateTime<Utc>) -> anyhow::Result<History> {
        let mut h = History {
            id: ConnectionId::new_random(),
            state: ConnectionState::default(),
            rows: Vec::new(),
            version: 0,
        };
        h.apply(
            &setup::create_google(&format!("load-{index}@example.com"))?,
            now,
        )?;
        Ok(h)
    }

    /// Decides `command`, keeps its events as rows and folds them.
    pub fn apply(&mut self, command: &ConnectionCommand, now: DateTime<Utc>) -> anyhow::Result<()> {
        let decision = decide(&self.state, command, now)
            .map_err(|e| anyhow::anyhow!("the core refused {command:?}: {e}"))?;
        for event in &decision.events {
            self.push(event)?;
        }
        self.state = std::mem::take(&mut self.state).fold(&decision.events);
        Ok(())
    }

    fn push(&mut self, event: &ConnectionEvent) -> anyhow::Result<()> {
        let (event_type, payload) = event.to_parts()?;
        self.version += 1;
        let version = self.version;
        self.rows.push(Row {
            stream: self.id.stream().as_str().to_string(),
            version,
            event_type,
            payload: payload.to_string(),
        });
        Ok(())
    }

    /// A push notification on the connection's (benchmark) channel.
    pub fn notify(&mut self, number: u64, now: DateTime<Utc>) -> anyhow::Result<()> {
        let channel = format!("load-channel-{}", self.id);
        let key = DedupeKey::google(&channel, number).as_str().to_string();
        self.apply(
            &ConnectionCommand::AcceptNotification {
                key,
                channel_id: channel,
            },
            now,
        )
    }

    /// One sync round of the primary calendar: `changes` events seen
    /// (busy, timed, 1 h each), completed with a fresh cursor.
    pub fn sync_round(
        &mut self,
        round: u64,
        changes: usize,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let day = now + Duration::days(1 + (round % 14) as i64);
        let changes = (0..changes)
            .map(|i| {
                let start = day + Duration::minutes(30 * i as i64);
                let event = serde_json::json!({
                    "id": format!("evt{round}x{i}"),
                    "status": "confirmed",
                    "start": {"dateTime": start.to_rfc3339()},
                    "end": {"dateTime": (start + Duration::hours(1)).to_rfc3339()},
                    "etag": format!("\"{round}{i}\""),
                    "updated": now.to_rfc3339(),
                });
                serde_json::from_value(event).map(ProviderChange::Google)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let page = FetchedPage {
            calendar: CalendarId::parse("primary")?,
            full_round: round == 0,
            changes,
            calendar_zone: Some("UTC".into()),
            completed_with: Some(format!("cursor-{round}")),
            first_page: true,
            window: None,
        };
        self.apply(&ConnectionCommand::RecordPage(page), now)
    }
}

/// The metadata every loaded event carries (what an actor would write).
fn metadata() -> String {
    serde_json::to_string(&EventMetadata {
        correlation_id: Some(uuid::Uuid::nil()),
        causation_id: Some(uuid::Uuid::nil()),
        node: Some("bench-load".into()),
        incarnation: Some(1),
        ..Default::default()
    })
    .unwrap_or_else(|_| "{}".into())
}

/// Writes `rows` in batches of multi-row INSERTs (one transaction each).
pub async fn insert(client: &tokio_postgres::Client, rows: &[Row]) -> anyhow::Result<()> {
    let metadata = metadata();
    for batch in rows.chunks(5000) {
        let streams: Vec<&str> = batch.iter().map(|r| r.stream.as_str()).collect();
        let versions: Vec<i64> = batch.iter().map(|r| r.version).collect();
        let types: Vec<&str> = batch.iter().map(|r| r.event_type).collect();
        let payloads: Vec<&str> = batch.iter().map(|r| r.payload.as_str()).collect();
        client
            .execute(
                "INSERT INTO events (stream, version, event_type, schema_version, payload, metadata) \
                 SELECT s, v, t, 1, p::json, $5::text::json \
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS u(s, v, t, p)",
                &[&streams, &versions, &types, &payloads, &metadata],
            )
            .await?;
    }
    Ok(())
}
