//! Running a sync for one connection, outside its actor.
//!
//! The actor owns the decision to sync (at most one sync in flight; triggers
//! that arrive meanwhile coalesce into one follow-up). The provider calls
//! run in a task so the actor keeps answering webhooks within their
//! deadline; every fetched page goes back through the actor, which decides
//! and appends it like any other input.

use super::connection::ConnectionMsg;
use super::task_support::{keep_rotated_token, load_session, record};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{CalendarId, CalendarProvider, ConnectionId};
use crate::core::sync::{FailureClass, FetchedPage, SyncPolicy};
use crate::providers::{
    CalendarApi, PageNext, ProviderClient, ProviderEndpoints, ProviderError, SyncCursor,
    SyncPosition, SyncWindow,
};
use crate::store::credentials::CredentialVault;
use crate::store::PgEventStore;
use chrono::Utc;
use ractor::ActorRef;
use std::sync::Arc;

/// Feature gates the actors consult (backed by the settings stream in
/// `serve`; fixed in some tests).
pub trait Gates: Send + Sync {
    /// Provider calls for sync are allowed.
    fn sync_enabled(&self) -> bool;
    /// Periodic background work (polls) is allowed.
    fn jobs_enabled(&self) -> bool;
    /// Push channels may be opened (webhooks are on).
    fn webhooks_enabled(&self) -> bool;
}

/// Gates that are always open (tests, drills that do not test flags).
pub struct AllOpen;

impl Gates for AllOpen {
    fn sync_enabled(&self) -> bool {
        true
    }
    fn jobs_enabled(&self) -> bool {
        true
    }
    fn webhooks_enabled(&self) -> bool {
        true
    }
}

/// Everything a connection actor needs to sync.
/// Default least time between two syncs of one connection: ten a second,
/// Google Calendar's default per-user quota (600 queries a minute), so a
/// notification flood on one account cannot by itself exhaust the quota,
/// while a connection changing a few times a second still syncs each change
/// on arrival. Configurable (`[sync] min_interval_ms`).
pub const DEFAULT_MIN_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

pub struct SyncRuntime {
    pub google: ProviderClient,
    pub graph: ProviderClient,
    pub vault: CredentialVault,
    pub store: PgEventStore,
    pub policy: SyncPolicy,
    pub gates: Arc<dyn Gates>,
    /// Periodic poll interval (the backstop for dropped notifications).
    pub poll_every: chrono::Duration,
    /// Least time between the starts of two syncs of one connection: a
    /// flood of notifications costs a bounded number of provider calls
    /// however fast each sync is.
    pub min_sync_interval: std::time::Duration,
    /// Access tokens refreshed by this node's tasks, reused until expiry.
    pub access_tokens: super::task_support::AccessTokens,
    /// Public base URL of this deployment's webhook endpoints (e.g.
    /// `https://hooks.example.com`); `None`: no push channels, polls only.
    pub webhook_base: Option<String>,
    /// Requested channel lifetimes (the provider may grant less).
    pub google_channel_lifetime: chrono::Duration,
    pub graph_channel_lifetime: chrono::Duration,
}

impl SyncRuntime {
    pub fn new(
        endpoints: ProviderEndpoints,
        vault: CredentialVault,
        store: PgEventStore,
        gates: Arc<dyn Gates>,
    ) -> anyhow::Result<Self> {
        let http = crate::providers::transport::http_client()?;
        Ok(SyncRuntime {
            google: ProviderClient::for_provider(
                CalendarProvider::Google,
                http.clone(),
                endpoints.clone(),
            ),
            graph: ProviderClient::for_provider(CalendarProvider::Microsoft, http, endpoints),
            vault,
            store,
            policy: SyncPolicy::default(),
            gates,
            poll_every: chrono::Duration::minutes(15),
            min_sync_interval: DEFAULT_MIN_SYNC_INTERVAL,
            access_tokens: Default::default(),
            webhook_base: None,
            // Google's default and (observed) maximum is 7 days; Graph's
            // Outlook maximum is disputed (4,230 or 10,080 minutes), so ask
            // a little under the lower one and trust the returned expiry.
            google_channel_lifetime: chrono::Duration::days(7),
            graph_channel_lifetime: chrono::Duration::minutes(4200),
        })
    }

    pub fn client(&self, provider: CalendarProvider) -> &ProviderClient {
        match provider {
            CalendarProvider::Google => &self.google,
            CalendarProvider::Microsoft => &self.graph,
        }
    }
}

/// What one calendar's round starts from.
pub struct CalendarPlan {
    pub calendar: CalendarId,
    pub cursor: Option<String>,
    /// Shared as free/busy only: read through the free/busy query.
    pub free_busy_only: bool,
}

