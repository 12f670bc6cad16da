//! `ConnectionState`: what a connection is, as a pure fold of its events.
//!
//! The connection actor's state is nothing but this fold (plus caches that
//! can be rebuilt from it), which is why a killed actor comes back exactly
//! as it was: it folds the same events again.

use super::dedupe::{DedupeKey, DedupeWindow};
use super::events::ConnectionEvent;
use super::ids::{CalendarId, CalendarProvider, ExternalAccount, PlatformProviderId};
use super::outbound::{BookingTrack, FailedWrite, WriteOutcome};
use chrono::{DateTime, Utc};
use litemap::LiteMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// Recent sync attempts failed; retrying after `backoff_until` (the
    /// connection as a whole, or every one of its calendars).
    Backoff,
    /// Working, but some calendar, channel or booking is failing: see the
    /// calendar rows and `calsync status`.
    Degraded,
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
            ConnectionStatus::Degraded => "degraded",
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
    /// Sync position of every selected calendar. A sorted vector, not a
    /// `BTreeMap`: a connection has a few calendars, and a map's first
    /// node reserves room for eleven (3 KiB of every idle actor).
    #[serde(default)]
    pub calendars: LiteMap<CalendarId, CalendarSync>,
    /// The last N notification keys accepted (folded, so it survives restarts).
    #[serde(default)]
    pub dedupe: DedupeWindow,
    #[serde(default)]
    pub notifications_accepted: u64,
    /// Connection-wide failures in a row (throttling, the token endpoint):
    /// a calendar's own failures are counted on the calendar.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The newest error anywhere in the connection (connection, calendar,
    /// channel or booking), as operators see it.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_error_at: Option<DateTime<Utc>>,
    /// No provider call before this instant (connection-wide backoff).
    #[serde(default)]
    pub backoff_until: Option<DateTime<Utc>>,
    /// Set when the grant is gone; cleared by new credentials.
    #[serde(default)]
    pub needs_reauthorization: Option<String>,
    /// Live push channels / subscriptions by channel id.
    #[serde(default)]
    pub channels: LiteMap<String, ChannelState>,
    /// Bookings written (or to be written) to the destination calendar.
    /// Shared (copy on write): the actor folds every decision into a copy
    /// of its state before the append commits, and most events (sync
    /// rounds, channels) leave the bookings alone, so the copy shares them
    /// instead of cloning every track. Serialised as the plain map.
    #[serde(default, with = "shared_map")]
    pub bookings: Arc<BTreeMap<String, BookingTrack>>,
}

/// Serde for an `Arc`-shared map as the plain map (serde's `rc` feature,
/// for one field).
mod shared_map {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Arc<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        T::serialize(value, serializer)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<T>, D::Error> {
        T::deserialize(deserializer).map(Arc::new)
    }
}

/// A live push channel (Google) or subscription (Graph).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    pub calendar: CalendarId,
    /// Google `resourceId` / Graph subscription id.
    pub resource_id: String,
    pub expires_at: DateTime<Utc>,
    /// When the provider granted the current expiry (open or renewal):
    /// renewal is due half way through the lifetime it granted.
    #[serde(default)]
    pub granted_at: Option<DateTime<Utc>>,
}

/// An error as operators see it: what, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub message: String,
    pub at: DateTime<Utc>,
}

/// The window a calendar's current sync round was based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowBase {
    /// When the round started; the window is re-based from here.
    pub based_at: DateTime<Utc>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A calendar's health, derived from its sync state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CalendarHealth {
    Ok,
    /// Failing transiently; retried at `retry_at`.
    Backoff {
        retry_at: Option<DateTime<Utc>>,
    },
    /// The provider refuses this calendar (404, 403…); probed rarely.
    Unavailable {
        reason: String,
    },
}

