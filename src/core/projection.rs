//! Projections as data: the row changes a fold produces.
//!
//! The live path computes these from the state after an append and the
//! store writes them in the append's transaction; replay computes the very
//! same changes from the log into shadow tables. One fold, two uses.

use super::ids::ConnectionId;
use super::state::ConnectionState;
use serde::Serialize;

/// One row of the `connections` read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionRow {
    pub connection_id: ConnectionId,
    pub platform_provider_id: String,
    pub provider: String,
    pub account: String,
    pub calendars: Vec<String>,
    pub destination_calendar: Option<String>,
    pub status: String,
    pub pause_reason: Option<String>,
    pub quarantine_reason: Option<String>,
    pub quarantined_at: Option<chrono::DateTime<chrono::Utc>>,
    pub stream_version: u64,
}

impl ConnectionRow {
    /// The row for a connection in `state`; `None` before it is created.
    pub fn from_state(id: ConnectionId, state: &ConnectionState) -> Option<Self> {
        let profile = state.profile.as_ref()?;
        Some(ConnectionRow {
            connection_id: id,
            platform_provider_id: profile.platform_provider_id.to_string(),
            provider: profile.provider.to_string(),
            account: profile.account.to_string(),
            calendars: profile.calendars.iter().map(|c| c.to_string()).collect(),
            destination_calendar: profile.destination_calendar.as_ref().map(|c| c.to_string()),
            status: state.status().as_str().to_string(),
            pause_reason: state.pause_reason.clone(),
            quarantine_reason: state.quarantine_reason.clone(),
            quarantined_at: state.quarantined_at,
            stream_version: state.version,
        })
    }
}

/// A change to a read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    UpsertConnection(ConnectionRow),
}

/// The read-model changes that bring the projections to `state`.
pub fn connection_changes(id: ConnectionId, state: &ConnectionState) -> Vec<RowChange> {
    ConnectionRow::from_state(id, state)
        .map(RowChange::UpsertConnection)
        .into_iter()
        .collect()
}
