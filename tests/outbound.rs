//! Outbound sync: bookings appear in, move in and vanish from the external
//! calendar exactly once — through lost responses, 503s, 429s and kills.

mod support;

use calsim::{FaultKind, FaultRule, Provider};
use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::{BookingId, ConnectionId};
use calsync::core::outbound::{Booking, BookingStatus};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use support::{eventually, Logged, Options, World};
use uuid::Uuid;

fn base() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(3)
}

fn booking(id: &str, version: u64, hour: i64, status: BookingStatus) -> Booking {
    Booking {
        booking_id: BookingId::parse(id).unwrap(),
        version,
        status,
        start: base() + TimeDelta::hours(hour),
        end: base() + TimeDelta::hours(hour) + TimeDelta::minutes(45),
        time_zone: "Europe/Berlin".into(),
        title: format!("Booking {id} v{version}"),
        attendees: vec!["client@example.com".into()],
    }
}

async fn apply(w: &World, id: ConnectionId, b: Booking) {
    w.connections
        .command(id, ConnectionCommand::ApplyBooking(b), Uuid::new_v4())
        .await
        .unwrap();
}

/// Google events in the primary calendar that are not cancelled.
fn google_live(w: &World, email: &str) -> Vec<Value> {
    w.sim
        .google()
        .stored_events(email, "primary")
        .unwrap()
        .into_iter()
        .filter(|e| e["status"] != "cancelled")
        .collect()
}

