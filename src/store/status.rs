//! Per-connection operational status, read from the read models: what
//! `calsync status` prints and `GET /admin/status` serves (the latter adds
//! the in-memory actor view of its node).

use super::{PgEventStore, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStatus {
    pub connection_id: Uuid,
    pub platform_provider_id: String,
    pub provider: String,
    pub status: String,
    pub error_count: i32,
    pub last_error: Option<String>,
    /// When `last_error` happened (absent for errors recorded before times
    /// were kept).
    pub last_error_at: Option<DateTime<Utc>>,
    pub backoff_until: Option<DateTime<Utc>>,
    pub needs_reauthorization: Option<String>,
    pub quarantine_reason: Option<String>,
    pub pause_reason: Option<String>,
    pub stream_version: i64,
    pub updated_at: DateTime<Utc>,
    pub calendars: Vec<CalendarStatus>,
    /// Earliest expiry of an open channel; `None`: no open channel (or no
    /// `channels` table in this schema).
    pub channel_expires_at: Option<DateTime<Utc>>,
    pub open_channels: i64,
    /// Bookings whose external event lags (written soon, or waiting for
    /// re-authorisation / the end of a backoff).
    pub pending_outbound_intents: Option<i64>,
    /// Bookings whose write failed for good (`calsync bookings retry`).
    pub failed_bookings: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalendarStatus {
    pub calendar_id: String,
    pub has_cursor: bool,
    pub full_sync_in_progress: bool,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Seconds since the cursor last advanced (a completed sync round).
    pub cursor_age_seconds: Option<i64>,
    /// `ok`, `backoff` or `unavailable`: each calendar fails on its own.
    pub status: String,
    pub failures: i32,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub channel_failures: i32,
    pub channel_retry_at: Option<DateTime<Utc>>,
    pub channel_error: Option<String>,
}

/// Status of every connection (or one), ordered like `connections list`.
pub async fn load(
    store: &PgEventStore,
    id: Option<Uuid>,
) -> Result<Vec<ConnectionStatus>, StoreError> {
    let client = store.pool().get().await?;
    let now = Utc::now();
    let mut calendars: HashMap<Uuid, Vec<CalendarStatus>> = HashMap::new();
    for r in client
        .query(
            "SELECT connection_id, calendar_id, has_cursor, full_sync_in_progress, last_success_at, \
                    status, failures, retry_at, last_error, last_error_at, channel_failures, \
                    channel_retry_at, channel_error \
             FROM connection_calendars WHERE ($1::uuid IS NULL OR connection_id = $1) \
             ORDER BY connection_id, calendar_id",
            &[&id],
        )
        .await?
    {
        let last_success_at: Option<DateTime<Utc>> = r.try_get(4)?;
        let has_cursor: bool = r.try_get(2)?;
        calendars
            .entry(r.try_get(0)?)
            .or_default()
            .push(CalendarStatus {
                calendar_id: r.try_get(1)?,
                has_cursor,
                full_sync_in_progress: r.try_get(3)?,
                last_success_at,
                cursor_age_seconds: last_success_at
                    .filter(|_| has_cursor)
                    .map(|at| (now - at).num_seconds()),
                status: r.try_get(5)?,
                failures: r.try_get(6)?,
                retry_at: r.try_get(7)?,
                last_error: r.try_get(8)?,
                last_error_at: r.try_get(9)?,
                channel_failures: r.try_get(10)?,
                channel_retry_at: r.try_get(11)?,
                channel_error: r.try_get(12)?,
            });
    }
    let channels = channel_expiries(&client, id).await?;
    let mut pending: HashMap<Uuid, i64> = HashMap::new();
    let mut failed: HashMap<Uuid, i64> = HashMap::new();
    for r in client
        .query(
            "SELECT connection_id, count(*) FILTER (WHERE state IN ('pending', 'waiting')), \
                    count(*) FILTER (WHERE state = 'failed') FROM booking_events \
             WHERE state IN ('pending', 'waiting', 'failed') \
               AND ($1::uuid IS NULL OR connection_id = $1) \
             GROUP BY connection_id",
            &[&id],
        )
        .await?
    {
        pending.insert(r.try_get(0)?, r.try_get(1)?);
        failed.insert(r.try_get(0)?, r.try_get(2)?);
    }
    let rows = client
        .query(
            "SELECT connection_id, platform_provider_id, provider, status, error_count, \
                    last_error, backoff_until, needs_reauthorization, quarantine_reason, \
                    pause_reason, stream_version, updated_at, last_error_at \
             FROM connections WHERE ($1::uuid IS NULL OR connection_id = $1) \
             ORDER BY platform_provider_id, connection_id",
            &[&id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let connection_id: Uuid = r.try_get(0)?;
            let (channel_expires_at, open_channels) =
                channels.get(&connection_id).copied().unwrap_or((None, 0));
            Ok(ConnectionStatus {
                connection_id,
                platform_provider_id: r.try_get(1)?,
                provider: r.try_get(2)?,
                status: r.try_get(3)?,
                error_count: r.try_get(4)?,
                last_error: r.try_get(5)?,
                last_error_at: r.try_get(12)?,
                backoff_until: r.try_get(6)?,
                needs_reauthorization: r.try_get(7)?,
                quarantine_reason: r.try_get(8)?,
                pause_reason: r.try_get(9)?,
                stream_version: r.try_get(10)?,
                updated_at: r.try_get(11)?,
                calendars: calendars.remove(&connection_id).unwrap_or_default(),
                channel_expires_at,
                open_channels,
                pending_outbound_intents: Some(pending.get(&connection_id).copied().unwrap_or(0)),
                failed_bookings: failed.get(&connection_id).copied().unwrap_or(0),
            })
        })
        .collect()
}

type Expiries = HashMap<Uuid, (Option<DateTime<Utc>>, i64)>;

/// Earliest open-channel expiry per connection, if this schema has webhook
/// channels (they arrived in a later migration than the connections).
async fn channel_expiries(
    client: &tokio_postgres::Client,
    id: Option<Uuid>,
) -> Result<Expiries, StoreError> {
    if !table_exists(client, "channels").await? {
        return Ok(HashMap::new());
    }
    let rows = client
        .query(
            "SELECT connection_id, min(expires_at), count(*) FROM channels \
             WHERE closed_at IS NULL AND ($1::uuid IS NULL OR connection_id = $1) \
             GROUP BY connection_id",
            &[&id],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?))))
        .collect()
}

/// Whether `table` exists in the search path (optional read models).
pub async fn table_exists(
    client: &tokio_postgres::Client,
    table: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await?;
    Ok(row.try_get(0)?)
}