impl CalendarHealth {
    pub fn as_str(&self) -> &'static str {
        match self {
            CalendarHealth::Ok => "ok",
            CalendarHealth::Backoff { .. } => "backoff",
            CalendarHealth::Unavailable { .. } => "unavailable",
        }
    }
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
    /// Sync failures of this calendar in a row.
    #[serde(default)]
    pub failures: u32,
    /// No sync of this calendar before this instant.
    #[serde(default)]
    pub retry_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<LastError>,
    /// The provider's reason while this calendar is unavailable.
    #[serde(default)]
    pub unavailable: Option<String>,
    /// The window of the round behind `cursor`.
    #[serde(default)]
    pub window: Option<WindowBase>,
    /// The calendar's zone as the provider last reported it (Google
    /// `timeZone`, the Graph mailbox zone), for all-day events.
    #[serde(default)]
    pub zone: Option<String>,
    /// Channel upkeep failures of this calendar in a row.
    #[serde(default)]
    pub channel_failures: u32,
    /// No channel upkeep for this calendar before this instant.
    #[serde(default)]
    pub channel_retry_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub channel_error: Option<LastError>,
    /// When a channel of this calendar was last opened or renewed: upkeep
    /// waits [`crate::core::channels::MIN_RENEW_AFTER`] from here, even
    /// after a short-lived channel lapsed.
    #[serde(default)]
    pub channel_granted_at: Option<DateTime<Utc>>,
}

impl CalendarSync {
    pub fn health(&self) -> CalendarHealth {
        match (&self.unavailable, self.failures) {
            (Some(reason), _) => CalendarHealth::Unavailable {
                reason: reason.clone(),
            },
            (None, 0) => CalendarHealth::Ok,
            (None, _) => CalendarHealth::Backoff {
                retry_at: self.retry_at,
            },
        }
    }
}

/// A create or update of the booking's event landed with `etag`: the
/// calendar shows `version`, and any external change recorded before is
/// over (a later edit is a new one, even when it repeats it).
fn landed(track: &mut BookingTrack, version: u64, etag: &Option<String>) {
    track.etag = etag.clone();
    track.written_version = Some(version);
    super::external_change::remember_etag(track, etag.as_ref());
    super::external_change::on_written(track);
}

/// `kind (status): message`, the one way errors read in status.
pub fn describe(kind: &str, status: Option<u16>, message: &str) -> String {
    match status {
        Some(status) => format!("{kind} ({status}): {message}"),
        None => format!("{kind}: {message}"),
    }
}

impl ConnectionState {
    /// Gives back the spare capacity of the calendar and channel lists: a
    /// list grown by insertion keeps room for four, and an idle actor holds
    /// its state for hours.
    pub fn shrink_to_fit(&mut self) {
        fn shrink<K, V>(map: &mut LiteMap<K, V>) {
            let mut entries = std::mem::take(map).into_tuple_vec();
            entries.shrink_to_fit();
            // Taken from a LiteMap: sorted, keys unique.
            *map = LiteMap::from_sorted_store_unchecked(entries);
        }
        shrink(&mut self.calendars);
        shrink(&mut self.channels);
    }

