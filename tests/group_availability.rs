//! Group availability (`POST /v1/availability`): everyone free, anyone free
//! and at least N free, from real syncs of several providers, against a real
//! PostgreSQL and the real server.

mod support;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, Options, World};

fn day() -> DateTime<Utc> {
    support::midnight_in_days(2)
}

async fn post(w: &World, body: Value) -> (u16, Value) {
    w.api("POST", "/v1/availability", Some(&body)).await
}

/// Slot starts as "HH:MM", each with the providers free in it.
fn slots(body: &Value) -> Vec<(String, Vec<String>)> {
    body["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots in {body}"))
        .iter()
        .map(|s| {
            let free = s["free"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().trim_start_matches("pp-")[..3].to_string())
                .collect();
            (s["start"].as_str().unwrap()[11..16].to_string(), free)
        })
        .collect()
}

fn starts(body: &Value) -> Vec<String> {
    slots(body).into_iter().map(|(s, _)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_answers_all_any_and_at_least_and_refuses_bad_input_by_field() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    // ana is busy 10:00–11:00, ben 10:30–11:30, cyd not at all.
    let mut ids = Vec::new();
    for (email, busy_from) in [
        ("ana@example.com", Some(10 * 60)),
        ("ben@example.com", Some(10 * 60 + 30)),
        ("cyd@example.com", None),
    ] {
        let id = w.google_connection(email).await;
        if let Some(minute) = busy_from {
            let start = day() + TimeDelta::minutes(minute);
            w.sim
                .google()
                .upsert_event(
                    email,
                    "primary",
                    json!({"id": "meet0001", "start": {"dateTime": start.to_rfc3339()},
                           "end": {"dateTime": (start + TimeDelta::hours(1)).to_rfc3339()}}),
                )
                .unwrap();
        }
        let head = w.log_head().await;
        w.notify(id, "k1").await;
        // A round that completes after the notification: for cyd, with no
        // busy time, "no busy rows" holds before any sync has run, and the
        // freshness checked below would still be empty.
        w.wait_for_round(id, head).await;
        let expected = usize::from(busy_from.is_some());
        assert!(
            eventually(Duration::from_secs(10), || async {
                w.busy(id).await.len() == expected && w.status(id).await.0 == "active"
            })
            .await,
            "{email} never synced"
        );
        ids.push(id);
    }
    let group = json!([
        "pp-ana@example.com",
        "pp-ben@example.com",
        "pp-cyd@example.com"
    ]);
    let request = |mode: Value| {
        json!({
            "platform_provider_ids": group, "mode": mode,
            "from": day(), "to": day() + TimeDelta::days(1), "slot_minutes": 30,
            "windows": [{"start": day() + TimeDelta::hours(9), "end": day() + TimeDelta::hours(12)}]
        })
    };

    // Everyone free: only the slots nobody's meeting touches.
    let (status, body) = post(&w, request(json!("all"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(starts(&body), ["09:00", "09:30", "11:30"]);
    assert_eq!(body["mode"], "all");
    assert_eq!(body["degraded"], false);
    let providers = body["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 3);
    for (p, busy) in providers.iter().zip([1, 1, 0]) {
        assert_eq!(p["busy_considered"], busy, "{p}");
        assert_eq!(p["freshness"]["degraded"], false);
        assert!(
            p["freshness"]["connections"][0]["calendars"][0]["last_successful_sync"].is_string(),
            "{p}"
        );
    }

    // Anyone free: every slot, each naming who is free.
    let (status, body) = post(&w, request(json!("any"))).await;
    assert_eq!(status, 200, "{body}");
    let all3 = || vec!["ana".to_string(), "ben".into(), "cyd".into()];
    let s = |t: &str, who: &[&str]| (t.to_string(), who.iter().map(|w| w.to_string()).collect());
    assert_eq!(
        slots(&body),
        vec![
            ("09:00".to_string(), all3()),
            ("09:30".to_string(), all3()),
            s("10:00", &["ben", "cyd"]),
            s("10:30", &["cyd"]),
            s("11:00", &["ana", "cyd"]),
            ("11:30".to_string(), all3()),
        ]
    );

    // At least two free: all but 10:30; at least one is any, at least three all.
    let (status, body) = post(&w, request(json!({"at_least": 2}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(starts(&body), ["09:00", "09:30", "10:00", "11:00", "11:30"]);
    assert_eq!(body["mode"], json!({"at_least": 2}));
    let any = post(&w, request(json!("any"))).await.1;
    assert_eq!(
        post(&w, request(json!({"at_least": 1}))).await.1["slots"],
        any["slots"]
    );
    let all = post(&w, request(json!("all"))).await.1;
    assert_eq!(
        post(&w, request(json!({"at_least": 3}))).await.1["slots"],
        all["slots"]
    );

    // Weekly hours in a zone and buffers work as for one provider: hour
    // slots 09–12 UTC leave only 09:00 for everyone; a 30-minute buffer
    // before busy time also takes 09:30 from the half-hour grid.
    let weekday = day().format("%a").to_string();
    let (status, body) = post(
        &w,
        json!({"platform_provider_ids": group, "mode": "all",
               "from": day(), "to": day() + TimeDelta::days(1), "slot_minutes": 60,
               "weekly": {"time_zone": "UTC", "rules": [{"weekday": weekday, "start": "09:00:00", "end": "12:00:00"}]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(starts(&body), ["09:00"]);
    let mut buffered = request(json!("all"));
    buffered["buffer_before_minutes"] = json!(30);
    let (status, body) = post(&w, buffered).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(starts(&body), ["09:00", "11:30"]);

    // Bad input: 400 naming the field at fault.
    let with = |key: &str, value: Value| {
        let mut r = request(json!("all"));
        r[key] = value;
        r
    };
    let too_many: Vec<String> = (0..51).map(|i| format!("pp-{i}@example.com")).collect();
    for (bad, field) in [
        (
            with("platform_provider_ids", json!([])),
            "platform_provider_ids",
        ),
        (
            with(
                "platform_provider_ids",
                json!(["pp-ana@example.com", "pp-nobody@example.com"]),
            ),
            "platform_provider_ids[1]",
        ),
        (
            with(
                "platform_provider_ids",
                json!(["pp-ana@example.com", "pp-ana@example.com"]),
            ),
            "platform_provider_ids[1]",
        ),
        (
            with("platform_provider_ids", json!(too_many)),
            "platform_provider_ids",
        ),
        (with("to", json!(day() + TimeDelta::days(400))), "from/to"),
        (with("mode", json!({"at_least": 0})), "mode"),
        (with("mode", json!({"at_least": 4})), "mode"),
        (with("mode", json!("most")), "mode"),
        (with("slot_minutes", json!(0)), "slot_minutes"),
    ] {
        let (status, body) = post(&w, bad.clone()).await;
        assert_eq!(status, 400, "{bad} → {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{bad} → {body}");
    }
    let mut missing = request(json!("all"));
    missing.as_object_mut().unwrap().remove("mode");
    let (status, body) = post(&w, missing).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("mode"));

    // A provider in trouble marks the group answer degraded, and says which.
    w.sim.google().revoke_grant("ben@example.com");
    w.notify(ids[1], "k2").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(ids[1]).await.0 == "needs_reauthorization"
        })
        .await
    );
    let (_, body) = post(&w, request(json!("any"))).await;
    assert_eq!(body["degraded"], true);
    assert_eq!(body["providers"][0]["freshness"]["degraded"], false);
    assert_eq!(body["providers"][1]["freshness"]["degraded"], true);
}
