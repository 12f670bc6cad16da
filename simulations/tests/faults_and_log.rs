//! Fault injection, notification faults and the request log, driven both
//! from the Rust API and from the JSON control API.

mod common;

use calsim::{FaultKind, FaultRule, NotificationFaults, Provider};
use chrono::{Duration, Utc};
use common::{client, google_access_token, hook, sim, Api};
use serde_json::{json, Value};
use std::time::Instant;

async fn google_setup() -> (calsim::SimHandle, Api, calsim::GoogleAccount) {
    let h = sim().await;
    let acct = h.google().create_account("ops@example.com");
    let api = Api::new(h.google_base_url(), google_access_token(&h, &acct).await);
    (h, api, acct)
}

fn rule(endpoint: &str, kind: FaultKind, remaining: Option<u32>) -> FaultRule {
    FaultRule {
        provider: Provider::Google,
        endpoint: Some(endpoint.into()),
        account: None,
        path: None,
        body_contains: None,
        kind,
        remaining,
    }
}

#[tokio::test]
async fn status_faults_use_google_error_shapes_and_expire() {
    let (h, api, _) = google_setup().await;
    h.add_fault(rule(
        "events.list",
        FaultKind::Status {
            code: 429,
            retry_after: Some(3.0),
            reason: None,
        },
        Some(1),
    ));
    let (s, headers, v) = api
        .send(reqwest::Method::GET, "/calendars/primary/events", None, &[])
        .await;
    assert_eq!(s, 429);
    assert_eq!(v["error"]["errors"][0]["reason"], "rateLimitExceeded");
    assert_eq!(v["error"]["errors"][0]["domain"], "usageLimits");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("3")
    );
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 200, "remaining=1 consumed");

    h.add_fault(rule(
        "events.*",
        FaultKind::Status {
            code: 403,
            retry_after: None,
            reason: Some("rateLimitExceeded".into()),
        },
        Some(1),
    ));
    let (s, v) = api.get("/calendars/primary/events").await;
    assert_eq!(
        (s, v["error"]["errors"][0]["reason"].as_str()),
        (403, Some("rateLimitExceeded"))
    );
    h.add_fault(rule(
        "*",
        FaultKind::ErrorRate {
            probability: 1.0,
            code: 500,
            retry_after: None,
            reason: None,
        },
        Some(1),
    ));
    let (s, v) = api.get("/calendars/primary/events").await;
    assert_eq!(
        (s, v["error"]["errors"][0]["reason"].as_str()),
        (500, Some("backendError"))
    );
    let id = h.add_fault(rule(
        "freeBusy",
        FaultKind::Status {
            code: 503,
            retry_after: None,
            reason: None,
        },
        None,
    ));
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 200, "endpoint globs are respected");
    assert!(h.remove_fault(id));
}

#[tokio::test]
async fn outage_latency_and_lost_responses() {
    let (h, api, acct) = google_setup().await;
    h.add_fault(rule(
        "*",
        FaultKind::Outage {
            until: Utc::now() + Duration::milliseconds(300),
        },
        None,
    ));
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 503);
    // The outage ends in simulator time: move its clock, not the test's.
    h.advance_clock(Duration::milliseconds(350));
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 200, "outage over");
    h.clear_faults();

    h.add_fault(rule("events.list", FaultKind::Latency { ms: 150 }, Some(1)));
    let t = Instant::now();
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 200);
    assert!(t.elapsed().as_millis() >= 150);

    h.add_fault(rule(
        "events.insert",
        FaultKind::CreatedButResponseLost { status: None },
        Some(1),
    ));
    let ev = json!({ "id": "lost00001", "start": { "dateTime": "2026-10-02T09:00:00Z" }, "end": { "dateTime": "2026-10-02T10:00:00Z" } });
    let (s, _) = api.post("/calendars/primary/events", &ev).await;
    assert_eq!(s, 500, "client sees a failure");
    assert!(
        h.google()
            .get_event(&acct.email, "primary", "lost00001")
            .is_ok(),
        "but the event exists"
    );
    let (s, v) = api.post("/calendars/primary/events", &ev).await;
    assert_eq!(
        (s, v["error"]["errors"][0]["reason"].as_str()),
        (409, Some("duplicate")),
        "deterministic ids make the retry safe"
    );
}

