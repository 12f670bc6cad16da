//! `/metrics`, `/admin/status` and `calsync status` after real traffic:
//! simulated Google over HTTP, real PostgreSQL, connection actors syncing.
//!
//! The `metrics` recorder is process-wide, so this binary holds ONE test
//! and asserts deltas between two scrapes, never absolute counter values.

use calsim::{FaultKind, FaultRule, Provider, SimConfig, SimHandle, Simulators};
use calsync::actors::runtime::{AllOpen, SyncRuntime};
use calsync::actors::{ActorSettings, Connections};
use calsync::core::backoff::BackoffPolicy;
use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::http::{self, AppState};
use calsync::providers::{AuthSession, ProviderEndpoints};
use calsync::store::credentials::CredentialVault;
use calsync::testkit::TestDb;
use chrono::{Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const TOKEN: &str = "metrics-test-token";

struct World {
    db: TestDb,
    sim: SimHandle,
    connections: Connections,
    vault: CredentialVault,
    base: String,
    http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl World {
    async fn new() -> World {
        let db = TestDb::new().await;
        let sim = Simulators::start(SimConfig::default()).await.unwrap();
        let endpoints = ProviderEndpoints {
            google_api: sim.google_base_url(),
            google_token: sim.google_token_url(),
            graph_api: sim.graph_base_url(),
            graph_token: sim.graph_token_url("common"),
        };
        let vault = CredentialVault::random();
        let mut runtime =
            SyncRuntime::new(endpoints, vault.clone(), db.store(), Arc::new(AllOpen)).unwrap();
        // Short backoff so the failed sync is retried within the test.
        runtime.policy.sync.backoff = BackoffPolicy {
            base: Duration::from_millis(300),
            cap: Duration::from_secs(2),
            ..BackoffPolicy::default()
        };
        let connections = Connections::start_with_sync(
            db.store(),
            ActorSettings {
                restart_base_delay: Duration::from_millis(5),
                ..Default::default()
            },
            Some(Arc::new(runtime)),
        )
        .await
        .unwrap();
        let state = AppState {
            connect: None,
            channels: Default::default(),
            store: db.store(),
            connections: connections.clone(),
            admin_token: Some(TOKEN.into()),
            drills_enabled: false,
            settings: calsync::settings::SettingsHandle::start(
                db.store(),
                Duration::from_millis(250),
            )
            .await
            .unwrap(),
            webhooks: Default::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // The database gauges are refreshed in the background: often here.
        let limits = http::ServerLimits {
            metrics_refresh: Duration::from_millis(100),
            ..Default::default()
        };
        tokio::spawn(http::serve_with(listener, state, limits, async {
            let _ = rx.await;
        }));
        World {
            db,
            sim,
            connections,
            vault,
            base,
            http: reqwest::Client::new(),
            _shutdown: tx,
        }
    }

    async fn google_connection(&self, email: &str) -> ConnectionId {
        let account = self.sim.google().create_account(email);
        let session = AuthSession {
            client_id: account.client_id,
            client_secret: account.client_secret,
            refresh_token: account.refresh_token,
            access_token: None,
            access_expires_at: None,
            refresh_token_rotated: false,
            access_token_refreshed: false,
        };
        let id = ConnectionId::new_random();
        self.vault
            .save(&self.db.store(), id, &session)
            .await
            .unwrap();
        self.connections
            .command(
                id,
                ConnectionCommand::Create {
                    platform_provider_id: PlatformProviderId::parse(format!("pp-{email}")).unwrap(),
                    provider: CalendarProvider::Google,
                    account: ExternalAccount::parse(email).unwrap(),
                    calendars: vec![CalendarId::parse("primary").unwrap()],
                    destination_calendar: None,
                },
                Uuid::new_v4(),
            )
            .await
            .unwrap();
        id
    }

    async fn notify(&self, id: ConnectionId, key: &str) -> bool {
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

    async fn busy_count(&self, id: ConnectionId) -> i64 {
        let client = self.db.client().await;
        client
            .query_one(
                "SELECT count(*) FROM busy_intervals WHERE connection_id = $1",
                &[&id.as_uuid()],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn status(&self, id: ConnectionId) -> String {
        let client = self.db.client().await;
        client
            .query_one(
                "SELECT status FROM connections WHERE connection_id = $1",
                &[&id.as_uuid()],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn scrape(&self) -> Scrape {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        Scrape(resp.text().await.unwrap())
    }

    async fn admin_status(&self) -> Value {
        let resp = self
            .http
            .get(format!("{}/admin/status", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

/// Polls `check` until it holds or `within` passes.
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

/// One rendered scrape; series are looked up by their exact text.
struct Scrape(String);

impl Scrape {
    /// The value of `series` (`name{label="v",…}` exactly as rendered), 0
    /// when absent (a counter never incremented is not rendered).
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.0.lines().any(|line| {
            line.strip_prefix(series)
                .is_some_and(|r| r.starts_with(' '))
        })
    }
}

fn google_event(id: &str, hour: i64) -> Value {
    let start = Utc::now() + TimeDelta::days(2) + TimeDelta::hours(hour);
    let end = start + TimeDelta::minutes(30);
    json!({ "id": id, "summary": "dentist",
            "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": end.to_rfc3339()} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_status_shows_the_connection() {
    let w = World::new().await;
    let before = w.scrape().await;

    // A connection whose first sync brings one busy interval.
    let id = w.google_connection("metrics@example.com").await;
    w.sim
        .google()
        .upsert_event(
            "metrics@example.com",
            "primary",
            google_event("evtmetrics1", 9),
        )
        .unwrap();
    assert!(!w.notify(id, "google:m:1").await, "first notification");
    assert!(w.notify(id, "google:m:1").await, "replayed notification");
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy_count(id).await == 1 && w.status(id).await == "active"
        })
        .await,
        "first sync never completed"
    );

    // One injected 503: exactly one failed sync, then the backoff timer's
    // retry succeeds.
    w.sim
        .google()
        .upsert_event(
            "metrics@example.com",
            "primary",
            google_event("evtmetrics2", 11),
        )
        .unwrap();
    let outage = w.sim.add_fault(FaultRule {
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
    assert!(!w.notify(id, "google:m:2").await);
    assert!(
        eventually(Duration::from_secs(15), || async {
            w.busy_count(id).await == 2 && w.status(id).await == "active"
        })
        .await,
        "never recovered from the 503"
    );
    w.sim.remove_fault(outage);

    // One kill: one restart.
    assert!(w.connections.kill(id));
    assert!(
        eventually(Duration::from_secs(5), || async {
            w.connections.restarts_of(id) == 1 && w.connections.is_active(id)
        })
        .await,
        "killed actor not restarted"
    );

    let after = w.scrape().await;
    let delta = |series: &str| after.value(series) - before.value(series);
    assert!(
        delta(r#"calsync_events_appended_total{stream_kind="connection"}"#) >= 5.0,
        "create, 2 notifications, pages, failure: {}",
        after.0
    );
    assert!(delta(r#"calsync_append_duration_seconds_count{stream_kind="connection"}"#) >= 4.0);
    assert_eq!(
        delta(r#"calsync_notifications_total{provider="google",result="accepted"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"calsync_notifications_total{provider="google",result="duplicate"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"calsync_syncs_failed_total{provider="google",kind="unavailable"}"#),
        1.0,
        "{}",
        after.0
    );
    let started = delta(r#"calsync_syncs_started_total{provider="google"}"#);
    let succeeded = delta(r#"calsync_syncs_succeeded_total{provider="google"}"#);
    assert!(started >= 3.0, "initial, failed, retried: {started}");
    assert!(succeeded >= 2.0, "{succeeded}");
    assert!(
        delta(r#"calsync_sync_duration_seconds_count{provider="google",result="failed"}"#) == 1.0
    );
    assert!(delta(r#"calsync_webhook_to_busy_seconds_count{provider="google"}"#) >= 1.0);
    assert_eq!(delta("calsync_actor_restarts_total"), 1.0);
    assert_eq!(delta("calsync_actor_quarantines_total"), 0.0);

    // State gauges are read in the background from this test's database.
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.scrape()
                .await
                .value(r#"calsync_connections{status="active"}"#)
                == 1.0
        })
        .await
    );
    let after = w.scrape().await;
    assert_eq!(after.value(r#"calsync_connections{status="active"}"#), 1.0);
    assert_eq!(after.value(r#"calsync_connections{status="backoff"}"#), 0.0);
    assert!(after.value(r#"calsync_actors{state="running"}"#) >= 1.0);
    assert_eq!(after.value("calsync_calendars_never_synced"), 0.0);
    assert!(after.has(r#"calsync_flag_enabled{flag="sync_enabled"}"#));
    assert!(after.has("calsync_production_mode"));
    assert!(after.has("calsync_channel_expiry_horizon_seconds"));
    assert!(after
        .0
        .contains("# TYPE calsync_sync_duration_seconds histogram"));
    // No connection id ever becomes a label.
    assert!(
        !after.0.contains(&id.to_string()),
        "connection id in /metrics"
    );
    promtool_check_metrics(&after.0);

    // The admin status shows the same connection with its actor view.
    let status = w.admin_status().await;
    let row = status["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["connection_id"] == json!(id.as_uuid()))
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(row["status"], "active", "{row}");
    assert_eq!(row["error_count"], 0, "{row}");
    // The one failure was the injected 503 on the calendar's listing: it
    // stays the connection's last error (with its time) after recovery.
    let failed: Vec<Value> = {
        let client = w.db.client().await;
        client
            .query(
                "SELECT payload::text FROM events WHERE stream = $1 \
                 AND event_type = 'calendar_sync_failed'",
                &[&id.stream().as_str()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect()
    };
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["kind"], "unavailable", "{failed:?}");
    assert_eq!(
        row["last_error"],
        "primary: unavailable: provider unavailable: backendError: \
         The service is currently unavailable.",
        "{row}"
    );
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    // (PostgreSQL keeps microseconds.)
    assert_eq!(
        at(&row["last_error_at"]).timestamp_micros(),
        at(&failed[0]["at"]).timestamp_micros(),
        "{row}"
    );
    // The calendar shows the same error, without the calendar prefix, and
    // is healthy again.
    let cal = &row["calendars"][0];
    assert_eq!(
        cal["last_error"],
        "unavailable: provider unavailable: backendError: \
         The service is currently unavailable.",
        "{row}"
    );
    assert_eq!(cal["last_error_at"], row["last_error_at"], "{row}");
    assert_eq!(
        (&cal["status"], &cal["failures"]),
        (&json!("ok"), &json!(0)),
        "{row}"
    );
    assert_eq!(row["actor"]["restarts"], 1, "{row}");
    assert_eq!(row["actor"]["active"], true, "{row}");
    assert!(row["actor"]["incarnation"].as_u64().unwrap() >= 2, "{row}");
    let calendar = &row["calendars"][0];
    assert_eq!(calendar["calendar_id"], "primary", "{row}");
    assert!(calendar["last_success_at"].is_string(), "{row}");
    assert!(
        calendar["cursor_age_seconds"].as_i64().unwrap() >= 0,
        "{row}"
    );
    assert!(status["actors"]["restarts"].as_u64().unwrap() >= 1);

    // The CLI reads the same rows from the database alone.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["status", "--json"])
        .env("DATABASE_URL", w.db.url())
        .env("CALSYNC_LOG_FORMAT", "text")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["connections"][0]["connection_id"], json!(id.as_uuid()));
    assert_eq!(cli["connections"][0]["status"], "active");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["status"])
        .env("DATABASE_URL", w.db.url())
        .env("CALSYNC_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&id.to_string()), "{table}");
    assert!(table.contains("1 connection(s) — active: 1"), "{table}");
}

/// `promtool check metrics` on the scrape; a missing promtool is installed
/// (`ops/install-promtool.sh`) or fails the test.
fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new(calsync::testkit::promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!(
            "promtool is not on PATH ({e}): install it (`.ci/run` unpacks /usr/bin/promtool \
             from Debian's `prometheus` package into /usr/local/bin)"
        )
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 3 for lint findings (naming advice) and 1 for errors;
    // only a parse error is a failure of ours.
    assert!(
        !report.contains("error while linting") && out.status.code() != Some(1),
        "promtool check metrics: {report}"
    );
    eprintln!("promtool check metrics ran: {}", report.trim());
}

/// The real binary: `/metrics` answers without the admin token, with the
/// recorder installed at start-up and the state gauges read from the
/// database. (A separate process: this binary's recorder is untouched.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exposes_metrics_without_a_token() {
    let db = TestDb::new().await;
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", db.url())
        .env("CALSYNC_ADMIN_TOKEN", "closed-to-scrapers")
        // 32 zero bytes: an external database needs a configured key.
        .env(
            "CALSYNC_CREDENTIALS_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env_remove("CALSYNC_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _serve = KillOnDrop(child);
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut body = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while body.is_none() && std::time::Instant::now() < deadline {
        if let Ok(r) = client.get(&url).send().await {
            assert_eq!(r.status(), 200, "no token needed for /metrics");
            body = Some(Scrape(r.text().await.unwrap()));
        } else {
            // Poll interval: the server is asked again right after.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let scrape = body.unwrap_or_else(|| {
        panic!(
            "serve never answered /metrics: {}",
            std::fs::read_to_string(stderr.path()).unwrap_or_default()
        )
    });
    assert!(
        scrape.has(&format!(
            r#"calsync_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        scrape.0
    );
    assert_eq!(scrape.value(r#"calsync_connections{status="active"}"#), 0.0);
    assert!(scrape.has(r#"calsync_connections{status="active"}"#));
    assert!(scrape.has(r#"calsync_flag_enabled{flag="webhooks_enabled"}"#));
    assert!(scrape.has(r#"calsync_actors{state="running"}"#));
}
