//! The calendar-provider port: what connection actors ask of Google Calendar
//! and Microsoft Graph, and the errors they get back.
//!
//! Errors are classified by what the caller must do next (retry with
//! backoff, resync from scratch, ask the user to re-authorise, give up), so
//! the pure core decides on the class, never on HTTP details.
//!
//! Implementations: [`google::GoogleClient`] and [`graph::GraphClient`]
//! over reqwest with explicit timeouts, reached through the
//! [`ProviderClient`] enum. Tests run them against the loopback simulators
//! in `simulations/` over real HTTP.

pub mod google;
pub mod graph;
pub mod oauth;

use crate::core::ids::{CalendarId, CalendarProvider};
use crate::core::interval::Interval;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where the provider APIs live. Defaults are the real services; tests and
/// the demo point them at the simulators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEndpoints {
    /// e.g. `https://www.googleapis.com/calendar/v3`
    pub google_api: String,
    /// e.g. `https://oauth2.googleapis.com/token`
    pub google_token: String,
    /// e.g. `https://graph.microsoft.com/v1.0`
    pub graph_api: String,
    /// e.g. `https://login.microsoftonline.com/common/oauth2/v2.0/token`
    pub graph_token: String,
}

impl Default for ProviderEndpoints {
    fn default() -> Self {
        ProviderEndpoints {
            google_api: "https://www.googleapis.com/calendar/v3".into(),
            google_token: "https://oauth2.googleapis.com/token".into(),
            graph_api: "https://graph.microsoft.com/v1.0".into(),
            graph_token: "https://login.microsoftonline.com/common/oauth2/v2.0/token".into(),
        }
    }
}

/// OAuth state of one connection. The client refreshes the access token
/// when it is missing or expired, and once more on a 401. Microsoft issues
/// a new refresh token on every refresh: when `refresh_token_rotated` is
/// set, the shell must persist `refresh_token` (atomically) before relying
/// on it again. When `access_token_refreshed` is set, the shell saves the
/// new access token too, so the next task (and the next process) reuses it
/// instead of asking the token endpoint again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSession {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub access_token: Option<String>,
    pub access_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub refresh_token_rotated: bool,
    /// Set by a refresh; never stored.
    #[serde(skip)]
    pub access_token_refreshed: bool,
}

/// Secrets never reach logs, not even through `{:?}`.
impl std::fmt::Debug for AuthSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSession")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_token_rotated", &self.refresh_token_rotated)
            .field("access_token_refreshed", &self.access_token_refreshed)
            .finish()
    }
}

/// The sync window (the core's: `[sync] window_past_days` /
/// `window_future_days` decide it).
pub use crate::core::window::SyncWindow;

/// Opaque per-calendar sync position: Google's `nextSyncToken`, or Graph's
/// whole `@odata.deltaLink` URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SyncCursor(pub String);

/// Where a listing of changes starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncPosition {
    /// A full sync of the window (first sync, or after a resync).
    Start,
    /// The next page of the round in progress (`pageToken` / `nextLink`).
    Page(String),
    /// An incremental round from a stored cursor.
    Cursor(SyncCursor),
}

/// One changed (or removed) event as the provider sent it; the core's busy
/// rules decide what it means. Defined in the core so `decide` can take it.
pub use crate::core::wire::ProviderChange as ExternalChange;

/// One page of a sync round.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesPage {
    pub changes: Vec<ExternalChange>,
    /// The zone all-day events are dates in when they do not name their
    /// own: Google, the calendar's IANA `timeZone`; Graph, the mailbox's
    /// zone (`mailboxSettings.timeZone`, Windows or IANA), on every page.
    pub calendar_zone: Option<String>,
    pub next: PageNext,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageNext {
    /// More pages follow in this round.
    More(String),
    /// The round is complete; store this cursor for the next one.
    Complete(SyncCursor),
}

/// What to ask for when opening a push channel / subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRequest {
    /// Our id for the channel (Google channel id; Graph: ours, sent in
    /// `clientState` alongside the secret). ≤ 64 chars.
    pub channel_id: String,
    /// Where notifications go.
    pub address: String,
    /// Lifecycle notification URL (Graph only).
    pub lifecycle_address: Option<String>,
    /// Per-channel secret echoed by the provider (Google channel token ≤ 256
    /// chars; Graph clientState ≤ 128 chars).
    pub secret: String,
    /// Requested expiry; the provider may shorten it.
    pub expires_at: DateTime<Utc>,
}

/// An open push channel (Google) or subscription (Graph).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub channel_id: String,
    /// Google `resourceId` / Graph subscription id.
    pub resource_id: String,
    /// The expiry the provider actually granted.
    pub expires_at: DateTime<Utc>,
}

