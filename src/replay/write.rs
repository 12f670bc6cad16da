//! Writing rebuilt rows: one binary `COPY … FROM STDIN` per shadow table,
//! with the same Rust → SQL conversions as `store::projections` (so a
//! timestamp or a JSON list is stored exactly as the live path stores it).

use super::model::{Dirty, Model};
use super::tables::{ident, ProjectionTable};
use super::ReplayError;
use crate::actors::connection::SNAPSHOT_SCHEMA_VERSION;
use crate::core::ids::ConnectionId;
use crate::core::projection::{
    BookingRow, BusyRow, CalendarRow, ChannelRow, ConnectionRow, IgnoredRow,
};
use chrono::{DateTime, Utc};
use futures::pin_mut;
use postgres_types::{Json, Type};
use std::collections::BTreeMap;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::Client;
use uuid::Uuid;

/// Which rows of the model to write.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    All,
    Only(&'a Dirty),
}

/// Writes the model's rows of every table into its shadow table; returns
/// rows written per table.
pub async fn write_shadows(
    client: &Client,
    tables: &[ProjectionTable],
    model: &Model,
    rows: Rows<'_>,
) -> Result<BTreeMap<String, u64>, ReplayError> {
    let mut written = BTreeMap::new();
    for table in tables {
        if let Rows::Only(dirty) = rows {
            delete_dirty(client, table, dirty).await?;
        }
        let n = copy_table(client, table, model, rows).await?;
        written.insert(table.name.to_string(), n);
    }
    Ok(written)
}

async fn delete_dirty(
    client: &Client,
    table: &ProjectionTable,
    dirty: &Dirty,
) -> Result<(), ReplayError> {
    let shadow = ident(&table.shadow());
    match table.name {
        "busy_intervals" => {
            let (mut connection, mut calendar, mut event) = (Vec::new(), Vec::new(), Vec::new());
            for (a, b, c) in &dirty.busy {
                connection.push(a.as_uuid());
                calendar.push(b.as_str());
                event.push(c.as_str());
            }
            client
                .execute(
                    &format!(
                        "DELETE FROM {shadow} WHERE (connection_id, calendar_id, external_event_id) \
                         IN (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[]))"
                    ),
                    &[&connection, &calendar, &event],
                )
                .await?;
        }
        "channels" => {
            let ids: Vec<&str> = dirty.channels.iter().map(String::as_str).collect();
            client
                .execute(
                    &format!("DELETE FROM {shadow} WHERE channel_id = ANY($1)"),
                    &[&ids],
                )
                .await?;
        }
        _ => {
            let ids: Vec<Uuid> = dirty.connections.iter().map(|c| c.as_uuid()).collect();
            client
                .execute(
                    &format!(
                        "DELETE FROM {shadow} WHERE {} = ANY($1)",
                        ident(table.connection_column)
                    ),
                    &[&ids],
                )
                .await?;
        }
    }
    Ok(())
}

async fn copy_table(
    client: &Client,
    table: &ProjectionTable,
    model: &Model,
    rows: Rows<'_>,
) -> Result<u64, ReplayError> {
    let connections = |dirty: &Dirty| -> Vec<ConnectionId> {
        let mut ids: Vec<_> = dirty.connections.iter().copied().collect();
        ids.sort();
        ids
    };
    match table.name {
        "busy_intervals" => {
            let selected: Vec<&BusyRow> = match rows {
                Rows::All => model.busy().collect(),
                Rows::Only(d) => d.busy.iter().filter_map(|k| model.busy_row(k)).collect(),
            };
            copy_busy(client, table, &selected).await
        }
        "ignored_events" => {
            let selected: Vec<&IgnoredRow> = match rows {
                Rows::All => model.ignored.values().flat_map(|r| r.values()).collect(),
                Rows::Only(d) => connections(d)
                    .iter()
                    .filter_map(|id| model.ignored.get(id))
                    .flat_map(|r| r.values())
                    .collect(),
            };
            copy_ignored(client, table, &selected).await
        }
        "connection_calendars" => {
            let selected: Vec<&CalendarRow> = match rows {
                Rows::All => model.calendars.values().flatten().collect(),
                Rows::Only(d) => connections(d)
                    .iter()
                    .filter_map(|id| model.calendars.get(id))
                    .flatten()
                    .collect(),
            };
            copy_calendars(client, table, &selected).await
        }
        "connections" => {
            let selected: Vec<&ConnectionRow> = match rows {
                Rows::All => model.connections.values().collect(),
                Rows::Only(d) => connections(d)
                    .iter()
                    .filter_map(|id| model.connections.get(id))
                    .collect(),
            };
            copy_connections(client, table, &selected).await
        }
        "booking_events" => {
            let selected: Vec<&BookingRow> = match rows {
                Rows::All => model.bookings.values().flat_map(|b| b.values()).collect(),
                Rows::Only(d) => connections(d)
                    .iter()
                    .filter_map(|id| model.bookings.get(id))
                    .flat_map(|b| b.values())
                    .collect(),
            };
            copy_bookings(client, table, &selected).await
        }
        "channels" => {
            let selected: Vec<&(ChannelRow, Option<DateTime<Utc>>)> = match rows {
                Rows::All => model.channels.values().collect(),
                Rows::Only(d) => d
                    .channels
                    .iter()
                    .filter_map(|id| model.channels.get(id))
                    .collect(),
            };
            copy_channels(client, table, &selected).await
        }
        other => Err(ReplayError::Unsupported(format!(
            "projection table {other}"
        ))),
    }
}

