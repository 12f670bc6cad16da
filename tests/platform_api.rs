//! The platform API: busy intervals and the availability overlay, computed
//! from real syncs, each answer stating how fresh it is.

mod support;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, Options, World};

fn day() -> DateTime<Utc> {
    support::midnight_in_days(2)
}

async fn call(
    w: &World,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let base = w.base.clone().unwrap();
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_time_and_free_slots_come_from_synced_calendars_with_their_freshness() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let id = w.google_connection("ana@example.com").await;
    let start = day() + TimeDelta::hours(10);
    w.sim
        .google()
        .upsert_event(
            "ana@example.com",
            "primary",
            json!({"id": "meet0001", "start": {"dateTime": start.to_rfc3339()},
                   "end": {"dateTime": (start + TimeDelta::hours(1)).to_rfc3339()}}),
        )
        .unwrap();
    w.notify(id, "k1").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 1
        })
        .await
    );

    let from = day().to_rfc3339().replace('+', "%2B");
    let to = (day() + TimeDelta::days(1))
        .to_rfc3339()
        .replace('+', "%2B");
    let path = format!("/v1/providers/pp-ana@example.com/busy?from={from}&to={to}");
    assert_eq!(call(&w, "GET", &path, None, None).await.0, 401);
    let (status, body) = call(&w, "GET", &path, Some("admin"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["busy"].as_array().unwrap().len(), 1);
    assert_eq!(body["busy"][0]["external_event_id"], "meet0001");
    let fresh = &body["freshness"];
    assert_eq!(fresh["degraded"], false);
    assert!(fresh["connections"][0]["calendars"][0]["last_successful_sync"].is_string());

    // Working 09:00-12:00, 30-minute slots: 10:00-11:00 is taken.
    let request = |buffer: i64| {
        json!({
            "from": day(), "to": day() + TimeDelta::days(1), "slot_minutes": 30,
            "buffer_before_minutes": buffer,
            "windows": [{"start": day() + TimeDelta::hours(9), "end": day() + TimeDelta::hours(12)}]
        })
    };
    let path = "/v1/providers/pp-ana@example.com/availability";
    let (status, body) = call(&w, "POST", path, Some("admin"), Some(request(0))).await;
    assert_eq!(status, 200, "{body}");
    let starts: Vec<String> = body["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_str().unwrap()[11..16].to_string())
        .collect();
    assert_eq!(starts, ["09:00", "09:30", "11:00", "11:30"]);
    // A 30-minute buffer before busy time also takes 09:30.
    let (_, body) = call(&w, "POST", path, Some("admin"), Some(request(30))).await;
    assert_eq!(body["slots"].as_array().unwrap().len(), 3);

    // Weekly working hours in a zone work the same way.
    let weekday = day().format("%a").to_string();
    let (status, body) = call(
        &w,
        "POST",
        path,
        Some("admin"),
        Some(json!({"from": day(), "to": day() + TimeDelta::days(1), "slot_minutes": 60,
            "weekly": {"time_zone": "UTC", "rules": [{"weekday": weekday, "start": "09:00:00", "end": "12:00:00"}]}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slots"].as_array().unwrap().len(), 2);

    // Bad input is a 400 with a message.
    for bad in [
        json!({"from": day(), "to": day(), "slot_minutes": 30, "windows": []}),
        json!({"from": day(), "to": day() + TimeDelta::days(1), "slot_minutes": 0, "windows": []}),
        json!({"from": day(), "to": day() + TimeDelta::days(1), "slot_minutes": 30}),
        json!({"from": day(), "to": day() + TimeDelta::days(400), "slot_minutes": 30, "windows": []}),
        json!({"from": day(), "to": day() + TimeDelta::days(1), "slot_minutes": 30,
               "weekly": {"time_zone": "Mars/Olympus", "rules": []}}),
        json!({"nonsense": true}),
    ] {
        let (status, body) = call(&w, "POST", path, Some("admin"), Some(bad)).await;
        assert_eq!(status, 400, "{body}");
    }

    // A connection in trouble makes answers say so.
    w.sim.google().revoke_grant("ana@example.com");
    w.notify(id, "k2").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(id).await.0 == "needs_reauthorization"
        })
        .await
    );
    let (_, body) = call(&w, "POST", path, Some("admin"), Some(request(0))).await;
    assert_eq!(body["freshness"]["degraded"], true);
    assert_eq!(
        body["freshness"]["connections"][0]["needs_reauthorization"],
        true
    );
}
