//! Two-way sync: a booking's own event moved, deleted or declined in the
//! external calendar, under `[outbound] on_external_change`. Under `notify`
//! the change is recorded and reported, and the simulator's request log
//! shows calsync writing nothing more for the booking until a newer version
//! arrives; under `restore` it writes the booking back.

mod support;

use calsync::core::decide::ConnectionCommand;
use calsync::core::external_change::ExternalChangePolicy;
use calsync::core::ids::{BookingId, ConnectionId};
use calsync::core::outbound::{Booking, BookingStatus};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use support::evidence::requests_after;
use support::{eventually, Options, World};
use uuid::Uuid;

const HOST: &str = "host@example.com";
const OTHER: &str = "other@example.com";

fn start(hour: i64) -> DateTime<Utc> {
    support::midnight_in_days(3) + TimeDelta::hours(hour)
}

fn booking(id: &str, version: u64, hour: i64) -> Booking {
    Booking {
        booking_id: BookingId::parse(id).unwrap(),
        version,
        status: BookingStatus::Confirmed,
        start: start(hour),
        end: start(hour) + TimeDelta::minutes(45),
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

async fn world(policy: ExternalChangePolicy) -> World {
    World::start(Options {
        serve: true,
        on_external_change: policy,
        ..Default::default()
    })
    .await
}

/// The booking's row state on `connection` (`GET /v1/bookings/{id}`).
async fn booking_state(w: &World, booking: &str, connection: ConnectionId) -> String {
    let (status, body) = w.api("GET", &format!("/v1/bookings/{booking}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["calendars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["connection_id"] == connection.to_string())
        .map(|r| r["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn wait_state(w: &World, booking: &str, connection: ConnectionId, want: &str) {
    assert!(
        eventually(Duration::from_secs(15), || async {
            booking_state(w, booking, connection).await == want
        })
        .await,
        "{booking} never reached {want}: {}",
        booking_state(w, booking, connection).await
    );
}

fn live(w: &World, email: &str) -> Vec<Value> {
    w.sim
        .google()
        .stored_events(email, "primary")
        .unwrap()
        .into_iter()
        .filter(|e| e["status"] != "cancelled")
        .collect()
}

fn ours<'a>(events: &'a [Value], booking: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["extendedProperties"]["private"]["calsyncBookingId"] == booking)
        .collect()
}

/// Event writes (create, patch, delete) the simulator saw after `seq`.
fn writes_after(w: &World, seq: u64, account: &str) -> Vec<String> {
    requests_after(&w.sim, seq)
        .into_iter()
        .filter(|r| r.account.as_deref() == Some(account))
        .filter(|r| {
            matches!(
                r.endpoint.as_str(),
                "events.insert" | "events.patch" | "events.update" | "events.delete"
            )
        })
        .map(|r| format!("{} {}", r.endpoint, r.path))
        .collect()
}

/// The feed's `booking.external_changed` events so far.
async fn external_changes_on_feed(w: &World) -> Vec<Value> {
    let (status, body) = w
        .api(
            "GET",
            "/v1/changes?types=booking.external_changed&limit=1000",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

/// The feed once it shows `n` external changes (the feed reads below the
/// log's transaction watermark, so it may trail a commit by a moment).
async fn feed_with(w: &World, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..100 {
        last = external_changes_on_feed(w).await;
        if last.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.len(), n, "{last:#?}");
    last
}

/// Two hosts, each with a booking written; returns their connections.
async fn two_hosts_with_bookings(w: &World) -> (ConnectionId, ConnectionId) {
    let host = w.google_connection(HOST).await;
    let other = w.google_connection(OTHER).await;
    apply(w, host, booking("bk-1", 1, 10)).await;
    apply(w, other, booking("bk-2", 1, 11)).await;
    wait_state(w, "bk-1", host, "written").await;
    wait_state(w, "bk-2", other, "written").await;
    (host, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_notify_a_moved_then_deleted_event_is_reported_and_never_written_back() {
    let w = world(ExternalChangePolicy::Notify).await;
    let (host, other) = two_hosts_with_bookings(&w).await;
    let event_id = ours(&live(&w, HOST), "bk-1")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let seq = w.request_head();

    // The host drags the event two hours later.
    w.sim
        .google()
        .patch_event(
            HOST,
            "primary",
            &event_id,
            json!({"start": {"dateTime": start(12).to_rfc3339()},
                   "end": {"dateTime": (start(12) + TimeDelta::minutes(45)).to_rfc3339()}}),
        )
        .unwrap();
    w.notify(host, "moved").await;
    wait_state(&w, "bk-1", host, "external_changed").await;
    let head = w.at_rest(host, HOST).await;
    let feed = feed_with(&w, 1).await;
    assert_eq!(feed[0]["data"]["change"]["kind"], "moved");
    assert_eq!(feed[0]["data"]["change"]["start"], json!(start(12)));
    assert_eq!(feed[0]["data"]["action"], "held");
    assert_eq!(feed[0]["data"]["booking_id"], "bk-1");

    // Then deletes it.
    w.sim
        .google()
        .delete_event(HOST, "primary", &event_id)
        .unwrap();
    w.notify(host, "deleted").await;
    w.wait_for_event(host, "booking_externally_changed", head)
        .await;
    w.at_rest(host, HOST).await;
    assert_eq!(booking_state(&w, "bk-1", host).await, "external_changed");
    let feed = feed_with(&w, 2).await;
    assert_eq!(feed[1]["data"]["change"]["kind"], "deleted");

    // Nothing written back: no create, no patch — the request log says so.
    assert_eq!(writes_after(&w, seq, HOST), Vec::<String>::new());
    assert!(ours(&live(&w, HOST), "bk-1").is_empty());
    // The other host's booking is untouched.
    assert_eq!(booking_state(&w, "bk-2", other).await, "written");
    assert_eq!(ours(&live(&w, OTHER), "bk-2").len(), 1);

    // A newer version from the platform lifts the hold: written anew.
    apply(&w, host, booking("bk-1", 2, 14)).await;
    wait_state(&w, "bk-1", host, "written").await;
    let now = ours(&live(&w, HOST), "bk-1")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(now.len(), 1);
    assert_ne!(now[0]["id"], event_id, "a new event (Google keeps old ids)");
    assert_eq!(now[0]["summary"], "Booking bk-1 v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_restore_a_moved_event_is_patched_back_and_a_deleted_one_re_created() {
    let w = world(ExternalChangePolicy::Restore).await;
    let (host, _other) = two_hosts_with_bookings(&w).await;
    let event_id = ours(&live(&w, HOST), "bk-1")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let seq = w.request_head();
    w.sim
        .google()
        .patch_event(
            HOST,
            "primary",
            &event_id,
            json!({"start": {"dateTime": start(12).to_rfc3339()},
                   "end": {"dateTime": (start(12) + TimeDelta::minutes(45)).to_rfc3339()}}),
        )
        .unwrap();
    w.notify(host, "moved").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            let mine = live(&w, HOST);
            let e = ours(&mine, "bk-1");
            e.len() == 1
                && e[0]["start"]["dateTime"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                    == Some(start(10))
        })
        .await,
        "the move was never patched back"
    );
    let writes = writes_after(&w, seq, HOST);
    assert!(
        writes.iter().all(|w| w.starts_with("events.patch")),
        "{writes:?}"
    );
    assert!(!writes.is_empty());

    let seq = w.request_head();
    w.sim
        .google()
        .delete_event(HOST, "primary", &event_id)
        .unwrap();
    w.notify(host, "deleted").await;
    assert!(
        eventually(Duration::from_secs(15), || async {
            ours(&live(&w, HOST), "bk-1").len() == 1
        })
        .await,
        "the deleted event was never re-created"
    );
    wait_state(&w, "bk-1", host, "written").await;
    let writes = writes_after(&w, seq, HOST);
    assert_eq!(
        writes
            .iter()
            .filter(|w| w.starts_with("events.insert"))
            .count(),
        1,
        "{writes:?}"
    );
    let feed = feed_with(&w, 2).await;
    let kinds: Vec<&str> = feed
        .iter()
        .map(|e| e["data"]["change"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["moved", "deleted"]);
    assert!(feed.iter().all(|e| e["data"]["action"] == "restoring"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_invitation_is_reported_once_and_never_fixed() {
    let w = world(ExternalChangePolicy::Restore).await;
    let (host, _other) = two_hosts_with_bookings(&w).await;
    let event = ours(&live(&w, HOST), "bk-1")[0].clone();
    let seq = w.request_head();
    w.sim
        .google()
        .patch_event(
            HOST,
            "primary",
            event["id"].as_str().unwrap(),
            json!({"attendees": [{"email": "client@example.com", "responseStatus": "declined"}]}),
        )
        .unwrap();
    w.notify(host, "declined").await;
    let head = w
        .wait_for_event(host, "booking_externally_changed", 0)
        .await;
    assert_eq!(head.payload["change"]["kind"], "declined");
    assert_eq!(
        head.payload["change"]["attendees"],
        json!(["client@example.com"])
    );
    // Seen again (another sync): not reported twice, and never "fixed".
    w.notify(host, "again").await;
    w.at_rest(host, HOST).await;
    assert_eq!(w.count_events(host, "booking_externally_changed").await, 1);
    assert_eq!(writes_after(&w, seq, HOST), Vec::<String>::new());
    assert_eq!(booking_state(&w, "bk-1", host).await, "written");
    let feed = feed_with(&w, 1).await;
    assert_eq!(feed[0]["data"]["action"], "reported");
}
