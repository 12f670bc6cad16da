//! Projections as data: the row changes a fold produces.
//!
//! The live path computes these from the events it appends (and the state
//! after them) and the store writes them in the append's transaction;
//! replay computes the very same changes from the log into shadow tables.
//! One fold, two uses.

use super::events::ConnectionEvent;
use super::explain::IgnoreReason;
use super::ids::{CalendarId, ConnectionId};
use super::interval::Interval;
use super::outbound::{ical_uid, owes_write, BookingStatus, BookingTrack};
use super::state::{CalendarSync, ConnectionState};
use chrono::{DateTime, Utc};
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
    pub quarantined_at: Option<DateTime<Utc>>,
    pub stream_version: u64,
    pub error_count: u32,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub backoff_until: Option<DateTime<Utc>>,
    pub needs_reauthorization: Option<String>,
    pub notifications_accepted: u64,
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
            error_count: state.error_count(),
            last_error: state.last_error.clone(),
            last_error_at: state.last_error_at,
            // The connection's own backoff, or — when every calendar is
            // backing off on its own — the first of their retry times: when
            // this connection next calls its provider.
            backoff_until: state.backoff_until.or_else(|| {
                (state.status() == super::state::ConnectionStatus::Backoff)
                    .then(|| state.calendars.values().filter_map(|c| c.retry_at).min())
                    .flatten()
            }),
            needs_reauthorization: state.needs_reauthorization.clone(),
            notifications_accepted: state.notifications_accepted,
        })
    }
}

/// One row of `connection_calendars`: sync position and health of one
/// selected calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CalendarRow {
    pub connection_id: ConnectionId,
    pub calendar_id: String,
    pub has_cursor: bool,
    pub generation: u64,
    pub full_sync_in_progress: bool,
    pub last_success_at: Option<DateTime<Utc>>,
    /// `ok`, `backoff` or `unavailable`.
    pub status: String,
    pub failures: u32,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub channel_failures: u32,
    pub channel_retry_at: Option<DateTime<Utc>>,
    pub channel_error: Option<String>,
}

impl CalendarRow {
    fn from_sync(id: ConnectionId, calendar: &CalendarId, sync: &CalendarSync) -> Self {
        CalendarRow {
            connection_id: id,
            calendar_id: calendar.to_string(),
            has_cursor: sync.cursor.is_some(),
            generation: sync.generation,
            full_sync_in_progress: sync.full_sync_in_progress,
            last_success_at: sync.last_success,
            status: sync.health().as_str().to_string(),
            failures: sync.failures,
            retry_at: sync.retry_at,
            last_error: sync.last_error.as_ref().map(|e| e.message.clone()),
            last_error_at: sync.last_error.as_ref().map(|e| e.at),
            channel_failures: sync.channel_failures,
            channel_retry_at: sync.channel_retry_at,
            channel_error: sync.channel_error.as_ref().map(|e| e.message.clone()),
        }
    }
}

/// One row of `busy_intervals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusyRow {
    pub platform_provider_id: String,
    pub provider: String,
    pub external_event_id: String,
    pub connection_id: ConnectionId,
    pub calendar_id: String,
    pub interval: Interval,
    pub generation: u64,
    /// The busy rule that made the event block (`opaque`,
    /// `all_day_in_zone(Europe/Berlin)` …; `None`: recorded before
    /// explanations).
    pub rule: Option<String>,
}

/// One row of `ignored_events`: an event the busy rules saw and ignored,
/// with the reason. Swept with the busy rows (same generations), so it
/// holds what the provider currently has, not history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredRow {
    pub connection_id: ConnectionId,
    pub calendar_id: String,
    pub external_event_id: String,
    pub platform_provider_id: String,
    /// `transparent`, `declined`, `own_booking`, `cancelled` … (see
    /// [`crate::core::explain::IgnoreReason`]); `not_recorded` for events
    /// logged before explanations.
    pub reason: String,
    /// The event's times, when they could be read.
    pub span: Option<Interval>,
    /// The booking, for calsync's own events.
    pub booking_id: Option<String>,
    pub generation: u64,
}