    /// The sum of failures in a row over the connection and each of its
    /// calendars' syncs and channels: what `error_count` shows.
    pub fn error_count(&self) -> u32 {
        self.calendars
            .values()
            .fold(self.consecutive_failures, |n, c| {
                n.saturating_add(c.failures)
                    .saturating_add(c.channel_failures)
            })
    }

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
            // Only ever after `ConnectionRemoved`: nothing is left to sync.
            ConnectionEvent::CredentialsErased { .. } => {}
            ConnectionEvent::CredentialsChanged { at } => {
                self.credentials_changed_at = Some(*at);
                // A new grant may fix what the old one could not reach:
                // everything waiting on a retry is due again.
                self.retry_everything_now();
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
                window,
                ..
            } => {
                if let Some(cal) = self.calendars.get_mut(calendar) {
                    cal.generation = *generation;
                    cal.full_sync_in_progress = true;
                    cal.cursor = None;
                    if window.is_some() {
                        cal.window = *window;
                    }
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
                zone,
                ..
            } => {
                if let Some(cal) = self.calendars.get_mut(calendar) {
                    cal.cursor = Some(cursor.clone());
                    cal.full_sync_in_progress = false;
                    cal.last_success = Some(*at);
                    cal.failures = 0;
                    cal.retry_at = None;
                    cal.unavailable = None;
                    if zone.is_some() {
                        cal.zone = zone.clone();
                    }
                }
                // A call went through: the grant and the quota are fine.
                self.consecutive_failures = 0;
                self.backoff_until = None;
            }
            ConnectionEvent::SyncFailed {
                kind,
                message,
                consecutive_failures,
                backoff_until,
                at,
            } => {
                self.consecutive_failures = *consecutive_failures;
                self.note_error(format!("{kind}: {message}"), *at);
                self.backoff_until = Some(*backoff_until);
            }
            ConnectionEvent::CalendarSyncFailed {
                calendar,
                kind,
                message,
                status,
                unavailable,
                failures,
                retry_at,
                at,
            } => {
                let text = describe(kind, *status, message);
                if let Some(cal) = self.calendars.get_mut(calendar) {
                    cal.failures = *failures;
                    cal.retry_at = Some(*retry_at);
                    cal.unavailable = unavailable.then(|| text.clone());
                    cal.last_error = Some(LastError {
                        message: text.clone(),
                        at: *at,
                    });
                }
                self.note_error(format!("{calendar}: {text}"), Some(*at));
            }
            ConnectionEvent::ChannelUpkeepFailed {
                calendar,
                op,
                kind,
                message,
                failures,
                retry_at,
                at,
            } => {
                let text = format!("channel {op}: {kind}: {message}");
                if let Some(cal) = self.calendars.get_mut(calendar) {
                    cal.channel_failures = *failures;
                    cal.channel_retry_at = Some(*retry_at);
                    cal.channel_error = Some(LastError {
                        message: text.clone(),
                        at: *at,
                    });
                }
                self.note_error(format!("{calendar}: {text}"), Some(*at));
            }
            ConnectionEvent::ReauthorizationRequired { reason } => {
                self.needs_reauthorization = Some(reason.clone());
                self.last_error = Some(format!("reauthorize: {reason}"));
            }
            ConnectionEvent::Reauthorized { .. } => {
                self.needs_reauthorization = None;
                self.consecutive_failures = 0;
                self.backoff_until = None;
                self.retry_everything_now();
            }
            ConnectionEvent::ChannelOpened {
                calendar,
                channel_id,
                resource_id,
                expires_at,
                at,
                ..
            } => {
                self.channels.insert(
                    channel_id.clone(),
                    ChannelState {
                        calendar: calendar.clone(),
                        resource_id: resource_id.clone(),
                        expires_at: *expires_at,
                        granted_at: *at,
                    },
                );
                if let Some(cal) = self.calendars.get_mut(calendar) {
                    cal.channel_failures = 0;
                    cal.channel_retry_at = None;
                    cal.channel_granted_at = at.or(cal.channel_granted_at);
                }
            }
            ConnectionEvent::ChannelRenewed {
                channel_id,
                expires_at,
                at,
            } => {
                if let Some(c) = self.channels.get_mut(channel_id) {
                    c.expires_at = *expires_at;
                    c.granted_at = *at;
                    if let Some(cal) = self.calendars.get_mut(&c.calendar) {
                        cal.channel_failures = 0;
                        cal.channel_retry_at = None;
                        cal.channel_granted_at = at.or(cal.channel_granted_at);
                    }
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
                let bookings = Arc::make_mut(&mut self.bookings);
                match bookings.get_mut(&key) {
                    Some(track) => {
                        track.latest = booking.clone();
                        super::external_change::on_new_version(track);
                        // A changed booking is worth another try.
                        track.failed = None;
                        track.failures = 0;
                        track.retry_at = None;
                    }
                    None => {
                        bookings.insert(key, BookingTrack::new(booking.clone()));
                    }
                }
            }
            ConnectionEvent::OutboundIntentRecorded {
                booking_id,
                op,
                version,
            } => {
                if let Some(track) = self.booking_mut(booking_id) {
                    track.pending = Some(op.clone());
                    track.pending_version = Some(*version);
                }
            }
            ConnectionEvent::OutboundWriteSucceeded {
                booking_id,
                version,
                outcome,
            } => {
                if let Some(track) = self.booking_mut(booking_id) {
                    track.pending = None;
                    track.pending_version = None;
                    track.last_error = None;
                    track.retry_at = None;
                    track.failed = None;
                    // The event vanished: the create that follows is a
                    // consequence, not a new input (so a provider losing
                    // every event cannot make writes loop unbudgeted).
                    track.failures = match outcome {
                        WriteOutcome::Missing => track.failures.saturating_add(1),
                        _ => 0,
                    };
                    match outcome {
                        WriteOutcome::Created {
                            external_event_id,
                            etag,
                        } => {
                            track.external_event_id = Some(external_event_id.clone());
                            landed(track, *version, etag);
                        }
                        WriteOutcome::Updated { etag } => landed(track, *version, etag),
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
                status,
                failures,
                retry_at,
                permanent,
                at,
            } => {
                let text = describe(kind, *status, message);
                if let Some(track) = self.booking_mut(booking_id) {
                    track.last_error = Some(format!("{kind}: {message}"));
                    if let Some(n) = failures {
                        track.failures = *n;
                        track.retry_at = *retry_at;
                    }
                    if *permanent {
                        track.failed = Some(FailedWrite {
                            status: *status,
                            reason: text.clone(),
                            at: at.unwrap_or_default(),
                        });
                        track.retry_at = None;
                    }
                }
                if at.is_some() {
                    self.note_error(format!("booking {booking_id}: {text}"), *at);
                }
            }
            ConnectionEvent::OutboundRetryRequested { booking_id, .. } => {
                if let Some(track) = self.booking_mut(booking_id) {
                    track.failed = None;
                    track.failures = 0;
                    track.retry_at = None;
                }
            }
            ConnectionEvent::BookingExternallyChanged {
                booking_id,
                change,
                policy,
                ..
            } => {
                if let Some(track) = self.booking_mut(booking_id) {
                    super::external_change::fold(track, change, *policy);
                }
            }
        }
        self
    }

    /// A booking's track to change, copying the shared map first only if
    /// the booking is there.
    fn booking_mut(&mut self, booking_id: &str) -> Option<&mut BookingTrack> {
        if !self.bookings.contains_key(booking_id) {
            return None;
        }
        Arc::make_mut(&mut self.bookings).get_mut(booking_id)
    }

    /// Records the newest error of the connection.
    fn note_error(&mut self, message: String, at: Option<DateTime<Utc>>) {
        self.last_error = Some(message);
        if at.is_some() {
            self.last_error_at = at;
        }
    }

    /// Clears every per-calendar and per-channel retry time, so whatever
    /// waited on one is due at once (a new grant arrived).
    fn retry_everything_now(&mut self) {
        for (_, cal) in self.calendars.iter_mut() {
            cal.retry_at = None;
            cal.channel_retry_at = None;
        }
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
            Lifecycle::Active => {
                let failing = |c: &CalendarSync| c.failures > 0 || c.unavailable.is_some();
                let calendars = self.calendars.values();
                if self.calendars.is_empty() {
                    ConnectionStatus::Active
                } else if calendars
                    .clone()
                    .all(|c| c.failures > 0 && c.unavailable.is_none())
                {
                    ConnectionStatus::Backoff
                } else if calendars.clone().any(failing)
                    || self.calendars.values().any(|c| c.channel_failures > 0)
                    || self.bookings.values().any(|b| b.failed.is_some())
                {
                    ConnectionStatus::Degraded
                } else {
                    ConnectionStatus::Active
                }
            }
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

    /// Snapshots written before the calendars and channels became sorted
    /// vectors stored them as JSON objects keyed by id, in any order: they
    /// still load, sorted, and are written back in the same shape.
    #[test]
    fn calendars_and_channels_keep_their_snapshot_shape() {
        let json = r#"{"version":3,"lifecycle":"active","profile":null,
            "pause_reason":null,"credentials_changed_at":null,
            "quarantined_at":null,"quarantine_reason":null,
            "calendars":{"cal-b":{"cursor":"t2","generation":2,
                "full_sync_in_progress":false,"last_success":null},
              "cal-a":{"cursor":null,"generation":1,
                "full_sync_in_progress":true,"last_success":null}},
            "channels":{"ch-2":{"calendar":"cal-b","resource_id":"r2",
                "expires_at":"2026-12-08T00:00:00Z"},
              "ch-1":{"calendar":"cal-a","resource_id":"r1",
                "expires_at":"2026-12-09T00:00:00Z"}}}"#;
        let mut state: ConnectionState = serde_json::from_str(json).unwrap();
        let keys: Vec<&str> = state.calendars.keys().map(|c| c.as_str()).collect();
        assert_eq!(keys, ["cal-a", "cal-b"]);
        let a = CalendarId::parse("cal-a").unwrap();
        assert!(state.calendars.get(&a).unwrap().full_sync_in_progress);
        assert_eq!(state.channels.get("ch-2").unwrap().resource_id, "r2");
        let before = state.clone();
        state.shrink_to_fit();
        assert_eq!(state, before);
        let written = serde_json::to_value(&state).unwrap();
        assert_eq!(written["calendars"]["cal-b"]["cursor"], "t2");
        assert_eq!(written["channels"]["ch-1"]["calendar"], "cal-a");
        let again: ConnectionState = serde_json::from_value(written).unwrap();
        assert_eq!(again, state);
    }
}
