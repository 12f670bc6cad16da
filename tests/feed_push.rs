//! The platform feed pushed: signed webhooks to a real HTTP receiver (an
//! axum server in the test) that fails, times out, redirects and recovers.
//! Every event arrives, in the feed's order, each signature verifies with
//! an independent HMAC implementation, and an event seen twice is the same
//! event (same id, same content). Failures that outlast the retry age park
//! the subscription until an operator replays it from a cursor.

mod support;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use calsync::core::backoff::BackoffPolicy;
use calsync::core::events::ConnectionEvent;
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::core::interval::Interval;
use calsync::core::subscription::PushPolicy;
use calsync::store::{EventStore, ExpectedVersion, NewEvent, PgEventStore};
use chrono::{Duration as TimeDelta, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{eventually, Options, World};

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;
const REDIRECT: u8 = 3;

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

#[derive(Default)]
struct Receiver {
    mode: AtomicU8,
    got: Mutex<Vec<Received>>,
    redirects_followed: Mutex<usize>,
}

async fn hook(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mode = r.mode.load(Ordering::SeqCst);
    let answered = match mode {
        OK => 204,
        FAIL => 500,
        HANG => 200,
        _ => 307,
    };
    r.got.lock().unwrap().push(Received {
        signature: headers
            .get("calsync-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body: body.to_vec(),
        answered,
    });
    match mode {
        OK => StatusCode::NO_CONTENT.into_response(),
        FAIL => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        HANG => {
            // Longer than calsync's delivery timeout: calsync gives up, the
            // receiver "accepts" late (the at-least-once case).
            tokio::time::sleep(Duration::from_secs(2)).await;
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")]).into_response(),
    }
}

async fn elsewhere(State(r): State<Arc<Receiver>>) -> StatusCode {
    *r.redirects_followed.lock().unwrap() += 1;
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver::default());
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/elsewhere", post(elsewhere))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

/// The test's own check of `t=…,v1=…`: HMAC-SHA256 (the `hmac` crate, not
/// calsync's ring) over `t.body`, and a timestamp no older than 5 minutes.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (Utc::now().timestamp() - t).abs() > 300 {
        return false;
    }
    let mut mac =
        <Hmac<sha2_verify::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
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

async fn connection(store: &PgEventStore, provider: &str) -> ConnectionId {
    let id = ConnectionId::new_random();
    append(
        store,
        id,
        &[ConnectionEvent::ConnectionCreated {
            platform_provider_id: PlatformProviderId::parse(provider).unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse(format!("{provider}@example.com")).unwrap(),
            calendars: vec![cal()],
            destination_calendar: Some(cal()),
        }],
    )
    .await;
    id
}

/// Appends `n` busy events (each one `availability.changed`).
async fn busy(store: &PgEventStore, id: ConnectionId, from: usize, n: usize) {
    for k in from..from + n {
        let start = support::midnight_in_days(2) + TimeDelta::minutes(30 * k as i64);
        append(
            store,
            id,
            &[ConnectionEvent::ExternalEventSeen {
                calendar: cal(),
                event_id: format!("ev{k}"),
                blocks: Some(Interval::new(start, start + TimeDelta::minutes(20)).unwrap()),
                ours: None,
                rule: None,
                ignored: None,
                span: None,
            }],
        )
        .await;
    }
}

fn fast_policy() -> PushPolicy {
    PushPolicy {
        backoff: BackoffPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_millis(400),
            ..BackoffPolicy::default()
        },
        max_retry_age: chrono::Duration::hours(1),
        batch: 5,
        timeout: Duration::from_millis(500),
    }
}

async fn subscription_events(w: &World, id: &str, event_type: &str) -> Vec<Value> {
    w.db.client()
        .await
        .query(
            "SELECT payload::text FROM events WHERE stream = $1 AND event_type = $2 ORDER BY version",
            &[&format!("subscription-{id}"), &event_type],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect()
}

async fn wait_failures(w: &World, id: &str, at_least: usize, containing: &str) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            subscription_events(w, id, "delivery_failed")
                .await
                .iter()
                .filter(|e| e["error"].as_str().unwrap_or_default().contains(containing))
                .count()
                >= at_least
        })
        .await,
        "never {at_least} failures with {containing:?}"
    );
}

/// The events of every 2xx-answered delivery, in arrival order.
fn accepted(r: &Receiver) -> Vec<Value> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .filter(|g| (200..300).contains(&g.answered))
        .flat_map(|g| {
            let body: Value = serde_json::from_slice(&g.body).unwrap();
            body["events"].as_array().unwrap().clone()
        })
        .collect()
}

