//! Feature flags and allowlists on real PostgreSQL: defaults, propagation
//! between nodes (two handles on one database), the CLI, the admin API, the
//! audit trail and concurrent writers.

use calsync::actors::{ActorSettings, Connections};
use calsync::core::ids::{CalendarProvider, ConnectionId, StreamName};
use calsync::core::settings::{
    webhook_gate, Actor, Flag, Refusal, SettingsCommand, SettingsEvent, SettingsState,
};
use calsync::http::{self, AppState};
use calsync::settings::SettingsHandle;
use calsync::store::EventStore;
use calsync::testkit::TestDb;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const REFRESH: Duration = Duration::from_millis(250);
/// Guarantee 6: a change is in force on every node within a second.
const PROPAGATION: Duration = Duration::from_secs(1);

fn actor(name: &str) -> Actor {
    Actor::parse(name).unwrap()
}

fn set_flag(flag: Flag, enabled: bool, reason: &str) -> SettingsCommand {
    SettingsCommand::SetFlag {
        flag,
        enabled,
        reason: reason.into(),
    }
}

/// Polls `handle` until `ok` holds, failing after `within`. Returns how long
/// it took.
async fn eventually(
    handle: &SettingsHandle,
    within: Duration,
    ok: impl Fn(&SettingsState) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if ok(&handle.current()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not visible within {within:?}: {:?}",
            handle.current()
        );
        // Poll interval: the condition is checked again right after.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn settings_events(db: &TestDb) -> Vec<(u64, SettingsEvent)> {
    let stored = db
        .store()
        .read_stream(&StreamName::settings(), 1, 10_000)
        .await
        .unwrap();
    stored
        .iter()
        .map(|r| {
            let payload = serde_json::from_str(&r.payload).unwrap();
            let event =
                SettingsEvent::from_parts(&r.event_type, r.schema_version, payload).unwrap();
            (r.version, event)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_default_off_and_every_gate_refuses() {
    let db = TestDb::new().await;
    let settings = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let state = settings.current();
    assert_eq!(state.version, 0);
    for flag in Flag::ALL {
        assert!(!state.enabled(flag), "{flag} must default to off");
    }
    assert!(!state.production());
    // Every gate of the settings refuses, for both providers: the edge's
    // three flag gates, the core's gate before each kind of provider call
    // (with and without a public URL), and the background sweeps.
    use calsync::core::gate::{admit, background_allowed, settings_gate, Call, GateView, Wait};
    use calsync::core::settings::{jobs_gate, sync_gate};
    for provider in [CalendarProvider::Google, CalendarProvider::Microsoft] {
        let connection = ConnectionId::new_random();
        assert_eq!(
            webhook_gate(&state, provider, connection),
            Err(Refusal::WebhooksDisabled)
        );
        assert_eq!(
            sync_gate(&state, provider, connection),
            Err(Refusal::SyncDisabled)
        );
        assert_eq!(
            jobs_gate(&state, provider, connection),
            Err(Refusal::JobsDisabled)
        );
        for public_url in [false, true] {
            let view = GateView::new(&state, provider, connection, public_url);
            assert!(!view.channels_wanted());
            for call in Call::ALL {
                assert_eq!(
                    settings_gate(&view, call),
                    Err(Wait::SyncDisabled),
                    "{provider:?} {call:?} public_url={public_url}"
                );
                // An active, healthy connection changes nothing.
                let active = calsync::core::state::ConnectionState::default().fold(&[
                    calsync::core::events::ConnectionEvent::ConnectionCreated {
                        platform_provider_id: calsync::core::ids::PlatformProviderId::parse("p")
                            .unwrap(),
                        provider,
                        account: calsync::core::ids::ExternalAccount::parse("a@example.com")
                            .unwrap(),
                        calendars: vec![calsync::core::ids::CalendarId::parse("primary").unwrap()],
                        destination_calendar: None,
                    },
                ]);
                assert_eq!(
                    admit(&view, &active, call, chrono::Utc::now()),
                    Err(Wait::SyncDisabled),
                    "{provider:?} {call:?} public_url={public_url}"
                );
            }
        }
    }
    assert!(!background_allowed(&state));
    // With only sync on, the other gates still refuse each for its own flag.
    settings
        .apply(set_flag(Flag::SyncEnabled, true, "test"), actor("ops:ana"))
        .await
        .unwrap();
    let state = settings.current();
    let connection = ConnectionId::new_random();
    assert_eq!(
        sync_gate(&state, CalendarProvider::Google, connection),
        Ok(())
    );
    assert_eq!(
        jobs_gate(&state, CalendarProvider::Google, connection),
        Err(Refusal::JobsDisabled)
    );
    assert_eq!(
        webhook_gate(&state, CalendarProvider::Google, connection),
        Err(Refusal::WebhooksDisabled)
    );
    let view = GateView::new(&state, CalendarProvider::Google, connection, true);
    assert_eq!(settings_gate(&view, Call::Poll), Err(Wait::JobsDisabled));
    assert_eq!(
        settings_gate(&view, Call::ChannelUpkeep),
        Err(Wait::WebhooksDisabled)
    );
    assert!(!background_allowed(&state));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_is_in_force_on_another_within_a_second() {
    let db = TestDb::new().await;
    let node_a = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let node_b = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let changes = node_b.subscribe();

    let applied = node_a
        .apply(
            set_flag(Flag::WebhooksEnabled, true, "launch"),
            actor("ops:ana"),
        )
        .await
        .unwrap();
    assert_eq!((applied.version, applied.appended), (1, 1));
    assert!(
        node_a.current().enabled(Flag::WebhooksEnabled),
        "the writer sees its change at once"
    );
    eventually(&node_b, PROPAGATION, |s| s.enabled(Flag::WebhooksEnabled)).await;
    assert!(changes.has_changed().unwrap(), "subscribers are notified");

    // And back off again, from the other node.
    node_b
        .apply(
            set_flag(Flag::WebhooksEnabled, false, "incident"),
            actor("ops:bo"),
        )
        .await
        .unwrap();
    eventually(&node_a, PROPAGATION, |s| {
        !s.enabled(Flag::WebhooksEnabled) && s.version == 2
    })
    .await;

    // Repeating a change appends nothing.
    let again = node_a
        .apply(
            set_flag(Flag::WebhooksEnabled, false, "again"),
            actor("ops:ana"),
        )
        .await
        .unwrap();
    assert_eq!((again.version, again.appended), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_node_still_applies_what_was_asked() {
    // Node B polls rarely, so its view is stale when it is asked to turn a
    // flag on that node A just turned off: it must catch up and append.
    let db = TestDb::new().await;
    let node_a = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let node_b = SettingsHandle::start(db.store(), Duration::from_secs(3600))
        .await
        .unwrap();
    node_b
        .apply(set_flag(Flag::SyncEnabled, true, ""), actor("b"))
        .await
        .unwrap();
    eventually(&node_a, PROPAGATION, |s| s.enabled(Flag::SyncEnabled)).await;
    node_a
        .apply(set_flag(Flag::SyncEnabled, false, ""), actor("a"))
        .await
        .unwrap();
    assert!(node_b.current().enabled(Flag::SyncEnabled), "b is stale");
    let applied = node_b
        .apply(set_flag(Flag::SyncEnabled, true, ""), actor("b"))
        .await
        .unwrap();
    assert_eq!((applied.version, applied.appended), (3, 1));
    eventually(&node_a, PROPAGATION, |s| s.enabled(Flag::SyncEnabled)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_flags_and_allowlists_and_a_running_node_sees_them() {
    let db = TestDb::new().await;
    let node = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(args)
            .env("DATABASE_URL", db.url())
            .env("CALSYNC_LOG_FORMAT", "text")
            .env("CALSYNC_ACTOR", "ops:cli-test")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "calsync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    run(&[
        "flags",
        "set",
        "sync_enabled",
        "on",
        "--reason",
        "pilot week",
    ]);
    eventually(&node, PROPAGATION, |s| s.enabled(Flag::SyncEnabled)).await;
    let listed = run(&["flags", "list"]);
    assert!(listed.contains("sync_enabled"), "{listed}");
    assert!(listed.contains("pilot week"), "{listed}");
    let again = run(&["flags", "set", "sync", "on"]);
    assert!(again.contains("nothing changed"), "{again}");

    let id = ConnectionId::new_random();
    run(&["flags", "production", "on"]);
    run(&["allowlist", "add", "--provider", "microsoft"]);
    run(&["allowlist", "add", "--connection", &id.to_string()]);
    eventually(&node, PROPAGATION, |s| {
        s.production()
            && s.provider_allowlisted(CalendarProvider::Microsoft)
            && s.connection_allowlisted(id)
    })
    .await;
    let listed: Value = serde_json::from_str(&run(&["allowlist", "list", "--json"])).unwrap();
    assert_eq!(listed["enforced"], true);
    assert_eq!(listed["providers"][0]["provider"], "microsoft");
    assert_eq!(listed["connections"][0]["connection_id"], id.to_string());
    run(&["allowlist", "remove", "--provider", "microsoft"]);
    eventually(&node, PROPAGATION, |s| {
        !s.provider_allowlisted(CalendarProvider::Microsoft)
    })
    .await;

    // Exactly one target, and only known flags.
    for bad in [
        vec!["allowlist", "add"],
        vec![
            "allowlist",
            "add",
            "--provider",
            "google",
            "--connection",
            &id.to_string(),
        ],
        vec!["allowlist", "add", "--provider", "yahoo"],
        vec!["flags", "set", "everything_enabled", "on"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(&bad)
            .env("DATABASE_URL", db.url())
            .output()
            .unwrap();
        assert!(!out.status.success(), "calsync {bad:?} should fail");
    }

    let events = settings_events(&db).await;
    assert_eq!(events.len(), 5, "{events:?}");
    for (_, e) in &events {
        assert_eq!(e.audit().0.as_str(), "ops:cli-test");
    }
}

struct App {
    base: String,
    client: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_app(db: &TestDb, settings: SettingsHandle) -> App {
    let connections = Connections::start(db.store(), ActorSettings::default())
        .await
        .unwrap();
    let state = AppState {
        connect: None,
        channels: Default::default(),
        store: db.store(),
        connections,
        admin_token: Some("t".into()),
        drills_enabled: false,
        settings,
        webhooks: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, state, async {
        let _ = rx.await;
    }));
    App {
        base,
        client: reqwest::Client::new(),
        _shutdown: tx,
    }
}

impl App {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .header("x-calsync-actor", "ana");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_sets_and_lists_flags_and_allowlists() {
    let db = TestDb::new().await;
    let settings = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let other_node = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let app = spawn_app(&db, settings).await;
    let id = ConnectionId::new_random();

    // Every route needs the token.
    for (method, path) in [
        ("GET", "/admin/flags".to_string()),
        ("PUT", "/admin/flags/sync_enabled".to_string()),
        ("PUT", "/admin/production".to_string()),
        ("GET", "/admin/allowlist".to_string()),
        ("POST", "/admin/allowlist/providers/google".to_string()),
        ("DELETE", "/admin/allowlist/providers/google".to_string()),
        ("POST", format!("/admin/allowlist/connections/{id}")),
        ("DELETE", format!("/admin/allowlist/connections/{id}")),
    ] {
        let body = Some(json!({"enabled": true}));
        assert_eq!(app.call(method, &path, None, body.clone()).await.0, 401);
        assert_eq!(app.call(method, &path, Some("x"), body).await.0, 401);
    }
    assert!(settings_events(&db).await.is_empty());

    let (status, flags) = app.call("GET", "/admin/flags", Some("t"), None).await;
    assert_eq!(status, 200);
    for flag in Flag::ALL {
        assert_eq!(flags["flags"][flag.as_str()]["enabled"], false);
    }

    let (status, set) = app
        .call(
            "PUT",
            "/admin/flags/jobs_enabled",
            Some("t"),
            Some(json!({"enabled": true, "reason": "nightly jobs back"})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["appended"], 1);
    let (_, flags) = app.call("GET", "/admin/flags", Some("t"), None).await;
    let jobs = &flags["flags"]["jobs_enabled"];
    assert_eq!(jobs["enabled"], true);
    assert_eq!(jobs["changed_by"], "admin-api:ana");
    assert_eq!(jobs["reason"], "nightly jobs back");
    eventually(&other_node, PROPAGATION, |s| s.enabled(Flag::JobsEnabled)).await;

    // Bad input is a 4xx and writes nothing.
    let bad: [(&str, &str, Value); 5] = [
        ("PUT", "/admin/flags/nope", json!({"enabled": true})),
        ("PUT", "/admin/flags/sync_enabled", json!({"on": true})),
        ("PUT", "/admin/production", json!({})),
        ("POST", "/admin/allowlist/providers/yahoo", json!({})),
        ("POST", "/admin/allowlist/connections/not-a-uuid", json!({})),
    ];
    for (method, path, body) in bad {
        let (status, answer) = app.call(method, path, Some("t"), Some(body)).await;
        assert!((400..500).contains(&status), "{path}: {status} {answer}");
    }

    let (status, _) = app
        .call(
            "PUT",
            "/admin/production",
            Some("t"),
            Some(json!({"enabled": true, "reason": "go live"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call("POST", "/admin/allowlist/providers/google", Some("t"), None)
        .await;
    assert_eq!(status, 200);
    let (status, added) = app
        .call(
            "POST",
            &format!("/admin/allowlist/connections/{id}"),
            Some("t"),
            Some(json!({"reason": "first customer"})),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    let (_, list) = app.call("GET", "/admin/allowlist", Some("t"), None).await;
    assert_eq!(list["enforced"], true);
    assert_eq!(list["providers"][0]["provider"], "google");
    assert_eq!(list["connections"][0]["connection_id"], id.to_string());
    assert_eq!(list["connections"][0]["reason"], "first customer");

    let (status, removed) = app
        .call(
            "DELETE",
            &format!("/admin/allowlist/connections/{id}"),
            Some("t"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(removed["appended"], 1);
    eventually(&other_node, PROPAGATION, |s| {
        s.production()
            && s.provider_allowlisted(CalendarProvider::Google)
            && !s.connection_allowlisted(id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_an_audited_event_on_the_settings_stream() {
    let db = TestDb::new().await;
    let settings = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let id = ConnectionId::new_random();
    let commands = [
        set_flag(Flag::WebhooksEnabled, true, "launch"),
        SettingsCommand::SetProductionMode {
            enabled: true,
            reason: "go live".into(),
        },
        SettingsCommand::AllowProvider {
            provider: CalendarProvider::Google,
            reason: "google first".into(),
        },
        SettingsCommand::AllowConnection {
            connection_id: id,
            reason: "pilot".into(),
        },
        SettingsCommand::UnlistConnection {
            connection_id: id,
            reason: "pilot over".into(),
        },
        set_flag(Flag::WebhooksEnabled, false, "incident 42"),
    ];
    for (i, c) in commands.iter().enumerate() {
        settings
            .apply(c.clone(), actor(&format!("ops:{i}")))
            .await
            .unwrap();
    }
    let stored = db
        .store()
        .read_stream(&StreamName::settings(), 1, 100)
        .await
        .unwrap();
    let types: Vec<&str> = stored.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "flag_set",
            "production_mode_set",
            "provider_allowlisted",
            "connection_allowlisted",
            "connection_unlisted",
            "flag_set"
        ]
    );
    for (i, (r, c)) in stored.iter().zip(&commands).enumerate() {
        let payload: Value = serde_json::from_str(&r.payload).unwrap();
        assert_eq!(payload["actor"], format!("ops:{i}"));
        assert_eq!(payload["reason"], c.reason());
        assert!(r.metadata.node.is_some(), "the writing node is recorded");
        assert_eq!(r.version, i as u64 + 1);
    }
    // The stream folds to exactly what the node holds.
    let folded = settings_events(&db)
        .await
        .iter()
        .fold(SettingsState::default(), |s, (_, e)| s.evolve(e));
    assert_eq!(&folded, settings.current().as_ref());
    // A new node starting now folds the same state.
    let late = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    assert_eq!(late.current(), settings.current());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_from_two_nodes_all_land_gap_free() {
    let db = TestDb::new().await;
    let node_a = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let node_b = SettingsHandle::start(db.store(), REFRESH).await.unwrap();
    let ids: Vec<ConnectionId> = (0..12).map(|_| ConnectionId::new_random()).collect();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let node = if i % 2 == 0 {
            node_a.clone()
        } else {
            node_b.clone()
        };
        let command = SettingsCommand::AllowConnection {
            connection_id: *id,
            reason: format!("batch {i}"),
        };
        tasks.push(tokio::spawn(async move {
            node.apply(command, actor("ops:race")).await
        }));
    }
    for t in tasks {
        let applied = t.await.unwrap().unwrap();
        assert_eq!(applied.appended, 1, "every change lands once");
    }
    let versions: Vec<u64> = settings_events(&db).await.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=12).collect::<Vec<u64>>(), "gap-free");
    for node in [&node_a, &node_b] {
        eventually(node, PROPAGATION, |s| {
            s.version == 12 && ids.iter().all(|id| s.connection_allowlisted(*id))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_keeps_the_last_known_state_when_the_database_is_gone() {
    let db = TestDb::new().await;
    let settings = SettingsHandle::start(db.store(), Duration::from_millis(20))
        .await
        .unwrap();
    settings
        .apply(set_flag(Flag::SyncEnabled, true, ""), actor("ops"))
        .await
        .unwrap();
    let before: Arc<SettingsState> = settings.current();
    // Take the database away under the running poller.
    let (admin, connection) = tokio_postgres::connect(
        &calsync::testkit::cluster().connection_string("postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .await
        .unwrap_or_else(|e| panic!("cannot drop the test database: {e}"));
    assert!(settings.refresh().await.is_err(), "the database is gone");
    // Several polls fail meanwhile; none of them changes what is in force.
    // No evidence to wait for: a failed background poll leaves no trace
    // (that is the point), so a few refresh periods are let pass.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(settings.current(), before);
    assert!(settings.current().enabled(Flag::SyncEnabled));
    assert!(settings
        .apply(set_flag(Flag::JobsEnabled, true, ""), actor("ops"))
        .await
        .is_err());
}
