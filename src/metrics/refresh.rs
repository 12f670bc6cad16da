//! Gauges that describe state rather than happenings (connections by
//! status, staleness, outbound intents, channels) are read from the
//! database by one background task, with **one** query per interval; a
//! scrape only renders memory (and sets the in-memory gauges: flags,
//! actors), so a scrape flood never competes with ingest for the pool.
//! The refresher is started with the HTTP server and stops with it;
//! `calsync_metrics_refresh_errors_total` counts the rounds that failed
//! (the gauges keep their previous values).

use super::{
    ACTORS, CALENDARS_NEVER_SYNCED, CALENDAR_SYNC_AGE_MAX, CHANNELS_OPEN, CONNECTIONS,
    FLAG_ENABLED, PRODUCTION_MODE, REFRESH_ERRORS,
};
use crate::actors::Connections;
use crate::core::settings::Flag;
use crate::settings::SettingsHandle;
use crate::store::{PgEventStore, StoreError};
use metrics::{counter, gauge};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

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

/// Live (not removed) connections at the last refresh: the actors gauge's
/// `passivated` is computed at scrape time against it.
static LIVE_CONNECTIONS: AtomicI64 = AtomicI64::new(0);

/// Every connection status at 0 (before the first refresh).
pub(super) fn prime_connections() {
    for status in STATUSES {
        gauge!(CONNECTIONS, "status" => *status).set(0.0);
    }
}

/// The in-memory gauges (flags, actors), set at every scrape: no I/O.
pub fn from_memory(connections: Option<&Connections>, settings: Option<&SettingsHandle>) {
    if let Some(settings) = settings {
        let current = settings.current();
        for flag in Flag::ALL {
            let on = if current.enabled(flag) { 1.0 } else { 0.0 };
            gauge!(FLAG_ENABLED, "flag" => flag.as_str()).set(on);
        }
        gauge!(PRODUCTION_MODE).set(if current.production() { 1.0 } else { 0.0 });
    }
    if let Some(connections) = connections {
        let stats = connections.stats();
        // Passivated: a live connection with no actor in memory on this
        // node. With several nodes, each reports against the whole table.
        let live = LIVE_CONNECTIONS.load(Ordering::Relaxed);
        let passivated = (live - stats.active as i64 - stats.quarantined as i64).max(0);
        gauge!(ACTORS, "state" => "running").set(stats.active as f64);
        gauge!(ACTORS, "state" => "quarantined").set(stats.quarantined as f64);
        gauge!(ACTORS, "state" => "passivated").set(passivated as f64);
    }
}

/// Refreshes the database gauges now (one query), then the in-memory
/// ones. A failure is counted and returned; the gauges keep their values.
pub async fn refresh(
    store: &PgEventStore,
    connections: Option<&Connections>,
    settings: Option<&SettingsHandle>,
) -> Result<(), StoreError> {
    let result = from_database(store).await;
    if result.is_err() {
        counter!(REFRESH_ERRORS).increment(1);
    }
    from_memory(connections, settings);
    result
}

/// Refreshes every `every` until dropped (the task is aborted with the
/// returned guard). The first round runs at once, so the database gauges
/// are real from start-up.
pub fn spawn(
    store: PgEventStore,
    connections: Connections,
    settings: SettingsHandle,
    every: Duration,
) -> tokio_util::task::AbortOnDropHandle<()> {
    tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            // Bounded: a hung database must not stop later rounds.
            match tokio::time::timeout(
                every.max(Duration::from_secs(2)),
                refresh(&store, Some(&connections), Some(&settings)),
            )
            .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "metrics: state gauges not refreshed"),
                Err(_) => {
                    counter!(REFRESH_ERRORS).increment(1);
                    tracing::warn!("metrics: state gauges not refreshed (timeout)");
                }
            }
        }
    }))
}

/// Every database gauge in one statement: one round trip per interval.
const STATE_QUERY: &str = "\
SELECT \
  (SELECT count(*) FROM booking_events WHERE state IN ('pending', 'waiting')), \
  (SELECT extract(epoch FROM now() - min(updated_at))::float8 \
     FROM booking_events WHERE state IN ('pending', 'waiting')), \
  (SELECT COALESCE(json_object_agg(status, n), '{}')::text \
     FROM (SELECT status, count(*) AS n FROM connections GROUP BY status) s), \
  (SELECT count(*) FILTER (WHERE cc.last_success_at IS NULL) \
     FROM connection_calendars cc JOIN connections c USING (connection_id) \
     WHERE c.status IN ('active', 'backoff', 'degraded') AND cc.status <> 'unavailable'), \
  (SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(cc.last_success_at))::float8, 0) \
     FROM connection_calendars cc JOIN connections c USING (connection_id) \
     WHERE c.status IN ('active', 'backoff', 'degraded') AND cc.status <> 'unavailable'), \
  (SELECT count(*) FROM connection_calendars cc JOIN connections c USING (connection_id) \
     WHERE c.status <> 'removed' AND cc.status = 'backoff'), \
  (SELECT count(*) FROM connection_calendars cc JOIN connections c USING (connection_id) \
     WHERE c.status <> 'removed' AND cc.status = 'unavailable'), \
  (SELECT count(*) FROM booking_events WHERE state = 'failed'), \
  (SELECT EXTRACT(EPOCH FROM min(expires_at) - now())::float8 FROM channels \
     WHERE closed_at IS NULL), \
  (SELECT count(*) FROM channels WHERE closed_at IS NULL)";

async fn from_database(store: &PgEventStore) -> Result<(), StoreError> {
    let client = store.pool().get().await?;
    let row = client.query_one(STATE_QUERY, &[]).await?;
    let pending: i64 = row.try_get(0)?;
    let oldest: Option<f64> = row.try_get(1)?;
    super::outbound_intents(
        pending.max(0) as u64,
        oldest.map(|s| Duration::from_secs_f64(s.max(0.0))),
    );
    let by_status: String = row.try_get(2)?;
    let counts: HashMap<String, i64> = serde_json::from_str(&by_status)
        .map_err(|e| StoreError::BadData(format!("connection counts: {e}")))?;
    let mut live = 0i64;
    for status in STATUSES {
        let n = counts.get(*status).copied().unwrap_or(0);
        gauge!(CONNECTIONS, "status" => *status).set(n as f64);
        if *status != "removed" {
            live += n;
        }
    }
    LIVE_CONNECTIONS.store(live, Ordering::Relaxed);
    gauge!(CALENDARS_NEVER_SYNCED).set(row.try_get::<_, i64>(3)? as f64);
    gauge!(CALENDAR_SYNC_AGE_MAX).set(row.try_get::<_, f64>(4)?);
    super::calendars_unhealthy("backoff", row.try_get::<_, i64>(5)?.max(0) as u64);
    super::calendars_unhealthy("unavailable", row.try_get::<_, i64>(6)?.max(0) as u64);
    super::bookings_failed(row.try_get::<_, i64>(7)?.max(0) as u64);
    // With no open channel nothing expires: +Inf (Prometheus parses it),
    // never a misleading 0 that would read as "expiring now".
    let horizon = row.try_get::<_, Option<f64>>(8)?;
    super::channel_expiry_horizon(horizon.unwrap_or(f64::INFINITY));
    gauge!(CHANNELS_OPEN).set(row.try_get::<_, i64>(9)? as f64);
    Ok(())
}