#[tokio::test]
async fn request_log_records_every_call_and_proves_silence() {
    let (h, api, acct) = google_setup().await;
    let t0 = Utc::now();
    api.get("/calendars/primary/events?maxResults=5").await;
    api.post("/calendars/primary/events", &json!({ "summary": "x" }))
        .await;
    let log = h.requests_since(t0);
    assert!(log.len() >= 2);
    assert_eq!(log[0].endpoint, "events.list");
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/google/calendar/v3/calendars/primary/events");
    assert_eq!(log[0].query.as_deref(), Some("maxResults=5"));
    assert_eq!(log[0].status, 200);
    assert_eq!(log[0].account.as_deref(), Some(acct.email.as_str()));
    assert_eq!(log[1].status, 400);
    assert_eq!(
        log[1].body,
        Some(json!({ "summary": "x" })),
        "JSON bodies are logged"
    );
    let (_, ev) = api
        .post("/calendars/primary/events", &json!({ "id": "logged001", "start": { "date": "2026-10-02" }, "end": { "date": "2026-10-03" } }))
        .await;
    api.send(
        reqwest::Method::PATCH,
        "/calendars/primary/events/logged001",
        Some(&json!({ "summary": "y" })),
        &[("If-Match", ev["etag"].as_str().unwrap_or_default())],
    )
    .await;
    let patch = h
        .requests()
        .into_iter()
        .find(|r| r.endpoint == "events.patch")
        .expect("logged");
    assert!(patch
        .headers
        .iter()
        .any(|(k, v)| k == "if-match" && v == ev["etag"].as_str().unwrap_or_default()));
    assert!(
        h.requests()
            .iter()
            .filter(|r| r.endpoint == "token")
            .all(|r| r.body.is_none()),
        "secrets stay out of the log"
    );
    let quiet = Utc::now();
    // No evidence to wait for: the simulator itself makes no calls, and
    // this asserts that nothing in it does on its own.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        h.requests_since(quiet).is_empty(),
        "no provider call in this window"
    );
    let token_calls: Vec<_> = h
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == "token")
        .collect();
    assert_eq!(token_calls.len(), 1);
    assert_eq!(token_calls[0].account.as_deref(), Some(acct.email.as_str()));
}

#[tokio::test]
async fn notification_faults_drop_and_duplicate() {
    let (h, api, acct) = google_setup().await;
    let hook = hook(200).await;
    h.set_notification_faults(
        Provider::Google,
        NotificationFaults {
            drop_rate: 1.0,
            ..Default::default()
        },
    );
    let (s, _) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "faulty", "type": "web_hook", "address": hook.url }),
        )
        .await;
    assert_eq!(s, 200);
    // The drop is recorded when the delivery is decided: wait for that.
    h.wait_for_deliveries(std::time::Duration::from_secs(3), |log| !log.is_empty())
        .await;
    assert!(hook.notifications().is_empty(), "sync message dropped");
    assert_eq!(h.deliveries()[0].fault.as_deref(), Some("dropped"));
    h.set_notification_faults(
        Provider::Google,
        NotificationFaults {
            duplicate_rate: 1.0,
            ..Default::default()
        },
    );
    h.google()
        .upsert_event(
            &acct.email,
            "primary",
            json!({ "start": { "date": "2026-10-02" }, "end": { "date": "2026-10-03" } }),
        )
        .expect("insert");
    let got = hook.wait_for(2, 3000).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].header("x-goog-message-number"),
        got[1].header("x-goog-message-number"),
        "same message twice"
    );
    h.set_notification_faults(
        Provider::Google,
        NotificationFaults {
            replay_rate: 1.0,
            replay_after_ms: 100,
            ..Default::default()
        },
    );
    h.google()
        .upsert_event(
            &acct.email,
            "primary",
            json!({ "start": { "date": "2026-10-04" }, "end": { "date": "2026-10-05" } }),
        )
        .expect("insert");
    let got = hook.wait_for(4, 3000).await;
    assert_eq!(got.len(), 4, "delivered, then replayed later");
}