/// A calendar event calsync writes for a booking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundEvent {
    pub booking_id: String,
    /// Changes only if the booking is re-created after a cancellation
    /// (Google keeps ids of deleted events reserved).
    pub generation: u32,
    pub title: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// IANA zone the booking was made in (shown to the calendar owner).
    pub time_zone: String,
    pub attendees: Vec<String>,
    /// Stable ICS UID of the booking.
    pub ical_uid: String,
    /// Show the booking as cancelled (`CancelMode::MarkCancelled`): the
    /// event stops blocking time and its title says so. `false` on every
    /// other write, which is what turns a re-activated booking back.
    #[serde(default)]
    pub marked_cancelled: bool,
}

impl OutboundEvent {
    /// The title shown in the calendar.
    pub fn display_title(&self) -> String {
        if self.marked_cancelled {
            crate::core::outbound::cancelled_title(&self.title)
        } else {
            self.title.clone()
        }
    }
}

/// An event as written at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenEvent {
    pub external_event_id: String,
    pub etag: Option<String>,
}

/// Why a provider call failed, by what the caller must do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The grant is gone (`invalid_grant`, revoked consent): stop calling
    /// and mark the connection as needing re-authorisation.
    #[error("re-authorisation required: {0}")]
    Reauthorize(String),
    /// Throttled (429, 403 rateLimitExceeded/userRateLimitExceeded): back
    /// off, at least `retry_after` if given.
    #[error("rate limited")]
    RateLimited { retry_after: Option<Duration> },
    /// Provider trouble (5xx, timeout, connection refused): back off.
    #[error("provider unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The sync cursor is no longer valid (410 fullSyncRequired,
    /// SyncStateNotFound, resyncRequired): start a full resync.
    #[error("full resync required: {0}")]
    ResyncRequired(String),
    /// The event or channel does not exist (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The event was deleted (Google 410 `deleted` on delete).
    #[error("gone: {0}")]
    Gone(String),
    /// The client-chosen id already exists (Google 409 `duplicate`).
    #[error("duplicate id: {0}")]
    Duplicate(String),
    /// Our deterministic id belongs to an event that was deleted: Google
    /// keeps it reserved for good, so a new id generation is needed.
    #[error("id of a deleted event: {0}")]
    IdRetired(String),
    /// `If-Match` failed (412): re-read and re-apply.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// Any other refusal: retrying the same request will not help.
    #[error("rejected with {status}: {message}")]
    Rejected { status: u16, message: String },
}

impl ProviderError {
    /// A short stable label for metrics and events.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Reauthorize(_) => "reauthorize",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::Unavailable { .. } => "unavailable",
            ProviderError::ResyncRequired(_) => "resync_required",
            ProviderError::NotFound(_) => "not_found",
            ProviderError::Gone(_) => "gone",
            ProviderError::Duplicate(_) => "duplicate",
            ProviderError::IdRetired(_) => "id_retired",
            ProviderError::PreconditionFailed(_) => "precondition_failed",
            ProviderError::Rejected { .. } => "rejected",
        }
    }

    /// The failure as plain data for the core, which decides whom it
    /// concerns ([`crate::core::fault`]).
    pub fn fault(&self) -> crate::core::fault::Fault {
        use crate::core::fault::{Fault, FaultKind as K};
        let (kind, status) = match self {
            ProviderError::Reauthorize(_) => (K::Reauthorize, None),
            ProviderError::RateLimited { .. } => (K::RateLimited, Some(429)),
            ProviderError::Unavailable { .. } => (K::Unavailable, None),
            ProviderError::ResyncRequired(_) => (K::ResyncRequired, Some(410)),
            ProviderError::NotFound(_) => (K::NotFound, Some(404)),
            ProviderError::Gone(_) => (K::Gone, Some(410)),
            ProviderError::Duplicate(_) => (K::Duplicate, Some(409)),
            ProviderError::IdRetired(_) => (K::IdRetired, Some(409)),
            ProviderError::PreconditionFailed(_) => (K::PreconditionFailed, Some(412)),
            ProviderError::Rejected { status, .. } => (K::Rejected, Some(*status)),
        };
        let fault = Fault::new(kind, self.kind(), self.to_string()).with_retry_after_ms(
            self.retry_after()
                .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
        );
        match status {
            Some(status) => fault.with_status(status),
            None => fault,
        }
    }

    /// The provider's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after }
            | ProviderError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The provider operations calsync needs. `session` is refreshed in place.
#[allow(async_fn_in_trait)]
pub trait CalendarApi {
    fn provider(&self) -> CalendarProvider;

    /// Refreshes the access token if it is missing or about to expire: a
    /// failure here concerns the whole connection, not one calendar.
    async fn ensure_token(&self, session: &mut AuthSession) -> Result<(), ProviderError>;

    /// One page of changes for `calendar` from `position`, within `window`
    /// (the window applies to full syncs; cursors carry their own).
    async fn list_changes(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        position: &SyncPosition,
        window: SyncWindow,
    ) -> Result<ChangesPage, ProviderError>;

    /// Busy intervals of calendars shared as free/busy only, chunked under
    /// the provider's range limits.
    async fn free_busy(
        &self,
        session: &mut AuthSession,
        calendars: &[CalendarId],
        window: SyncWindow,
    ) -> Result<Vec<(CalendarId, Vec<Interval>)>, ProviderError>;

