//! Failure isolation (DESIGN.md guarantee 10), from outside through the
//! simulator: one missing calendar, one flaky calendar, one booking the
//! provider refuses for good, one quarantined connection of a platform
//! provider, one abandoned webhook commit — none of them stops, delays or
//! hides the work of the others.

mod support;

use calsim::{FaultKind, FaultRule, Provider, SimConfig};
use calsync::core::backoff::BackoffPolicy;
use calsync::core::ids::{CalendarProvider, ConnectionId};
use calsync::store::{EventStore, ExpectedVersion, NewEvent};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, Options, World};

fn timed(id: &str, start: DateTime<Utc>, minutes: i64) -> Value {
    json!({"id": id, "summary": id,
        "start": {"dateTime": start.to_rfc3339()},
        "end": {"dateTime": (start + TimeDelta::minutes(minutes)).to_rfc3339()}})
}

fn tomorrow(hour: i64) -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(1)
        + TimeDelta::hours(hour)
}

async fn calendar_status(w: &World, id: ConnectionId) -> Vec<(String, String, i32)> {
    let client = w.db.client().await;
    client
        .query(
            "SELECT calendar_id, status, failures FROM connection_calendars \
             WHERE connection_id = $1 ORDER BY calendar_id",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn busy_of(w: &World, id: ConnectionId) -> Vec<(String, String)> {
    let client = w.db.client().await;
    client
        .query(
            "SELECT calendar_id, external_event_id FROM busy_intervals \
             WHERE connection_id = $1 ORDER BY calendar_id, external_event_id",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// events.list calls whose path names `calendar`, per hour after `from`.
fn lists_per_hour(w: &World, calendar: &str, from: DateTime<Utc>, hours: usize) -> Vec<usize> {
    let mut counts = vec![0; hours];
    for r in w.sim.requests() {
        if r.endpoint == "events.list" && r.at >= from && r.path.contains(calendar) {
            let h = ((r.at - from).num_seconds() / 3600) as usize;
            if h < hours {
                counts[h] += 1;
            }
        }
    }
    eprintln!("{calendar}: events.list per hour {counts:?}");
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_and_a_flaky_calendar_never_hold_back_the_healthy_one() {
    let w = World::start(Options {
        virtual_clock: true,
        backoff: Some(BackoffPolicy::default()),
        sim: SimConfig::for_tests(),
        ..Default::default()
    })
    .await;
    let email = "iso@example.com";
    let google = w.sim.google();
    google.create_account(email);
    let flaky = google.create_calendar(email, "Flaky", "UTC").unwrap();
    w.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.list".into()),
        account: None,
        path: Some(format!("*/calendars/{flaky}/*")),
        body_contains: None,
        kind: FaultKind::Status {
            code: 503,
            retry_after: None,
            reason: Some("backendError".into()),
        },
        remaining: None,
    });
    google
        .upsert_event(email, "primary", timed("evgood01", tomorrow(9), 60))
        .unwrap();
    // The missing calendar is listed first, as sorted ids would put it.
    let id = w
        .connect_calendars(
            CalendarProvider::Google,
            email,
            "pp-iso",
            &["aaa-missing", "primary", &flaky],
            Some("primary"),
        )
        .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            busy_of(&w, id).await == vec![("primary".to_string(), "evgood01".to_string())]
        })
        .await,
        "the healthy calendar was not synced: {:?}",
        busy_of(&w, id).await
    );
    w.settle(&[id]).await;
    let statuses = calendar_status(&w, id).await;
    let status_of = |c: &str| {
        statuses
            .iter()
            .find(|(id, _, _)| id == c)
            .map(|(_, s, _)| s.clone())
    };
    assert_eq!(status_of("aaa-missing").as_deref(), Some("unavailable"));
    assert_eq!(status_of(&flaky).as_deref(), Some("backoff"));
    assert_eq!(status_of("primary").as_deref(), Some("ok"));
    assert_eq!(w.status(id).await.0, "degraded");

    // A change to the healthy calendar is busy within the usual latency,
    // whatever its neighbours do.
    google
        .upsert_event(email, "primary", timed("evgood02", tomorrow(11), 30))
        .unwrap();
    w.notify(id, "google:iso:1").await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            busy_of(&w, id).await.len() == 2
        })
        .await,
        "{:?}",
        busy_of(&w, id).await
    );

    // Three hours on: the missing calendar is probed about hourly, the
    // flaky one backs off to the cap, the healthy one polls as usual.
    let from = w.sim.now();
    for _ in 0..180 {
        w.advance(TimeDelta::seconds(60), &[id]).await;
    }
    let missing = lists_per_hour(&w, "aaa-missing", from, 3);
    let flaky_calls = lists_per_hour(&w, &flaky, from, 3);
    let healthy = lists_per_hour(&w, "/calendars/primary/", from, 3);
    for h in 0..3 {
        assert!(missing[h] <= 2, "hour {h}: missing calendar {missing:?}");
        // The first hour holds the ramp (2 s, 4 s, … 15 min), later ones the cap.
        let bound = if h == 0 { 14 } else { 6 };
        assert!(
            flaky_calls[h] <= bound,
            "hour {h}: flaky calendar {flaky_calls:?}"
        );
        assert!(
            (3..=6).contains(&healthy[h]),
            "hour {h}: healthy {healthy:?}"
        );
    }
    assert!(missing.iter().sum::<usize>() >= 2, "{missing:?}");
    // The healthy calendar's freshness is untouched by the others.
    let client = w.db.client().await;
    let last: DateTime<Utc> = client
        .query_one(
            "SELECT last_success_at FROM connection_calendars \
             WHERE connection_id = $1 AND calendar_id = 'primary'",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(w.now() - last < TimeDelta::minutes(20), "stale: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_in_two_calendars_declined_in_one_still_blocks_time() {
    let w = World::new().await;
    let email = "two@example.com";
    let google = w.sim.google();
    google.create_account(email);
    let team = google.create_calendar(email, "Team", "UTC").unwrap();
    let id = w
        .connect_calendars(
            CalendarProvider::Google,
            email,
            "pp-two",
            &["primary", &team],
            Some("primary"),
        )
        .await;
    // Google gives every copy of an invitation the same event id.
    let invite = |response: &str| {
        let mut e = timed("sharedinvite01", tomorrow(14), 60);
        e["attendees"] = json!([{"email": email, "self": true, "responseStatus": response}]);
        e
    };
    google
        .upsert_event(email, "primary", invite("accepted"))
        .unwrap();
    google
        .upsert_event(email, &team, invite("accepted"))
        .unwrap();
    w.notify(id, "google:two:1").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            busy_of(&w, id).await.len() == 2
        })
        .await,
        "{:?}",
        busy_of(&w, id).await
    );
    google
        .upsert_event(email, "primary", invite("declined"))
        .unwrap();
    w.notify(id, "google:two:2").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            busy_of(&w, id).await == vec![(team.clone(), "sharedinvite01".to_string())]
        })
        .await,
        "the team calendar's copy must still block: {:?}",
        busy_of(&w, id).await
    );
}

