//! Reads behind the platform API: busy intervals of a platform provider in
//! a window, and how fresh they are.

use super::{PgEventStore, StoreError};
use crate::core::interval::Interval;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One busy interval as the platform sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusyInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub provider: String,
    pub external_event_id: String,
    pub connection_id: uuid::Uuid,
    pub calendar_id: String,
}

/// How fresh the data behind an answer is, per connection and calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    pub connection_id: uuid::Uuid,
    pub provider: String,
    pub status: String,
    pub backoff_until: Option<DateTime<Utc>>,
    pub needs_reauthorization: bool,
    pub calendars: Vec<CalendarFreshness>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalendarFreshness {
    pub calendar_id: String,
    pub last_successful_sync: Option<DateTime<Utc>>,
}

/// Busy intervals overlapping `window`, oldest first.
pub async fn busy_in(
    store: &PgEventStore,
    platform_provider_id: &str,
    window: Interval,
) -> Result<Vec<BusyInterval>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT starts_at, ends_at, provider, external_event_id, connection_id, calendar_id \
             FROM busy_intervals WHERE platform_provider_id = $1 \
               AND starts_at < $3 AND ends_at > $2 ORDER BY starts_at, ends_at",
            &[&platform_provider_id, &window.start(), &window.end()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(BusyInterval {
                start: r.try_get(0)?,
                end: r.try_get(1)?,
                provider: r.try_get(2)?,
                external_event_id: r.try_get(3)?,
                connection_id: r.try_get(4)?,
                calendar_id: r.try_get(5)?,
            })
        })
        .collect()
}

/// Freshness of every live connection of a platform provider.
pub async fn freshness(
    store: &PgEventStore,
    platform_provider_id: &str,
) -> Result<Vec<Freshness>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT c.connection_id, c.provider, c.status, c.backoff_until, \
                    c.needs_reauthorization IS NOT NULL, k.calendar_id, k.last_success_at \
             FROM connections c LEFT JOIN connection_calendars k USING (connection_id) \
             WHERE c.platform_provider_id = $1 AND c.status <> 'removed' \
             ORDER BY c.connection_id, k.calendar_id",
            &[&platform_provider_id],
        )
        .await?;
    let mut out: Vec<Freshness> = Vec::new();
    for r in &rows {
        let id: uuid::Uuid = r.try_get(0)?;
        if out.last().map(|f| f.connection_id) != Some(id) {
            out.push(Freshness {
                connection_id: id,
                provider: r.try_get(1)?,
                status: r.try_get(2)?,
                backoff_until: r.try_get(3)?,
                needs_reauthorization: r.try_get(4)?,
                calendars: Vec::new(),
            });
        }
        if let Some(calendar_id) = r.try_get::<_, Option<String>>(5)? {
            if let Some(last) = out.last_mut() {
                last.calendars.push(CalendarFreshness {
                    calendar_id,
                    last_successful_sync: r.try_get(6)?,
                });
            }
        }
    }
    Ok(out)
}
