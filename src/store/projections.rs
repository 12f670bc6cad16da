//! Writing [`RowChange`]s into the read-model tables.
//!
//! Every statement names its table through [`Tables`], so replay can write
//! the same changes into shadow tables.

use crate::core::projection::{
    BookingRow, BusyRow, ChannelRow, ConnectionRow, IgnoredRow, RowChange,
};
use tokio_postgres::GenericClient;

/// Which set of read-model tables to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    Live,
    /// `shadow_*` tables used by `calsync replay`.
    Shadow,
}

impl Tables {
    pub fn prefix(&self) -> &'static str {
        match self {
            Tables::Live => "",
            Tables::Shadow => "shadow_",
        }
    }

    pub fn name(&self, table: &str) -> String {
        format!("{}{table}", self.prefix())
    }
}

/// Applies the changes of several appends (a group-commit batch) in one
/// go: the connection rows — one per append, the bulk of ingest's writes —
/// in one multi-row upsert, everything else in order. No other change reads
/// or references the connection rows, so writing them first is equivalent.
pub async fn apply_many(
    client: &impl GenericClient,
    tables: Tables,
    appends: &[&[RowChange]],
) -> Result<(), tokio_postgres::Error> {
    let mut latest: std::collections::BTreeMap<uuid::Uuid, &ConnectionRow> = Default::default();
    for change in appends.iter().flat_map(|c| c.iter()) {
        if let RowChange::UpsertConnection(row) = change {
            latest.insert(row.connection_id.as_uuid(), row);
        }
    }
    if latest.len() < 2 {
        for changes in appends {
            apply(client, tables, changes).await?;
        }
        return Ok(());
    }
    upsert_connections(client, tables, latest.values().copied()).await?;
    for changes in appends {
        let rest: Vec<RowChange> = changes
            .iter()
            .filter(|c| !matches!(c, RowChange::UpsertConnection(_)))
            .cloned()
            .collect();
        apply(client, tables, &rest).await?;
    }
    Ok(())
}