/// First occurrences in order; panics if one id came with two contents.
fn first_occurrences(events: &[Value]) -> Vec<Value> {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut order = Vec::new();
    for e in events {
        let id = e["id"].as_str().unwrap().to_string();
        match seen.get(&id) {
            Some(before) => assert_eq!(before, e, "event {id} delivered twice, differently"),
            None => {
                seen.insert(id, e.clone());
                order.push(e.clone());
            }
        }
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_survive_failures_timeouts_and_redirects_in_order_and_signed() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let store = w.db.store();
    let (url, receiver) = start_receiver().await;
    let (status, sub) = w
        .api(
            "POST",
            "/v1/subscriptions",
            Some(&json!({"url": url, "after": "start"})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let secret = sub["secret"].as_str().unwrap().to_string();
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let (_, shown) = w
        .api("GET", &format!("/v1/subscriptions/{sub_id}"), None)
        .await;
    assert!(shown.get("secret").is_none(), "the secret is shown once");

    let stop = tokio_util::sync::CancellationToken::new();
    let _push = calsync::feed::push::spawn(
        store.clone(),
        fast_policy(),
        calsync::feed::push::alone(),
        stop.clone(),
    );
    let a = connection(&store, "prov-a").await;
    let b = connection(&store, "prov-b").await;

    // Healthy.
    busy(&store, a, 0, 6).await;
    busy(&store, b, 0, 6).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            first_occurrences(&accepted(&receiver)).len() == 12
        })
        .await
    );

    // Failing with 500s, then timing out, then redirecting — events keep
    // coming in meanwhile.
    receiver.mode.store(FAIL, Ordering::SeqCst);
    busy(&store, a, 6, 6).await;
    wait_failures(&w, &sub_id, 3, "500").await;
    receiver.mode.store(HANG, Ordering::SeqCst);
    busy(&store, b, 6, 6).await;
    wait_failures(&w, &sub_id, 2, "timed out").await;
    receiver.mode.store(REDIRECT, Ordering::SeqCst);
    busy(&store, a, 12, 4).await;
    wait_failures(&w, &sub_id, 2, "redirects are not followed").await;
    let (_, shown) = w
        .api("GET", &format!("/v1/subscriptions/{sub_id}"), None)
        .await;
    assert_eq!(shown["status"], "retrying");

    // Recovered: everything arrives.
    receiver.mode.store(OK, Ordering::SeqCst);
    let (_, feed) = w.api("GET", "/v1/changes?limit=1000", None).await;
    let expected: Vec<Value> = feed["events"].as_array().unwrap().clone();
    assert_eq!(expected.len(), 28, "one availability change per busy event");
    assert!(
        eventually(Duration::from_secs(30), || async {
            first_occurrences(&accepted(&receiver)).len() >= expected.len()
        })
        .await
    );
    stop.cancel();
    let got = first_occurrences(&accepted(&receiver));
    assert_eq!(
        got, expected,
        "every event, in the feed's order, once per id"
    );
    assert_eq!(*receiver.redirects_followed.lock().unwrap(), 0);
    let all = receiver.got.lock().unwrap().clone();
    assert!(all.iter().any(|g| g.answered == 500));
    for g in &all {
        assert!(
            verify(&secret, &g.signature, &g.body),
            "bad signature: {}",
            g.signature
        );
        assert!(!verify("whsec_wrong", &g.signature, &g.body));
    }
    // The attempts are in the log.
    assert!(!subscription_events(&w, &sub_id, "delivery_succeeded")
        .await
        .is_empty());
    let (_, shown) = w
        .api("GET", &format!("/v1/subscriptions/{sub_id}"), None)
        .await;
    assert_eq!(shown["status"], "active");
}