    async fn open_channel(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        request: &ChannelRequest,
    ) -> Result<Channel, ProviderError>;

    /// Renews in place where the provider can (Graph PATCH); Google
    /// channels cannot be renewed, so callers open a new one instead.
    async fn renew_channel(
        &self,
        session: &mut AuthSession,
        channel: &Channel,
        expires_at: DateTime<Utc>,
    ) -> Result<Channel, ProviderError>;

    async fn close_channel(
        &self,
        session: &mut AuthSession,
        channel: &Channel,
    ) -> Result<(), ProviderError>;

    /// Creates the booking's event idempotently: a retry after a lost
    /// response never makes a second event (Google: deterministic id and
    /// 409 → fetch; Graph: `transactionId` plus a tag searched first).
    async fn create_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError>;

    /// Moves/changes the same external event (PATCH, never delete+create).
    async fn update_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        external_event_id: &str,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError>;

    /// Deletes it; "already gone" (404/410) counts as done.
    async fn delete_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        external_event_id: &str,
    ) -> Result<(), ProviderError>;

    /// Finds our event for a booking by its tag, if the provider has it.
    async fn find_booking_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        booking_id: &str,
        generation: u32,
    ) -> Result<Option<WrittenEvent>, ProviderError>;
}

// ------------------------------------------------------ concrete clients --

pub mod transport;

pub use transport::{http_client, parse_retry_after, CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// Either provider's client, chosen per connection.
#[derive(Debug, Clone)]
pub enum ProviderClient {
    Google(google::GoogleClient),
    Graph(graph::GraphClient),
}

impl ProviderClient {
    /// The client for `provider`. `http` should come from [`http_client`]
    /// (explicit connect and request timeouts).
    pub fn for_provider(
        provider: CalendarProvider,
        http: impl Into<transport::HttpPort>,
        endpoints: ProviderEndpoints,
    ) -> Self {
        match provider {
            CalendarProvider::Google => {
                ProviderClient::Google(google::GoogleClient::new(http, endpoints))
            }
            CalendarProvider::Microsoft => {
                ProviderClient::Graph(graph::GraphClient::new(http, endpoints))
            }
        }
    }
}

impl ProviderClient {
    /// The same client, reading time (token expiry) from `clock`.
    pub fn with_clock(self, clock: std::sync::Arc<dyn crate::ports::Clock>) -> Self {
        match self {
            ProviderClient::Google(c) => ProviderClient::Google(c.with_clock(clock)),
            ProviderClient::Graph(c) => ProviderClient::Graph(c.with_clock(clock)),
        }
    }
}

/// Delegates every call to the provider's client.
macro_rules! delegate {
    ($self:ident, $client:ident => $call:expr) => {
        match $self {
            ProviderClient::Google($client) => $call.await,
            ProviderClient::Graph($client) => $call.await,
        }
    };
}

impl CalendarApi for ProviderClient {
    fn provider(&self) -> CalendarProvider {
        match self {
            ProviderClient::Google(c) => c.provider(),
            ProviderClient::Graph(c) => c.provider(),
        }
    }

    async fn ensure_token(&self, session: &mut AuthSession) -> Result<(), ProviderError> {
        delegate!(self, c => c.ensure_token(session))
    }

    async fn list_changes(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        position: &SyncPosition,
        window: SyncWindow,
    ) -> Result<ChangesPage, ProviderError> {
        delegate!(self, c => c.list_changes(session, calendar, position, window))
    }

    async fn free_busy(
        &self,
        session: &mut AuthSession,
        calendars: &[CalendarId],
        window: SyncWindow,
    ) -> Result<Vec<(CalendarId, Vec<Interval>)>, ProviderError> {
        delegate!(self, c => c.free_busy(session, calendars, window))
    }

    async fn open_channel(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        request: &ChannelRequest,
    ) -> Result<Channel, ProviderError> {
        delegate!(self, c => c.open_channel(session, calendar, request))
    }

    async fn renew_channel(
        &self,
        session: &mut AuthSession,
        channel: &Channel,
        expires_at: DateTime<Utc>,
    ) -> Result<Channel, ProviderError> {
        delegate!(self, c => c.renew_channel(session, channel, expires_at))
    }

    async fn close_channel(
        &self,
        session: &mut AuthSession,
        channel: &Channel,
    ) -> Result<(), ProviderError> {
        delegate!(self, c => c.close_channel(session, channel))
    }

    async fn create_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError> {
        delegate!(self, c => c.create_event(session, calendar, event))
    }

    async fn update_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        external_event_id: &str,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError> {
        delegate!(self, c => c.update_event(session, calendar, external_event_id, event))
    }

    async fn delete_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        external_event_id: &str,
    ) -> Result<(), ProviderError> {
        delegate!(self, c => c.delete_event(session, calendar, external_event_id))
    }

    async fn find_booking_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        booking_id: &str,
        generation: u32,
    ) -> Result<Option<WrittenEvent>, ProviderError> {
        delegate!(self, c => c.find_booking_event(session, calendar, booking_id, generation))
    }
}
