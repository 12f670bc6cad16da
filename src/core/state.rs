//! `ConnectionState`: what a connection is, as a pure fold of its events.
//!
//! The connection actor's state is nothing but this fold (plus caches that
//! can be rebuilt from it), which is why a killed actor comes back exactly
//! as it was: it folds the same events again.

use super::dedupe::{DedupeKey, DedupeWindow};
use super::events::ConnectionEvent;
use super::ids::{CalendarId, CalendarProvider, ExternalAccount, PlatformProviderId};
use super::outbound::{BookingTrack, WriteOutcome};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// No `connection_created` event yet.
    #[default]
    Uncreated,
    Active,
    Paused,
    Removed,
}

/// A connection's status as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Uncreated,
    Active,
    Paused,
    /// Recent sync attempts failed; retrying after `backoff_until`.
    Backoff,
    NeedsReauthorization,
    Quarantined,
    Removed,
}

impl ConnectionStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectionStatus::Uncreated => "uncreated",
            ConnectionStatus::Active => "active",
            ConnectionStatus::Paused => "paused",
            ConnectionStatus::Backoff => "backoff",
            ConnectionStatus::NeedsReauthorization => "needs_reauthorization",
            ConnectionStatus::Quarantined => "quarantined",
            ConnectionStatus::Removed => "removed",
        }
    }
}

/// The identity and settings of a live connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionProfile {
    pub platform_provider_id: PlatformProviderId,
    pub provider: CalendarProvider,
    pub account: ExternalAccount,
    pub calendars: Vec<CalendarId>,
    pub destination_calendar: Option<CalendarId>,
}

/// The folded state of one connection stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConnectionState {
    /// The stream version this state reflects (number of events folded).
    pub version: u64,
    pub lifecycle: Lifecycle,
    pub profile: Option<ConnectionProfile>,
    pub pause_reason: Option<String>,
    pub credentials_changed_at: Option<DateTime<Utc>>,
    /// Set while the supervisor has quarantined the connection.
    pub quarantined_at: Option<DateTime<Utc>>,
    pub quarantine_reason: Option<String>,
    /// Sync position of every selected calendar.
    #[serde(default)]
    pub calendars: BTreeMap<CalendarId, CalendarSync>,
    /// The last N notification keys accepted (folded, so it survives restarts).
    #[serde(default)]
    pub dedupe: DedupeWindow,
    #[serde(default)]
    pub notifications_accepted: u64,
    /// Failed sync attempts since the last success (the error count).
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// No provider call before this instant.
    #[serde(default)]
    pub backoff_until: Option<DateTime<Utc>>,
    /// Set when the grant is gone; cleared by new credentials.
    #[serde(default)]
    pub needs_reauthorization: Option<String>,
    /// Live push channels / subscriptions by channel id.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelState>,
    /// Bookings written (or to be written) to the destination calendar.
    #[serde(default)]
    pub bookings: BTreeMap<String, BookingTrack>,
}

/// A live push channel (Google) or subscription (Graph).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub calendar: CalendarId,
    /// Google `resourceId` / Graph subscription id.
    pub resource_id: String,
    pub expires_at: DateTime<Utc>,
}

/// Where the sync of one calendar stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CalendarSync {
    /// Google sync token / Graph delta link; `None`: next round is a full sync.
    pub cursor: Option<String>,
    /// Shared as free/busy only: synced through the free/busy query.
    #[serde(default)]
    pub free_busy_only: bool,
    /// Generation of the current (or last) full sync, for mark and sweep.
    pub generation: u64,
    pub full_sync_in_progress: bool,
    pub last_success: Option<DateTime<Utc>>,
}

