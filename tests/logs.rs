//! Logs under real traffic: secrets never appear, and every line about a
//! connection carries its connection id (and the correlation id of the
//! input that caused it).
//!
//! The whole process logs at TRACE (calsync, reqwest, hyper, everything)
//! as JSON lines, the format `serve` uses off a terminal, into a buffer,
//! while Google and Microsoft connections save credentials, refresh and
//! rotate tokens, open push channels with per-channel secrets, receive
//! webhooks carrying those secrets, sync, and fail once. The tracing
//! subscriber is process-wide, so this binary holds ONE test.

use calsim::{FaultKind, FaultRule, Provider, SimConfig, Simulators};
use calsync::actors::runtime::{AllOpen, SyncRuntime};
use calsync::actors::{ActorSettings, Connections};
use calsync::core::backoff::BackoffPolicy;
use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::core::settings::{Actor, Flag, SettingsCommand};
use calsync::http::{self, AppState};
use calsync::providers::{AuthSession, ProviderEndpoints};
use calsync::settings::SettingsHandle;
use calsync::store::credentials::CredentialVault;
use calsync::testkit::TestDb;
use chrono::{Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Every log line of the process, as written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn capture_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    // The same shape as `calsync::cli::init_tracing` off a terminal.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || writer.clone())
        .json()
        .flatten_event(true)
        .try_init()
        .expect("this binary installs the only subscriber");
    captured
}

async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        // Poll interval: the condition is checked again right after.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn event(hour: i64) -> (String, String) {
    let start = Utc::now() + TimeDelta::days(2) + TimeDelta::hours(hour);
    (
        start.to_rfc3339(),
        (start + TimeDelta::minutes(30)).to_rfc3339(),
    )
}

async fn create(
    connections: &Connections,
    id: ConnectionId,
    provider: CalendarProvider,
    account: &str,
) {
    connections
        .command(
            id,
            ConnectionCommand::Create {
                platform_provider_id: PlatformProviderId::parse(format!("pp-{account}")).unwrap(),
                provider,
                account: ExternalAccount::parse(account).unwrap(),
                calendars: vec![CalendarId::parse("primary").unwrap()],
                destination_calendar: None,
            },
            Uuid::new_v4(),
        )
        .await
        .unwrap();
}

