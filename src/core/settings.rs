//! Platform settings — feature flags, allowlists, production mode — as a
//! pure fold of the `settings` stream, and the gates the edges consult.
//!
//! Guarantee 6 of DESIGN.md: every flag defaults to OFF; a disabled entry
//! point refuses (the edge answers 403); provider and connection allowlists
//! are enforced only in production mode. Every change is an event carrying
//! who made it, when and why, so the stream itself is the audit trail.
//!
//! Like the connection core: `decide(state, command, actor, now)` returns the
//! events to append (none when the command changes nothing, so repeating a
//! command is always safe) and [`SettingsState::evolve`] folds them.

use super::events::{retag, untag, EventDecodeError};
use super::ids::{CalendarProvider, ConnectionId, InvalidId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A feature flag. Stored by its stable snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// Provider syncs (inbound and outbound) may run.
    SyncEnabled,
    /// Background jobs (periodic sync, channel renewal, retries) may run.
    JobsEnabled,
    /// Provider webhooks are accepted.
    WebhooksEnabled,
}

impl Flag {
    pub const ALL: [Flag; 3] = [Flag::SyncEnabled, Flag::JobsEnabled, Flag::WebhooksEnabled];

    /// The stable name used in the log, the CLI and the admin API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Flag::SyncEnabled => "sync_enabled",
            Flag::JobsEnabled => "jobs_enabled",
            Flag::WebhooksEnabled => "webhooks_enabled",
        }
    }

    /// Accepts the stable name, its `-` spelling, or the short form (`sync`).
    pub fn parse(s: &str) -> Result<Flag, InvalidId> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        let short = s.strip_suffix("_enabled").unwrap_or(&s);
        match short {
            "sync" => Ok(Flag::SyncEnabled),
            "jobs" => Ok(Flag::JobsEnabled),
            "webhooks" => Ok(Flag::WebhooksEnabled),
            _ => Err(InvalidId {
                kind: "flag",
                reason: format!("{s:?} is not one of sync_enabled, jobs_enabled, webhooks_enabled"),
            }),
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a change: an operator, the CLI on some host, the admin API.
/// Bounded and printable, because it is shown in logs and audit listings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Actor(String);

impl Actor {
    pub const MAX_LEN: usize = 200;

    pub fn parse(s: impl Into<String>) -> Result<Actor, InvalidId> {
        let s = s.into();
        let bad = |reason: &str| InvalidId {
            kind: "actor",
            reason: reason.to_string(),
        };
        if s.trim().is_empty() {
            return Err(bad("empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(bad("longer than 200 bytes"));
        }
        if s.chars().any(char::is_control) {
            return Err(bad("contains control characters"));
        }
        Ok(Actor(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Actor {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Actor::parse(s)
    }
}

impl From<Actor> for String {
    fn from(a: Actor) -> String {
        a.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest reason kept: enough for a sentence and a ticket link, small
/// enough that the settings stream stays cheap to fold on every node.
pub const MAX_REASON_LEN: usize = 500;

/// Everything that can happen to the settings, as recorded in the stream.
/// Every variant carries `actor`, `reason` and `at`: the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SettingsEvent {
    FlagSet {
        flag: Flag,
        enabled: bool,
        actor: Actor,
        reason: String,
        at: DateTime<Utc>,
    },
    ProviderAllowlisted {
        provider: CalendarProvider,
        actor: Actor,
        reason: String,
        at: DateTime<Utc>,
    },
    ProviderUnlisted {
        provider: CalendarProvider,
        actor: Actor,
        reason: String,
        at: DateTime<Utc>,
    },
    ConnectionAllowlisted {
        connection_id: ConnectionId,
        actor: Actor,
        reason: String,
        at: DateTime<Utc>,
    },
    ConnectionUnlisted {
        connection_id: ConnectionId,
        actor: Actor,
        reason: String,
        at: DateTime<Utc>,
    },
    ProductionModeSet {
        enabled: bool,
        actor: Actor,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl SettingsEvent {
    /// The stable name stored in the log's `event_type` column.
    pub fn event_type(&self) -> &'static str {
        match self {
            SettingsEvent::FlagSet { .. } => "flag_set",
            SettingsEvent::ProviderAllowlisted { .. } => "provider_allowlisted",
            SettingsEvent::ProviderUnlisted { .. } => "provider_unlisted",
            SettingsEvent::ConnectionAllowlisted { .. } => "connection_allowlisted",
            SettingsEvent::ConnectionUnlisted { .. } => "connection_unlisted",
            SettingsEvent::ProductionModeSet { .. } => "production_mode_set",
        }
    }

    /// The current schema version of this event type's payload.
    pub fn schema_version(&self) -> i32 {
        1
    }

    /// Splits the event into the `(event_type, payload)` pair the log stores.
    pub fn to_parts(&self) -> Result<(&'static str, serde_json::Value), EventDecodeError> {
        Ok((self.event_type(), untag(self, self.event_type())?))
    }

    /// Rebuilds an event from the log's `(event_type, schema_version, payload)`.
    pub fn from_parts(
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Self, EventDecodeError> {
        retag(event_type, upcast(event_type, schema_version, payload)?)
    }

    /// Who made the change, why, and when it was decided.
    pub fn audit(&self) -> (&Actor, &str, DateTime<Utc>) {
        match self {
            SettingsEvent::FlagSet {
                actor, reason, at, ..
            }
            | SettingsEvent::ProviderAllowlisted {
                actor, reason, at, ..
            }
            | SettingsEvent::ProviderUnlisted {
                actor, reason, at, ..
            }
            | SettingsEvent::ConnectionAllowlisted {
                actor, reason, at, ..
            }
            | SettingsEvent::ConnectionUnlisted {
                actor, reason, at, ..
            }
            | SettingsEvent::ProductionModeSet {
                actor, reason, at, ..
            } => (actor, reason, *at),
        }
    }
}

/// Lifts a stored settings payload to the current schema version of its
/// type. Every type is at version 1; a version-2 shape gets its arm here.
fn upcast(
    event_type: &str,
    schema_version: i32,
    payload: serde_json::Value,
) -> Result<serde_json::Value, EventDecodeError> {
    match schema_version {
        1 => Ok(payload),
        v => Err(EventDecodeError::FutureVersion {
            event_type: event_type.to_string(),
            version: v,
        }),
    }
}

/// The last change to a flag, production mode or an allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub by: Actor,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// An on/off setting and, once it has been touched, its last change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Toggle {
    pub enabled: bool,
    pub last_change: Option<Change>,
}

/// The folded settings stream. `Default` is the state before any event:
/// every flag off, production mode off, empty allowlists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SettingsState {
    /// The stream version this state reflects (number of events folded).
    pub version: u64,
    /// Flags that were ever set; an absent flag is off.
    pub flags: BTreeMap<Flag, Toggle>,
    pub production_mode: Toggle,
    /// Allowlisted providers, with who listed them.
    pub providers: BTreeMap<CalendarProvider, Change>,
    /// Allowlisted connections, with who listed them.
    pub connections: BTreeMap<ConnectionId, Change>,
}

impl SettingsState {
    pub fn enabled(&self, flag: Flag) -> bool {
        self.flags.get(&flag).is_some_and(|t| t.enabled)
    }

    /// The flag's toggle, off and untouched if it was never set.
    pub fn flag(&self, flag: Flag) -> Toggle {
        self.flags.get(&flag).cloned().unwrap_or_default()
    }

    pub fn production(&self) -> bool {
        self.production_mode.enabled
    }

    pub fn provider_allowlisted(&self, provider: CalendarProvider) -> bool {
        self.providers.contains_key(&provider)
    }

    pub fn connection_allowlisted(&self, connection: ConnectionId) -> bool {
        self.connections.contains_key(&connection)
    }

    /// Folds one event. Total: an event that changes nothing (which `decide`
    /// never emits) only moves the version, so replaying history never fails.
    pub fn evolve(mut self, event: &SettingsEvent) -> Self {
        self.version += 1;
        let (actor, reason, at) = event.audit();
        let change = Change {
            by: actor.clone(),
            at,
            reason: reason.to_string(),
        };
        match event {
            SettingsEvent::FlagSet { flag, enabled, .. } => {
                self.flags.insert(
                    *flag,
                    Toggle {
                        enabled: *enabled,
                        last_change: Some(change),
                    },
                );
            }
            SettingsEvent::ProductionModeSet { enabled, .. } => {
                self.production_mode = Toggle {
                    enabled: *enabled,
                    last_change: Some(change),
                };
            }
            SettingsEvent::ProviderAllowlisted { provider, .. } => {
                self.providers.insert(*provider, change);
            }
            SettingsEvent::ProviderUnlisted { provider, .. } => {
                self.providers.remove(provider);
            }
            SettingsEvent::ConnectionAllowlisted { connection_id, .. } => {
                self.connections.insert(*connection_id, change);
            }
            SettingsEvent::ConnectionUnlisted { connection_id, .. } => {
                self.connections.remove(connection_id);
            }
        }
        self
    }

    pub fn fold<'a>(self, events: impl IntoIterator<Item = &'a SettingsEvent>) -> Self {
        events.into_iter().fold(self, SettingsState::evolve)
    }
}

/// An instruction to change the settings. Who gives it is passed beside it
/// (see [`decide`]), so one command value can be replayed by any caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum SettingsCommand {
    SetFlag {
        flag: Flag,
        enabled: bool,
        reason: String,
    },
    AllowProvider {
        provider: CalendarProvider,
        reason: String,
    },
    UnlistProvider {
        provider: CalendarProvider,
        reason: String,
    },
    AllowConnection {
        connection_id: ConnectionId,
        reason: String,
    },
    UnlistConnection {
        connection_id: ConnectionId,
        reason: String,
    },
    SetProductionMode {
        enabled: bool,
        reason: String,
    },
}

impl SettingsCommand {
    pub fn reason(&self) -> &str {
        match self {
            SettingsCommand::SetFlag { reason, .. }
            | SettingsCommand::AllowProvider { reason, .. }
            | SettingsCommand::UnlistProvider { reason, .. }
            | SettingsCommand::AllowConnection { reason, .. }
            | SettingsCommand::UnlistConnection { reason, .. }
            | SettingsCommand::SetProductionMode { reason, .. } => reason,
        }
    }
}

/// Why a settings command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsRejection {
    #[error("invalid settings command: {0}")]
    Invalid(String),
}

/// Decides the events a command produces: none when it would change nothing.
pub fn decide(
    state: &SettingsState,
    command: &SettingsCommand,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Vec<SettingsEvent>, SettingsRejection> {
    use SettingsCommand as C;
    use SettingsEvent as E;
    let reason = command.reason();
    if reason.len() > MAX_REASON_LEN {
        return Err(SettingsRejection::Invalid(format!(
            "the reason is longer than {MAX_REASON_LEN} bytes"
        )));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(SettingsRejection::Invalid(
            "the reason contains control characters".into(),
        ));
    }
    let actor = actor.clone();
    let reason = reason.to_string();
    // Each arm: does the command change anything, and the event if it does.
    let (changes, event) = match command {
        C::SetFlag { flag, enabled, .. } => (
            state.enabled(*flag) != *enabled,
            E::FlagSet {
                flag: *flag,
                enabled: *enabled,
                actor,
                reason,
                at: now,
            },
        ),
        C::SetProductionMode { enabled, .. } => (
            state.production() != *enabled,
            E::ProductionModeSet {
                enabled: *enabled,
                actor,
                reason,
                at: now,
            },
        ),
        C::AllowProvider { provider, .. } => (
            !state.provider_allowlisted(*provider),
            E::ProviderAllowlisted {
                provider: *provider,
                actor,
                reason,
                at: now,
            },
        ),
        C::UnlistProvider { provider, .. } => (
            state.provider_allowlisted(*provider),
            E::ProviderUnlisted {
                provider: *provider,
                actor,
                reason,
                at: now,
            },
        ),
        C::AllowConnection { connection_id, .. } => (
            !state.connection_allowlisted(*connection_id),
            E::ConnectionAllowlisted {
                connection_id: *connection_id,
                actor,
                reason,
                at: now,
            },
        ),
        C::UnlistConnection { connection_id, .. } => (
            state.connection_allowlisted(*connection_id),
            E::ConnectionUnlisted {
                connection_id: *connection_id,
                actor,
                reason,
                at: now,
            },
        ),
    };
    Ok(if changes { vec![event] } else { Vec::new() })
}

/// Which rule refused an entry point. The edge answers 403 with
/// [`Refusal::code`] and does nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("sync is disabled (flag sync_enabled is off)")]
    SyncDisabled,
    #[error("jobs are disabled (flag jobs_enabled is off)")]
    JobsDisabled,
    #[error("webhooks are disabled (flag webhooks_enabled is off)")]
    WebhooksDisabled,
    #[error("provider {0} is not on the allowlist (production mode)")]
    ProviderNotAllowlisted(CalendarProvider),
    #[error("connection {0} is not on the allowlist (production mode)")]
    ConnectionNotAllowlisted(ConnectionId),
}

impl Refusal {
    /// A stable machine-readable code, used as the HTTP error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::SyncDisabled => "sync_disabled",
            Refusal::JobsDisabled => "jobs_disabled",
            Refusal::WebhooksDisabled => "webhooks_disabled",
            Refusal::ProviderNotAllowlisted(_) => "provider_not_allowlisted",
            Refusal::ConnectionNotAllowlisted(_) => "connection_not_allowlisted",
        }
    }

    fn disabled(flag: Flag) -> Refusal {
        match flag {
            Flag::SyncEnabled => Refusal::SyncDisabled,
            Flag::JobsEnabled => Refusal::JobsDisabled,
            Flag::WebhooksEnabled => Refusal::WebhooksDisabled,
        }
    }
}

/// Refuses unless `flag` is on. For entry points that are not about one
/// connection (a job scheduler's tick).
pub fn flag_gate(state: &SettingsState, flag: Flag) -> Result<(), Refusal> {
    if state.enabled(flag) {
        Ok(())
    } else {
        Err(Refusal::disabled(flag))
    }
}

/// Refuses unless `flag` is on and, in production mode, both the provider
/// and the connection are allowlisted. The flag is checked first: when an
/// entry point is off, that is the reason operators need to see.
pub fn gate(
    state: &SettingsState,
    flag: Flag,
    provider: CalendarProvider,
    connection: ConnectionId,
) -> Result<(), Refusal> {
    flag_gate(state, flag)?;
    if state.production() {
        if !state.provider_allowlisted(provider) {
            return Err(Refusal::ProviderNotAllowlisted(provider));
        }
        if !state.connection_allowlisted(connection) {
            return Err(Refusal::ConnectionNotAllowlisted(connection));
        }
    }
    Ok(())
}

/// May a webhook for this connection be accepted?
pub fn webhook_gate(
    state: &SettingsState,
    provider: CalendarProvider,
    connection: ConnectionId,
) -> Result<(), Refusal> {
    gate(state, Flag::WebhooksEnabled, provider, connection)
}

/// May this connection sync with its provider?
pub fn sync_gate(
    state: &SettingsState,
    provider: CalendarProvider,
    connection: ConnectionId,
) -> Result<(), Refusal> {
    gate(state, Flag::SyncEnabled, provider, connection)
}

/// May a background job run for this connection?
pub fn jobs_gate(
    state: &SettingsState,
    provider: CalendarProvider,
    connection: ConnectionId,
) -> Result<(), Refusal> {
    gate(state, Flag::JobsEnabled, provider, connection)
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