impl ConnectionState {
    /// Folds one event into the state. Total: an event that makes no sense
    /// in the current state (which `decide` never emits) leaves the state as
    /// it was apart from the version, so replaying history never fails.
    pub fn evolve(mut self, event: &ConnectionEvent) -> Self {
        self.version += 1;
        match event {
            ConnectionEvent::ConnectionCreated {
                platform_provider_id,
                provider,
                account,
                calendars,
                destination_calendar,
            } => {
                self.lifecycle = Lifecycle::Active;
                self.calendars = calendars
                    .iter()
                    .map(|c| (c.clone(), CalendarSync::default()))
                    .collect();
                self.profile = Some(ConnectionProfile {
                    platform_provider_id: platform_provider_id.clone(),
                    provider: *provider,
                    account: account.clone(),
                    calendars: calendars.clone(),
                    destination_calendar: destination_calendar.clone(),
                });
            }
            ConnectionEvent::CalendarsSelected {
                calendars,
                destination_calendar,
            } => {
                if let Some(profile) = self.profile.as_mut() {
                    profile.calendars = calendars.clone();
                    profile.destination_calendar = destination_calendar.clone();
                }
                // Keep the sync position of calendars that stay selected.
                let mut kept = std::mem::take(&mut self.calendars);
                self.calendars = calendars
                    .iter()
                    .map(|c| (c.clone(), kept.remove(c).unwrap_or_default()))
                    .collect();
            }
            ConnectionEvent::ConnectionPaused { reason } => {
                if self.lifecycle == Lifecycle::Active {
                    self.lifecycle = Lifecycle::Paused;
                    self.pause_reason = Some(reason.clone());
                }
            }
            ConnectionEvent::ConnectionResumed {} => {
                if self.lifecycle == Lifecycle::Paused {
                    self.lifecycle = Lifecycle::Active;
                    self.pause_reason = None;
                }
            }
            ConnectionEvent::ConnectionRemoved { .. } => {
                self.lifecycle = Lifecycle::Removed;
            }
            ConnectionEvent::CredentialsChanged { at } => {
                self.credentials_changed_at = Some(*at);
            }
            ConnectionEvent::ConnectionQuarantined {
                restarts,
                window_secs,
                last_error,
                at,
            } => {
                self.quarantined_at = Some(*at);
                self.quarantine_reason = Some(format!(
                    "{restarts} restarts within {window_secs} s; last error: {last_error}"
                ));
            }
            ConnectionEvent::QuarantineLifted { .. } => {
                self.quarantined_at = None;
                self.quarantine_reason = None;
            }
            ConnectionEvent::NotificationAccepted { key, .. } => {
                self.dedupe
                    .check_and_insert(&DedupeKey::from_stored(key.clone()));
                self.notifications_accepted += 1;
            }
            ConnectionEvent::FullSyncStarted {
                calendar,
                generation,
                ..
            } => {
                if let Some(cal) = self.calendars.get_mut(calendar) {
                    cal.generation = *generation;
                    cal.full_sync_in_progress = true;
                    cal.cursor = None;
                }
            }
            ConnectionEvent::ExternalEventSeen { .. }
            | ConnectionEvent::ExternalEventRemoved { .. } => {
                // Read-model only: busy intervals live in their projection,
                // not in actor memory.
            }
            ConnectionEvent::SyncRoundCompleted {
                calendar,
                cursor,
                at,
                ..
            } => {
                if let Some(cal) = self.calendars.get_mut(calendar) {
                    cal.cursor = Some(cursor.clone());
                    cal.full_sync_in_progress = false;
                    cal.last_success = Some(*at);
                }
                self.consecutive_failures = 0;
                self.backoff_until = None;
            }
            ConnectionEvent::SyncFailed {
                kind,
                message,
                consecutive_failures,
                backoff_until,
            } => {
                self.consecutive_failures = *consecutive_failures;
                self.last_error = Some(format!("{kind}: {message}"));
                self.backoff_until = Some(*backoff_until);
            }
            ConnectionEvent::ReauthorizationRequired { reason } => {
                self.needs_reauthorization = Some(reason.clone());
                self.last_error = Some(format!("reauthorize: {reason}"));
            }
            ConnectionEvent::Reauthorized { .. } => {
                self.needs_reauthorization = None;
                self.consecutive_failures = 0;
                self.backoff_until = None;
            }
            ConnectionEvent::ChannelOpened {
                calendar,
                channel_id,
                resource_id,
                expires_at,
                ..
            } => {
                self.channels.insert(
                    channel_id.clone(),
                    ChannelState {
                        calendar: calendar.clone(),
                        resource_id: resource_id.clone(),
                        expires_at: *expires_at,
                    },
                );
            }
            ConnectionEvent::ChannelRenewed {
                channel_id,
                expires_at,
            } => {
                if let Some(c) = self.channels.get_mut(channel_id) {
                    c.expires_at = *expires_at;
                }
            }
            ConnectionEvent::ChannelClosed { channel_id, .. } => {
                self.channels.remove(channel_id);
            }
            ConnectionEvent::FreeBusyOnlySelected { calendars } => {
                for (id, cal) in self.calendars.iter_mut() {
                    cal.free_busy_only = calendars.contains(id);
                }
            }
            ConnectionEvent::BookingReceived { booking } => {
                let key = booking.booking_id.to_string();
                match self.bookings.get_mut(&key) {
                    Some(track) => track.latest = booking.clone(),
                    None => {
                        self.bookings.insert(
                            key,
                            BookingTrack {
                                latest: booking.clone(),
                                generation: 0,
                                external_event_id: None,
                                etag: None,
                                written_version: None,
                                pending: None,
                                pending_version: None,
                                last_error: None,
                            },
                        );
                    }
                }
            }
            ConnectionEvent::OutboundIntentRecorded {
                booking_id,
                op,
                version,
            } => {
                if let Some(track) = self.bookings.get_mut(booking_id) {
                    track.pending = Some(op.clone());
                    track.pending_version = Some(*version);
                }
            }
            ConnectionEvent::OutboundWriteSucceeded {
                booking_id,
                version,
                outcome,
            } => {
                if let Some(track) = self.bookings.get_mut(booking_id) {
                    track.pending = None;
                    track.pending_version = None;
                    track.last_error = None;
                    match outcome {
                        WriteOutcome::Created {
                            external_event_id,
                            etag,
                        } => {
                            track.external_event_id = Some(external_event_id.clone());
                            track.etag = etag.clone();
                            track.written_version = Some(*version);
                        }
                        WriteOutcome::Updated { etag } => {
                            track.etag = etag.clone();
                            track.written_version = Some(*version);
                        }
                        WriteOutcome::Deleted => {
                            track.external_event_id = None;
                            track.etag = None;
                            track.written_version = Some(*version);
                            track.generation += 1;
                        }
                        WriteOutcome::Missing => {
                            track.external_event_id = None;
                            track.etag = None;
                            track.written_version = None;
                            track.generation += 1;
                        }
                    }
                }
            }
            ConnectionEvent::OutboundWriteFailed {
                booking_id,
                kind,
                message,
            } => {
                if let Some(track) = self.bookings.get_mut(booking_id) {
                    track.last_error = Some(format!("{kind}: {message}"));
                }
            }
        }
        self
    }

