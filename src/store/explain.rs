//! Reads behind `GET /v1/providers/{id}/explain` and the troubleshooter
//! page: a platform provider's busy rows with their rules, and the events
//! the rules ignored with their reasons, in a window.

use super::{PgEventStore, StoreError};
use crate::core::interval::Interval;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where a busy interval or an ignored event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub connection_id: uuid::Uuid,
    pub provider: String,
    pub calendar_id: String,
    pub external_event_id: String,
    /// Always `None`: calsync does not record event titles (they would
    /// enter the immutable log); see docs/EXPLAIN.md.
    pub title: Option<String>,
}

/// A busy interval and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainedBusy {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `None` for rows folded from events logged before explanations.
    pub rule: Option<String>,
    pub source: Source,
}

/// An event the busy rules ignored, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredEvent {
    /// The event's times, when known (a deleted event's may not be).
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub reason: String,
    pub booking_id: Option<String>,
    pub source: Source,
}

/// Busy rows overlapping `window`, oldest first.
pub async fn busy_explained(
    store: &PgEventStore,
    platform_provider_id: &str,
    window: Interval,
) -> Result<Vec<ExplainedBusy>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT starts_at, ends_at, rule, connection_id, provider, calendar_id, \
                    external_event_id \
             FROM busy_intervals WHERE platform_provider_id = $1 \
               AND starts_at < $3 AND ends_at > $2 \
             ORDER BY starts_at, ends_at, external_event_id",
            &[&platform_provider_id, &window.start(), &window.end()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ExplainedBusy {
                start: r.try_get(0)?,
                end: r.try_get(1)?,
                rule: r.try_get(2)?,
                source: Source {
                    connection_id: r.try_get(3)?,
                    provider: r.try_get(4)?,
                    calendar_id: r.try_get(5)?,
                    external_event_id: r.try_get(6)?,
                    title: None,
                },
            })
        })
        .collect()
}

/// Ignored events overlapping `window`, and those without known times
/// (a cancelled event's tombstone), newest times last.
pub async fn ignored_in(
    store: &PgEventStore,
    platform_provider_id: &str,
    window: Interval,
) -> Result<Vec<IgnoredEvent>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT i.starts_at, i.ends_at, i.reason, i.booking_id, i.connection_id, \
                    c.provider, i.calendar_id, i.external_event_id \
             FROM ignored_events i JOIN connections c USING (connection_id) \
             WHERE i.platform_provider_id = $1 \
               AND (i.starts_at IS NULL OR (i.starts_at < $3 AND i.ends_at > $2)) \
             ORDER BY i.starts_at NULLS LAST, i.external_event_id \
             LIMIT 1000",
            &[&platform_provider_id, &window.start(), &window.end()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(IgnoredEvent {
                start: r.try_get(0)?,
                end: r.try_get(1)?,
                reason: r.try_get(2)?,
                booking_id: r.try_get(3)?,
                source: Source {
                    connection_id: r.try_get(4)?,
                    provider: r.try_get(5)?,
                    calendar_id: r.try_get(6)?,
                    external_event_id: r.try_get(7)?,
                    title: None,
                },
            })
        })
        .collect()
}
