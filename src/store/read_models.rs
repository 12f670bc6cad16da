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