    /// The status operators see, derived from the fold.
    pub fn status(&self) -> ConnectionStatus {
        if self.quarantined_at.is_some() {
            return ConnectionStatus::Quarantined;
        }
        match self.lifecycle {
            Lifecycle::Uncreated => ConnectionStatus::Uncreated,
            Lifecycle::Active if self.needs_reauthorization.is_some() => {
                ConnectionStatus::NeedsReauthorization
            }
            Lifecycle::Active if self.consecutive_failures > 0 => ConnectionStatus::Backoff,
            Lifecycle::Active => ConnectionStatus::Active,
            Lifecycle::Paused => ConnectionStatus::Paused,
            Lifecycle::Removed => ConnectionStatus::Removed,
        }
    }

    /// Folds a whole history, starting from `self` (a snapshot or default).
    pub fn fold<'a>(self, events: impl IntoIterator<Item = &'a ConnectionEvent>) -> Self {
        events.into_iter().fold(self, ConnectionState::evolve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> ConnectionEvent {
        ConnectionEvent::ConnectionCreated {
            platform_provider_id: PlatformProviderId::parse("prov-1").unwrap(),
            provider: CalendarProvider::Microsoft,
            account: ExternalAccount::parse("bob@contoso.com").unwrap(),
            calendars: vec![CalendarId::parse("cal-a").unwrap()],
            destination_calendar: None,
        }
    }

    #[test]
    fn created_then_paused_then_resumed() {
        let events = vec![
            created(),
            ConnectionEvent::ConnectionPaused {
                reason: "maintenance".into(),
            },
        ];
        let paused = ConnectionState::default().fold(&events);
        assert_eq!(paused.lifecycle, Lifecycle::Paused);
        assert_eq!(paused.pause_reason.as_deref(), Some("maintenance"));
        assert_eq!(paused.version, 2);
        let resumed = paused.evolve(&ConnectionEvent::ConnectionResumed {});
        assert_eq!(resumed.lifecycle, Lifecycle::Active);
        assert_eq!(resumed.pause_reason, None);
    }

    #[test]
    fn folding_in_two_parts_equals_folding_at_once() {
        let events = vec![
            created(),
            ConnectionEvent::CalendarsSelected {
                calendars: vec![CalendarId::parse("cal-b").unwrap()],
                destination_calendar: Some(CalendarId::parse("cal-b").unwrap()),
            },
            ConnectionEvent::ConnectionPaused { reason: "x".into() },
            ConnectionEvent::ConnectionRemoved { reason: "y".into() },
        ];
        let whole = ConnectionState::default().fold(&events);
        for split in 0..=events.len() {
            let snapshot = ConnectionState::default().fold(&events[..split]);
            let json = serde_json::to_string(&snapshot).unwrap();
            let restored: ConnectionState = serde_json::from_str(&json).unwrap();
            assert_eq!(restored.fold(&events[split..]), whole);
        }
    }

    #[test]
    fn resume_without_pause_changes_nothing_but_the_version() {
        let active = ConnectionState::default().fold(&[created()]);
        let after = active
            .clone()
            .evolve(&ConnectionEvent::ConnectionResumed {});
        assert_eq!(after.lifecycle, active.lifecycle);
        assert_eq!(after.version, active.version + 1);
    }
}
