//! One harness for end-to-end tests: a fresh database, the provider
//! simulators on loopback, connection actors that sync against them, and
//! (optionally) calsync's HTTP server so the simulators deliver webhooks to
//! it for real.

#![allow(dead_code)] // each test binary uses a different part

pub mod evidence;
pub mod fixtures;

#[allow(unused_imports)] // not every test binary uses each
pub use evidence::{wait_for, Logged, DEADLINE};

use calsim::{SimConfig, SimHandle, Simulators};
use calsync::actors::runtime::{AllOpen, Gates, SyncRuntime};
use calsync::actors::{ActorSettings, Connections};
use calsync::core::backoff::BackoffPolicy;
use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::core::outbound::CancelMode;
use calsync::core::settings::{Actor, Flag, SettingsCommand};
use calsync::http::{self, AppState};
use calsync::providers::{AuthSession, ProviderEndpoints};
use calsync::settings::SettingsHandle;
use calsync::store::credentials::CredentialVault;
use calsync::testkit::TestDb;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub struct World {
    pub db: TestDb,
    pub sim: SimHandle,
    pub connections: Connections,
    pub vault: CredentialVault,
    pub settings: SettingsHandle,
    /// calsync's own base URL when served.
    pub base: Option<String>,
    /// calsync's clock when it is moved with the simulator's
    /// (`Options::virtual_clock`).
    pub clock: Option<Arc<calsync::ports::OffsetClock>>,
    _shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Default)]
pub struct Options {
    /// Run calsync's HTTP server (webhooks) and open push channels.
    pub serve: bool,
    /// Gates from the settings stream (flags start ON) instead of all-open.
    pub flag_gates: bool,
    pub sim: SimConfig,
    pub actors: ActorSettings,
    /// Periodic poll interval (default: the production 15 minutes).
    pub poll_every: Option<chrono::Duration>,
    /// What cancelled bookings do to their events (default: delete).
    pub on_cancel: CancelMode,
    /// What bookings' events changed in the calendar lead to (default:
    /// notify).
    pub on_external_change: calsync::core::external_change::ExternalChangePolicy,
    /// calsync's clock moves with the simulator's ([`World::advance`]), so
    /// tests can run hours of provider time in seconds.
    pub virtual_clock: bool,
    /// The backoff policy (default: 300 ms doubling to 2 s, so tests of
    /// failures run in seconds; production's for tests over virtual hours).
    pub backoff: Option<BackoffPolicy>,
    /// The credentials vault (default: a random key).
    pub vault: Option<CredentialVault>,
    /// calsync (actors, settings, HTTP) connects as this least-privilege
    /// role, created by `calsync migrate`'s grants; the test's own helpers
    /// keep the owner's connection.
    pub runtime_role: Option<String>,
}

impl World {
    /// One call to the served API as the admin (`Options::serve`): the
    /// status and the body as JSON (a non-JSON body comes back as a JSON
    /// string, so an error page still shows in a failed assertion).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let base = self
            .base
            .clone()
            .expect("the world serves HTTP (Options::serve)");
        let mut request = reqwest::Client::new()
            .request(
                method.parse().expect("an HTTP method"),
                format!("{base}{path}"),
            )
            .bearer_auth("admin");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a readable body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn new() -> World {
        World::start(Options::default()).await
    }