async fn post(w: &World, path: &str, body: &Value) -> (u16, Value) {
    w.api("POST", path, Some(body)).await
}

async fn get(w: &World, path: &str) -> Value {
    let (status, body) = w.api("GET", path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn booking(n: usize, pp: &str) -> Value {
    let start = tomorrow(8) + TimeDelta::minutes(30 * n as i64);
    json!({"booking_id": format!("iso-{n:02}"), "version": 1, "platform_provider_id": pp,
        "status": "confirmed", "start": start, "end": start + TimeDelta::minutes(30),
        "time_zone": "Europe/Berlin", "title": format!("Booking {n}")})
}

async fn states(w: &World, id: ConnectionId) -> Vec<(String, String)> {
    let client = w.db.client().await;
    client
        .query(
            "SELECT booking_id, state FROM booking_events WHERE connection_id = $1 \
             ORDER BY booking_id",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nineteen_bookings_are_written_while_the_twentieth_fails_and_a_retry_writes_it_once() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let email = "writes@example.com";
    let id = w
        .connect_calendars(
            CalendarProvider::Google,
            email,
            "pp-writes",
            &["primary"],
            Some("primary"),
        )
        .await;
    // The provider refuses the 20th booking's event for good.
    let refusal = w.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.insert".into()),
        account: None,
        path: None,
        body_contains: Some("\"iso-20\"".into()),
        kind: FaultKind::Status {
            code: 400,
            retry_after: None,
            reason: Some("invalid".into()),
        },
        remaining: None,
    });
    for n in (1..=20).rev() {
        let (status, body) = post(&w, "/v1/bookings", &booking(n, "pp-writes")).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            let s = states(&w, id).await;
            s.iter().filter(|(_, st)| st == "written").count() == 19
                && s.iter().any(|(b, st)| b == "iso-20" && st == "failed")
        })
        .await,
        "{:?}",
        states(&w, id).await
    );
    let shown = get(&w, "/v1/bookings/iso-20").await;
    let row = &shown["calendars"][0];
    assert_eq!(row["state"], "failed", "{shown}");
    assert_eq!(row["waiting_for"], "failed", "{shown}");
    assert!(
        row["last_error"].as_str().unwrap_or("").contains("400"),
        "{shown}"
    );
    // Nothing retries it on its own.
    let inserts = |w: &World| {
        w.sim
            .requests()
            .iter()
            .filter(|r| {
                r.endpoint == "events.insert"
                    && r.body
                        .as_ref()
                        .is_some_and(|b| b.to_string().contains("\"iso-20\""))
            })
            .count()
    };
    w.settle(&[id]).await;
    let attempts = inserts(&w);
    assert_eq!(attempts, 1, "a permanent refusal is tried once");

    w.sim.remove_fault(refusal);
    let (status, body) = post(&w, "/admin/bookings/iso-20/retry", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            states(&w, id).await.iter().all(|(_, st)| st == "written")
        })
        .await,
        "{:?}",
        states(&w, id).await
    );
    let copies = w
        .sim
        .google()
        .stored_events(email, "primary")
        .unwrap()
        .into_iter()
        .filter(|e| e.to_string().contains("\"iso-20\""))
        .count();
    assert_eq!(copies, 1, "written exactly once");
    assert_eq!(inserts(&w), attempts + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_connection_does_not_keep_a_booking_from_the_others() {
    let w = World::start(Options {
        serve: true,
        actors: calsync::actors::ActorSettings {
            max_restarts: 2,
            restart_base_delay: std::time::Duration::from_millis(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let healthy = w
        .connect_calendars(
            CalendarProvider::Google,
            "fan1@example.com",
            "pp-fan",
            &["primary"],
            Some("primary"),
        )
        .await;
    let broken = w
        .connect_calendars(
            CalendarProvider::Google,
            "fan2@example.com",
            "pp-fan",
            &["primary"],
            Some("primary"),
        )
        .await;
    // An event this build cannot read: every start of its actor fails
    // until the supervisor quarantines it.
    w.settle(&[broken]).await;
    let store = w.db.store();
    // The actor may still be writing (its channel, its first sync): append
    // at whatever version the stream is at.
    loop {
        let version = store.stream_version(&broken.stream()).await.unwrap();
        let appended = store
            .append(
                &broken.stream(),
                ExpectedVersion::Exact(version),
                vec![NewEvent::new("connection_paused", 99, r#"{"reason":"x"}"#)],
            )
            .await;
        if appended.is_ok() {
            break;
        }
    }
    w.connections.kill(broken);
    assert!(
        eventually(Duration::from_secs(10), || async {
            let _ = w.connections.inspect(broken).await;
            w.connections.stats().quarantined == 1
        })
        .await,
        "never quarantined"
    );
    let (status, body) = post(&w, "/v1/bookings", &booking(1, "pp-fan")).await;
    assert_eq!(status, 207, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");
    let outcome = |id: ConnectionId| {
        body["routed_to"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["connection_id"] == id.to_string())
            .cloned()
            .unwrap()
    };
    assert_eq!(outcome(healthy)["outcome"], "accepted");
    assert_eq!(outcome(broken)["outcome"], "refused");
    assert_eq!(outcome(broken)["reason"], "quarantined");
    assert!(
        eventually(Duration::from_secs(10), || async {
            states(&w, healthy).await == vec![("iso-01".to_string(), "written".to_string())]
        })
        .await,
        "{:?}",
        states(&w, healthy).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_webhook_commit_finishes_and_its_retry_is_a_duplicate() {
    let w = World::new().await;
    let id = w.google_connection("abandon@example.com").await;
    // The caller hangs up at once (a provider giving up mid-commit).
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_micros(1),
        w.connections
            .notify(id, "google:abandon:1".into(), "test-channel".into()),
    )
    .await;
    assert!(abandoned.is_err(), "the first delivery was not abandoned");
    // The commit goes on without it and leaves nothing behind.
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.connections.notifications_in_flight() == 0
                && w.count_events(id, "notification_accepted").await == 1
        })
        .await,
        "in flight {}, committed {}",
        w.connections.notifications_in_flight(),
        w.count_events(id, "notification_accepted").await
    );
    // The provider's retry of the same notification is acknowledged.
    let retry = w
        .connections
        .notify(id, "google:abandon:1".into(), "test-channel".into())
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(w.count_events(id, "notification_accepted").await, 1);
}