/// A change to a read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowChange {
    UpsertConnection(ConnectionRow),
    /// Replace the calendar rows of a connection with these.
    ReplaceCalendars {
        connection_id: ConnectionId,
        rows: Vec<CalendarRow>,
    },
    UpsertBusy(BusyRow),
    /// Record an ignored event (the event's busy row, if any, is deleted
    /// by a `DeleteBusy` beside it).
    UpsertIgnored(IgnoredRow),
    /// Forget that an event was ignored (it blocks now).
    DeleteIgnored {
        connection_id: ConnectionId,
        calendar_id: String,
        external_event_id: String,
    },
    /// Remove the busy row of an external event in one calendar.
    DeleteBusy {
        connection_id: ConnectionId,
        calendar_id: String,
        external_event_id: String,
    },
    /// Remove busy (and ignored) rows of a calendar older than
    /// `below_generation`.
    SweepBusy {
        connection_id: ConnectionId,
        calendar_id: String,
        below_generation: u64,
    },
    /// Remove busy (and ignored) rows of calendars no longer selected (all
    /// when empty).
    KeepOnlyCalendars {
        connection_id: ConnectionId,
        calendars: Vec<String>,
    },
    UpsertChannel(ChannelRow),
    UpsertBooking(BookingRow),
    RenewChannel {
        channel_id: String,
        expires_at: DateTime<Utc>,
    },
    CloseChannel {
        channel_id: String,
        closed_at: DateTime<Utc>,
    },
    /// Delete the connection's sealed credentials (live tables only: the
    /// credentials table is no read model, and replay never touches it).
    EraseCredentials {
        connection_id: ConnectionId,
    },
}

/// One row of `booking_events`. `state` is one of `pending` (a write is in
/// flight or will be retried), `waiting` (cannot write now; why is asked of
/// the gate when the row is read), `failed` (the provider refused for good:
/// waits for a new version or `calsync bookings retry`), `written`,
/// `cancelled` (marked cancelled: the event stays in the calendar, free and
/// titled "Cancelled: ") or `removed` (cancelled and gone from the calendar).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BookingRow {
    pub booking_id: String,
    pub connection_id: ConnectionId,
    pub calendar_id: Option<String>,
    pub external_event_id: Option<String>,
    pub ical_uid: String,
    pub etag: Option<String>,
    pub state: String,
    pub booking_version: u64,
    pub written_version: Option<u64>,
    pub last_error: Option<String>,
    pub failures: u32,
    pub retry_at: Option<DateTime<Utc>>,
    /// The provider's HTTP status of a write that failed for good.
    pub failed_status: Option<u16>,
}

impl BookingRow {
    fn from_track(id: ConnectionId, after: &ConnectionState, track: &BookingTrack) -> Self {
        let state = if track.failed.is_some() {
            "failed"
        } else if track.pending.is_some() {
            "pending"
        } else if owes_write(track) {
            "waiting"
        } else if track.held_version == Some(track.latest.version) {
            // Moved or deleted in the calendar under `notify`: the host's
            // edit stands until the platform sends a newer version.
            "external_changed"
        } else if track.external_event_id.is_none() {
            "removed"
        } else if track.latest.status == BookingStatus::Cancelled {
            // Marked cancelled: the event is still in the calendar.
            "cancelled"
        } else {
            "written"
        };
        BookingRow {
            booking_id: track.latest.booking_id.to_string(),
            connection_id: id,
            calendar_id: after
                .profile
                .as_ref()
                .and_then(|p| p.destination_calendar.as_ref())
                .map(|c| c.to_string()),
            external_event_id: track.external_event_id.clone(),
            ical_uid: ical_uid(&track.latest.booking_id),
            etag: track.etag.clone(),
            state: state.into(),
            booking_version: track.latest.version,
            written_version: track.written_version,
            last_error: track
                .failed
                .as_ref()
                .map(|f| f.reason.clone())
                .or_else(|| track.last_error.clone()),
            failures: track.failures,
            retry_at: track.retry_at,
            failed_status: track.failed.as_ref().and_then(|f| f.status),
        }
    }
}

