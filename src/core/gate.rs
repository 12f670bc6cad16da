//! The gate before every provider call (DESIGN.md guarantees 5, 6 and 9).
//!
//! One pure function, [`admit`], answers "may this connection make this kind
//! of provider call now?" from the settings in force (the three flags,
//! production mode, the provider and connection allowlists), whether this
//! node has a public URL for webhooks, and the connection's own lifecycle
//! and backoff. Every sync, poll, outbound write and channel operation asks
//! it first; the shell never decides a gate itself. A refusal is a
//! [`Wait`]: the work stays owed (a booking stays queued, a calendar stays
//! due) and the reason is what `GET /v1/bookings/{id}` and `calsync status`
//! show while it waits.
//!
//! Which flag guards which call (also in `docs/FLAGS.md`):
//!
//! | call | needs |
//! | --- | --- |
//! | sync asked for by an input (notification, booking, operator, first sync, retry of one) | `sync_enabled` |
//! | periodic poll, daily window re-base, probe of an unavailable calendar | `sync_enabled` + `jobs_enabled` |
//! | outbound write (create, update, mark, delete, clean-up by tag) | `sync_enabled` |
//! | channel open and renew | `sync_enabled` + `webhooks_enabled` + a public URL |
//! | channel close | `sync_enabled` |
//!
//! In production mode every call also needs the provider and the connection
//! on their allowlists. A paused, quarantined or removed connection, or one
//! that needs re-authorisation, makes no call (a removed one may still close
//! its channels); one in connection-wide backoff makes none before
//! `backoff_until`.

use super::ids::{CalendarProvider, ConnectionId};
use super::settings::{Flag, SettingsState};
use super::state::{ConnectionState, Lifecycle};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The kinds of provider call the gate tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// A sync an input asked for (or the retry of one).
    Sync,
    /// Background sync nobody asked for just now: the periodic poll, the
    /// daily window re-base, the rare probe of an unavailable calendar.
    Poll,
    /// An outbound write of a booking.
    Write,
    /// Opening or renewing a push channel / subscription.
    ChannelUpkeep,
    /// Closing a push channel / subscription.
    ChannelClose,
}

impl Call {
    pub const ALL: [Call; 5] = [
        Call::Sync,
        Call::Poll,
        Call::Write,
        Call::ChannelUpkeep,
        Call::ChannelClose,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Call::Sync => "sync",
            Call::Poll => "poll",
            Call::Write => "write",
            Call::ChannelUpkeep => "channel_upkeep",
            Call::ChannelClose => "channel_close",
        }
    }
}

/// The settings in force as one connection's gate sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateView {
    pub sync_enabled: bool,
    pub jobs_enabled: bool,
    pub webhooks_enabled: bool,
    pub production: bool,
    pub provider_allowlisted: bool,
    pub connection_allowlisted: bool,
    /// This node has a public URL providers can deliver webhooks to.
    pub public_url: bool,
}

impl GateView {
    /// The view of `connection` (of `provider`) under `settings`.
    pub fn new(
        settings: &SettingsState,
        provider: CalendarProvider,
        connection: ConnectionId,
        public_url: bool,
    ) -> Self {
        GateView {
            sync_enabled: settings.enabled(Flag::SyncEnabled),
            jobs_enabled: settings.enabled(Flag::JobsEnabled),
            webhooks_enabled: settings.enabled(Flag::WebhooksEnabled),
            production: settings.production(),
            provider_allowlisted: settings.provider_allowlisted(provider),
            connection_allowlisted: settings.connection_allowlisted(connection),
            public_url,
        }
    }

    /// Every flag on, production mode off (tests of other behaviour).
    pub fn all_open(public_url: bool) -> Self {
        GateView {
            sync_enabled: true,
            jobs_enabled: true,
            webhooks_enabled: true,
            production: false,
            provider_allowlisted: false,
            connection_allowlisted: false,
            public_url,
        }
    }

    /// Channels may exist at all: webhooks are on and can reach us.
    pub fn channels_wanted(&self) -> bool {
        self.webhooks_enabled && self.public_url
    }
}