    pub async fn start(options: Options) -> World {
        // RUST_LOG=calsync=debug shows the system's logs under test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
            )
            .with_test_writer()
            .try_init();
        let db = TestDb::new().await;
        let store = match &options.runtime_role {
            Some(role) => {
                let role = calsync::store::migrate::RuntimeRole::parse(role).unwrap();
                calsync::store::migrate::grant_runtime_role(&db.client().await, &role)
                    .await
                    .unwrap();
                db.store_as(role.as_str())
            }
            None => db.store(),
        };
        let sim = Simulators::start(options.sim).await.unwrap();
        let settings = SettingsHandle::start(store.clone(), Duration::from_millis(100))
            .await
            .unwrap();
        if options.flag_gates {
            for flag in [Flag::SyncEnabled, Flag::JobsEnabled, Flag::WebhooksEnabled] {
                set_flag(&settings, flag, true).await;
            }
        }
        let endpoints = ProviderEndpoints {
            google_api: sim.google_base_url(),
            google_token: sim.google_token_url(),
            graph_api: sim.graph_base_url(),
            graph_token: sim.graph_token_url("common"),
        };
        let vault = options.vault.unwrap_or_else(CredentialVault::random);
        let gates: Arc<dyn Gates> = if options.flag_gates {
            Arc::new(settings.clone())
        } else {
            Arc::new(AllOpen)
        };
        let mut runtime = SyncRuntime::new(endpoints, vault.clone(), store.clone(), gates).unwrap();
        // Short backoff so tests run in seconds; the same policy code.
        runtime.policy.sync.backoff = options.backoff.unwrap_or(BackoffPolicy {
            base: Duration::from_millis(300),
            cap: Duration::from_secs(2),
            ..BackoffPolicy::default()
        });
        runtime.policy.sync.on_cancel = options.on_cancel;
        runtime.policy.sync.on_external_change = options.on_external_change;
        let clock = options.virtual_clock.then(calsync::ports::OffsetClock::new);
        if let Some(clock) = &clock {
            runtime.set_clock(clock.clone());
        }
        if let Some(poll) = options.poll_every {
            runtime.policy.poll_every = poll;
        }
        let listener = if options.serve {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            runtime.webhook_base = Some(format!("http://{}", l.local_addr().unwrap()));
            Some(l)
        } else {
            None
        };
        let base = runtime.webhook_base.clone();
        let connections =
            Connections::start_with_sync(store.clone(), options.actors, Some(Arc::new(runtime)))
                .await
                .unwrap();
        let shutdown = listener.map(|listener| {
            let state = AppState {
                connect: Some(Arc::new(connect_setup(&sim, base.as_deref().unwrap_or("")))),
                channels: Default::default(),
                store: store.clone(),
                connections: connections.clone(),
                admin_token: Some("admin".into()),
                drills_enabled: true,
                settings: settings.clone(),
                webhooks: Default::default(),
            };
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(http::serve(listener, state, async {
                let _ = rx.await;
            }));
            tx
        });
        World {
            db,
            sim,
            connections,
            vault,
            settings,
            base,
            clock,
            _shutdown: shutdown,
        }
    }

    /// Moves the simulator's clock and calsync's (virtual_clock) by `by`,
    /// has every actor plan, and waits until `ids` are quiet again.
    pub async fn advance(&self, by: chrono::Duration, ids: &[ConnectionId]) {
        self.sim.advance_clock(by);
        if let Some(clock) = &self.clock {
            clock.advance(by);
        }
        self.connections.wake_all();
        self.settle(ids).await;
    }

    /// Waits until none of `ids` runs a task (the evidence that the last
    /// plan of each started nothing).
    pub async fn settle(&self, ids: &[ConnectionId]) {
        for id in ids {
            assert!(
                eventually(Duration::from_secs(20), || async {
                    self.connections.quiet(*id).await.unwrap_or(false)
                })
                .await,
                "connection {id} never settled"
            );
        }
    }

    /// The log's newest position: "after this" for [`World::wait_for_event`].
    pub async fn log_head(&self) -> i64 {
        evidence::log_head(&self.db).await
    }

    /// Waits for the first `event_type` on `id`'s stream after `after`.
    pub async fn wait_for_event(&self, id: ConnectionId, event_type: &str, after: i64) -> Logged {
        evidence::wait_for_event(&self.db, Some(id), event_type, after).await
    }

    /// `event_type` events on `id`'s stream after `after`.
    pub async fn events_after(
        &self,
        id: ConnectionId,
        event_type: &str,
        after: i64,
    ) -> Vec<Logged> {
        evidence::events_after(&self.db, Some(id), event_type, after).await
    }

    /// Waits for a completed sync round of `id` after `after`.
    pub async fn wait_for_round(&self, id: ConnectionId, after: i64) -> Logged {
        self.wait_for_event(id, "sync_round_completed", after).await
    }

    /// The simulator's newest request sequence number.
    pub fn request_head(&self) -> u64 {
        evidence::request_head(&self.sim)
    }

    /// Brings `id` (of `account`) to rest and proves it: a fresh
    /// notification, then a sync read of `account` that *started* after it
    /// (so it covers everything before it and no follow-up is owed), then
    /// the actor quiet (that read's round is done). Returns the log head.
    /// The positive marker every "nothing else happened" assertion needs.
    pub async fn at_rest(&self, id: ConnectionId, account: &str) -> i64 {
        let since = self.sim.now();
        let seq = self.request_head();
        let key = format!("rest:{}", Uuid::new_v4());
        assert!(!self.notify(id, &key).await, "a fresh key is no duplicate");
        evidence::wait_for_request(
            &self.sim,
            &format!("a sync read of {account} started after the marker notification"),
            seq,
            |r| {
                evidence::is_sync_read(r)
                    && r.at >= since
                    && r.account
                        .as_deref()
                        .is_some_and(|a| a.eq_ignore_ascii_case(account))
            },
        )
        .await;
        self.settle(&[id]).await;
        self.log_head().await
    }

    /// calsync's now (the simulator's when the clocks move together).
    pub fn now(&self) -> DateTime<Utc> {
        match &self.clock {
            Some(clock) => calsync::ports::Clock::now(clock.as_ref()),
            None => Utc::now(),
        }
    }

    pub async fn google_connection(&self, email: &str) -> ConnectionId {
        let account = self.sim.google().create_account(email);
        let session = session(
            account.client_id,
            account.client_secret,
            account.refresh_token,
        );
        self.connect(CalendarProvider::Google, email, session).await
    }

    pub async fn graph_connection(&self, upn: &str) -> ConnectionId {
        self.graph_connection_in(upn, "UTC").await
    }

    /// A Graph connection whose mailbox is in `zone` (what
    /// `mailboxSettings.timeZone` answers: a Windows or IANA name).
    pub async fn graph_connection_in(&self, upn: &str, zone: &str) -> ConnectionId {
        let account = self.sim.graph().create_account_in(upn, zone);
        let session = session(
            account.client_id,
            account.client_secret,
            account.refresh_token,
        );
        self.connect(CalendarProvider::Microsoft, upn, session)
            .await
    }

    /// A connection of `account` (created in the simulator if new) to the
    /// platform provider `pp`, blocking time from `calendars` and writing
    /// bookings to `destination` (several connections may share `pp`).
    pub async fn connect_calendars(
        &self,
        provider: CalendarProvider,
        account: &str,
        pp: &str,
        calendars: &[&str],
        destination: Option<&str>,
    ) -> ConnectionId {
        let (client_id, client_secret, refresh_token) = match provider {
            CalendarProvider::Google => {
                let a = self.sim.google().create_account(account);
                (a.client_id, a.client_secret, a.refresh_token)
            }
            CalendarProvider::Microsoft => {
                let a = self.sim.graph().create_account(account);
                (a.client_id, a.client_secret, a.refresh_token)
            }
        };
        let id = ConnectionId::new_random();
        self.vault
            .save(
                &self.db.store(),
                id,
                &session(client_id, client_secret, refresh_token),
            )
            .await
            .unwrap();
        self.connections
            .command(
                id,
                ConnectionCommand::Create {
                    platform_provider_id: PlatformProviderId::parse(pp).unwrap(),
                    provider,
                    account: ExternalAccount::parse(account).unwrap(),
                    calendars: calendars
                        .iter()
                        .map(|c| CalendarId::parse(*c).unwrap())
                        .collect(),
                    destination_calendar: destination.map(|d| CalendarId::parse(d).unwrap()),
                },
                Uuid::new_v4(),
            )
            .await
            .unwrap();
        id
    }

    /// Applies a settings change (flags, production mode, allowlists).
    pub async fn settings_command(&self, command: SettingsCommand) {
        self.settings
            .apply(command, Actor::parse("test").unwrap())
            .await
            .unwrap();
    }

    async fn connect(
        &self,
        provider: CalendarProvider,
        account: &str,
        session: AuthSession,
    ) -> ConnectionId {
        let id = ConnectionId::new_random();
        self.vault
            .save(&self.db.store(), id, &session)
            .await
            .unwrap();
        self.connections
            .command(
                id,
                ConnectionCommand::Create {
                    platform_provider_id: PlatformProviderId::parse(format!("pp-{account}"))
                        .unwrap(),
                    provider,
                    account: ExternalAccount::parse(account).unwrap(),
                    calendars: vec![CalendarId::parse("primary").unwrap()],
                    destination_calendar: Some(CalendarId::parse("primary").unwrap()),
                },
                Uuid::new_v4(),
            )
            .await
            .unwrap();
        id
    }

    /// Delivers a notification straight to the actor (as the edge would
    /// after authenticating it); true if it was a duplicate.
    pub async fn notify(&self, id: ConnectionId, key: &str) -> bool {
        self.connections
            .command(
                id,
                ConnectionCommand::AcceptNotification {
                    key: key.into(),
                    channel_id: "test-channel".into(),
                },
                Uuid::new_v4(),
            )
            .await
            .unwrap()
            .duplicate
    }

    pub async fn busy(&self, id: ConnectionId) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
        let client = self.db.client().await;
        client
            .query(
                "SELECT external_event_id, starts_at, ends_at FROM busy_intervals \
                 WHERE connection_id = $1 ORDER BY starts_at",
                &[&id.as_uuid()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    pub async fn status(&self, id: ConnectionId) -> (String, i32, Option<DateTime<Utc>>) {
        let client = self.db.client().await;
        let row = client
            .query_one(
                "SELECT status, error_count, backoff_until FROM connections WHERE connection_id = $1",
                &[&id.as_uuid()],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    }

    /// How many events of `event_type` a connection's stream holds.
    pub async fn count_events(&self, id: ConnectionId, event_type: &str) -> i64 {
        let client = self.db.client().await;
        client
            .query_one(
                "SELECT count(*) FROM events WHERE stream = $1 AND event_type = $2",
                &[&id.stream().as_str(), &event_type],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn total_events(&self) -> i64 {
        let client = self.db.client().await;
        client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Notifications accepted on any stream (what a webhook request writes).
    pub async fn notifications_logged(&self) -> i64 {
        let client = self.db.client().await;
        client
            .query_one(
                "SELECT count(*) FROM events WHERE event_type = 'notification_accepted'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub fn provider_calls(&self, endpoint: &str) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    pub async fn set_flag(&self, flag: Flag, on: bool) {
        set_flag(&self.settings, flag, on).await;
    }
}

async fn set_flag(settings: &SettingsHandle, flag: Flag, enabled: bool) {
    settings
        .apply(
            SettingsCommand::SetFlag {
                flag,
                enabled,
                reason: "test".into(),
            },
            Actor::parse("test").unwrap(),
        )
        .await
        .unwrap();
}

fn session(client_id: String, client_secret: String, refresh_token: String) -> AuthSession {
    AuthSession {
        client_id,
        client_secret,
        refresh_token,
        access_token: None,
        access_expires_at: None,
        refresh_token_rotated: false,
        access_token_refreshed: false,
    }
}

/// Polls `check` until it holds or `within` passes.
/// The OAuth connect flow's apps, registered in the simulators: Google
/// `connect-g` / `connect-g-secret`, Microsoft `connect-m` /
/// `connect-m-secret` (tenant `common`); the redirect URIs on `base`.
pub fn connect_setup(sim: &SimHandle, base: &str) -> http::connect::ConnectSetup {
    sim.google().register_app("connect-g", "connect-g-secret");
    sim.graph().register_app("connect-m", "connect-m-secret");
    let app = |id: &str, authorize: String, token: String, api: String| http::connect::ConnectApp {
        client_id: id.into(),
        client_secret: format!("{id}-secret"),
        scopes: vec!["calendar".into()],
        authorize_url: authorize,
        token_url: token,
        api_base: api,
    };
    http::connect::ConnectSetup::new(
        base,
        Some(app(
            "connect-g",
            sim.google_authorize_url(),
            sim.google_token_url(),
            sim.google_base_url(),
        )),
        Some(app(
            "connect-m",
            sim.graph_authorize_url("common"),
            sim.graph_token_url("common"),
            sim.graph_base_url(),
        )),
    )
}

pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        evidence::poll_pause().await;
    }
    false
}

/// Midnight UTC `days` from today: a day whose slots are all in the future.
pub fn midnight_in_days(days: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        + chrono::TimeDelta::days(days)
}