/// The delivery ids of every request, in arrival order.
fn delivery_ids(r: &Receiver) -> Vec<String> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .map(|g| {
            let body: Value = serde_json::from_slice(&g.body).unwrap();
            body["delivery_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Waits until every POST the receiver answered has its outcome in the
/// subscription's stream (the receiver answers 2xx throughout).
async fn every_post_recorded(w: &World, sub: &str, r: &Receiver) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            subscription_events(w, sub, "delivery_succeeded")
                .await
                .len()
                == delivery_ids(r).len()
        })
        .await,
        "a delivery's outcome never reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_a_subscription_from_one_node_only_and_hand_it_over_in_order() {
    // Two nodes' push workers on one store (a cluster without the leases:
    // who holds the subscription's slice is a switch here). Before, every
    // node delivered every subscription: each batch was POSTed twice, and a
    // slow node's duplicate could arrive after the next batch.
    let w = World::start(Options::default()).await;
    let store = w.db.store();
    let (url, receiver) = start_receiver().await;
    let sub = calsync::feed::subscriptions::create(
        &store,
        &url,
        Vec::new(),
        calsync::feed::FeedCursor::START,
    )
    .await
    .unwrap();
    let holder = Arc::new(AtomicU8::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    for node in 0..2u8 {
        let holder = holder.clone();
        let owns: calsync::feed::push::Ownership =
            Arc::new(move |_| holder.load(Ordering::SeqCst) == node);
        calsync::feed::push::spawn(store.clone(), fast_policy(), owns, stop.clone());
    }
    let a = connection(&store, "prov-a").await;
    let b = connection(&store, "prov-b").await;
    busy(&store, a, 0, 10).await;
    busy(&store, b, 0, 10).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            first_occurrences(&accepted(&receiver)).len() == 20
        })
        .await
    );
    // The slice moves to node 1 (node 0 lets go first, as a lease does:
    // its last POST's outcome is in the log before node 1 folds it).
    holder.store(9, Ordering::SeqCst);
    every_post_recorded(&w, &sub.id.to_string(), &receiver).await;
    holder.store(1, Ordering::SeqCst);
    busy(&store, a, 10, 10).await;
    busy(&store, b, 10, 10).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            first_occurrences(&accepted(&receiver)).len() == 40
        })
        .await
    );
    every_post_recorded(&w, &sub.id.to_string(), &receiver).await;
    stop.cancel();

    let ids = delivery_ids(&receiver);
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "a batch POSTed twice: {ids:?}");
    let expected: Vec<String> = calsync::feed::FeedReader::new(store.clone())
        .read(calsync::feed::FeedCursor::START, 1000, &[])
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| e.id.clone())
        .collect();
    let got: Vec<String> = accepted(&receiver)
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected, "every event once, in the feed's order");
    assert_eq!(
        subscription_events(&w, &sub.id.to_string(), "delivery_succeeded")
            .await
            .len(),
        ids.len(),
        "each POST recorded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_past_the_retry_age_is_parked_until_an_operator_replays() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let store = w.db.store();
    let (url, receiver) = start_receiver().await;
    receiver.mode.store(FAIL, Ordering::SeqCst);
    let (status, sub) = w
        .api(
            "POST",
            "/v1/subscriptions",
            Some(&json!({"url": url, "types": ["availability.changed"]})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let sub_id = sub["id"].as_str().unwrap().to_string();
    let start_cursor = sub["cursor"].as_str().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let policy = PushPolicy {
        max_retry_age: chrono::Duration::milliseconds(300),
        ..fast_policy()
    };
    let _push = calsync::feed::push::spawn(
        store.clone(),
        policy,
        calsync::feed::push::alone(),
        stop.clone(),
    );
    let a = connection(&store, "prov-a").await;
    busy(&store, a, 0, 3).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            !subscription_events(&w, &sub_id, "dead_lettered")
                .await
                .is_empty()
        })
        .await
    );
    let (_, shown) = w
        .api("GET", &format!("/v1/subscriptions/{sub_id}"), None)
        .await;
    assert_eq!(shown["status"], "dead_letter");
    assert!(shown["last_error"].as_str().unwrap().contains("500"));
    receiver.mode.store(OK, Ordering::SeqCst);

    // Replayed from the cursor it was created at: all three arrive.
    let (status, replayed) = w
        .api(
            "POST",
            &format!("/v1/subscriptions/{sub_id}/replay"),
            Some(&json!({"cursor": start_cursor})),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["status"], "active");
    assert!(
        eventually(Duration::from_secs(20), || async {
            first_occurrences(&accepted(&receiver)).len() == 3
        })
        .await
    );
    stop.cancel();
    assert!(!subscription_events(&w, &sub_id, "replay_requested")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_refuse_bad_input_and_delete_cleanly() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    for (body, status) in [
        (json!({"url": "http://platform.example/hook"}), 400),
        (json!({"url": "ftp://platform.example/hook"}), 400),
        (
            json!({"url": "https://platform.example/hook", "types": ["booking.*"]}),
            400,
        ),
        (
            json!({"url": "https://platform.example/hook", "after": "garbage"}),
            400,
        ),
        (
            json!({"url": "https://platform.example/hook", "surprise": 1}),
            400,
        ),
        (
            json!({"url": "https://platform.example/hook", "types": ["booking.written"]}),
            201,
        ),
    ] {
        let (got, answer) = w.api("POST", "/v1/subscriptions", Some(&body)).await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    let (_, list) = w.api("GET", "/v1/subscriptions", None).await;
    let subs = list["subscriptions"].as_array().unwrap().clone();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["types"], json!(["booking.written"]));
    let id = subs[0]["id"].as_str().unwrap();
    let (got, _) = w
        .api("DELETE", &format!("/v1/subscriptions/{id}"), None)
        .await;
    assert_eq!(got, 204);
    let (_, list) = w.api("GET", "/v1/subscriptions", None).await;
    assert!(list["subscriptions"].as_array().unwrap().is_empty());
    let (got, _) = w.api("GET", "/v1/subscriptions/not-a-uuid", None).await;
    assert_eq!(got, 404);
    let (got, _) = w
        .api(
            "POST",
            &format!("/v1/subscriptions/{id}/replay"),
            Some(&json!({"cursor": "start"})),
        )
        .await;
    assert_eq!(got, 404, "a deleted subscription is not replayed");
    let secrets: i64 =
        w.db.client()
            .await
            .query_one("SELECT count(*) FROM feed_subscription_secrets", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(secrets, 0, "the secret is erased");
    let r = reqwest::Client::new()
        .get(format!("{}/v1/subscriptions", w.base.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}
