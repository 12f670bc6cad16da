//! The platform feed pulled over HTTP (`GET /v1/changes`): every platform
//! event exactly once, in the log's order, while writers append
//! concurrently, across a restart of the server, and with a long poll that
//! answers when an event arrives.

mod support;

use calsync::core::events::ConnectionEvent;
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::core::interval::Interval;
use calsync::http::{self, AppState};
use calsync::store::{EventStore, ExpectedVersion, NewEvent, PgEventStore};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use support::{Options, World};

/// A calsync HTTP server on its own listener over the world's database;
/// dropping the sender stops it (a "restart" is a stop and a new one).
async fn start_server(w: &World) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState {
        channels: Default::default(),
        store: w.db.store(),
        connections: w.connections.clone(),
        admin_token: Some("admin".into()),
        drills_enabled: false,
        settings: w.settings.clone(),
        webhooks: Default::default(),
        connect: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, state, async {
        let _ = rx.await;
    }));
    (base, tx)
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// One page of the feed: its events and the next cursor.
async fn page(base: &str, query: &str) -> (Vec<Value>, String, bool) {
    let (status, body) = get(base, &format!("/v1/changes?{query}"), Some("admin")).await;
    assert_eq!(status, 200, "{body}");
    (
        body["events"].as_array().unwrap().clone(),
        body["next_cursor"].as_str().unwrap().to_string(),
        body["has_more"].as_bool().unwrap(),
    )
}

fn hour(h: i64) -> DateTime<Utc> {
    support::midnight_in_days(2) + TimeDelta::hours(h)
}

fn cal() -> CalendarId {
    CalendarId::parse("primary").unwrap()
}

async fn append(store: &PgEventStore, id: ConnectionId, events: &[ConnectionEvent]) {
    let new = events
        .iter()
        .map(|e| {
            let (ty, payload) = e.to_parts().unwrap();
            NewEvent::new(ty, e.schema_version(), payload.to_string())
        })
        .collect();
    store
        .append(&id.stream(), ExpectedVersion::Any, new)
        .await
        .unwrap();
}

/// A connection of `provider` whose stream is written by the test alone
/// (no actor): its first sync round has begun.
async fn connection(store: &PgEventStore, provider: &str) -> ConnectionId {
    let id = ConnectionId::new_random();
    append(
        store,
        id,
        &[
            ConnectionEvent::ConnectionCreated {
                platform_provider_id: PlatformProviderId::parse(provider).unwrap(),
                provider: CalendarProvider::Google,
                account: ExternalAccount::parse(format!("{provider}@example.com")).unwrap(),
                calendars: vec![cal()],
                destination_calendar: Some(cal()),
            },
            ConnectionEvent::FullSyncStarted {
                calendar: cal(),
                generation: 1,
                reason: "first sync".into(),
                window: None,
            },
        ],
    )
    .await;
    id
}

fn seen(n: usize) -> ConnectionEvent {
    ConnectionEvent::ExternalEventSeen {
        calendar: cal(),
        event_id: format!("ev{n}"),
        blocks: Some(
            Interval::new(hour(n as i64), hour(n as i64) + TimeDelta::minutes(30)).unwrap(),
        ),
        ours: None,
        rule: None,
        ignored: None,
        span: None,
    }
}

/// Writer `k`'s `n`-th append. Every fifth is a failure and a completed
/// round in one append: `connection.degraded`, then (one log event giving
/// two platform events) `availability.changed` for the swept row and
/// `connection.recovered`.
fn writes(n: usize) -> Vec<ConnectionEvent> {
    if n % 5 == 4 {
        vec![
            ConnectionEvent::SyncFailed {
                kind: "throttled".into(),
                message: "429".into(),
                consecutive_failures: 1,
                backoff_until: hour(0),
                at: Some(hour(0)),
            },
            ConnectionEvent::FullSyncStarted {
                calendar: cal(),
                generation: 2 + n as u64,
                reason: "cursor invalid".into(),
                window: None,
            },
            ConnectionEvent::SyncRoundCompleted {
                calendar: cal(),
                cursor: format!("c{n}"),
                swept_generation: Some(2 + n as u64),
                at: hour(0),
                zone: None,
            },
        ]
    } else {
        vec![seen(n)]
    }
}

/// Reads the whole feed from `cursor` until a page comes back empty.
async fn drain(base: &str, mut cursor: String, limit: usize, out: &mut Vec<Value>) -> String {
    loop {
        let (events, next, has_more) = page(base, &format!("after={cursor}&limit={limit}")).await;
        cursor = next;
        if events.is_empty() && !has_more {
            return cursor;
        }
        out.extend(events);
    }
}

