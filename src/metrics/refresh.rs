//! Gauges that describe state rather than happenings (connections by
//! status, flags, staleness) are read when Prometheus scrapes, so they are
//! never older than the scrape and no background task can silently die.

use super::{
    ACTORS, CALENDARS_NEVER_SYNCED, CALENDAR_SYNC_AGE_MAX, CHANNELS_OPEN, CONNECTIONS,
    FLAG_ENABLED, PRODUCTION_MODE, REFRESH_ERRORS,
};
use crate::actors::Connections;
use crate::core::settings::Flag;
use crate::settings::SettingsHandle;
use crate::store::{PgEventStore, StoreError};
use metrics::{counter, gauge};

/// Every status a `connections` row can have (`ConnectionStatus::as_str`);
/// all are set on every refresh so a status that empties drops to 0.
const STATUSES: &[&str] = &[
    "active",
    "paused",
    "backoff",
    "degraded",
    "needs_reauthorization",
    "quarantined",
    "removed",
];

/// Refreshes the state gauges. In-memory sources (actors, flags) are set
/// even when the database fails; the error is counted and returned.
pub async fn refresh(
    store: &PgEventStore,
    connections: Option<&Connections>,
    settings: Option<&SettingsHandle>,
) -> Result<(), StoreError> {
    if let Some(settings) = settings {
        let current = settings.current();
        for flag in Flag::ALL {
            let on = if current.enabled(flag) { 1.0 } else { 0.0 };
            gauge!(FLAG_ENABLED, "flag" => flag.as_str()).set(on);
        }
        gauge!(PRODUCTION_MODE).set(if current.production() { 1.0 } else { 0.0 });
    }
    let result = from_database(store, connections).await;
    if result.is_err() {
        counter!(REFRESH_ERRORS).increment(1);
    }
    result
}

async fn from_database(
    store: &PgEventStore,
    connections: Option<&Connections>,
) -> Result<(), StoreError> {
    let client = store.pool().get().await?;
    // Outbound writes not yet confirmed, and how long the oldest has waited
    // (since its row last changed).
    let row = client
        .query_one(
            "SELECT count(*), extract(epoch FROM now() - min(updated_at))::float8 \
             FROM booking_events WHERE state IN ('pending', 'waiting')",
            &[],
        )
        .await?;
    let pending: i64 = row.try_get(0)?;
    let oldest: Option<f64> = row.try_get(1)?;
    super::outbound_intents(
        pending.max(0) as u64,
        oldest.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))),
    );
    let rows = client
        .query(
            "SELECT status, count(*) FROM connections GROUP BY status",
            &[],
        )
        .await?;
    let counts = rows
        .iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?)))
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let mut live = 0i64;
    for status in STATUSES {
        let n = counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        gauge!(CONNECTIONS, "status" => *status).set(n as f64);
        if *status != "removed" {
            live += n;
        }
    }
    if let Some(connections) = connections {
        let stats = connections.stats();
        // Passivated: a live connection with no actor in memory on this
        // node. With several nodes, each reports against the whole table.
        let passivated = (live - stats.active as i64 - stats.quarantined as i64).max(0);
        gauge!(ACTORS, "state" => "running").set(stats.active as f64);
        gauge!(ACTORS, "state" => "quarantined").set(stats.quarantined as f64);
        gauge!(ACTORS, "state" => "passivated").set(passivated as f64);
    }
    // Staleness of the calendars whose connections are meant to be syncing.
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE cc.last_success_at IS NULL), \
                    COALESCE(EXTRACT(EPOCH FROM now() - min(cc.last_success_at))::float8, 0) \
             FROM connection_calendars cc JOIN connections c USING (connection_id) \
             WHERE c.status IN ('active', 'backoff', 'degraded') AND cc.status <> 'unavailable'",
            &[],
        )
        .await?;
    gauge!(CALENDARS_NEVER_SYNCED).set(row.try_get::<_, i64>(0)? as f64);
    gauge!(CALENDAR_SYNC_AGE_MAX).set(row.try_get::<_, f64>(1)?);
    // Calendars failing on their own (the others of their connection sync
    // on), and bookings whose write failed for good.
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE cc.status = 'backoff'), \
                    count(*) FILTER (WHERE cc.status = 'unavailable') \
             FROM connection_calendars cc JOIN connections c USING (connection_id) \
             WHERE c.status <> 'removed'",
            &[],
        )
        .await?;
    super::calendars_unhealthy("backoff", row.try_get::<_, i64>(0)?.max(0) as u64);
    super::calendars_unhealthy("unavailable", row.try_get::<_, i64>(1)?.max(0) as u64);
    let failed: i64 = client
        .query_one(
            "SELECT count(*) FROM booking_events WHERE state = 'failed'",
            &[],
        )
        .await?
        .try_get(0)?;
    super::bookings_failed(failed.max(0) as u64);
    // Channels arrived in a later migration than connections. With no open
    // channel nothing expires: +Inf (Prometheus parses it), never a
    // misleading 0 that would read as "expiring now".
    if crate::store::status::table_exists(&client, "channels").await? {
        let row = client
            .query_one(
                "SELECT EXTRACT(EPOCH FROM min(expires_at) - now())::float8, count(*) \
                 FROM channels WHERE closed_at IS NULL",
                &[],
            )
            .await?;
        let horizon = row.try_get::<_, Option<f64>>(0)?;
        super::channel_expiry_horizon(horizon.unwrap_or(f64::INFINITY));
        gauge!(CHANNELS_OPEN).set(row.try_get::<_, i64>(1)? as f64);
    }
    Ok(())
}