pub async fn apply(
    client: &impl GenericClient,
    tables: Tables,
    changes: &[RowChange],
) -> Result<(), tokio_postgres::Error> {
    for change in changes {
        match change {
            RowChange::UpsertConnection(row) => upsert_connection(client, tables, row).await?,
            RowChange::ReplaceCalendars {
                connection_id,
                rows,
            } => {
                let t = tables.name("connection_calendars");
                client
                    .execute(
                        &format!("DELETE FROM {t} WHERE connection_id = $1"),
                        &[&connection_id.as_uuid()],
                    )
                    .await?;
                for r in rows {
                    client
                        .execute(
                            &format!(
                                "INSERT INTO {t} (connection_id, calendar_id, has_cursor, generation, \
                                 full_sync_in_progress, last_success_at, status, failures, retry_at, \
                                 last_error, last_error_at, channel_failures, channel_retry_at, \
                                 channel_error) \
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                            ),
                            &[
                                &connection_id.as_uuid(),
                                &r.calendar_id,
                                &r.has_cursor,
                                &(r.generation as i64),
                                &r.full_sync_in_progress,
                                &r.last_success_at,
                                &r.status,
                                &(r.failures as i32),
                                &r.retry_at,
                                &r.last_error,
                                &r.last_error_at,
                                &(r.channel_failures as i32),
                                &r.channel_retry_at,
                                &r.channel_error,
                            ],
                        )
                        .await?;
                }
            }
            RowChange::UpsertBusy(row) => upsert_busy(client, tables, row).await?,
            RowChange::UpsertIgnored(row) => upsert_ignored(client, tables, row).await?,
            RowChange::DeleteIgnored {
                connection_id,
                calendar_id,
                external_event_id,
            } => {
                client
                    .execute(
                        &format!(
                            "DELETE FROM {} WHERE connection_id = $1 AND calendar_id = $2 \
                             AND external_event_id = $3",
                            tables.name("ignored_events")
                        ),
                        &[&connection_id.as_uuid(), calendar_id, external_event_id],
                    )
                    .await?;
            }
            RowChange::DeleteBusy {
                connection_id,
                calendar_id,
                external_event_id,
            } => {
                client
                    .execute(
                        &format!(
                            "DELETE FROM {} WHERE connection_id = $1 AND calendar_id = $2 \
                             AND external_event_id = $3",
                            tables.name("busy_intervals")
                        ),
                        &[&connection_id.as_uuid(), calendar_id, external_event_id],
                    )
                    .await?;
            }
            RowChange::SweepBusy {
                connection_id,
                calendar_id,
                below_generation,
            } => {
                for table in ["busy_intervals", "ignored_events"] {
                    client
                        .execute(
                            &format!(
                                "DELETE FROM {} WHERE connection_id = $1 AND calendar_id = $2 \
                                 AND generation < $3",
                                tables.name(table)
                            ),
                            &[
                                &connection_id.as_uuid(),
                                calendar_id,
                                &(*below_generation as i64),
                            ],
                        )
                        .await?;
                }
            }
            RowChange::KeepOnlyCalendars {
                connection_id,
                calendars,
            } => {
                for table in ["busy_intervals", "ignored_events"] {
                    client
                        .execute(
                            &format!(
                                "DELETE FROM {} WHERE connection_id = $1 \
                                 AND NOT (calendar_id = ANY($2))",
                                tables.name(table)
                            ),
                            &[&connection_id.as_uuid(), calendars],
                        )
                        .await?;
                }
            }
            RowChange::UpsertChannel(row) => upsert_channel(client, tables, row).await?,
            RowChange::UpsertBooking(row) => upsert_booking(client, tables, row).await?,
            RowChange::RenewChannel {
                channel_id,
                expires_at,
            } => {
                client
                    .execute(
                        &format!(
                            "UPDATE {} SET expires_at = $2 WHERE channel_id = $1",
                            tables.name("channels")
                        ),
                        &[channel_id, expires_at],
                    )
                    .await?;
            }
            RowChange::EraseCredentials { connection_id } => {
                if tables == Tables::Live {
                    client
                        .execute(
                            "DELETE FROM credentials WHERE connection_id = $1",
                            &[&connection_id.as_uuid()],
                        )
                        .await?;
                }
            }
            RowChange::CloseChannel {
                channel_id,
                closed_at,
            } => {
                client
                    .execute(
                        &format!(
                            "UPDATE {} SET closed_at = $2 WHERE channel_id = $1",
                            tables.name("channels")
                        ),
                        &[channel_id, closed_at],
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

async fn upsert_booking(
    client: &impl GenericClient,
    tables: Tables,
    row: &BookingRow,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO {t} (booking_id, connection_id, calendar_id, external_event_id, ical_uid, \
           etag, state, booking_version, written_version, last_error, failures, retry_at, \
           failed_status, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, now()) \
         ON CONFLICT (booking_id, connection_id) DO UPDATE SET \
           calendar_id = EXCLUDED.calendar_id, external_event_id = EXCLUDED.external_event_id, \
           ical_uid = EXCLUDED.ical_uid, etag = EXCLUDED.etag, state = EXCLUDED.state, \
           booking_version = EXCLUDED.booking_version, \
           written_version = EXCLUDED.written_version, last_error = EXCLUDED.last_error, \
           failures = EXCLUDED.failures, retry_at = EXCLUDED.retry_at, \
           failed_status = EXCLUDED.failed_status, updated_at = now()",
        t = tables.name("booking_events")
    );
    client
        .execute(
            &sql,
            &[
                &row.booking_id,
                &row.connection_id.as_uuid(),
                &row.calendar_id,
                &row.external_event_id,
                &row.ical_uid,
                &row.etag,
                &row.state,
                &(row.booking_version as i64),
                &row.written_version.map(|v| v as i64),
                &row.last_error,
                &(row.failures as i32),
                &row.retry_at,
                &row.failed_status.map(i32::from),
            ],
        )
        .await?;
    Ok(())
}

async fn upsert_channel(
    client: &impl GenericClient,
    tables: Tables,
    row: &ChannelRow,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO {t} (channel_id, provider, connection_id, calendar_id, resource_id,            secret_sha256, expires_at, closed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)          ON CONFLICT (channel_id) DO UPDATE SET provider = EXCLUDED.provider,            connection_id = EXCLUDED.connection_id, calendar_id = EXCLUDED.calendar_id,            resource_id = EXCLUDED.resource_id, secret_sha256 = EXCLUDED.secret_sha256,            expires_at = EXCLUDED.expires_at, closed_at = NULL",
        t = tables.name("channels")
    );
    client
        .execute(
            &sql,
            &[
                &row.channel_id,
                &row.provider,
                &row.connection_id.as_uuid(),
                &row.calendar_id,
                &row.resource_id,
                &row.secret_sha256,
                &row.expires_at,
            ],
        )
        .await?;
    Ok(())
}

/// Connection rows in one statement (at most one per connection); the
/// one-row upsert is this with a single row.
async fn upsert_connections(
    client: &impl GenericClient,
    tables: Tables,
    rows: impl Iterator<Item = &ConnectionRow>,
) -> Result<(), tokio_postgres::Error> {
    let mut c = ConnectionColumns::default();
    for row in rows {
        c.push(row);
    }
    let (arrays, names) = connection_unnest(1);
    let source = format!("unnest({arrays}) AS u({names})");
    let sql = connection_upsert_sql(&tables.name("connections"), &source);
    client.execute(&sql, &c.params()).await?;
    Ok(())
}

/// The source columns of a connection upsert: each one's alias in the
/// `SELECT` and its array type as a parameter.
const CONNECTION_SOURCE: [(&str, &str); 17] = [
    ("i", "uuid"),
    ("pp", "text"),
    ("pr", "text"),
    ("a", "text"),
    ("cal", "text"),
    ("d", "text"),
    ("st", "text"),
    ("pr2", "text"),
    ("qr", "text"),
    ("qa", "timestamptz"),
    ("sv", "bigint"),
    ("ec", "int"),
    ("le", "text"),
    ("bu", "timestamptz"),
    ("nr", "text"),
    ("na", "bigint"),
    ("lea", "timestamptz"),
];

/// `$first::uuid[], ...` for [`ConnectionColumns::params`] numbered from
/// `first`, and the matching column aliases (`i, pp, ...`).
pub(super) fn connection_unnest(first: usize) -> (String, String) {
    let arrays: Vec<String> = CONNECTION_SOURCE
        .iter()
        .enumerate()
        .map(|(n, (_, ty))| format!("${}::{ty}[]", first + n))
        .collect();
    let names: Vec<&str> = CONNECTION_SOURCE.iter().map(|(name, _)| *name).collect();
    (arrays.join(", "), names.join(", "))
}

/// The upsert of `table` from `source`, a `FROM` item whose columns carry
/// the aliases of [`connection_unnest`] (at most one row per connection:
/// `ON CONFLICT DO UPDATE` may not touch a row twice).
pub(super) fn connection_upsert_sql(table: &str, source: &str) -> String {
    format!(
        "INSERT INTO {table} (connection_id, platform_provider_id, provider, account, \
           calendars, destination_calendar, status, pause_reason, quarantine_reason, \
           quarantined_at, stream_version, error_count, last_error, backoff_until, \
           needs_reauthorization, notifications_accepted, last_error_at, updated_at) \
         SELECT i, pp, pr, a, cal::json, d, st, pr2, qr, qa, sv, ec, le, bu, nr, na, lea, now() \
         FROM {source} \
         ON CONFLICT (connection_id) DO UPDATE SET \
           platform_provider_id = EXCLUDED.platform_provider_id, \
           provider = EXCLUDED.provider, account = EXCLUDED.account, \
           calendars = EXCLUDED.calendars, \
           destination_calendar = EXCLUDED.destination_calendar, \
           status = EXCLUDED.status, pause_reason = EXCLUDED.pause_reason, \
           quarantine_reason = EXCLUDED.quarantine_reason, \
           quarantined_at = EXCLUDED.quarantined_at, \
           stream_version = EXCLUDED.stream_version, error_count = EXCLUDED.error_count, \
           last_error = EXCLUDED.last_error, backoff_until = EXCLUDED.backoff_until, \
           needs_reauthorization = EXCLUDED.needs_reauthorization, \
           notifications_accepted = EXCLUDED.notifications_accepted, \
           last_error_at = EXCLUDED.last_error_at, updated_at = now()"
    )
}

/// Connection rows as parameter arrays, one entry per row, in the order of
/// [`CONNECTION_SOURCE`].
#[derive(Default)]
pub(super) struct ConnectionColumns<'a> {
    ids: Vec<uuid::Uuid>,
    platform_provider_ids: Vec<&'a str>,
    providers: Vec<&'a str>,
    accounts: Vec<&'a str>,
    calendars: Vec<String>,
    destinations: Vec<Option<&'a str>>,
    statuses: Vec<&'a str>,
    pause_reasons: Vec<Option<&'a str>>,
    quarantine_reasons: Vec<Option<&'a str>>,
    quarantined_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    stream_versions: Vec<i64>,
    error_counts: Vec<i32>,
    last_errors: Vec<Option<&'a str>>,
    backoff_until: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    needs_reauthorization: Vec<Option<&'a str>>,
    notifications_accepted: Vec<i64>,
    last_error_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
}

impl<'a> ConnectionColumns<'a> {
    pub fn push(&mut self, row: &'a ConnectionRow) {
        self.ids.push(row.connection_id.as_uuid());
        self.platform_provider_ids.push(&row.platform_provider_id);
        self.providers.push(&row.provider);
        self.accounts.push(&row.account);
        // A list of strings always serialises.
        self.calendars
            .push(serde_json::to_string(&row.calendars).unwrap_or_else(|_| "[]".into()));
        self.destinations.push(row.destination_calendar.as_deref());
        self.statuses.push(&row.status);
        self.pause_reasons.push(row.pause_reason.as_deref());
        self.quarantine_reasons
            .push(row.quarantine_reason.as_deref());
        self.quarantined_at.push(row.quarantined_at);
        self.stream_versions.push(row.stream_version as i64);
        self.error_counts.push(row.error_count as i32);
        self.last_errors.push(row.last_error.as_deref());
        self.last_error_at.push(row.last_error_at);
        self.backoff_until.push(row.backoff_until);
        self.needs_reauthorization
            .push(row.needs_reauthorization.as_deref());
        self.notifications_accepted
            .push(row.notifications_accepted as i64);
    }

    /// The arrays in the order of [`CONNECTION_SOURCE`].
    pub fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 17] {
        [
            &self.ids,
            &self.platform_provider_ids,
            &self.providers,
            &self.accounts,
            &self.calendars,
            &self.destinations,
            &self.statuses,
            &self.pause_reasons,
            &self.quarantine_reasons,
            &self.quarantined_at,
            &self.stream_versions,
            &self.error_counts,
            &self.last_errors,
            &self.backoff_until,
            &self.needs_reauthorization,
            &self.notifications_accepted,
            &self.last_error_at,
        ]
    }
}

async fn upsert_connection(
    client: &impl GenericClient,
    tables: Tables,
    row: &ConnectionRow,
) -> Result<(), tokio_postgres::Error> {
    upsert_connections(client, tables, std::iter::once(row)).await
}

async fn upsert_busy(
    client: &impl GenericClient,
    tables: Tables,
    row: &BusyRow,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO {t} (platform_provider_id, provider, external_event_id, connection_id, \
           calendar_id, starts_at, ends_at, generation, rule) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (connection_id, calendar_id, external_event_id) DO UPDATE SET \
           platform_provider_id = EXCLUDED.platform_provider_id, provider = EXCLUDED.provider, \
           starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, \
           generation = EXCLUDED.generation, rule = EXCLUDED.rule",
        t = tables.name("busy_intervals")
    );
    client
        .execute(
            &sql,
            &[
                &row.platform_provider_id,
                &row.provider,
                &row.external_event_id,
                &row.connection_id.as_uuid(),
                &row.calendar_id,
                &row.interval.start(),
                &row.interval.end(),
                &(row.generation as i64),
                &row.rule,
            ],
        )
        .await?;
    Ok(())
}

async fn upsert_ignored(
    client: &impl GenericClient,
    tables: Tables,
    row: &IgnoredRow,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO {t} (connection_id, calendar_id, external_event_id, platform_provider_id, \
           reason, starts_at, ends_at, booking_id, generation) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (connection_id, calendar_id, external_event_id) DO UPDATE SET \
           platform_provider_id = EXCLUDED.platform_provider_id, reason = EXCLUDED.reason, \
           starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, \
           booking_id = EXCLUDED.booking_id, generation = EXCLUDED.generation",
        t = tables.name("ignored_events")
    );
    client
        .execute(
            &sql,
            &[
                &row.connection_id.as_uuid(),
                &row.calendar_id,
                &row.external_event_id,
                &row.platform_provider_id,
                &row.reason,
                &row.span.map(|s| s.start()),
                &row.span.map(|s| s.end()),
                &row.booking_id,
                &(row.generation as i64),
            ],
        )
        .await?;
    Ok(())
}
