//! `GET /v1/providers/{id}/explain`: every busy interval with its source and
//! rule, every ignored event with its reason, per-calendar freshness — for
//! Google and Microsoft Graph connections synced from the simulators over
//! real HTTP; and replay rebuilds both explanations identically.

mod support;

use calsync::replay::{self, ProgressMode, ReplayOptions};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use support::{eventually, Options, World};

fn day() -> DateTime<Utc> {
    support::midnight_in_days(2)
}

fn at(hours: i64) -> DateTime<Utc> {
    day() + TimeDelta::hours(hours)
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339().replace('+', "%2B")
}

fn explain_path(pp: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!("/v1/providers/{pp}/explain?from={}&to={}", q(from), q(to))
}

/// event id → rule (busy) or reason (ignored).
fn by_id(body: &Value, list: &str, field: &str) -> BTreeMap<String, String> {
    body[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {body}"))
        .iter()
        .map(|e| {
            (
                e["source"]["external_event_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                e[field].as_str().unwrap_or("<none>").to_string(),
            )
        })
        .collect()
}

fn google_timed(id: &str, from: i64, extra: Value) -> Value {
    let mut e = json!({"id": id, "summary": "private title",
        "start": {"dateTime": at(from).to_rfc3339()},
        "end": {"dateTime": at(from + 1).to_rfc3339()}});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// Notifies the connection, then asks `path` until `done` holds for the
/// answer (events reach the projections through a sync round).
async fn sync_until(
    w: &World,
    id: calsync::core::ids::ConnectionId,
    key: &str,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    w.notify(id, key).await;
    let cell = std::cell::RefCell::new(Value::Null);
    let (last, done) = (&cell, &done);
    let reached = eventually(Duration::from_secs(20), || async move {
        let (status, body) = w.api("GET", path, None).await;
        let ok = status == 200 && done(&body);
        *last.borrow_mut() = body;
        ok
    })
    .await;
    let last = cell.into_inner();
    assert!(reached, "never reached; last answer: {last}");
    last
}

fn count(body: &Value, list: &str) -> usize {
    body[list].as_array().map_or(0, Vec::len)
}

async fn verify_replay(w: &World) {
    let report = replay::verify(
        &w.db.store(),
        &ReplayOptions {
            progress: ProgressMode::Quiet,
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(
        report.is_clean(),
        "replay differs: {}",
        serde_json::to_string_pretty(&report.tables).unwrap()
    );
    assert!(
        report
            .rows_written
            .get("ignored_events")
            .copied()
            .unwrap_or(0)
            > 0,
        "replay rebuilt no ignored events: {:?}",
        report.rows_written
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_busy_rules_and_ignore_reasons_are_explained() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let email = "explain-g@example.com";
    w.sim.google().create_account_in(email, "Europe/Berlin");
    let g = w.sim.google();
    let events = [
        google_timed("opaque01", 8, json!({})),
        google_timed("tentat01", 9, json!({"status": "tentative"})),
        google_timed("oofevt01", 10, json!({"eventType": "outOfOffice"})),
        google_timed("transp01", 11, json!({"transparency": "transparent"})),
        google_timed("location1", 12, json!({"eventType": "workingLocation"})),
        google_timed(
            "declined1",
            13,
            json!({"attendees": [{"email": email, "self": true, "responseStatus": "declined"}]}),
        ),
        google_timed(
            "ourbook01",
            14,
            json!({"extendedProperties": {"private": {"calsyncBookingId": "booking-7"}}}),
        ),
        google_timed("cancel01", 15, json!({})),
        json!({"id": "fulldate1", "start": {"date": (day() + TimeDelta::days(1)).format("%Y-%m-%d").to_string()},
               "end": {"date": (day() + TimeDelta::days(2)).format("%Y-%m-%d").to_string()}}),
    ];
    for e in events {
        g.upsert_event(email, "primary", e).unwrap();
    }
    let id = w.google_connection(email).await;
    let pp = format!("pp-{email}");
    let path = explain_path(&pp, day(), day() + TimeDelta::days(4));
    sync_until(&w, id, "k1", &path, |b| {
        count(b, "busy") == 5 && count(b, "ignored") == 4
    })
    .await;

    // After the first round: one event is cancelled, one appears beyond
    // the sync window (Google's incremental sync reports changes anywhere).
    g.delete_event(email, "primary", "cancel01").unwrap();
    let far = day() + TimeDelta::days(300);
    g.upsert_event(
        email,
        "primary",
        json!({"id": "outside01", "start": {"dateTime": far.to_rfc3339()},
               "end": {"dateTime": (far + TimeDelta::hours(1)).to_rfc3339()}}),
    )
    .unwrap();
    let far_path = explain_path(&pp, far - TimeDelta::days(1), far + TimeDelta::days(1));
    sync_until(&w, id, "k2", &path, |b| {
        count(b, "busy") == 4 && count(b, "ignored") == 5
    })
    .await;
    sync_until(&w, id, "k2b", &far_path, |b| {
        by_id(b, "ignored", "reason").contains_key("outside01")
    })
    .await;

    let (status, body) = w.api("GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    let busy = by_id(&body, "busy", "rule");
    assert_eq!(
        busy,
        BTreeMap::from([
            (
                "fulldate1".to_string(),
                "all_day_in_zone(Europe/Berlin)".to_string()
            ),
            ("oofevt01".to_string(), "oof".to_string()),
            ("opaque01".to_string(), "opaque".to_string()),
            ("tentat01".to_string(), "tentative_default".to_string()),
        ]),
        "{body}"
    );
    // The all-day event blocks from midnight in Berlin, 23:00 UTC before.
    let all_day = body["busy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["source"]["external_event_id"] == "fulldate1")
        .unwrap();
    assert_eq!(
        all_day["start"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        day() + TimeDelta::days(1) - TimeDelta::hours(1)
    );
    let source = &all_day["source"];
    assert_eq!(source["connection_id"], id.to_string());
    assert_eq!(source["provider"], "google");
    assert_eq!(source["calendar_id"], "primary");
    // Titles never enter the log, so they are never answered.
    assert!(source["title"].is_null(), "{source}");
    assert!(!body.to_string().contains("private title"));

    let ignored = by_id(&body, "ignored", "reason");
    for (event, reason) in [
        ("transp01", "transparent"),
        ("location1", "working_location"),
        ("declined1", "declined"),
        ("ourbook01", "own_booking"),
        ("cancel01", "cancelled"),
    ] {
        assert_eq!(
            ignored.get(event).map(String::as_str),
            Some(reason),
            "{event}: {body}"
        );
    }
    assert!(
        !ignored.contains_key("outside01"),
        "outside the asked window"
    );
    let own = body["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"]["external_event_id"] == "ourbook01")
        .unwrap();
    assert_eq!(own["booking_id"], "booking-7");
    assert_eq!(
        own["start"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        at(14)
    );

    // Freshness per calendar.
    let fresh = body["freshness"].as_array().unwrap();
    assert_eq!(fresh.len(), 1, "{body}");
    assert_eq!(fresh[0]["calendar_id"], "primary");
    assert_eq!(fresh[0]["status"], "ok");
    assert!(fresh[0]["last_successful_sync"].is_string());

    // The event beyond the window: ignored, with the reason.
    let (status, body) = w.api("GET", &far_path, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        by_id(&body, "ignored", "reason")
            .get("outside01")
            .map(String::as_str),
        Some("outside_window"),
        "{body}"
    );
    assert!(by_id(&body, "busy", "rule").is_empty(), "{body}");
    // And the platform's busy answer agrees: it does not block.
    let busy_path = format!(
        "/v1/providers/{pp}/busy?from={}&to={}",
        q(far - TimeDelta::days(1)),
        q(far + TimeDelta::days(1))
    );
    let (_, busy_body) = w.api("GET", &busy_path, None).await;
    assert_eq!(
        busy_body["busy"].as_array().unwrap().len(),
        0,
        "{busy_body}"
    );

    // An event that stops being ignored moves to the busy side.
    g.upsert_event(
        email,
        "primary",
        google_timed("transp01", 11, json!({"transparency": "opaque"})),
    )
    .unwrap();
    let body = sync_until(&w, id, "k3", &path, |b| count(b, "busy") == 5).await;
    assert_eq!(
        by_id(&body, "busy", "rule")
            .get("transp01")
            .map(String::as_str),
        Some("opaque")
    );
    assert!(!by_id(&body, "ignored", "reason").contains_key("transp01"));

    // Bad input and missing credentials.
    let bad = format!(
        "/v1/providers/{pp}/explain?from={}&to={}",
        q(day()),
        q(day())
    );
    assert_eq!(w.api("GET", &bad, None).await.0, 400);
    let too_long = explain_path(&pp, day(), day() + TimeDelta::days(400));
    assert_eq!(w.api("GET", &too_long, None).await.0, 400);
    assert_eq!(
        w.api(
            "GET",
            &format!("/v1/providers/{pp}/explain?from=yesterday"),
            None
        )
        .await
        .0,
        400
    );
    let base = w.base.clone().unwrap();
    let anonymous = reqwest::get(format!("{base}{path}")).await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    verify_replay(&w).await;
}

fn graph_timed(from: i64, extra: Value) -> Value {
    let wall = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let mut e = json!({"subject": "private title",
        "start": {"dateTime": wall(at(from)), "timeZone": "UTC"},
        "end": {"dateTime": wall(at(from + 1)), "timeZone": "UTC"}});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_busy_rules_and_ignore_reasons_are_explained() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let upn = "explain-m@example.com";
    let m = w.sim.graph();
    m.create_account(upn);
    let mut ids = BTreeMap::new();
    let tag = calsync::core::busy::booking_tag("booking-9", 0);
    let all_day_date = |d: i64| {
        (day() + TimeDelta::days(d))
            .format("%Y-%m-%dT00:00:00")
            .to_string()
    };
    for (name, body) in [
        ("opaque", graph_timed(8, json!({"showAs": "busy"}))),
        ("tentative", graph_timed(9, json!({"showAs": "tentative"}))),
        ("oof", graph_timed(10, json!({"showAs": "oof"}))),
        ("unknown", graph_timed(11, json!({"showAs": "unknown"}))),
        ("free", graph_timed(12, json!({"showAs": "free"}))),
        (
            "elsewhere",
            graph_timed(13, json!({"showAs": "workingElsewhere"})),
        ),
        (
            "declined",
            graph_timed(14, json!({"responseStatus": {"response": "declined"}})),
        ),
        ("ours", graph_timed(15, json!({"transactionId": tag}))),
        ("cancel", graph_timed(16, json!({}))),
        (
            "allday",
            json!({"subject": "day off", "isAllDay": true, "showAs": "oof",
                   "start": {"dateTime": all_day_date(1), "timeZone": "Europe/Berlin"},
                   "end": {"dateTime": all_day_date(2), "timeZone": "Europe/Berlin"}}),
        ),
    ] {
        let created = m.create_event(upn, body).unwrap();
        ids.insert(created["id"].as_str().unwrap().to_string(), name);
    }
    let id = w.graph_connection(upn).await;
    let pp = format!("pp-{upn}");
    let path = explain_path(&pp, day(), day() + TimeDelta::days(4));
    sync_until(&w, id, "k1", &path, |b| {
        count(b, "busy") == 6 && count(b, "ignored") == 4
    })
    .await;
    let cancel_id = ids.iter().find(|(_, n)| **n == "cancel").unwrap().0.clone();
    m.delete_event(upn, &cancel_id).unwrap();
    let body = sync_until(&w, id, "k2", &path, |b| {
        count(b, "busy") == 5 && count(b, "ignored") == 5
    })
    .await;
    let named = |list: &str, field: &str| -> BTreeMap<&str, String> {
        by_id(&body, list, field)
            .into_iter()
            .map(|(event, v)| (*ids.get(&event).unwrap_or(&"?"), v))
            .collect()
    };
    assert_eq!(
        named("busy", "rule"),
        BTreeMap::from([
            ("allday", "all_day_in_zone(Europe/Berlin)".to_string()),
            ("oof", "oof".to_string()),
            ("opaque", "opaque".to_string()),
            ("tentative", "tentative_default".to_string()),
            ("unknown", "unknown_show_as".to_string()),
        ]),
        "{body}"
    );
    let ignored = named("ignored", "reason");
    for (event, reason) in [
        ("free", "transparent"),
        ("elsewhere", "working_location"),
        ("declined", "declined"),
        ("ours", "own_booking"),
        // Graph's delta reports a deletion as a bare `@removed` stub.
        ("cancel", "cancelled"),
    ] {
        assert_eq!(
            ignored.get(event),
            Some(&reason.to_string()),
            "{event}: {body}"
        );
    }
    let own = body["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "own_booking")
        .unwrap();
    assert_eq!(own["booking_id"], "booking-9");
    assert_eq!(own["source"]["provider"], "microsoft");
    assert!(!body.to_string().contains("private title"));
    let fresh = body["freshness"].as_array().unwrap();
    assert!(!fresh.is_empty());
    assert!(
        fresh.iter().all(|c| c["last_successful_sync"].is_string()),
        "{body}"
    );

    // A platform provider with nothing synced answers empty lists.
    let (status, body) = w
        .api(
            "GET",
            &explain_path("pp-nobody", day(), day() + TimeDelta::days(1)),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["busy"], json!([]));
    assert_eq!(body["ignored"], json!([]));

    verify_replay(&w).await;
}