fn assert_exactly_once_and_ordered(events: &[Value]) {
    let ids: BTreeSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "an event was delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_a_restart_lose_nothing_and_repeat_nothing() {
    let w = World::start(Options::default()).await;
    let store = w.db.store();
    let (base, stop) = start_server(&w).await;

    // The feed from the start, in pages of 3 (so cursors also land inside
    // a log event that yields two platform events), while 6 writers append
    // 30 times each.
    let writers = 6;
    let per_writer = 30;
    let mut ids = Vec::new();
    for k in 0..writers {
        ids.push(connection(&store, &format!("prov-{k}")).await);
    }
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), *id);
            tokio::spawn(async move {
                for n in 0..per_writer {
                    append(&store, id, &writes(n)).await;
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    let mut cursor = String::new();
    while got.len() < 40 {
        let (events, next, _) = page(&base, &format!("after={cursor}&limit=3")).await;
        cursor = next;
        got.extend(events);
    }
    // Restart mid-stream: the cursor is all the next server needs.
    drop(stop);
    let (base, _stop) = start_server(&w).await;
    for t in tasks {
        t.await.unwrap();
    }
    let cursor = drain(&base, cursor, 3, &mut got).await;

    // Expected, independently: per writer, one availability change per
    // `seen`; per failure append a degraded, a sweep and a recovered.
    let mut per_connection: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for e in &got {
        per_connection
            .entry(e["connection_id"].as_str().unwrap().to_string())
            .or_default()
            .push((e["type"].as_str().unwrap().to_string(), e["data"].clone()));
    }
    assert_exactly_once_and_ordered(&got);
    assert_eq!(per_connection.len(), writers);
    for (k, id) in ids.iter().enumerate() {
        let mine = &per_connection[&id.to_string()];
        let mut expected: Vec<String> = Vec::new();
        for n in 0..per_writer {
            if n % 5 == 4 {
                expected.extend(
                    [
                        "connection.degraded",
                        "availability.changed",
                        "connection.recovered",
                    ]
                    .map(String::from),
                );
            } else {
                expected.push("availability.changed".into());
            }
        }
        let types: Vec<String> = mine.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(types, expected, "writer {k}: order per connection");
        // The first availability change is ev0's row, in order.
        assert_eq!(mine[0].1["from"], serde_json::json!(hour(0)));
    }
    // The global order is the log's: the same as one unpaged read.
    let mut whole = Vec::new();
    drain(&base, String::new(), 1000, &mut whole).await;
    let a: Vec<&Value> = got.iter().map(|e| &e["id"]).collect();
    let b: Vec<&Value> = whole.iter().map(|e| &e["id"]).collect();
    assert_eq!(a, b, "paged across a restart = one read");
    assert_eq!(got, whole, "same ids, same content");

    // Nothing after the end; a filtered read sees only its types.
    let (events, _, _) = page(&base, &format!("after={cursor}")).await;
    assert!(events.is_empty());
    let (events, _, _) = page(&base, "types=connection.recovered&limit=1000").await;
    assert_eq!(events.len(), writers * per_writer / 5);
    assert!(events.iter().all(|e| e["type"] == "connection.recovered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_an_event_arrives_and_bad_requests_are_refused() {
    let w = World::start(Options::default()).await;
    let store = w.db.store();
    let id = connection(&store, "prov-lp").await;
    let (base, _stop) = start_server(&w).await;

    let (events, head, _) = page(&base, "after=now").await;
    assert!(events.is_empty(), "nothing after now");
    let waiting = {
        let base = base.clone();
        let head = head.clone();
        tokio::spawn(async move { page(&base, &format!("after={head}&wait=30s")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    append(&store, id, &[seen(1)]).await;
    let (events, next, _) = waiting.await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "availability.changed");
    assert_eq!(events[0]["platform_provider_id"], "prov-lp");
    assert_eq!(events[0]["schema_version"], 1);
    assert_ne!(next, head);
    // A wait that sees nothing answers empty, cursor unchanged.
    let (events, same, _) = page(&base, &format!("after={next}&wait=200ms")).await;
    assert!(events.is_empty());
    assert_eq!(same, next);

    for (query, status) in [
        ("after=not-a-cursor", 400),
        ("limit=0", 400),
        ("limit=1001", 400),
        ("types=booking.*", 400),
        ("wait=2m", 400),
        ("wait=61s", 400),
        ("surprise=1", 400),
    ] {
        let (got, body) = get(&base, &format!("/v1/changes?{query}"), Some("admin")).await;
        assert_eq!(got, status, "{query}: {body}");
    }
    let (got, _) = get(&base, "/v1/changes", None).await;
    assert_eq!(got, 401);
}
