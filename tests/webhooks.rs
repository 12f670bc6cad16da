//! The webhook edge over real HTTP: simulators deliver notifications to
//! calsync's server; every rejection has its status and writes nothing;
//! replay storms collapse to one event; flags take effect within a second.

mod support;

use calsim::SimConfig;
use calsync::core::ids::ConnectionId;
use calsync::core::settings::{Actor, Flag, SettingsCommand};
use chrono::{Duration as TimeDelta, Utc};
use serde_json::json;
use std::time::Duration;
use support::{eventually, Options, World};

async fn served() -> World {
    World::start(Options {
        serve: true,
        flag_gates: true,
        ..Default::default()
    })
    .await
}

/// The live Google channel the simulator holds for `email`: (id, token, resource id).
fn google_channel(w: &World, email: &str) -> Option<(String, String, String)> {
    w.sim
        .google()
        .channels()
        .into_iter()
        .find(|c| c.account == email && !c.stopped)
        .map(|c| (c.id, c.token.unwrap_or_default(), c.resource_id))
}

async fn wait_for_channel(w: &World, id: ConnectionId) {
    let found = eventually(Duration::from_secs(10), || async {
        let client = w.db.client().await;
        client
            .query_one(
                "SELECT count(*) FROM channels WHERE connection_id = $1 AND closed_at IS NULL",
                &[&id.as_uuid()],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    let types: Vec<String> =
        w.db.client()
            .await
            .query(
                "SELECT event_type FROM events WHERE stream = $1 ORDER BY version",
                &[&id.stream().as_str()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert!(
        found,
        "no channel was opened for {id}; events {types:?}; provider requests: {:?}",
        w.sim
            .requests()
            .iter()
            .map(|r| format!(
                "{} {} {}",
                r.endpoint,
                r.status,
                r.query.clone().unwrap_or_default()
            ))
            .collect::<Vec<_>>()
    );
}

fn tomorrow(h: i64) -> (String, String) {
    let s = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(1)
        + TimeDelta::hours(h);
    (s.to_rfc3339(), (s + TimeDelta::hours(1)).to_rfc3339())
}

fn google_notification(
    client: &reqwest::Client,
    base: &str,
    channel: &(String, String, String),
    number: u64,
) -> reqwest::RequestBuilder {
    google_with(client, base, channel, number, &[])
}

/// A Google notification with some headers replaced ("" removes one).
fn google_with(
    client: &reqwest::Client,
    base: &str,
    channel: &(String, String, String),
    number: u64,
    overrides: &[(&str, String)],
) -> reqwest::RequestBuilder {
    let number = number.to_string();
    let defaults = [
        ("X-Goog-Channel-ID", channel.0.as_str()),
        ("X-Goog-Channel-Token", channel.1.as_str()),
        ("X-Goog-Resource-ID", channel.2.as_str()),
        ("X-Goog-Resource-State", "exists"),
        ("X-Goog-Message-Number", number.as_str()),
    ];
    let mut req = client.post(format!("{base}/webhooks/google"));
    for (name, value) in defaults {
        match overrides.iter().find(|(n, _)| *n == name) {
            Some((_, v)) if v.is_empty() && name != "X-Goog-Channel-Token" => {}
            Some((_, v)) => req = req.header(name, v.as_str()),
            None => req = req.header(name, value),
        }
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_push_notifications_become_busy_time_end_to_end() {
    let w = served().await;
    let id = w.google_connection("push@example.com").await;
    wait_for_channel(&w, id).await;
    let (s, e) = tomorrow(9);
    w.sim
        .google()
        .upsert_event(
            "push@example.com",
            "primary",
            json!({"id": "pushevt1", "start": {"dateTime": s}, "end": {"dateTime": e}}),
        )
        .unwrap();
    // Nobody calls notify(): the simulator delivers the push to our edge.
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 1
        })
        .await,
        "deliveries: {:?}",
        w.sim.deliveries()
    );
    assert!(w.count_events(id, "notification_accepted").await >= 1);
    assert!(w.sim.deliveries().iter().any(|d| d.status == Some(200)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_change_notifications_pass_the_handshake_and_become_busy_time() {
    let w = served().await;
    let id = w.graph_connection("push@contoso.com").await;
    // The subscription only exists if our endpoint answered the validation
    // handshake the simulator sent while creating it.
    wait_for_channel(&w, id).await;
    let (s, e) = tomorrow(10);
    w.sim
        .graph()
        .create_event(
            "push@contoso.com",
            json!({"subject": "x", "showAs": "busy",
                   "start": {"dateTime": &s[..19], "timeZone": "UTC"},
                   "end": {"dateTime": &e[..19], "timeZone": "UTC"}}),
        )
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 1
        })
        .await,
        "deliveries: {:?}",
        w.sim.deliveries()
    );
    // A `missed` lifecycle notification makes the connection resync.
    let lists = w.provider_calls("delta");
    let sub = w.sim.graph().subscriptions().pop().unwrap();
    w.sim
        .graph()
        .send_lifecycle(&sub.id, calsim::LifecycleEvent::Missed)
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.provider_calls("delta") > lists
        })
        .await
    );
}

/// Graph change notifications from a real subscription with the right
/// `clientState` are still refused (400, nothing appended) unless
/// `changeType` is a comma list of created/updated/deleted and `resource`
/// and `resourceData.id` are there (`shared/PROVIDERS.md` §3); one bad
/// notification refuses its whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_change_notifications_of_the_wrong_shape_are_refused_and_log_nothing() {
    let w = served().await;
    let base = w.base.clone().unwrap();
    let id = w.graph_connection("shape@contoso.com").await;
    wait_for_channel(&w, id).await;
    // Quiet: the first round is recorded, nothing else is due for minutes.
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.count_events(id, "sync_round_completed").await >= 1
        })
        .await
    );
    let sub = w.sim.graph().subscriptions().pop().unwrap();
    let client_state = sub.client_state.clone().unwrap();
    let good = |change_type: &str, etag: &str| {
        json!({ "subscriptionId": sub.id, "clientState": client_state,
                "changeType": change_type, "tenantId": sub.tenant_id,
                "resource": format!("Users/{}/Events/AAMk1", sub.user_id),
                "resourceData": { "@odata.type": "#Microsoft.Graph.Event",
                                  "@odata.etag": etag, "id": "AAMk1" } })
    };
    let with = |field: &str, value: Option<serde_json::Value>| {
        let mut n = good("updated", "W/\"1\"");
        match value {
            Some(v) => n[field] = v,
            None => {
                n.as_object_mut().unwrap().remove(field);
            }
        }
        n
    };
    let cases: Vec<(String, serde_json::Value)> = vec![
        (
            "changeType exploded".into(),
            with("changeType", Some(json!("exploded"))),
        ),
        (
            "changeType empty".into(),
            with("changeType", Some(json!(""))),
        ),
        (
            "changeType with an empty item".into(),
            with("changeType", Some(json!("created,,deleted"))),
        ),
        (
            "changeType trailing comma".into(),
            with("changeType", Some(json!("updated,"))),
        ),
        (
            "changeType with another word".into(),
            with("changeType", Some(json!("updated,exploded"))),
        ),
        (
            "changeType not a string".into(),
            with("changeType", Some(json!(["updated"]))),
        ),
        ("no changeType".into(), with("changeType", None)),
        ("resource empty".into(), with("resource", Some(json!("")))),
        (
            "resource not a string".into(),
            with("resource", Some(json!(7))),
        ),
        ("no resource".into(), with("resource", None)),
        ("no resourceData".into(), with("resourceData", None)),
        (
            "resourceData not an object".into(),
            with("resourceData", Some(json!("AAMk1"))),
        ),
        (
            "resourceData without id".into(),
            with("resourceData", Some(json!({ "@odata.etag": "W/\"1\"" }))),
        ),
        (
            "resourceData with an empty id".into(),
            with("resourceData", Some(json!({ "id": "" }))),
        ),
        (
            "resourceData with a numeric id".into(),
            with("resourceData", Some(json!({ "id": 5 }))),
        ),
    ];
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        http.post(format!("{base}/webhooks/graph"))
            .json(&body)
            .send()
    };
    let events_before = w.total_events().await;
    let notifications_before = w.notifications_logged().await;
    for (what, n) in &cases {
        let r = post(json!({ "value": [n] })).await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
        // A good notification does not carry a bad one in with it.
        let r = post(json!({ "value": [good("created", "W/\"0\""), n] }))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{what}, batched with a good one");
    }
    assert_eq!(
        w.total_events().await,
        events_before,
        "an invalid shape appended events"
    );
    assert_eq!(w.notifications_logged().await, notifications_before);
    // The valid batch is still accepted.
    let r =
        post(json!({ "value": [good("created", "W/\"0\""), good("updated,deleted", "W/\"1\"")] }))
            .await
            .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(w.notifications_logged().await, notifications_before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_has_its_status_and_writes_nothing() {
    let w = served().await;
    let base = w.base.clone().unwrap();
    let http = reqwest::Client::new();
    let id = w.google_connection("strict@example.com").await;
    wait_for_channel(&w, id).await;
    let channel = eventually(Duration::from_secs(5), || async {
        google_channel(&w, "strict@example.com").is_some()
    })
    .await
    .then(|| google_channel(&w, "strict@example.com").unwrap())
    .unwrap();
    // Whatever the channel's opening set off is over before counting.
    w.at_rest(id, "strict@example.com").await;
    let before = w.notifications_logged().await;

    // Graph's handshake is answered first, as plain text, token decoded.
    let r = http
        .post(format!("{base}/webhooks/graph?validationToken=a%20b%26c"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "a b&c");

    let status = |r: reqwest::Response| r.status().as_u16();
    // 400: malformed headers.
    let r = http
        .post(format!("{base}/webhooks/google"))
        .header("X-Goog-Channel-ID", &channel.0)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 400);
    let r = google_with(
        &http,
        &base,
        &channel,
        1,
        &[("X-Goog-Message-Number", "seven".into())],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(status(r), 400);
    // 413: oversized body.
    let r = google_notification(&http, &base, &channel, 2)
        .body(vec![b'x'; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 413);
    // 404: unknown channel.
    let unknown = ("nope".to_string(), channel.1.clone(), channel.2.clone());
    let r = google_notification(&http, &base, &unknown, 3)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 404);
    // ... except Google's `sync` message, which may beat the channel's
    // commit: 200, and still nothing written.
    let r = google_with(
        &http,
        &base,
        &unknown,
        3,
        &[("X-Goog-Resource-State", "sync".into())],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(status(r), 200);
    // 401: wrong token (and no token).
    let forged = (channel.0.clone(), "forged".to_string(), channel.2.clone());
    let r = google_notification(&http, &base, &forged, 4)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 401);
    // 403: not on the allowlist in production mode.
    let actor = Actor::parse("test").unwrap();
    w.settings
        .apply(
            SettingsCommand::SetProductionMode {
                enabled: true,
                reason: "test".into(),
            },
            actor.clone(),
        )
        .await
        .unwrap();
    let r = google_notification(&http, &base, &channel, 5)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 403);
    // 403: webhooks flag off — checked before everything else.
    w.set_flag(Flag::WebhooksEnabled, false).await;
    let r = google_notification(&http, &base, &channel, 6)
        .body(vec![b'x'; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 403);
    assert_eq!(
        w.notifications_logged().await,
        before,
        "a rejected request wrote to the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_storm_of_one_notification_is_one_event_and_one_sync() {
    let w = served().await;
    let base = w.base.clone().unwrap();
    let id = w.google_connection("storm@example.com").await;
    wait_for_channel(&w, id).await;
    let channel = google_channel(&w, "storm@example.com").unwrap();
    // The start-up sync is over (proven, not waited for) so only the
    // storm's sync is counted.
    let at = w.at_rest(id, "storm@example.com").await;
    let events_before = w.count_events(id, "notification_accepted").await;
    let lists_before = w.provider_calls("events.list");

    let http = reqwest::Client::new();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let req = google_notification(&http, &base, &channel, 424_242);
        calls.spawn(async move { req.send().await.map(|r| r.status().as_u16()) });
    }
    let mut statuses = Vec::new();
    while let Some(r) = calls.join_next().await {
        statuses.push(r.unwrap().unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses
            .iter()
            .filter(|s| **s != 200)
            .take(5)
            .collect::<Vec<_>>()
    );
    // Every 200 came after the commit, so the count is final now.
    assert_eq!(
        w.count_events(id, "notification_accepted").await - events_before,
        1
    );
    // The storm's one notification is synced: its round completes, and
    // once the actor is quiet nothing else is running.
    w.wait_for_round(id, at).await;
    w.settle(&[id]).await;
    let syncs = w.provider_calls("events.list") - lists_before;
    assert_eq!(syncs, 1, "{syncs} syncs for one notification");
    assert_eq!(
        w.events_after(id, "sync_round_completed", at).await.len(),
        1
    );
    // A later, different notification still syncs once more: the storm
    // left nothing queued behind it (no follow-up counted into the marker).
    w.at_rest(id, "storm@example.com").await;
    assert_eq!(w.provider_calls("events.list") - lists_before, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_distinct_notifications_are_all_logged_and_coalesce_into_few_syncs() {
    let w = served().await;
    let base = w.base.clone().unwrap();
    let id = w.google_connection("flood@example.com").await;
    wait_for_channel(&w, id).await;
    let channel = google_channel(&w, "flood@example.com").unwrap();
    w.at_rest(id, "flood@example.com").await;
    let events_before = w.count_events(id, "notification_accepted").await;
    let lists_before = w.provider_calls("events.list");

    let http = reqwest::Client::new();
    let mut calls = tokio::task::JoinSet::new();
    let shed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for n in 0..1000u64 {
        let (http, base, channel, shed) =
            (http.clone(), base.clone(), channel.clone(), shed.clone());
        // Like the provider: a 503 is retried after a pause.
        calls.spawn(async move {
            for attempt in 0..50u64 {
                let s = google_notification(&http, &base, &channel, 10_000 + n)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                if s != 503 {
                    return s;
                }
                shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Not a wait for evidence: the provider's retry pause
                // after a 503, which this loop plays.
                tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            }
            503
        });
    }
    let mut ok = 0;
    while let Some(r) = calls.join_next().await {
        let s = r.unwrap();
        assert_eq!(s, 200, "a notification was never accepted");
        ok += 1;
    }
    // Every 200 came after its commit: the count is final. The syncs are
    // counted once a sync that started after the last notification is done.
    w.at_rest(id, "flood@example.com").await;
    assert_eq!(
        w.count_events(id, "notification_accepted").await - events_before - 1,
        ok,
        "every 200 is exactly one logged notification"
    );
    assert_eq!(ok, 1000);
    let syncs = w.provider_calls("events.list") - lists_before;
    assert!(
        (2..=11).contains(&syncs),
        "{syncs} syncs for {ok} notifications: no coalescing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_turned_off_under_load_answer_403_within_a_second_and_write_nothing() {
    let w = served().await;
    let base = w.base.clone().unwrap();
    let id = w.google_connection("flag@example.com").await;
    wait_for_channel(&w, id).await;
    let channel = google_channel(&w, "flag@example.com").unwrap();
    let http = reqwest::Client::new();
    let load = {
        let (http, base, channel) = (http.clone(), base.clone(), channel.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for n in 0..400u64 {
                let r = google_notification(&http, &base, &channel, 50_000 + n)
                    .send()
                    .await
                    .unwrap();
                seen.push((std::time::Instant::now(), r.status().as_u16()));
                // Not a wait for evidence: the load's pace.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    // The load is flowing: notifications are being accepted.
    let start = w.log_head().await;
    w.wait_for_event(id, "notification_accepted", start).await;
    // Turned off on "another node": a second handle writing the settings stream.
    let other = calsync::settings::SettingsHandle::start(w.db.store(), Duration::from_secs(60))
        .await
        .unwrap();
    other
        .apply(
            SettingsCommand::SetFlag {
                flag: Flag::WebhooksEnabled,
                enabled: false,
                reason: "drill".into(),
            },
            Actor::parse("test").unwrap(),
        )
        .await
        .unwrap();
    let off_at = std::time::Instant::now();
    let client = w.db.client().await;
    let off_db: chrono::DateTime<Utc> = client.query_one("SELECT now()", &[]).await.unwrap().get(0);
    // No evidence to wait for: the guarantee is about time itself (nothing
    // accepted more than a second after the switch), so more than a second
    // must pass under load before the log is read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let accepted_late: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'notification_accepted' \
             AND committed_at > $1::timestamptz + interval '1 second'",
            &[&off_db],
        )
        .await
        .unwrap()
        .get(0);
    other
        .apply(
            SettingsCommand::SetFlag {
                flag: Flag::WebhooksEnabled,
                enabled: true,
                reason: "drill over".into(),
            },
            Actor::parse("test").unwrap(),
        )
        .await
        .unwrap();
    let seen = load.await.unwrap();
    let after_a_second: Vec<u16> = seen
        .iter()
        .filter(|(t, _)| {
            *t > off_at + Duration::from_secs(1) && *t < off_at + Duration::from_millis(1500)
        })
        .map(|(_, s)| *s)
        .collect();
    assert!(!after_a_second.is_empty());
    assert!(
        after_a_second.iter().all(|s| *s == 403),
        "{after_a_second:?}"
    );
    // Requests racing the switch may still commit within the second it
    // takes to reach every node; after that, nothing.
    assert_eq!(
        accepted_late, 0,
        "notifications committed more than 1 s after the flag went off"
    );
    assert!(seen.iter().any(|(_, s)| *s == 200), "service resumed");
    assert_eq!(
        seen.last().unwrap().1,
        200,
        "back on after the flag returned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_malformed_requests_gets_4xx_and_leaves_no_trace() {
    let w = served().await;
    let base = w.base.clone().unwrap();
    let id = w.google_connection("fuzz@example.com").await;
    wait_for_channel(&w, id).await;
    let channel = google_channel(&w, "fuzz@example.com").unwrap();
    let sub_id = {
        let gid = w.graph_connection("fuzz@contoso.com").await;
        wait_for_channel(&w, gid).await;
        w.at_rest(gid, "fuzz@contoso.com").await;
        w.sim.graph().subscriptions().pop().unwrap().id
    };
    w.at_rest(id, "fuzz@example.com").await;
    let before = w.notifications_logged().await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();

    let nasty = [
        "",
        " ",
        "{",
        "}",
        "[]",
        "null",
        "0",
        "\"x\"",
        "{\"value\":null}",
        "{\"value\":{}}",
        "{\"value\":[]}",
        "{\"value\":[null]}",
        "{\"value\":[1,2]}",
        "{\"value\":[{}]}",
        "{\"value\":[{\"subscriptionId\":null}]}",
        "{\"value\":[{\"subscriptionId\":5}]}",
        "{\"value\":[{\"subscriptionId\":\"\"}]}",
        "{\"value\":[{\"subscriptionId\":\"' OR 1=1 --\",\"changeType\":\"updated\"}]}",
        "{\"value\":[{\"subscriptionId\":\"; DROP TABLE events;\",\"changeType\":\"created\"}]}",
        "{\"value\":[{\"subscriptionId\":\"\\u0000\",\"changeType\":\"deleted\"}]}",
        "{\"value\":[{\"subscriptionId\":\"日本語🙂\",\"changeType\":\"updated\"}]}",
        "{\"value\":[{\"subscriptionId\":\"x\",\"changeType\":\"updated\",\"clientState\":{}}]}",
        "{\"value\":[{\"subscriptionId\":\"x\",\"changeType\":[]}]}",
        "\u{feff}{\"value\":[]}",
        "{\"value\":[{\"subscriptionId\":\"x\"}]",
        "\u{0}\u{1}\u{2}",
        "<xml/>",
        "value=1&x=2",
        "{\"value\":\"a\"}",
        "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resourceData\":7}]}",
    ];
    for body in nasty {
        for path in ["/webhooks/graph", "/webhooks/graph/lifecycle"] {
            let r = http
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            statuses.push((format!("{path} {body:?}"), r.status().as_u16()));
        }
    }
    // Right subscription, wrong or missing secret, and wrong shapes.
    for client_state in [
        "",
        "x",
        "x:y",
        &format!("{sub_id}:wrong"),
        "::::",
        &"a".repeat(5000),
    ] {
        let body = json!({"value": [{"subscriptionId": sub_id, "changeType": "updated",
            "clientState": client_state, "resource": "me/events/1"}]});
        let r = http
            .post(format!("{base}/webhooks/graph"))
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push((
            format!("graph clientState {client_state:.20}"),
            r.status().as_u16(),
        ));
        let body = json!({"value": [{"subscriptionId": sub_id, "lifecycleEvent": "missed",
            "clientState": client_state}]});
        let r = http
            .post(format!("{base}/webhooks/graph/lifecycle"))
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push((
            format!("lifecycle clientState {client_state:.20}"),
            r.status().as_u16(),
        ));
    }
    // Google: header mutations.
    let header_cases: Vec<(&str, String)> = vec![
        ("X-Goog-Message-Number", "-1".into()),
        ("X-Goog-Message-Number", "1e9".into()),
        ("X-Goog-Message-Number", "99999999999999999999999".into()),
        ("X-Goog-Message-Number", "".into()),
        ("X-Goog-Resource-State", "add".into()),
        ("X-Goog-Resource-State", "".into()),
        ("X-Goog-Channel-ID", "".into()),
        ("X-Goog-Channel-ID", "x".repeat(2000)),
        ("X-Goog-Channel-ID", "' OR '1'='1".into()),
        ("X-Goog-Channel-ID", "../../etc/passwd".into()),
        ("X-Goog-Channel-Token", "".into()),
        ("X-Goog-Channel-Token", "x".repeat(3000)),
        ("X-Goog-Resource-ID", "x".repeat(1500)),
        ("X-Goog-Resource-State", "EXISTS".into()),
        ("X-Goog-Message-Number", "0x10".into()),
        ("X-Goog-Message-Number", "5 5".into()),
    ];
    for (name, value) in header_cases {
        let r = google_with(&http, &base, &channel, 7, &[(name, value.clone())])
            .send()
            .await
            .unwrap();
        statuses.push((format!("google {name}={value:.20}"), r.status().as_u16()));
    }
    for missing in [
        "X-Goog-Channel-ID",
        "X-Goog-Message-Number",
        "X-Goog-Resource-State",
        "X-Goog-Resource-ID",
    ] {
        let r = google_with(&http, &base, &channel, 8, &[(missing, String::new())])
            .send()
            .await
            .unwrap();
        statuses.push((format!("google without {missing}"), r.status().as_u16()));
    }
    // Unknown paths and methods are refused too.
    for path in [
        "/webhooks",
        "/webhooks/google/x",
        "/webhooks/yahoo",
        "/webhooks/graph/../google",
    ] {
        let r = http.post(format!("{base}{path}")).send().await.unwrap();
        statuses.push((format!("path {path}"), r.status().as_u16()));
    }
    for path in ["/webhooks/google", "/webhooks/graph"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        statuses.push((format!("GET {path}"), r.status().as_u16()));
        let r = http
            .put(format!("{base}{path}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        statuses.push((format!("PUT {path}"), r.status().as_u16()));
    }
    for body in ["x", "{}", &"y".repeat(100 * 1024)] {
        let r = google_notification(&http, &base, &channel, 9)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        statuses.push((format!("google body {:.10}", body), r.status().as_u16()));
    }
    let huge = "v".repeat(200 * 1024);
    let r = http
        .post(format!("{base}/webhooks/graph"))
        .body(format!("{{\"value\":[{{\"subscriptionId\":\"{huge}\"}}]}}"))
        .send()
        .await
        .unwrap();
    statuses.push(("graph huge".into(), r.status().as_u16()));

    assert!(statuses.len() >= 100, "only {} cases", statuses.len());
    let bad: Vec<_> = statuses
        .iter()
        .filter(|(_, s)| !(400..500).contains(s))
        .collect();
    assert!(bad.is_empty(), "not 4xx: {bad:?}");
    assert_eq!(
        w.notifications_logged().await,
        before,
        "a malformed request wrote to the log"
    );
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_renewed_before_they_expire_and_the_old_one_is_stopped() {
    // The simulator grants channels of one hour; calsync renews half way
    // through the granted lifetime. Half an hour passes on both clocks.
    let w = World::start(Options {
        serve: true,
        flag_gates: true,
        virtual_clock: true,
        sim: SimConfig {
            google_channel_ttl_secs: 3600,
            ..SimConfig::default()
        },
        ..Default::default()
    })
    .await;
    let id = w.google_connection("renew@example.com").await;
    wait_for_channel(&w, id).await;
    let first = google_channel(&w, "renew@example.com").unwrap().0;
    w.settle(&[id]).await;
    w.advance(chrono::Duration::minutes(29), &[id]).await;
    let types: Vec<String> = w
        .db
        .client()
        .await
        .query(
            "SELECT event_type || ' ' || payload::text FROM events WHERE stream = $1 ORDER BY version",
            &[&id.stream().as_str()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        w.count_events(id, "channel_closed").await,
        0,
        "renewed too early: {types:#?}"
    );
    w.advance(chrono::Duration::minutes(2), &[id]).await;
    let renewed = eventually(Duration::from_secs(15), || async {
        w.count_events(id, "channel_closed").await >= 1
    })
    .await;
    assert!(renewed, "the channel was not renewed");
    let live: Vec<_> = w
        .sim
        .google()
        .channels()
        .into_iter()
        .filter(|c| c.account == "renew@example.com" && !c.stopped)
        .collect();
    assert!(
        live.iter().all(|c| c.id != first),
        "the old channel was not stopped"
    );
    assert!(!live.is_empty(), "no live channel after renewal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_pushes_for_realistic_connections_update_busy_time_without_polling() {
    let app = support::fixtures::spawn_app()
        .options(Options {
            serve: true,
            flag_gates: true,
            ..Default::default()
        })
        .with_range()
        .start()
        .await;
    let w = &app.world;
    for f in &app.fixtures {
        f.wait_for_expected_busy(w).await;
        wait_for_channel_count(w, f.id, f.blocking.len()).await;
    }
    // A change in a blocking calendar reaches calsync only through the
    // provider's push (no test-side notify, polls are 15 minutes away).
    for f in &app.fixtures {
        let at = w.log_head().await;
        let start = f.zone.midnight(f.dst_day + TimeDelta::days(5)) + TimeDelta::hours(8);
        f.add_busy(w, f.blocking.len() - 1, start, 45);
        w.wait_for_event(f.id, "notification_accepted", at).await;
        let mut f = f.clone();
        f.expected_busy
            .push((start, start + TimeDelta::minutes(45)));
        f.expected_busy.sort();
        f.wait_for_expected_busy(w).await;
    }
}

async fn wait_for_channel_count(w: &World, id: ConnectionId, n: usize) {
    support::wait_for(
        &format!("{n} open channels for {id}"),
        support::DEADLINE,
        || async {
            let open: i64 = w
                .db
                .client()
                .await
                .query_one(
                    "SELECT count(*) FROM channels WHERE connection_id = $1 AND closed_at IS NULL",
                    &[&id.as_uuid()],
                )
                .await
                .unwrap()
                .get(0);
            (open as usize == n).then_some(())
        },
    )
    .await;
}
