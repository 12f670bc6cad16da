//! Scoped API tokens over real HTTP: scopes keep areas apart, a revoked
//! token is refused at once by every node, admin changes are audited with
//! the token's name, and no token ever reaches the logs.
//!
//! The tracing subscriber is process-wide: this binary installs one that
//! captures every line at TRACE (JSON, as `serve` logs off a terminal), and
//! each test checks its own tokens against the capture.

use calsync::actors::{ActorSettings, Connections};
use calsync::core::tokens::Scope;
use calsync::http::{self, AppState};
use calsync::testkit::TestDb;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_writer(move || writer.clone())
            .json()
            .flatten_event(true)
            .try_init()
            .expect("this binary installs the only subscriber");
        captured
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

struct Node {
    base: String,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn node(db: &TestDb, shared: Option<&str>) -> Node {
    let connections = Connections::start(db.store(), ActorSettings::default())
        .await
        .unwrap();
    let state = AppState {
        connect: None,
        channels: Default::default(),
        store: db.store(),
        connections,
        admin_token: shared.map(String::from),
        drills_enabled: true,
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
    Node {
        base,
        _shutdown: tx,
    }
}

async fn call(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", node.base))
        .header("x-calsync-actor", "someone-else");
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

/// `calsync tokens …` on the test's database; stdout.
fn cli(db: &TestDb, args: &[&str]) -> String {
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
}

fn create(db: &TestDb, name: &str, scopes: &str) -> String {
    let token = cli(
        db,
        &[
            "tokens", "create", "--name", name, "--scope", scopes, "--quiet",
        ],
    )
    .trim()
    .to_string();
    assert!(token.starts_with("cst_"), "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_reaches_only_its_scopes() {
    logs();
    let db = TestDb::new().await;
    let app = node(&db, Some("shared-admin-token")).await;
    let platform = create(&db, "booking-web", "platform");
    let admin = create(&db, "ops-ana", "admin");
    let drills = create(&db, "game-day", "drills");
    let both = create(&db, "ci", "platform,admin");

    let v1 = "/v1/bookings/b-1";
    let admin_paths = ["/admin/connections", "/admin/flags", "/admin/status"];
    // Platform: /v1 yes (404: no such booking, past auth), /admin no.
    assert_eq!(call(&app, "GET", v1, Some(&platform), None).await.0, 404);
    for path in admin_paths {
        let (status, body) = call(&app, "GET", path, Some(&platform), None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"], "insufficient_scope");
    }
    let kill = json!({"random": 1});
    let (status, _) = call(
        &app,
        "POST",
        "/admin/drill/kill",
        Some(&platform),
        Some(kill.clone()),
    )
    .await;
    assert_eq!(status, 403);
    // Admin: /admin yes, /v1 and drills no.
    for path in admin_paths {
        assert_eq!(
            call(&app, "GET", path, Some(&admin), None).await.0,
            200,
            "{path}"
        );
    }
    assert_eq!(call(&app, "GET", v1, Some(&admin), None).await.0, 403);
    let (status, _) = call(
        &app,
        "POST",
        "/admin/drill/kill",
        Some(&admin),
        Some(kill.clone()),
    )
    .await;
    assert_eq!(status, 403);
    // Drills: the drill hook only.
    let (status, body) = call(
        &app,
        "POST",
        "/admin/drill/kill",
        Some(&drills),
        Some(kill.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        call(&app, "GET", "/admin/flags", Some(&drills), None)
            .await
            .0,
        403
    );
    // Two scopes: both areas.
    assert_eq!(call(&app, "GET", v1, Some(&both), None).await.0, 404);
    assert_eq!(
        call(&app, "GET", "/admin/flags", Some(&both), None).await.0,
        200
    );
    // The shared token still opens everything, as before.
    let shared = Some("shared-admin-token");
    assert_eq!(call(&app, "GET", v1, shared, None).await.0, 404);
    assert_eq!(call(&app, "GET", "/admin/flags", shared, None).await.0, 200);
    assert_eq!(
        call(&app, "POST", "/admin/drill/kill", shared, Some(kill))
            .await
            .0,
        200
    );
    // Unknown, wrong-length and prefix-of-real tokens: 401.
    for bad in ["cst_nope", &platform[..platform.len() - 1], "x"] {
        assert_eq!(call(&app, "GET", v1, Some(bad), None).await.0, 401, "{bad}");
    }
    assert_eq!(call(&app, "GET", v1, None, None).await.0, 401);
    // Open routes need none.
    assert_eq!(call(&app, "GET", "/healthz", None, None).await.0, 200);

    // The listing names tokens and never shows one.
    let listed = cli(&db, &["tokens", "list", "--json"]);
    let rows: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4);
    for token in [&platform, &admin, &drills, &both] {
        assert!(!listed.contains(token.as_str()));
        assert!(!listed.contains(&calsync::core::tokens::hash(token)));
    }
    let text = log_text();
    for token in [&platform, &admin, &drills, &both] {
        assert!(!text.contains(token.as_str()), "a token reached the logs");
    }
    assert!(!text.contains("shared-admin-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_once_by_every_node() {
    logs();
    let db = TestDb::new().await;
    // Two nodes on one database, neither with a shared token.
    let a = node(&db, None).await;
    let b = node(&db, None).await;
    // No token at all: the API is closed.
    let (status, body) = call(&a, "GET", "/admin/flags", Some("x"), None).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"], "admin_disabled");

    let token = create(&db, "ops-bo", "admin");
    let keep = create(&db, "ops-cy", "admin");
    for n in [&a, &b] {
        assert_eq!(
            call(n, "GET", "/admin/flags", Some(&token), None).await.0,
            200
        );
    }
    let out = cli(&db, &["tokens", "revoke", "ops-bo"]);
    assert!(out.contains("revoked"), "{out}");
    // The very next request on either node: refused, no waiting.
    for n in [&a, &b] {
        let (status, body) = call(n, "GET", "/admin/flags", Some(&token), None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(
            call(n, "GET", "/admin/flags", Some(&keep), None).await.0,
            200
        );
    }
    // Revoking twice is an error; the name can be reused afterwards.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["tokens", "revoke", "ops-bo"])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let again = create(&db, "ops-bo", "platform");
    assert_ne!(again, token);
    assert_eq!(
        call(&a, "GET", "/admin/flags", Some(&again), None).await.0,
        403
    );
    let listed: Value = serde_json::from_str(&cli(&db, &["tokens", "list", "--json"])).unwrap();
    let revoked: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["revoked_at"].is_null())
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["name"], "ops-bo");
    assert!(!log_text().contains(token.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_are_audited_with_the_token_name_not_a_header() {
    logs();
    let db = TestDb::new().await;
    let app = node(&db, Some("shared")).await;
    let token = create(&db, "ops-dee", "admin");
    let (status, body) = call(
        &app,
        "PUT",
        "/admin/flags/jobs_enabled",
        Some(&token),
        Some(json!({"enabled": true, "reason": "back"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The caller sent `X-Calsync-Actor: someone-else`; the token's name wins.
    let (_, flags) = call(&app, "GET", "/admin/flags", Some(&token), None).await;
    assert_eq!(
        flags["flags"]["jobs_enabled"]["changed_by"],
        "admin-api:ops-dee"
    );
    // A refused change is audited too (with its status); reads are not.
    let (status, _) = call(
        &app,
        "PUT",
        "/admin/flags/nope",
        Some(&token),
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 404);
    let audit = calsync::store::tokens::audit_log(&db.store(), 10)
        .await
        .unwrap();
    let rows: Vec<(String, String, String, i32)> = audit
        .into_iter()
        .map(|r| (r.token_name, r.method, r.path, r.status))
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "ops-dee".into(),
                "PUT".into(),
                "/admin/flags/nope".into(),
                404
            ),
            (
                "ops-dee".into(),
                "PUT".into(),
                "/admin/flags/jobs_enabled".into(),
                200
            ),
        ]
    );
    let out = cli(&db, &["tokens", "audit"]);
    assert!(
        out.contains("ops-dee") && out.contains("/admin/flags/jobs_enabled"),
        "{out}"
    );
    assert_eq!(
        calsync::store::tokens::lookup(&db.store(), &calsync::core::tokens::hash(&token))
            .await
            .unwrap(),
        Some(("ops-dee".to_string(), vec![Scope::Admin]))
    );
}