/// Why a call may not be made now. The work stays owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Wait {
    #[error("sync is disabled (flag sync_enabled is off)")]
    SyncDisabled,
    #[error("background jobs are disabled (flag jobs_enabled is off)")]
    JobsDisabled,
    #[error("webhooks are disabled (flag webhooks_enabled is off)")]
    WebhooksDisabled,
    #[error("no public URL is configured for webhooks")]
    NoPublicUrl,
    #[error("the calendar provider is not on the allowlist (production mode)")]
    ProviderNotAllowlisted,
    #[error("the connection is not on the allowlist (production mode)")]
    ConnectionNotAllowlisted,
    #[error("the connection does not exist")]
    NotCreated,
    #[error("the connection is paused")]
    Paused,
    #[error("the connection was removed")]
    Removed,
    #[error("the connection is quarantined")]
    Quarantined,
    #[error("the connection needs re-authorisation")]
    NeedsReauthorization,
    #[error("the connection is backing off until {until}")]
    Backoff { until: DateTime<Utc> },
    #[error("the connection has no destination calendar")]
    NoDestination,
    #[error("the booking's write failed and waits for a change or a retry")]
    Failed,
    #[error("the booking's write is backing off until {until}")]
    WriteBackoff { until: DateTime<Utc> },
}

impl Wait {
    /// The stable code shown in APIs and status (`waiting: sync_disabled`).
    pub fn code(&self) -> &'static str {
        match self {
            Wait::SyncDisabled => "sync_disabled",
            Wait::JobsDisabled => "jobs_disabled",
            Wait::WebhooksDisabled => "webhooks_disabled",
            Wait::NoPublicUrl => "no_public_url",
            Wait::ProviderNotAllowlisted => "provider_not_allowlisted",
            Wait::ConnectionNotAllowlisted => "connection_not_allowlisted",
            Wait::NotCreated => "not_created",
            Wait::Paused => "paused",
            Wait::Removed => "removed",
            Wait::Quarantined => "quarantined",
            Wait::NeedsReauthorization => "needs_reauthorization",
            Wait::Backoff { .. } => "backoff",
            Wait::NoDestination => "no_destination",
            Wait::Failed => "failed",
            Wait::WriteBackoff { .. } => "write_backoff",
        }
    }
}

/// Whether this node's background sweeps (waking passivated connections
/// whose poll is due) may run at all: polls need both flags.
pub fn background_allowed(settings: &SettingsState) -> bool {
    settings.enabled(Flag::SyncEnabled) && settings.enabled(Flag::JobsEnabled)
}

/// The settings part of the gate: flags, public URL, allowlists. Flags are
/// checked first, because a switched-off entry point is what operators
/// need to see.
pub fn settings_gate(view: &GateView, call: Call) -> Result<(), Wait> {
    if !view.sync_enabled {
        return Err(Wait::SyncDisabled);
    }
    match call {
        Call::Poll if !view.jobs_enabled => return Err(Wait::JobsDisabled),
        Call::ChannelUpkeep if !view.webhooks_enabled => return Err(Wait::WebhooksDisabled),
        Call::ChannelUpkeep if !view.public_url => return Err(Wait::NoPublicUrl),
        _ => {}
    }
    if view.production {
        if !view.provider_allowlisted {
            return Err(Wait::ProviderNotAllowlisted);
        }
        if !view.connection_allowlisted {
            return Err(Wait::ConnectionNotAllowlisted);
        }
    }
    Ok(())
}

/// The connection part of the gate: lifecycle, grant, connection-wide
/// backoff.
pub fn connection_gate(
    state: &ConnectionState,
    call: Call,
    now: DateTime<Utc>,
) -> Result<(), Wait> {
    match state.lifecycle {
        Lifecycle::Uncreated => return Err(Wait::NotCreated),
        // Closing what a removed connection left open is the only call it
        // may still make: the channels would otherwise deliver for days.
        Lifecycle::Removed if call == Call::ChannelClose => {}
        Lifecycle::Removed => return Err(Wait::Removed),
        Lifecycle::Paused => return Err(Wait::Paused),
        Lifecycle::Active => {}
    }
    if state.quarantined_at.is_some() {
        return Err(Wait::Quarantined);
    }
    if state.needs_reauthorization.is_some() {
        return Err(Wait::NeedsReauthorization);
    }
    match state.backoff_until {
        Some(until) if until > now => Err(Wait::Backoff { until }),
        _ => Ok(()),
    }
}