/// One row of `channels`: how the webhook edge finds and authenticates a
/// notification's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelRow {
    pub channel_id: String,
    pub provider: String,
    pub connection_id: ConnectionId,
    pub calendar_id: String,
    pub resource_id: String,
    pub secret_sha256: String,
    pub expires_at: DateTime<Utc>,
}

/// The read-model changes caused by `events`, given the state after them.
///
/// Busy rows take their generation from the state after the batch: a batch
/// never spans two full-sync generations of one calendar (a generation
/// starts with the first page of a round), so this equals folding event by
/// event, which is what replay does.
pub fn connection_changes(
    id: ConnectionId,
    after: &ConnectionState,
    events: &[ConnectionEvent],
) -> Vec<RowChange> {
    let Some(row) = ConnectionRow::from_state(id, after) else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    let mut calendars_changed = false;
    let mut touched_bookings: Vec<String> = Vec::new();
    for event in events {
        match event {
            ConnectionEvent::ExternalEventSeen {
                calendar,
                event_id,
                blocks,
                ours,
                rule,
                ignored,
                span,
            } => match blocks {
                Some(interval) => {
                    changes.push(RowChange::UpsertBusy(BusyRow {
                        platform_provider_id: row.platform_provider_id.clone(),
                        provider: row.provider.clone(),
                        external_event_id: event_id.clone(),
                        connection_id: id,
                        calendar_id: calendar.to_string(),
                        interval: *interval,
                        generation: generation_of(after, calendar),
                        rule: rule.as_ref().map(|r| r.as_string()),
                    }));
                    changes.push(RowChange::DeleteIgnored {
                        connection_id: id,
                        calendar_id: calendar.to_string(),
                        external_event_id: event_id.clone(),
                    });
                }
                None => {
                    changes.push(delete_busy(id, calendar, event_id));
                    let reason = match (ignored, ours) {
                        (Some(reason), _) => reason.as_str(),
                        (None, Some(_)) => IgnoreReason::OwnBooking.as_str(),
                        (None, None) => "not_recorded",
                    };
                    changes.push(ignore(
                        id,
                        &row,
                        after,
                        calendar,
                        event_id,
                        reason,
                        *span,
                        ours.clone(),
                    ));
                }
            },
            ConnectionEvent::ExternalEventRemoved {
                calendar,
                event_id,
                reason,
                span,
            } => {
                changes.push(delete_busy(id, calendar, event_id));
                let reason = reason.unwrap_or(IgnoreReason::Cancelled);
                changes.push(ignore(
                    id,
                    &row,
                    after,
                    calendar,
                    event_id,
                    reason.as_str(),
                    *span,
                    None,
                ));
            }
            ConnectionEvent::SyncRoundCompleted {
                calendar,
                swept_generation: Some(generation),
                ..
            } => {
                calendars_changed = true;
                changes.push(RowChange::SweepBusy {
                    connection_id: id,
                    calendar_id: calendar.to_string(),
                    below_generation: *generation,
                });
            }
            ConnectionEvent::ConnectionCreated { .. }
            | ConnectionEvent::CalendarsSelected { .. } => {
                calendars_changed = true;
                changes.push(RowChange::KeepOnlyCalendars {
                    connection_id: id,
                    calendars: row.calendars.clone(),
                });
            }
            ConnectionEvent::CredentialsErased { .. } => {
                changes.push(RowChange::EraseCredentials { connection_id: id });
            }
            ConnectionEvent::ConnectionRemoved { .. } => {
                calendars_changed = true;
                changes.push(RowChange::KeepOnlyCalendars {
                    connection_id: id,
                    calendars: Vec::new(),
                });
            }
            ConnectionEvent::FullSyncStarted { .. }
            | ConnectionEvent::SyncRoundCompleted { .. }
            | ConnectionEvent::CalendarSyncFailed { .. }
            | ConnectionEvent::ChannelUpkeepFailed { .. }
            | ConnectionEvent::FreeBusyOnlySelected { .. }
            | ConnectionEvent::CredentialsChanged { .. }
            | ConnectionEvent::Reauthorized { .. } => {
                calendars_changed = true;
            }
            ConnectionEvent::ChannelOpened {
                calendar,
                channel_id,
                resource_id,
                secret_sha256,
                expires_at,
                ..
            } => {
                calendars_changed = true;
                changes.push(RowChange::UpsertChannel(ChannelRow {
                    channel_id: channel_id.clone(),
                    provider: row.provider.clone(),
                    connection_id: id,
                    calendar_id: calendar.to_string(),
                    resource_id: resource_id.clone(),
                    secret_sha256: secret_sha256.clone(),
                    expires_at: *expires_at,
                }))
            }
            ConnectionEvent::ChannelRenewed {
                channel_id,
                expires_at,
                ..
            } => {
                calendars_changed = true;
                changes.push(RowChange::RenewChannel {
                    channel_id: channel_id.clone(),
                    expires_at: *expires_at,
                })
            }
            ConnectionEvent::ChannelClosed { channel_id, at, .. } => {
                changes.push(RowChange::CloseChannel {
                    channel_id: channel_id.clone(),
                    closed_at: *at,
                })
            }
            ConnectionEvent::BookingReceived { booking } => {
                touched_bookings.push(booking.booking_id.to_string());
            }
            ConnectionEvent::OutboundIntentRecorded { booking_id, .. }
            | ConnectionEvent::OutboundWriteSucceeded { booking_id, .. }
            | ConnectionEvent::OutboundWriteFailed { booking_id, .. }
            | ConnectionEvent::OutboundRetryRequested { booking_id, .. }
            | ConnectionEvent::BookingExternallyChanged { booking_id, .. } => {
                touched_bookings.push(booking_id.clone());
            }
            _ => {}
        }
    }
    if calendars_changed {
        changes.push(RowChange::ReplaceCalendars {
            connection_id: id,
            rows: after
                .calendars
                .iter()
                .map(|(cal, sync)| CalendarRow::from_sync(id, cal, sync))
                .collect(),
        });
    }
    touched_bookings.sort();
    touched_bookings.dedup();
    for booking_id in touched_bookings {
        if let Some(track) = after.bookings.get(&booking_id) {
            changes.push(RowChange::UpsertBooking(BookingRow::from_track(
                id, after, track,
            )));
        }
    }
    changes.push(RowChange::UpsertConnection(row));
    changes
}

fn generation_of(state: &ConnectionState, calendar: &CalendarId) -> u64 {
    state
        .calendars
        .get(calendar)
        .map(|c| c.generation)
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn ignore(
    id: ConnectionId,
    row: &ConnectionRow,
    after: &ConnectionState,
    calendar: &CalendarId,
    event_id: &str,
    reason: &str,
    span: Option<Interval>,
    booking_id: Option<String>,
) -> RowChange {
    RowChange::UpsertIgnored(IgnoredRow {
        connection_id: id,
        calendar_id: calendar.to_string(),
        external_event_id: event_id.to_string(),
        platform_provider_id: row.platform_provider_id.clone(),
        reason: reason.to_string(),
        span,
        booking_id,
        generation: generation_of(after, calendar),
    })
}

fn delete_busy(id: ConnectionId, calendar: &CalendarId, event_id: &str) -> RowChange {
    RowChange::DeleteBusy {
        connection_id: id,
        calendar_id: calendar.to_string(),
        external_event_id: event_id.to_string(),
    }
}