/// Runs one sync of `calendars` and reports back to the actor. Returns when
/// done; the actor learns it through `SyncFinished`.
pub async fn run(
    actor: ActorRef<ConnectionMsg>,
    runtime: Arc<SyncRuntime>,
    id: ConnectionId,
    provider: CalendarProvider,
    calendars: Vec<CalendarPlan>,
    notified_at: Option<std::time::Instant>,
) {
    let started = std::time::Instant::now();
    let attempt_started = Utc::now();
    crate::metrics::sync_started(provider.as_str());
    let outcome = sync_calendars(&actor, &runtime, id, provider, calendars).await;
    let failure = outcome.as_ref().err().map(|(_, kind, _)| kind.as_str());
    crate::metrics::sync_finished(provider.as_str(), failure, started.elapsed());
    if let (Ok(()), Some(at)) = (&outcome, notified_at) {
        crate::metrics::webhook_to_busy(provider.as_str(), at.elapsed());
    }
    if let Err((class, kind, message)) = outcome {
        tracing::warn!(kind = %kind, error = %message, "sync failed");
        let command = ConnectionCommand::RecordFailure {
            class,
            kind,
            message,
            unit_random: rand::random::<f64>(),
            attempt_started: Some(attempt_started),
        };
        let _ = record(&actor, command).await;
    }
    let _ = actor.send_message(ConnectionMsg::SyncFinished);
}

type Failure = (FailureClass, String, String);

async fn sync_calendars(
    actor: &ActorRef<ConnectionMsg>,
    runtime: &SyncRuntime,
    id: ConnectionId,
    provider: CalendarProvider,
    calendars: Vec<CalendarPlan>,
) -> Result<(), Failure> {
    let mut session = match load_session(runtime, id).await {
        Ok(Some(session)) => session,
        Ok(None) => {
            return Err((
                FailureClass::Reauthorize,
                "reauthorize".into(),
                "no credentials stored for this connection".into(),
            ))
        }
        Err(e) => {
            return Err((
                FailureClass::Transient {
                    retry_after_ms: None,
                },
                "credentials".into(),
                e.to_string(),
            ))
        }
    };
    let client = runtime.client(provider);
    let window = SyncWindow::around(Utc::now());
    for plan in calendars {
        if plan.free_busy_only {
            let result = client
                .free_busy(&mut session, std::slice::from_ref(&plan.calendar), window)
                .await;
            keep_rotated_token(runtime, id, &mut session).await;
            let busy = result
                .map_err(|e| classify(&plan.calendar, e))?
                .into_iter()
                .filter(|(calendar, _)| *calendar == plan.calendar)
                .flat_map(|(_, intervals)| intervals)
                .collect();
            let command = ConnectionCommand::RecordFreeBusy {
                calendar: plan.calendar.clone(),
                busy,
            };
            record(actor, command).await.map_err(|e| {
                (
                    FailureClass::Transient {
                        retry_after_ms: None,
                    },
                    "record".to_string(),
                    e,
                )
            })?;
            continue;
        }
        let full_round = plan.cursor.is_none();
        let mut position = match plan.cursor {
            Some(c) => SyncPosition::Cursor(SyncCursor(c)),
            None => SyncPosition::Start,
        };
        loop {
            let result = client
                .list_changes(&mut session, &plan.calendar, &position, window)
                .await;
            keep_rotated_token(runtime, id, &mut session).await;
            let page = result.map_err(|e| classify(&plan.calendar, e))?;
            let (completed_with, next) = match page.next {
                PageNext::More(token) => (None, Some(SyncPosition::Page(token))),
                PageNext::Complete(cursor) => (Some(cursor.0), None),
            };
            let fetched = FetchedPage {
                calendar: plan.calendar.clone(),
                full_round,
                changes: page.changes,
                calendar_zone: page.calendar_zone,
                completed_with,
            };
            record(actor, ConnectionCommand::RecordPage(fetched))
                .await
                .map_err(|e| {
                    (
                        FailureClass::Transient {
                            retry_after_ms: None,
                        },
                        "record".to_string(),
                        e,
                    )
                })?;
            match next {
                Some(p) => position = p,
                None => break,
            }
        }
    }
    Ok(())
}

fn classify(calendar: &CalendarId, error: ProviderError) -> Failure {
    let kind = error.kind().to_string();
    let message = error.to_string();
    let class = match &error {
        ProviderError::Reauthorize(_) => FailureClass::Reauthorize,
        ProviderError::ResyncRequired(_) => FailureClass::ResyncRequired {
            calendar: calendar.clone(),
        },
        other => FailureClass::Transient {
            retry_after_ms: other
                .retry_after()
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        },
    };
    (class, kind, message)
}