fn copy_sql(table: &ProjectionTable, columns: &[&str]) -> String {
    let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    format!(
        "COPY {} ({}) FROM STDIN (FORMAT binary)",
        ident(&table.shadow()),
        cols.join(", ")
    )
}

async fn copy_busy(
    client: &Client,
    table: &ProjectionTable,
    rows: &[&BusyRow],
) -> Result<u64, ReplayError> {
    let columns = [
        "platform_provider_id",
        "provider",
        "external_event_id",
        "connection_id",
        "calendar_id",
        "starts_at",
        "ends_at",
        "generation",
        "rule",
    ];
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::UUID,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::TEXT,
    ];
    let sink = client.copy_in(&copy_sql(table, &columns)).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.platform_provider_id,
                &r.provider,
                &r.external_event_id,
                &r.connection_id.as_uuid(),
                &r.calendar_id,
                &r.interval.start(),
                &r.interval.end(),
                &(r.generation as i64),
                &r.rule,
            ])
            .await?;
    }
    Ok(writer.finish().await?)
}

async fn copy_ignored(
    client: &Client,
    table: &ProjectionTable,
    rows: &[&IgnoredRow],
) -> Result<u64, ReplayError> {
    let columns = [
        "connection_id",
        "calendar_id",
        "external_event_id",
        "platform_provider_id",
        "reason",
        "starts_at",
        "ends_at",
        "booking_id",
        "generation",
    ];
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::INT8,
    ];
    let sink = client.copy_in(&copy_sql(table, &columns)).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.connection_id.as_uuid(),
                &r.calendar_id,
                &r.external_event_id,
                &r.platform_provider_id,
                &r.reason,
                &r.span.map(|s| s.start()),
                &r.span.map(|s| s.end()),
                &r.booking_id,
                &(r.generation as i64),
            ])
            .await?;
    }
    Ok(writer.finish().await?)
}

async fn copy_calendars(
    client: &Client,
    table: &ProjectionTable,
    rows: &[&CalendarRow],
) -> Result<u64, ReplayError> {
    let columns = [
        "connection_id",
        "calendar_id",
        "has_cursor",
        "generation",
        "full_sync_in_progress",
        "last_success_at",
        "status",
        "failures",
        "retry_at",
        "last_error",
        "last_error_at",
        "channel_failures",
        "channel_retry_at",
        "channel_error",
    ];
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::BOOL,
        Type::INT8,
        Type::BOOL,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::INT4,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::INT4,
        Type::TIMESTAMPTZ,
        Type::TEXT,
    ];
    let sink = client.copy_in(&copy_sql(table, &columns)).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.connection_id.as_uuid(),
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
            ])
            .await?;
    }
    Ok(writer.finish().await?)
}