#[tokio::test]
async fn json_control_api_drives_the_same_operations() {
    let h = sim().await;
    let c = client();
    let base = h.control_url();
    let health: Value = c
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(health["google_base_url"], h.google_base_url());
    let acct: Value = c
        .post(format!("{base}/google/accounts"))
        .json(&json!({ "email": "ctl@example.com", "timeZone": "Europe/Berlin" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(acct["refresh_token"].is_string());
    let ev: Value = c.post(format!("{base}/google/accounts/ctl@example.com/calendars/primary/events"))
        .json(&json!({ "id": "ctl000001", "summary": "via control", "start": { "dateTime": "2026-10-02T09:00:00+02:00" }, "end": { "dateTime": "2026-10-02T10:00:00+02:00" } }))
        .send().await.expect("send").json().await.expect("json");
    assert_eq!(ev["id"], "ctl000001");
    let r = c
        .post(format!("{base}/faults"))
        .json(&json!({ "provider": "google", "endpoint": "events.list",
        "kind": { "type": "status", "code": 503 }, "remaining": 1 }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let token = google_access_token(&h, &serde_json::from_value(acct).expect("account")).await;
    let api = Api::new(h.google_base_url(), token);
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 503);
    let r = c
        .post(format!(
            "{base}/google/accounts/ctl@example.com/invalidate_sync_tokens"
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
    let log: Value = c
        .get(format!("{base}/requests?provider=google"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(log.as_array().is_some_and(|a| a
        .iter()
        .any(|r| r["status"] == 503 && r["fault"] == "status 503")));
    let m: Value = c
        .post(format!("{base}/graph/accounts"))
        .json(&json!({ "upn": "ctl@contoso.com" }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(m["tenant_id"].is_string());
    let ev: Value = c.post(format!("{base}/graph/accounts/ctl@contoso.com/events"))
        .json(&json!({ "subject": "x", "start": { "dateTime": "2026-10-02T09:00:00", "timeZone": "UTC" }, "end": { "dateTime": "2026-10-02T10:00:00", "timeZone": "UTC" } }))
        .send().await.expect("send").json().await.expect("json");
    assert_eq!(ev["type"], "singleInstance");
    let r = c
        .delete(format!(
            "{base}/graph/accounts/ctl@contoso.com/events/{}",
            ev["id"].as_str().unwrap_or_default()
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
    let r = c
        .put(format!("{base}/notification_faults/graph"))
        .json(&json!({ "drop_rate": 0.5 }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 204);
    let sc: Value = c.post(format!("{base}/scenario")).json(&json!({ "seed": 3, "google_accounts": 1, "graph_accounts": 1, "events_per_account": 5 }))
        .send().await.expect("send").json().await.expect("json");
    assert_eq!(sc["events_created"], 10);
    let m: Value = c
        .post(format!("{base}/scenario/mutations"))
        .json(&json!({ "count": 5 }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(m["applied"].as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn stopped_channels_may_still_fire_and_reordered_notifications_all_arrive() {
    let (h, api, acct) = google_setup().await;
    let hook = hook(200).await;
    h.set_notification_faults(
        Provider::Google,
        NotificationFaults {
            after_stop: 1,
            ..Default::default()
        },
    );
    let (_, ch) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "late", "type": "web_hook", "address": hook.url }),
        )
        .await;
    hook.wait_for(1, 3000).await;
    let (s, _) = api
        .post(
            "/channels/stop",
            &json!({ "id": "late", "resourceId": ch["resourceId"] }),
        )
        .await;
    assert_eq!(s, 204);
    let g = h.google();
    let day = |d: u32| json!({ "start": { "date": format!("2026-10-{d:02}") }, "end": { "date": format!("2026-10-{:02}", d + 1) } });
    g.upsert_event(&acct.email, "primary", day(1))
        .expect("insert");
    g.upsert_event(&acct.email, "primary", day(2))
        .expect("insert");
    // Absence after stop: no delivery completes a marker for a channel
    // that gets nothing, so a bounded pause is all there is.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(
        hook.notifications().len(),
        2,
        "one notification after stop, then silence"
    );

    let hook2 = hook_with_reorder(&h).await;
    let (s, _) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "shuffled", "type": "web_hook", "address": hook2.url }),
        )
        .await;
    assert_eq!(s, 200);
    for d in 3..9 {
        g.upsert_event(&acct.email, "primary", day(d))
            .expect("insert");
    }
    let got = hook2.wait_for(7, 3000).await;
    assert_eq!(got.len(), 7, "reordered, not lost");
    assert!(h
        .deliveries()
        .iter()
        .filter(|d| d.subject == "shuffled")
        .all(|d| d.fault.as_deref() == Some("reordered")));
}

async fn hook_with_reorder(h: &calsim::SimHandle) -> common::Hook {
    h.set_notification_faults(
        Provider::Google,
        NotificationFaults {
            reorder_window_ms: 200,
            ..Default::default()
        },
    );
    hook(200).await
}

#[tokio::test]
async fn optional_quotas_and_token_ttls() {
    let config = calsim::SimConfig {
        google_user_requests_per_minute: Some(3),
        graph_mailbox_requests_per_10_min: Some(2),
        google_sync_token_ttl_secs: Some(0),
        graph_delta_token_ttl_secs: Some(0),
        ..calsim::SimConfig::default()
    };
    let h = common::sim_with(config).await;
    let acct = h.google().create_account("quota@example.com");
    let api = Api::new(h.google_base_url(), google_access_token(&h, &acct).await);
    let (_, v) = api.get("/calendars/primary/events").await;
    let token = v["nextSyncToken"].as_str().expect("token").to_string();
    h.advance_clock(Duration::milliseconds(20));
    let (s, v) = api
        .get(&format!("/calendars/primary/events?syncToken={token}"))
        .await;
    assert_eq!(
        (s, v["error"]["errors"][0]["reason"].as_str()),
        (410, Some("fullSyncRequired")),
        "token outlived its TTL"
    );
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 200, "third request of the minute");
    let (s, v) = api.get("/calendars/primary/events").await;
    assert_eq!(
        (s, v["error"]["errors"][0]["reason"].as_str()),
        (403, Some("userRateLimitExceeded"))
    );
    assert_eq!(v["error"]["errors"][0]["domain"], "usageLimits");

    let mb = h.graph().create_account("quota@contoso.com");
    let graph = Api::new(
        h.graph_base_url(),
        common::graph_access_token(&h, &mb).await,
    );
    let (_, v) = graph.get("/me/calendarView/delta?startDateTime=2026-10-01T00:00:00Z&endDateTime=2026-11-01T00:00:00Z").await;
    let delta_link = v["@odata.deltaLink"]
        .as_str()
        .expect("deltaLink")
        .to_string();
    h.advance_clock(Duration::milliseconds(20));
    let (s, headers, v) = graph
        .send(reqwest::Method::GET, &delta_link, None, &[])
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (410, Some("SyncStateNotFound")),
        "deltaLink outlived its TTL"
    );
    assert!(headers.get("location").is_some());
    let (s, headers, v) = graph
        .send(reqwest::Method::GET, "/me/events", None, &[])
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("TooManyRequests"))
    );
    let retry: f64 = headers
        .get("retry-after")
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.parse().ok())
        .expect("Retry-After");
    assert!(retry > 590.0 && retry <= 600.0, "{retry}");
}

#[tokio::test]
async fn replay_storm_on_demand() {
    let (h, api, acct) = google_setup().await;
    let hook = hook(200).await;
    let (s, _) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "storm", "type": "web_hook", "address": hook.url, "token": "t" }),
        )
        .await;
    assert_eq!(s, 200);
    h.google()
        .upsert_event(
            &acct.email,
            "primary",
            json!({ "start": { "date": "2026-10-02" }, "end": { "date": "2026-10-03" } }),
        )
        .expect("insert");
    let first = hook.wait_for(2, 3000).await;
    let c = client();
    let v: Value = c
        .post(format!("{}/deliveries/replay", h.control_url()))
        .json(&json!({ "subject": "storm", "count": 2 }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["queued"], 2);
    let got = hook.wait_for(4, 3000).await;
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[2].header("x-goog-message-number"),
        first[0].header("x-goog-message-number"),
        "old messages, same numbers"
    );
    assert_eq!(got[3].header("x-goog-channel-token"), Some("t"));
}

#[tokio::test]
async fn advancing_the_clock_expires_tokens_channels_and_subscriptions() {
    let (h, api, acct) = google_setup().await;
    let hook = hook(202).await;
    let (s, _) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "week", "type": "web_hook", "address": hook.url }),
        )
        .await;
    assert_eq!(s, 200);
    hook.wait_for(1, 3000).await;
    let mb = h.graph().create_account("clock@contoso.com");
    let graph = Api::new(
        h.graph_base_url(),
        common::graph_access_token(&h, &mb).await,
    );
    let exp = (h.now() + Duration::days(2)).to_rfc3339();
    let (s, _) = graph.post("/subscriptions", &json!({ "changeType": "created", "notificationUrl": hook.url, "resource": "me/events", "expirationDateTime": exp })).await;
    assert_eq!(s, 201);

    let before = h.now();
    let v: Value = client()
        .post(format!("{}/clock/advance", h.control_url()))
        .json(&json!({ "seconds": 3601 }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(v["now"].is_string());
    assert!(h.now() - before >= Duration::seconds(3600));
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 401, "the one-hour access token expired");

    h.advance_clock(Duration::days(8));
    h.google()
        .upsert_event(
            &acct.email,
            "primary",
            json!({ "start": { "date": "2026-10-02" }, "end": { "date": "2026-10-03" } }),
        )
        .expect("insert");
    h.graph().create_event(&mb.upn, json!({ "subject": "x", "start": { "dateTime": "2026-10-02T09:00:00", "timeZone": "UTC" },
        "end": { "dateTime": "2026-10-02T10:00:00", "timeZone": "UTC" } })).expect("create");
    // Absence for expired channels: nothing is delivered, so nothing marks
    // the end; a bounded pause is all there is.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert_eq!(
        hook.notifications().len(),
        1,
        "a 7-day channel and a 2-day subscription are both expired"
    );
}