async fn booking_rows(
    w: &World,
    id: ConnectionId,
) -> HashMap<String, (String, Option<String>, i64)> {
    let client = w.db.client().await;
    client
        .query(
            "SELECT booking_id, state, external_event_id, booking_version FROM booking_events \
             WHERE connection_id = $1",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

/// Inbound sync read each booking's event back and recognised it as ours
/// (blocking nothing): the evidence that "never busy" was checked after a
/// sync saw the event, not before.
async fn assert_own_events_seen(w: &World, id: ConnectionId, bookings: &[&str]) {
    let seen = w.events_after(id, "external_event_seen", 0).await;
    for booking in bookings {
        assert!(
            seen.iter()
                .any(|e| e.payload["ours"] == *booking && e.payload["blocks"].is_null()),
            "no sync read {booking}'s event back as ours"
        );
    }
}

/// Intents in the log with no result (success or failure) for their
/// booking after them: (booking id, intent position).
async fn open_intents(w: &World, id: ConnectionId) -> Vec<(String, i64)> {
    let mut open: HashMap<String, i64> = HashMap::new();
    let mut all = [
        w.events_after(id, "outbound_intent_recorded", 0).await,
        w.events_after(id, "outbound_write_succeeded", 0).await,
        w.events_after(id, "outbound_write_failed", 0).await,
    ]
    .concat();
    all.sort_by_key(|e| e.position);
    for e in all {
        let booking = e.payload["booking_id"].as_str().unwrap().to_string();
        if e.event_type == "outbound_intent_recorded" {
            open.insert(booking, e.position);
        } else {
            open.remove(&booking);
        }
    }
    let mut open: Vec<(String, i64)> = open.into_iter().collect();
    open.sort();
    open
}

async fn settled(w: &World, id: ConnectionId) -> bool {
    let rows = booking_rows(w, id).await;
    !rows.is_empty()
        && rows
            .values()
            .all(|(state, _, _)| state == "written" || state == "removed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_bookings_are_created_moved_in_place_and_removed() {
    let w = World::new().await;
    let id = w.google_connection("out@example.com").await;
    apply(&w, id, booking("bk-1", 1, 10, BookingStatus::Confirmed)).await;
    assert!(eventually(Duration::from_secs(10), || async { settled(&w, id).await }).await);
    let live = google_live(&w, "out@example.com");
    assert_eq!(live.len(), 1);
    let first_id = live[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        live[0]["extendedProperties"]["private"]["calsyncBookingId"],
        "bk-1"
    );

    // Rescheduled: the same event moves (PATCH), no delete + create.
    apply(&w, id, booking("bk-1", 2, 14, BookingStatus::Confirmed)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let live = google_live(&w, "out@example.com");
            live.len() == 1 && live[0]["summary"] == "Booking bk-1 v2"
        })
        .await
    );
    let live = google_live(&w, "out@example.com");
    assert_eq!(
        live[0]["id"],
        first_id.as_str(),
        "a reschedule must not re-create"
    );
    assert_eq!(w.provider_calls("events.delete"), 0);

    // Cancelled: it vanishes.
    apply(&w, id, booking("bk-1", 3, 14, BookingStatus::Cancelled)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            google_live(&w, "out@example.com").is_empty()
        })
        .await
    );
    assert!(eventually(Duration::from_secs(10), || async { settled(&w, id).await }).await);
    assert_eq!(booking_rows(&w, id).await["bk-1"].0, "removed");

    // Re-booked after the cancellation: a new event (Google keeps the old
    // id reserved, so a new generation gets a new id).
    apply(&w, id, booking("bk-1", 4, 9, BookingStatus::Confirmed)).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            google_live(&w, "out@example.com").len() == 1
        })
        .await
    );
    assert_ne!(
        google_live(&w, "out@example.com")[0]["id"],
        first_id.as_str()
    );

    // Our own event never blocks time: a sync that started after it was
    // written has run (at rest), it saw the event as ours, and nothing is
    // busy.
    assert!(eventually(Duration::from_secs(10), || async { settled(&w, id).await }).await);
    w.at_rest(id, "out@example.com").await;
    assert_own_events_seen(&w, id, &["bk-1"]).await;
    assert!(
        w.busy(id).await.is_empty(),
        "our own booking came back as busy time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_bookings_survive_lost_responses_outages_and_throttling_without_duplicates() {
    let w = World::new().await;
    let id = w.graph_connection("out@contoso.com").await;
    let mut faults = Vec::new();
    for kind in [
        FaultKind::CreatedButResponseLost { status: Some(504) },
        FaultKind::Status {
            code: 503,
            retry_after: None,
            reason: None,
        },
        FaultKind::Status {
            code: 429,
            retry_after: Some(0.4),
            reason: Some("ApplicationThrottled".into()),
        },
        FaultKind::CreatedButResponseLost { status: None },
    ] {
        faults.push(w.sim.add_fault(FaultRule {
            provider: Provider::Graph,
            endpoint: Some("events.create".into()),
            account: None,
            path: None,
            body_contains: None,
            kind,
            remaining: Some(1),
        }));
    }
    for n in 0..4 {
        apply(
            &w,
            id,
            booking(&format!("bk-{n}"), 1, 8 + n, BookingStatus::Confirmed),
        )
        .await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            let rows = booking_rows(&w, id).await;
            rows.len() == 4 && rows.values().all(|r| r.0 == "written")
        })
        .await,
        "{:?}",
        booking_rows(&w, id).await
    );
    assert_eq!(
        w.sim.graph().event_count("out@contoso.com"),
        4,
        "exactly one event per booking"
    );
    // Our Graph events are recognised when they come back through delta.
    w.at_rest(id, "out@contoso.com").await;
    assert_own_events_seen(&w, id, &["bk-0", "bk-1", "bk-2", "bk-3"]).await;
    assert!(w.busy(id).await.is_empty());
    // Cancel all: the calendar is empty again.
    for n in 0..4 {
        apply(
            &w,
            id,
            booking(&format!("bk-{n}"), 2, 8 + n, BookingStatus::Cancelled),
        )
        .await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            w.sim.graph().event_count("out@contoso.com") == 0
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_repeated_booking_changes_converge_to_the_latest_version() {
    let w = World::new().await;
    let id = w.google_connection("order@example.com").await;
    // v3 arrives first, then v1 and v2 late, then v3 again.
    apply(&w, id, booking("bk-o", 3, 16, BookingStatus::Confirmed)).await;
    apply(&w, id, booking("bk-o", 1, 9, BookingStatus::Confirmed)).await;
    apply(&w, id, booking("bk-o", 2, 11, BookingStatus::Cancelled)).await;
    apply(&w, id, booking("bk-o", 3, 16, BookingStatus::Confirmed)).await;
    assert!(eventually(Duration::from_secs(10), || async { settled(&w, id).await }).await);
    let live = google_live(&w, "order@example.com");
    assert_eq!(live.len(), 1);
    assert_eq!(live[0]["summary"], "Booking bk-o v3");
    assert_eq!(
        w.count_events(id, "booking_received").await,
        1,
        "stale versions are not recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_between_intent_and_result_never_duplicate_lose_or_leave_stale_events() {
    // Deliberate kills must not trip the quarantine in this test.
    let w = World::start(Options {
        actors: calsync::actors::ActorSettings {
            max_restarts: 1_000,
            restart_base_delay: Duration::from_millis(5),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let id = w.google_connection("kill@example.com").await;
    let mut latest: HashMap<String, Booking> = HashMap::new();
    let mut proven = 0;
    let mut wanted = 0;
    for round in 0..60u64 {
        let n = round % 6;
        let key = format!("bk-k{n}");
        let version = latest.get(&key).map(|b| b.version + 1).unwrap_or(1);
        let status = if round % 7 == 3 {
            BookingStatus::Cancelled
        } else {
            BookingStatus::Confirmed
        };
        let b = booking(&key, version, 7 + (round as i64 % 10), status);
        latest.insert(key, b.clone());
        // On odd rounds that owe a write, the next write reaching Google is
        // held there, authenticated but not performed, until the kill.
        let hold = format!("kill-{round}");
        let held_round = round % 2 == 1 && status == BookingStatus::Confirmed;
        let rules: Vec<u64> = if held_round {
            [
                "events.insert",
                "events.patch",
                "events.update",
                "events.delete",
            ]
            .iter()
            .map(|endpoint| {
                w.sim.add_fault(FaultRule {
                    provider: Provider::Google,
                    endpoint: Some(endpoint.to_string()),
                    account: None,
                    path: None,
                    body_contains: None,
                    kind: FaultKind::Hold { name: hold.clone() },
                    remaining: Some(1),
                })
            })
            .collect()
        } else {
            Vec::new()
        };
        // The actor may be dead at this moment (restarting after the last
        // kill): retry like a platform would, until it takes the booking.
        support::wait_for(
            &format!("booking {} v{} accepted", b.booking_id, b.version),
            support::DEADLINE,
            || async {
                w.connections
                    .command(
                        id,
                        ConnectionCommand::ApplyBooking(b.clone()),
                        Uuid::new_v4(),
                    )
                    .await
                    .ok()
            },
        )
        .await;
        if !held_round {
            continue;
        }
        wanted += 1;
        // Evidence of the window: a write is held at the provider, so its
        // result cannot be logged yet, and the log shows an intent without
        // a result after it.
        support::wait_for(
            &format!("a write held at the provider in round {round}"),
            support::DEADLINE,
            || async { (w.sim.held(&hold) >= 1).then_some(()) },
        )
        .await;
        let open = open_intents(&w, id).await;
        assert!(
            !open.is_empty(),
            "round {round}: a write is at the provider but no intent is open"
        );
        let at_kill = w.log_head().await;
        assert!(w.connections.kill(id), "round {round}: nothing to kill");
        proven += 1;
        w.sim.release_hold(&hold);
        for rule in rules {
            w.sim.remove_fault(rule);
        }
        // Whatever result those intents get, it is logged after the kill.
        let results: Vec<Logged> = [
            w.events_after(id, "outbound_write_succeeded", 0).await,
            w.events_after(id, "outbound_write_failed", 0).await,
        ]
        .concat();
        for (booking, intent_at) in &open {
            assert!(
                !results
                    .iter()
                    .any(|r| r.payload["booking_id"] == booking.as_str()
                        && r.position > *intent_at
                        && r.position <= at_kill),
                "round {round}: {booking}'s result was logged before the kill"
            );
        }
    }
    assert_eq!(proven, wanted, "every held round killed inside its window");
    assert!(proven >= 20, "only {proven} kills");
    assert!(
        eventually(Duration::from_secs(60), || async { settled(&w, id).await }).await,
        "{:?}",
        booking_rows(&w, id).await
    );
    // Every intent opened before a kill was completed after it.
    assert!(
        open_intents(&w, id).await.is_empty(),
        "{:?}",
        open_intents(&w, id).await
    );
    // Compare the calendar with the bookings' last versions.
    let live = google_live(&w, "kill@example.com");
    let mut by_booking: HashMap<String, Vec<&Value>> = HashMap::new();
    for e in &live {
        let b = e["extendedProperties"]["private"]["calsyncBookingId"]
            .as_str()
            .unwrap()
            .to_string();
        by_booking.entry(b).or_default().push(e);
    }
    for (key, b) in &latest {
        let events = by_booking.get(key).cloned().unwrap_or_default();
        match b.status {
            BookingStatus::Confirmed => {
                assert_eq!(events.len(), 1, "{key}: {} external events", events.len());
                assert_eq!(
                    events[0]["summary"],
                    format!("Booking {key} v{}", b.version),
                    "{key} is stale"
                );
            }
            BookingStatus::Cancelled => {
                assert!(events.is_empty(), "{key} was cancelled but is still there")
            }
        }
    }
    assert_eq!(
        by_booking.len(),
        latest
            .values()
            .filter(|b| b.status == BookingStatus::Confirmed)
            .count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_made_while_the_grant_is_revoked_wait_visibly_then_go_out() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let id = w.google_connection("wait@example.com").await;
    w.sim.google().revoke_grant("wait@example.com");
    let http = reqwest::Client::new();
    let base_url = w.base.clone().unwrap();
    let body = json!({
        "booking_id": "bk-w", "version": 1, "platform_provider_id": "pp-wait@example.com",
        "status": "confirmed", "start": base() + TimeDelta::hours(10),
        "end": base() + TimeDelta::hours(11), "time_zone": "America/New_York",
        "title": "Consultation", "attendees": ["x@example.com"]
    });
    let r = http
        .post(format!("{base_url}/v1/bookings"))
        .bearer_auth("admin")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let routed: Value = r.json().await.unwrap();
    assert_eq!(routed["routed_to"].as_array().unwrap().len(), 1);
    // The write fails with invalid_grant: the connection needs
    // re-authorisation and the booking waits, visibly.
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(id).await.0 == "needs_reauthorization"
        })
        .await
    );
    // Read until the booking shows the gate (its own events may land just
    // after the connection's status).
    let booking = || async {
        http.get(format!("{base_url}/v1/bookings/bk-w"))
            .bearer_auth("admin")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            booking().await["calendars"][0]["waiting_for"] == "needs_reauthorization"
        })
        .await,
        "{}",
        booking().await
    );
    let state = booking().await;
    // The write is owed and held by the gate, and says which gate. Owed is
    // `waiting` when the gate closed before the write's intent was
    // recorded, `pending` when the intent was recorded first (a race
    // between the sync and the write meeting the revoked grant; CI saw
    // both).
    assert_eq!(state["calendars"].as_array().unwrap().len(), 1, "{state}");
    assert!(
        matches!(
            state["calendars"][0]["state"].as_str(),
            Some("waiting" | "pending")
        ),
        "{state}"
    );
    assert_eq!(
        state["calendars"][0]["waiting_for"], "needs_reauthorization",
        "{state}"
    );
    assert_eq!(state["calendars"][0]["external_event_id"], Value::Null);
    assert!(google_live(&w, "wait@example.com").is_empty());

    // The user re-authorises: the platform hands calsync the new grant.
    let account = w.sim.google().create_account("wait@example.com");
    let r = http
        .put(format!("{base_url}/admin/connections/{id}/credentials"))
        .bearer_auth("admin")
        .json(&json!({
            "client_id": account.client_id,
            "client_secret": account.client_secret,
            "refresh_token": account.refresh_token,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The log records that credentials changed, never the secret.
    let client = w.db.client().await;
    let leaked: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'",
            &[&account.refresh_token],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
    assert_eq!(w.count_events(id, "credentials_changed").await, 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            google_live(&w, "wait@example.com").len() == 1
        })
        .await
    );
    assert!(eventually(Duration::from_secs(10), || async { settled(&w, id).await }).await);
    // Support looks it up from the command line.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["bookings", "show", "bk-w", "--json"])
        .env("DATABASE_URL", w.db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown[0]["state"], "written");
    assert_eq!(shown[0]["ical_uid"], "bk-w@calsync");

    // Bad input is a 400 with a message; nothing is routed.
    for bad in [
        json!({"booking_id": "", "version": 1, "platform_provider_id": "p", "status": "confirmed",
               "start": base(), "end": base() + TimeDelta::hours(1), "time_zone": "UTC", "title": "t"}),
        json!({"booking_id": "b", "version": 1, "platform_provider_id": "p", "status": "maybe",
               "start": base(), "end": base() + TimeDelta::hours(1), "time_zone": "UTC", "title": "t"}),
        json!({"booking_id": "b", "version": 1, "platform_provider_id": "p", "status": "confirmed",
               "start": base(), "end": base(), "time_zone": "UTC", "title": "t"}),
        json!({"booking_id": "b", "version": 1, "platform_provider_id": "p", "status": "confirmed",
               "start": base(), "end": base() + TimeDelta::hours(1), "time_zone": "Nowhere/Land", "title": "t"}),
    ] {
        let r = http
            .post(format!("{base_url}/v1/bookings"))
            .bearer_auth("admin")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_goes_to_each_destination_of_its_platform_provider_and_blocks_nothing() {
    let app = support::fixtures::spawn_app()
        .options(Options {
            serve: true,
            ..Default::default()
        })
        .with_range()
        .start()
        .await;
    let w = &app.world;
    for f in &app.fixtures {
        f.wait_for_expected_busy(w).await;
    }
    let clinic: Vec<_> = app
        .fixtures
        .iter()
        .filter(|f| f.platform_provider == "pp-clinic")
        .collect();
    assert_eq!(clinic.len(), 2, "a Google and a Graph connection");
    let start = clinic[0]
        .zone
        .midnight(clinic[0].dst_day + TimeDelta::days(4))
        + TimeDelta::hours(10);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/bookings", w.base.clone().unwrap()))
        .bearer_auth("admin")
        .json(&json!({
            "booking_id": "bk-range", "version": 1, "platform_provider_id": "pp-clinic",
            "status": "confirmed", "start": start, "end": start + TimeDelta::hours(1),
            "time_zone": "Australia/Sydney", "title": "Consultation", "attendees": []
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let routed: Value = r.json().await.unwrap();
    assert_eq!(routed["routed_to"].as_array().unwrap().len(), 2, "{routed}");
    for f in &clinic {
        assert!(
            eventually(Duration::from_secs(15), || async {
                f.live_events(w, &f.destination).len() == 1
            })
            .await,
            "{}: no event in the destination calendar",
            f.account
        );
        for calendar in &f.blocking {
            assert!(
                f.live_events(w, calendar)
                    .iter()
                    .all(|e| !e.to_string().contains("Consultation")),
                "{}: the booking landed in blocking calendar {calendar}",
                f.account
            );
        }
        // A sync after the write has run: the booking blocks nothing, the
        // calendars' busy time is unchanged.
        w.at_rest(f.id, &f.account).await;
        assert_eq!(f.busy(w).await, f.expected_busy, "{}", f.account);
    }
    // The other platform provider's connections got nothing.
    for f in app
        .fixtures
        .iter()
        .filter(|f| f.platform_provider != "pp-clinic")
    {
        assert!(f.live_events(w, &f.destination).is_empty(), "{}", f.account);
    }
}