async fn copy_bookings(
    client: &Client,
    table: &ProjectionTable,
    rows: &[&BookingRow],
) -> Result<u64, ReplayError> {
    // `updated_at` is left to its default, `now()`, as the live upsert does.
    let columns = [
        "booking_id",
        "connection_id",
        "calendar_id",
        "external_event_id",
        "ical_uid",
        "etag",
        "state",
        "booking_version",
        "written_version",
        "last_error",
        "failures",
        "retry_at",
        "failed_status",
    ];
    let types = [
        Type::TEXT,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::INT4,
        Type::TIMESTAMPTZ,
        Type::INT4,
    ];
    let sink = client.copy_in(&copy_sql(table, &columns)).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.booking_id,
                &r.connection_id.as_uuid(),
                &r.calendar_id,
                &r.external_event_id,
                &r.ical_uid,
                &r.etag,
                &r.state,
                &(r.booking_version as i64),
                &r.written_version.map(|v| v as i64),
                &r.last_error,
                &(r.failures as i32),
                &r.retry_at,
                &r.failed_status.map(i32::from),
            ])
            .await?;
    }
    Ok(writer.finish().await?)
}

async fn copy_channels(
    client: &Client,
    table: &ProjectionTable,
    rows: &[&(ChannelRow, Option<DateTime<Utc>>)],
) -> Result<u64, ReplayError> {
    let columns = [
        "channel_id",
        "provider",
        "connection_id",
        "calendar_id",
        "resource_id",
        "secret_sha256",
        "expires_at",
        "closed_at",
    ];
    let types = [
        Type::TEXT,
        Type::TEXT,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
    ];
    let sink = client.copy_in(&copy_sql(table, &columns)).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (r, closed_at) in rows {
        writer
            .as_mut()
            .write(&[
                &r.channel_id,
                &r.provider,
                &r.connection_id.as_uuid(),
                &r.calendar_id,
                &r.resource_id,
                &r.secret_sha256,
                &r.expires_at,
                closed_at,
            ])
            .await?;
    }
    Ok(writer.finish().await?)
}

async fn copy_connections(
    client: &Client,
    table: &ProjectionTable,
    rows: &[&ConnectionRow],
) -> Result<u64, ReplayError> {
    // `updated_at` is left to its default, `now()`, as the live upsert does.
    let columns = [
        "connection_id",
        "platform_provider_id",
        "provider",
        "account",
        "calendars",
        "destination_calendar",
        "status",
        "pause_reason",
        "quarantine_reason",
        "quarantined_at",
        "stream_version",
        "error_count",
        "last_error",
        "backoff_until",
        "needs_reauthorization",
        "notifications_accepted",
        "last_error_at",
    ];
    let types = [
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::JSON,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::INT4,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::INT8,
        Type::TIMESTAMPTZ,
    ];
    let sink = client.copy_in(&copy_sql(table, &columns)).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for r in rows {
        writer
            .as_mut()
            .write(&[
                &r.connection_id.as_uuid(),
                &r.platform_provider_id,
                &r.provider,
                &r.account,
                // Serialised by serde_json like the live path's `to_string`.
                &Json(&r.calendars),
                &r.destination_calendar,
                &r.status,
                &r.pause_reason,
                &r.quarantine_reason,
                &r.quarantined_at,
                &(r.stream_version as i64),
                &(r.error_count as i32),
                &r.last_error,
                &r.backoff_until,
                &r.needs_reauthorization,
                &(r.notifications_accepted as i64),
                &r.last_error_at,
            ])
            .await?;
    }
    Ok(writer.finish().await?)
}

/// Writes a snapshot of every folded connection: staged with one `COPY`,
/// then merged forward only (never over a newer snapshot), as
/// `save_snapshot` does.
pub async fn write_snapshots(
    client: &Client,
    states: &[(String, u64, String)],
) -> Result<u64, ReplayError> {
    client
        .batch_execute(
            "DROP TABLE IF EXISTS pg_temp.replay_snapshots; \
             CREATE TEMP TABLE replay_snapshots (stream text, version bigint, state text)",
        )
        .await?;
    let sink = client
        .copy_in("COPY replay_snapshots (stream, version, state) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::INT8, Type::TEXT]);
    pin_mut!(writer);
    for (stream, version, state) in states {
        writer
            .as_mut()
            .write(&[stream, &(*version as i64), state])
            .await?;
    }
    writer.finish().await?;
    let merged = client
        .execute(
            "INSERT INTO snapshots (stream, version, schema_version, state) \
             SELECT stream, version, $1, state::json FROM replay_snapshots \
             ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version, \
               schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, \
               saved_at = now() \
             WHERE snapshots.version <= EXCLUDED.version",
            &[&SNAPSHOT_SCHEMA_VERSION],
        )
        .await?;
    client
        .batch_execute("DROP TABLE pg_temp.replay_snapshots")
        .await?;
    Ok(merged)
}
