//! Queries over the read-model tables, shaped for operators (JSON).

use super::{PgEventStore, StoreError};
use crate::core::ids::ConnectionId;
use serde_json::{json, Value};

/// Rows of the `connections` read model (one connection, or all).
pub async fn connections(
    store: &PgEventStore,
    id: Option<ConnectionId>,
) -> Result<Vec<Value>, StoreError> {
    let client = store.pool().get().await?;
    let sql = "SELECT connection_id, platform_provider_id, provider, account, calendars::text, \
                      destination_calendar, status, pause_reason, quarantine_reason, \
                      quarantined_at, stream_version, updated_at \
               FROM connections WHERE ($1::uuid IS NULL OR connection_id = $1) \
               ORDER BY platform_provider_id, connection_id";
    let rows = client.query(sql, &[&id.map(|i| i.as_uuid())]).await?;
    rows.iter()
        .map(|r| {
            let calendars: String = r.try_get(4)?;
            Ok(json!({
                "connection_id": r.try_get::<_, uuid::Uuid>(0)?,
                "platform_provider_id": r.try_get::<_, String>(1)?,
                "provider": r.try_get::<_, String>(2)?,
                "account": r.try_get::<_, String>(3)?,
                "calendars": serde_json::from_str::<Value>(&calendars).unwrap_or(Value::Null),
                "destination_calendar": r.try_get::<_, Option<String>>(5)?,
                "status": r.try_get::<_, String>(6)?,
                "pause_reason": r.try_get::<_, Option<String>>(7)?,
                "quarantine_reason": r.try_get::<_, Option<String>>(8)?,
                "quarantined_at": r.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(9)?,
                "stream_version": r.try_get::<_, i64>(10)?,
                "updated_at": r.try_get::<_, chrono::DateTime<chrono::Utc>>(11)?,
            }))
        })
        .collect()
}

/// Connections that take a platform provider's bookings: live, with a
/// destination calendar.
pub async fn booking_targets(
    store: &PgEventStore,
    platform_provider_id: &str,
) -> Result<Vec<ConnectionId>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT connection_id FROM connections WHERE platform_provider_id = $1 \
             AND destination_calendar IS NOT NULL AND status <> 'removed' ORDER BY connection_id",
            &[&platform_provider_id],
        )
        .await?;
    rows.iter()
        .map(|r| Ok(ConnectionId::from_uuid(r.try_get(0)?)))
        .collect()
}

/// A booking's rows in `booking_events`.
pub async fn booking_events(
    store: &PgEventStore,
    booking_id: &str,
) -> Result<Vec<Value>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT connection_id, calendar_id, external_event_id, ical_uid, etag, state, \
                    booking_version, written_version, last_error, updated_at \
             FROM booking_events WHERE booking_id = $1 ORDER BY connection_id",
            &[&booking_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(json!({
                "connection_id": r.try_get::<_, uuid::Uuid>(0)?,
                "calendar_id": r.try_get::<_, Option<String>>(1)?,
                "external_event_id": r.try_get::<_, Option<String>>(2)?,
                "ical_uid": r.try_get::<_, String>(3)?,
                "etag": r.try_get::<_, Option<String>>(4)?,
                "state": r.try_get::<_, String>(5)?,
                "booking_version": r.try_get::<_, i64>(6)?,
                "written_version": r.try_get::<_, Option<i64>>(7)?,
                "last_error": r.try_get::<_, Option<String>>(8)?,
                "updated_at": r.try_get::<_, chrono::DateTime<chrono::Utc>>(9)?,
            }))
        })
        .collect()
}