#[tokio::test]
async fn logs_are_bounded_and_updated_min_can_be_too_old() {
    let config = calsim::SimConfig {
        log_capacity: 3,
        google_updated_min_max_days: Some(28),
        ..calsim::SimConfig::default()
    };
    let h = common::sim_with(config).await;
    let acct = h.google().create_account("small@example.com");
    let api = Api::new(h.google_base_url(), google_access_token(&h, &acct).await);
    let old = (Utc::now() - Duration::days(40)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, v) = api
        .get(&format!("/calendars/primary/events?updatedMin={old}"))
        .await;
    assert_eq!(
        (s, v["error"]["errors"][0]["reason"].as_str()),
        (410, Some("updatedMinTooLongAgo"))
    );
    for _ in 0..4 {
        api.get("/calendars/primary/events").await;
    }
    let log = h.requests();
    assert_eq!(log.len(), 3, "oldest records dropped");
    assert_eq!(
        log[2].seq, 6,
        "sequence numbers keep counting: token, updatedMin, 4 lists"
    );
}

#[tokio::test]
async fn a_hold_keeps_a_request_unperformed_until_released() {
    let (h, api, acct) = google_setup().await;
    h.add_fault(rule(
        "events.insert",
        FaultKind::Hold {
            name: "window".into(),
        },
        Some(1),
    ));
    let call = {
        let api = api.clone();
        tokio::spawn(async move {
            api.post(
                "/calendars/primary/events",
                &json!({ "id": "held0001", "start": { "date": "2026-10-01" }, "end": { "date": "2026-10-02" } }),
            )
            .await
        })
    };
    // Evidence that the request is at the hold, not a guess.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while h.held("window") == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the hold"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        h.google()
            .get_event(&acct.email, "primary", "held0001")
            .is_err(),
        "a held write is not performed"
    );
    assert!(!call.is_finished());
    h.release_hold("window");
    let (s, _) = call.await.unwrap();
    assert_eq!(s, 200);
    assert!(h
        .google()
        .get_event(&acct.email, "primary", "held0001")
        .is_ok());
    let logged = h
        .requests()
        .into_iter()
        .find(|r| r.endpoint == "events.insert")
        .unwrap();
    assert_eq!(logged.fault.as_deref(), Some("hold window"));
    // The rule was used up: the next insert passes straight through.
    assert_eq!(h.held("window"), 1);
}
