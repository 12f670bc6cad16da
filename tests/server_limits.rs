//! The HTTP server's limits over real sockets: slow and idle clients are cut
//! off while others are served, the connection cap holds, bodies have their
//! per-route limits, and the Graph handshake echoes only what it should.

use calsync::actors::{ActorSettings, Connections};
use calsync::core::settings::{Actor, Flag, SettingsCommand};
use calsync::http::{self, AppState, ServerLimits};
use calsync::settings::SettingsHandle;
use calsync::testkit::TestDb;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct App {
    addr: std::net::SocketAddr,
    base: String,
    settings: SettingsHandle,
    _db: TestDb,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_app(limits: ServerLimits) -> App {
    let db = TestDb::new().await;
    let connections = Connections::start(db.store(), ActorSettings::default())
        .await
        .unwrap();
    let settings = SettingsHandle::start(db.store(), Duration::from_millis(50))
        .await
        .unwrap();
    let state = AppState {
        connect: None,
        channels: Default::default(),
        store: db.store(),
        connections,
        admin_token: Some("admin".into()),
        drills_enabled: false,
        settings: settings.clone(),
        webhooks: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve_with(listener, state, limits, async {
        let _ = rx.await;
    }));
    App {
        addr,
        base: format!("http://{addr}"),
        settings,
        _db: db,
        _shutdown: tx,
    }
}

/// Reads until the server closes the connection (or resets it); what it
/// said before closing.
async fn read_until_closed(reader: &mut (impl AsyncReadExt + Unpin)) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_is_cut_off_at_the_header_timeout_while_others_are_served() {
    let header_timeout = Duration::from_millis(1500);
    let app = spawn_app(ServerLimits {
        header_read_timeout: header_timeout,
        idle_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    // Timed from before the connect: the server's clock starts when it
    // accepts, which can be a few microseconds before connect() returns
    // (CI saw 1.49997 s against a 1.5 s timeout).
    let started = Instant::now();
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let closed = tokio::spawn(async move {
        let said = read_until_closed(&mut reader).await;
        (started.elapsed(), said)
    });
    // The loris: a request line, then a header byte every 50 ms, never the
    // blank line — at most 20 s of it, so a server without the timeout
    // fails the test instead of hanging it.
    let trickle = tokio::spawn(async move {
        let _ = writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await;
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if writer.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Meanwhile everyone else is served, each on a fresh connection.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut served = 0;
    while !closed.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(20), "never cut off");
        let r = http
            .get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        served += 1;
    }
    let (after, said) = closed.await.unwrap();
    trickle.abort();
    assert!(
        after >= header_timeout && after < header_timeout * 3,
        "the loris was cut off after {after:?}, timeout {header_timeout:?}"
    );
    assert!(!said.contains("200 OK"), "the loris was answered: {said}");
    assert!(served > 5, "only {served} requests served meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout() {
    let idle = Duration::from_millis(700);
    let app = spawn_app(ServerLimits {
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: idle,
        ..Default::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let answered = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(20), read_until_closed(&mut stream))
        .await
        .expect("an idle connection was kept for 20 s");
    let after = answered.elapsed();
    assert!(rest.is_empty(), "nothing more is said: {rest}");
    assert!(
        after >= idle.mul_f32(0.9) && after < idle * 4,
        "closed after {after:?}, idle timeout {idle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_comes_gets_503_at_the_request_timeout() {
    let deadline = Duration::from_millis(800);
    let app = spawn_app(ServerLimits {
        request_timeout: deadline,
        ..Default::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /admin/connections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    let sent = Instant::now();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    let after = sent.elapsed();
    let said = String::from_utf8_lossy(&buf[..n]);
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(
        after >= deadline.mul_f32(0.9) && after < deadline * 4,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let app = spawn_app(ServerLimits {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        // Served: the server took it.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let base = app.base.clone();
    let third = tokio::spawn(async move {
        reqwest::get(format!("{base}/healthz"))
            .await
            .map(|r| r.status().as_u16())
    });
    // A third connection is not served while both slots are held…
    tokio::time::timeout(Duration::from_millis(500), async {
        while !third.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect_err("a third connection was served past the cap of 2");
    // …and is as soon as one is given back.
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(20), third)
        .await
        .expect("the waiting connection was never served")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_admin_bodies_past_their_limit_get_413_after_authentication() {
    let limit = 16 * 1024;
    let app = spawn_app(ServerLimits {
        api_body_limit: limit,
        ..Default::default()
    })
    .await;
    let http = reqwest::Client::new();
    let big = json!({ "account": "x".repeat(limit + 1) });
    let small = json!({ "account": "x".repeat(limit / 2) });
    for path in ["/admin/connections", "/v1/bookings"] {
        let r = http
            .post(format!("{}{path}", app.base))
            .bearer_auth("admin")
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "payload_too_large", "{path}");
        // Under the limit the body is read and judged on its shape.
        let r = http
            .post(format!("{}{path}", app.base))
            .bearer_auth("admin")
            .json(&small)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        // Without credentials the body is never read.
        let r = http
            .post(format!("{}{path}", app.base))
            .bearer_auth("wrong")
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = http
        .put(format!("{}/admin/flags/webhooks_enabled", app.base))
        .bearer_auth("admin")
        .body("x".repeat(limit + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

async fn set_webhooks(settings: &SettingsHandle, enabled: bool) {
    settings
        .apply(
            SettingsCommand::SetFlag {
                flag: Flag::WebhooksEnabled,
                enabled,
                reason: "test".into(),
            },
            Actor::parse("test").unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_handshake_echoes_sane_tokens_only_while_webhooks_are_on() {
    let app = spawn_app(ServerLimits::default()).await;
    let http = reqwest::Client::new();
    let handshake = |path: &'static str, token: String| {
        let http = http.clone();
        let url = format!("{}{path}", app.base);
        async move {
            http.post(url)
                .query(&[("validationToken", token)])
                .send()
                .await
                .unwrap()
        }
    };
    // Webhooks off (the default): no echo, whatever the token.
    for path in ["/webhooks/graph", "/webhooks/graph/lifecycle"] {
        let r = handshake(path, "token".into()).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_ne!(r.text().await.unwrap(), "token", "{path}");
    }
    set_webhooks(&app.settings, true).await;
    for path in ["/webhooks/graph", "/webhooks/graph/lifecycle"] {
        let r = handshake(path, "a b<script>&c".into()).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.text().await.unwrap(), "a b<script>&c");
        // Too long, empty, or with control characters: 400, nothing echoed.
        for bad in ["x".repeat(1025), String::new(), "a\r\nb".into()] {
            let r = handshake(path, bad.clone()).await;
            assert_eq!(r.status(), 400, "{path} {:?}", &bad[..bad.len().min(8)]);
            assert!(!r.text().await.unwrap().contains(&bad) || bad.is_empty());
        }
        let r = handshake(path, "x".repeat(1024)).await;
        assert_eq!(r.status(), 200);
    }
}