/// May `state`'s connection make a `call` now? The one gate before every
/// provider call.
pub fn admit(
    view: &GateView,
    state: &ConnectionState,
    call: Call,
    now: DateTime<Utc>,
) -> Result<(), Wait> {
    settings_gate(view, call)?;
    connection_gate(state, call, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::ConnectionEvent;
    use crate::core::ids::{CalendarId, ExternalAccount, PlatformProviderId};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn active() -> ConnectionState {
        ConnectionState::default().fold(&[ConnectionEvent::ConnectionCreated {
            platform_provider_id: PlatformProviderId::parse("p").unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse("a@example.com").unwrap(),
            calendars: vec![CalendarId::parse("primary").unwrap()],
            destination_calendar: None,
        }])
    }

    fn view(bits: u8) -> GateView {
        GateView {
            sync_enabled: bits & 1 != 0,
            jobs_enabled: bits & 2 != 0,
            webhooks_enabled: bits & 4 != 0,
            production: bits & 8 != 0,
            provider_allowlisted: bits & 16 != 0,
            connection_allowlisted: bits & 32 != 0,
            public_url: bits & 64 != 0,
        }
    }

    /// The table of docs/FLAGS.md, written out independently of `admit`.
    fn expected(v: &GateView, call: Call) -> bool {
        let listed = !v.production || (v.provider_allowlisted && v.connection_allowlisted);
        let flags = match call {
            Call::Sync | Call::Write | Call::ChannelClose => v.sync_enabled,
            Call::Poll => v.sync_enabled && v.jobs_enabled,
            Call::ChannelUpkeep => v.sync_enabled && v.webhooks_enabled && v.public_url,
        };
        listed && flags
    }

    #[test]
    fn every_combination_of_settings_matches_the_documented_table() {
        let state = active();
        for bits in 0..128u8 {
            let v = view(bits);
            for call in Call::ALL {
                assert_eq!(
                    admit(&v, &state, call, now()).is_ok(),
                    expected(&v, call),
                    "{v:?} {call:?}"
                );
            }
        }
    }

    #[test]
    fn a_fresh_install_makes_no_call_of_any_kind() {
        let v = GateView::new(
            &SettingsState::default(),
            CalendarProvider::Google,
            ConnectionId::new_random(),
            true,
        );
        for call in Call::ALL {
            assert_eq!(admit(&v, &active(), call, now()), Err(Wait::SyncDisabled));
        }
    }

    #[test]
    fn lifecycle_and_backoff_close_the_gate_for_every_call() {
        let open = GateView::all_open(true);
        let paused = active().evolve(&ConnectionEvent::ConnectionPaused { reason: "x".into() });
        let removed = active().evolve(&ConnectionEvent::ConnectionRemoved { reason: "x".into() });
        let reauth = active().evolve(&ConnectionEvent::ReauthorizationRequired {
            reason: "invalid_grant".into(),
        });
        let until = now() + chrono::Duration::minutes(5);
        let backoff = active().evolve(&ConnectionEvent::SyncFailed {
            kind: "rate_limited".into(),
            message: "429".into(),
            consecutive_failures: 1,
            backoff_until: until,
            at: Some(now()),
        });
        for call in Call::ALL {
            assert_eq!(admit(&open, &paused, call, now()), Err(Wait::Paused));
            assert_eq!(
                admit(&open, &reauth, call, now()),
                Err(Wait::NeedsReauthorization)
            );
            assert_eq!(
                admit(&open, &backoff, call, now()),
                Err(Wait::Backoff { until })
            );
            assert!(admit(&open, &backoff, call, until).is_ok());
            let removed_ok = call == Call::ChannelClose;
            assert_eq!(admit(&open, &removed, call, now()).is_ok(), removed_ok);
        }
        assert_eq!(
            admit(&open, &ConnectionState::default(), Call::Sync, now()),
            Err(Wait::NotCreated)
        );
    }

    proptest! {
        /// A closed settings gate is reported as a settings reason whatever
        /// the connection's state: the switch is what operators look for.
        #[test]
        fn settings_reasons_come_before_connection_reasons(bits in 0u8..128, paused in any::<bool>()) {
            let v = view(bits);
            let mut state = active();
            if paused {
                state = state.evolve(&ConnectionEvent::ConnectionPaused { reason: "x".into() });
            }
            for call in Call::ALL {
                if let Err(settings) = settings_gate(&v, call) {
                    prop_assert_eq!(admit(&v, &state, call, now()), Err(settings));
                }
            }
        }
    }
}