async fn count(db: &TestDb, sql: &str, id: ConnectionId) -> i64 {
    db.client()
        .await
        .query_one(sql, &[&id.as_uuid()])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_and_connection_lines_carry_their_ids() {
    let logs = capture_logs();
    let db = TestDb::new().await;
    let sim = Simulators::start(SimConfig::default()).await.unwrap();
    let settings = SettingsHandle::start(db.store(), Duration::from_millis(100))
        .await
        .unwrap();
    for flag in [Flag::SyncEnabled, Flag::JobsEnabled, Flag::WebhooksEnabled] {
        settings
            .apply(
                SettingsCommand::SetFlag {
                    flag,
                    enabled: true,
                    reason: "test".into(),
                },
                Actor::parse("test").unwrap(),
            )
            .await
            .unwrap();
    }
    let endpoints = ProviderEndpoints {
        google_api: sim.google_base_url(),
        google_token: sim.google_token_url(),
        graph_api: sim.graph_base_url(),
        graph_token: sim.graph_token_url("common"),
    };
    let vault = CredentialVault::random();
    let mut runtime =
        SyncRuntime::new(endpoints, vault.clone(), db.store(), Arc::new(AllOpen)).unwrap();
    runtime.policy.sync.backoff = BackoffPolicy {
        base: Duration::from_millis(300),
        cap: Duration::from_secs(2),
        ..BackoffPolicy::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    runtime.webhook_base = Some(format!("http://{}", listener.local_addr().unwrap()));
    let connections = Connections::start_with_sync(
        db.store(),
        ActorSettings::default(),
        Some(Arc::new(runtime)),
    )
    .await
    .unwrap();
    let state = AppState {
        connect: None,
        channels: Default::default(),
        store: db.store(),
        connections: connections.clone(),
        admin_token: Some("admin-token-not-a-provider-secret".into()),
        drills_enabled: false,
        settings: settings.clone(),
        webhooks: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, state, async {
        let _ = stopped.await;
    }));

    // Credentials saved the way the platform saves them.
    let google_account = sim.google().create_account("ana@example.com");
    let graph_account = sim.graph().create_account("bo@example.com");
    let google = ConnectionId::new_random();
    let graph = ConnectionId::new_random();
    for (id, client_id, client_secret, refresh_token) in [
        (
            google,
            &google_account.client_id,
            &google_account.client_secret,
            &google_account.refresh_token,
        ),
        (
            graph,
            &graph_account.client_id,
            &graph_account.client_secret,
            &graph_account.refresh_token,
        ),
    ] {
        let session = AuthSession {
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
            refresh_token: refresh_token.clone(),
            access_token: None,
            access_expires_at: None,
            refresh_token_rotated: false,
            access_token_refreshed: false,
        };
        vault.save(&db.store(), id, &session).await.unwrap();
    }
    create(
        &connections,
        google,
        CalendarProvider::Google,
        "ana@example.com",
    )
    .await;
    create(
        &connections,
        graph,
        CalendarProvider::Microsoft,
        "bo@example.com",
    )
    .await;

    // Push channels open (each with a fresh secret), then provider-side
    // changes arrive as webhooks carrying those secrets and are synced.
    let open = "SELECT count(*) FROM channels WHERE connection_id = $1 AND closed_at IS NULL";
    for id in [google, graph] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                count(&db, open, id).await == 1
            })
            .await,
            "no channel opened for {id}"
        );
    }
    // (Status shows the channel's expiry; this is the test with channels.)
    let status = calsync::store::status::load(&db.store(), Some(google.as_uuid()))
        .await
        .unwrap();
    assert_eq!(status[0].open_channels, 1);
    assert!(status[0].channel_expires_at.is_some_and(|t| t > Utc::now()));
    let (s, e) = event(9);
    sim.google()
        .upsert_event(
            "ana@example.com",
            "primary",
            json!({ "id": "evtlogs01", "summary": "dentist",
                    "start": {"dateTime": s}, "end": {"dateTime": e} }),
        )
        .unwrap();
    let (s, e) = event(11);
    sim.graph()
        .upsert_event(
            "bo@example.com",
            json!({ "id": "evtlogs02", "subject": "dentist",
                    "start": {"dateTime": s, "timeZone": "UTC"},
                    "end": {"dateTime": e, "timeZone": "UTC"} }),
        )
        .unwrap();
    let busy = "SELECT count(*) FROM busy_intervals WHERE connection_id = $1";
    for id in [google, graph] {
        assert!(
            eventually(Duration::from_secs(15), || async {
                count(&db, busy, id).await == 1
            })
            .await,
            "webhook never turned into busy time for {id}"
        );
    }
    let notified = "SELECT count(*) FROM events WHERE stream = 'connection-' || ($1::uuid)::text \
                    AND event_type = 'notification_accepted'";
    assert!(
        count(&db, notified, google).await >= 1,
        "no webhook reached google"
    );

    // One failing sync, so error paths log too.
    let outage = sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.list".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::Status {
            code: 503,
            retry_after: None,
            reason: Some("backendError".into()),
        },
        remaining: Some(1),
    });
    connections
        .command(
            google,
            ConnectionCommand::AcceptNotification {
                key: "google:logs:failure".into(),
                channel_id: "test-channel".into(),
            },
            Uuid::new_v4(),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            logs.text().contains("sync failed")
        })
        .await,
        "the failed sync was not logged"
    );
    sim.remove_fault(outage);

    // Every secret that passed through calsync: client secrets, refresh
    // tokens (the original ones and Microsoft's rotated one), access
    // tokens, channel tokens and subscription clientStates.
    let mut secrets: Vec<(String, String)> = vec![
        (
            "google client secret".into(),
            google_account.client_secret.clone(),
        ),
        (
            "google refresh token".into(),
            google_account.refresh_token.clone(),
        ),
        (
            "graph client secret".into(),
            graph_account.client_secret.clone(),
        ),
        (
            "graph refresh token".into(),
            graph_account.refresh_token.clone(),
        ),
    ];
    let rotated = vault.load(&db.store(), graph).await.unwrap().unwrap();
    secrets.push(("graph refresh token (stored)".into(), rotated.refresh_token));
    // Every access token the token endpoints handed out (Google's never
    // reaches the vault: it does not rotate, so the simulator is asked).
    let google_tokens = sim.google().access_tokens(&google_account.email);
    assert!(
        !google_tokens.is_empty(),
        "calsync never obtained a Google access token"
    );
    for access in google_tokens {
        secrets.push(("google access token".into(), access));
    }
    let graph_tokens = sim.graph().access_tokens(&graph_account.upn);
    assert!(!graph_tokens.is_empty());
    for access in graph_tokens {
        secrets.push(("graph access token".into(), access));
    }
    for channel in sim.google().channels() {
        secrets.push(("google channel token".into(), channel.token.unwrap()));
    }
    for subscription in sim.graph().subscriptions() {
        secrets.push((
            "graph clientState".into(),
            subscription.client_state.unwrap(),
        ));
    }
    let kinds: Vec<&str> = secrets.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kinds.contains(&"google channel token"), "{kinds:?}");
    assert!(kinds.contains(&"graph clientState"), "{kinds:?}");
    assert!(kinds.contains(&"graph access token"), "{kinds:?}");
    assert!(kinds.contains(&"google access token"), "{kinds:?}");

    drop(stop);
    connections.shutdown();
    // The whole run is in `logs` already: every line is written as it is
    // logged, and stopping logs nothing that carries a secret.
    let text = logs.text();
    assert!(text.lines().count() > 100, "too few log lines: {text}");
    // Positive control: the search does find what is logged.
    assert!(text.contains(&google.to_string()) && text.contains(&graph.to_string()));
    for (kind, secret) in &secrets {
        assert!(
            secret.len() >= 16,
            "{kind} too short to search for: {secret:?}"
        );
        // Also the secret's middle, in case a line truncates or wraps it.
        let middle = &secret[4..secret.len() - 4];
        assert!(
            !text.contains(middle),
            "{kind} appears in the logs: {}",
            text.lines()
                .find(|l| l.contains(middle))
                .unwrap_or_default()
        );
    }
    eprintln!(
        "checked {} log lines for {} secrets: {kinds:?}",
        text.lines().count(),
        secrets.len()
    );

    // Lines about a connection carry its id; inputs carry a correlation id.
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let about = |line: &Value, id: ConnectionId| -> bool {
        let id = id.to_string();
        line["connection_id"] == id.as_str()
            || line["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["connection_id"] == id.as_str()))
    };
    for line in &lines {
        let target = line["target"].as_str().unwrap_or_default();
        if target.starts_with("calsync::actors") {
            assert!(
                about(line, google) || about(line, graph),
                "actor log line without a connection id: {line}"
            );
        }
    }
    let failed = lines
        .iter()
        .find(|l| l["message"] == "sync failed" && about(l, google))
        .expect("the failed sync is logged with the connection id");
    let spans = failed["spans"].as_array().expect("span list");
    assert!(
        spans.iter().any(|s| s["correlation_id"].is_string()),
        "the failed sync carries the correlation id of the input that caused it: {failed}"
    );
    assert_eq!(failed["kind"], "unavailable", "{failed}");
}
