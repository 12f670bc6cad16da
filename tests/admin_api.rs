//! The admin API over real HTTP, and the operator CLI on the same database.

use calsync::actors::{ActorSettings, Connections};
use calsync::http::{self, AppState};
use calsync::testkit::TestDb;
use serde_json::{json, Value};
use std::time::Duration;

struct App {
    base: String,
    client: reqwest::Client,
    connections: Connections,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_app(db: &TestDb, admin_token: Option<&str>, drills: bool) -> App {
    let connections = Connections::start(
        db.store(),
        ActorSettings {
            restart_base_delay: Duration::from_millis(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let state = AppState {
        connect: None,
        channels: Default::default(),
        store: db.store(),
        connections: connections.clone(),
        admin_token: admin_token.map(String::from),
        drills_enabled: drills,
        settings: calsync::settings::SettingsHandle::start(db.store(), Duration::from_millis(250))
            .await
            .unwrap(),
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
        connections,
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
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
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

fn new_connection() -> Value {
    json!({
        "platform_provider_id": "stylist-7",
        "provider": "google",
        "account": "ana@example.com",
        "calendars": ["primary"],
        "destination_calendar": "primary"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_is_closed_without_a_token_and_checks_it() {
    let db = TestDb::new().await;
    let closed = spawn_app(&db, None, false).await;
    let (status, body) = closed
        .call("GET", "/admin/connections", Some("x"), None)
        .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "admin_disabled");

    let app = spawn_app(&db, Some("s3cret"), false).await;
    assert_eq!(
        app.call("GET", "/admin/connections", None, None).await.0,
        401
    );
    assert_eq!(
        app.call("GET", "/admin/connections", Some("s3creT"), None)
            .await
            .0,
        401
    );
    assert_eq!(
        app.call("GET", "/admin/connections", Some("s3cret"), None)
            .await
            .0,
        200
    );
    // Health checks need no token.
    assert_eq!(app.call("GET", "/healthz", None, None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_created_paused_and_shown_through_the_api() {
    let db = TestDb::new().await;
    let app = spawn_app(&db, Some("t"), false).await;
    let (status, created) = app
        .call(
            "POST",
            "/admin/connections",
            Some("t"),
            Some(new_connection()),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["connection_id"].as_str().unwrap().to_string();

    let (status, paused) = app
        .call(
            "POST",
            &format!("/admin/connections/{id}/pause"),
            Some("t"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(paused["version"], 2);

    let (_, shown) = app
        .call("GET", &format!("/admin/connections/{id}"), Some("t"), None)
        .await;
    assert_eq!(shown["status"], "paused");
    assert_eq!(shown["actor"]["active"], true);

    // Bad input is a 400 with a message, never a 500; nothing is written.
    for bad in [
        json!({"platform_provider_id": "x", "provider": "yahoo", "account": "a", "calendars": ["c"]}),
        json!({"platform_provider_id": "", "provider": "google", "account": "a", "calendars": ["c"]}),
        json!({"provider": "google"}),
        json!({"platform_provider_id": "x", "provider": "google", "account": "a", "calendars": [], "extra": 1}),
    ] {
        let (status, body) = app
            .call("POST", "/admin/connections", Some("t"), Some(bad))
            .await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = app
        .call(
            "POST",
            &format!("/admin/connections/{}/resume", uuid::Uuid::new_v4()),
            Some("t"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (_, list) = app.call("GET", "/admin/connections", Some("t"), None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_kills_need_the_drill_flag_and_actors_come_back() {
    let db = TestDb::new().await;
    let off = spawn_app(&db, Some("t"), false).await;
    let (status, _) = off
        .call(
            "POST",
            "/admin/drill/kill",
            Some("t"),
            Some(json!({"random": 1})),
        )
        .await;
    assert_eq!(status, 403);

    let app = spawn_app(&db, Some("t"), true).await;
    let (_, created) = app
        .call(
            "POST",
            "/admin/connections",
            Some("t"),
            Some(new_connection()),
        )
        .await;
    let id = created["connection_id"].as_str().unwrap().to_string();
    let (status, killed) = app
        .call(
            "POST",
            "/admin/drill/kill",
            Some("t"),
            Some(json!({"connection": id})),
        )
        .await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["killed"][0], id.as_str());
    // The supervisor restarts the actor by itself, with a new incarnation.
    let cid = calsync::core::ids::ConnectionId::parse(&id).unwrap();
    let mut back = false;
    for _ in 0..100 {
        if app.connections.incarnation(cid) == Some(2) {
            back = true;
            break;
        }
        // Poll interval: the incarnation is checked again right after.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "the killed actor was not restarted");
    assert_eq!(app.connections.stats().restarts, 1);
    let (status, _) = app
        .call(
            "POST",
            "/admin/drill/kill",
            Some("t"),
            Some(json!({"connection": id, "random": 2})),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_cli_adds_lists_and_pauses() {
    let db = TestDb::new().await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(args)
            .env("DATABASE_URL", db.url())
            .env("CALSYNC_LOG_FORMAT", "text")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "calsync {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let added = run(&[
        "connections",
        "add",
        "--platform-provider",
        "p-1",
        "--provider",
        "microsoft",
        "--account",
        "bo@contoso.com",
        "--calendar",
        "cal-a",
        "--destination",
        "cal-a",
    ]);
    let id = added.split('\t').next().unwrap().trim().to_string();
    assert!(run(&["connections", "list"]).contains(&id));
    run(&["connections", "pause", &id, "--reason", "vacation"]);
    let shown: Value = serde_json::from_str(&run(&["connections", "show", &id])).unwrap();
    assert_eq!(shown["status"], "paused");
    assert_eq!(shown["pause_reason"], "vacation");
    let log = run(&[
        "log",
        "tail",
        "--stream",
        &format!("connection-{id}"),
        "--json",
    ]);
    let types: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(types, ["connection_created", "connection_paused"]);
}
