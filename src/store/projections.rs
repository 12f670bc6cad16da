//! Writing [`RowChange`]s into the read-model tables.
//!
//! Every statement names its table through [`Tables`], so replay can write
//! the same changes into shadow tables.

use crate::core::projection::RowChange;
use tokio_postgres::GenericClient;

/// Which set of read-model tables to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    Live,
    /// `shadow_*` tables used by `calsync replay`.
    Shadow,
}

impl Tables {
    pub fn connections(&self) -> &'static str {
        match self {
            Tables::Live => "connections",
            Tables::Shadow => "shadow_connections",
        }
    }
}

pub async fn apply(
    client: &impl GenericClient,
    tables: Tables,
    changes: &[RowChange],
) -> Result<(), tokio_postgres::Error> {
    for change in changes {
        match change {
            RowChange::UpsertConnection(row) => {
                let sql = format!(
                    "INSERT INTO {t} (connection_id, platform_provider_id, provider, account, \
                       calendars, destination_calendar, status, pause_reason, quarantine_reason, \
                       quarantined_at, stream_version, updated_at) \
                     VALUES ($1, $2, $3, $4, $5::text::json, $6, $7, $8, $9, $10, $11, now()) \
                     ON CONFLICT (connection_id) DO UPDATE SET \
                       platform_provider_id = EXCLUDED.platform_provider_id, \
                       provider = EXCLUDED.provider, account = EXCLUDED.account, \
                       calendars = EXCLUDED.calendars, \
                       destination_calendar = EXCLUDED.destination_calendar, \
                       status = EXCLUDED.status, pause_reason = EXCLUDED.pause_reason, \
                       quarantine_reason = EXCLUDED.quarantine_reason, \
                       quarantined_at = EXCLUDED.quarantined_at, \
                       stream_version = EXCLUDED.stream_version, updated_at = now()",
                    t = tables.connections()
                );
                // A list of strings always serialises.
                let calendars =
                    serde_json::to_string(&row.calendars).unwrap_or_else(|_| "[]".into());
                client
                    .execute(
                        &sql,
                        &[
                            &row.connection_id.as_uuid(),
                            &row.platform_provider_id,
                            &row.provider,
                            &row.account,
                            &calendars,
                            &row.destination_calendar,
                            &row.status,
                            &row.pause_reason,
                            &row.quarantine_reason,
                            &row.quarantined_at,
                            &(row.stream_version as i64),
                        ],
                    )
                    .await?;
            }
        }
    }
    Ok(())
}
