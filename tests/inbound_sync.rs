//! Inbound sync end to end: simulated providers over real HTTP, real
//! PostgreSQL, connection actors syncing into the busy_intervals projection.

mod support;

use calsim::{FaultKind, FaultRule, Provider};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::json;
use std::time::Duration;
use support::{eventually, Options, World};

fn hour(h: i64) -> (String, String) {
    let base = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(2);
    let s = base + TimeDelta::hours(h);
    let e = s + TimeDelta::minutes(30);
    (s.to_rfc3339(), e.to_rfc3339())
}

fn google_event(id: &str, h: i64) -> serde_json::Value {
    let (s, e) = hour(h);
    json!({ "id": id, "summary": "dentist", "start": {"dateTime": s}, "end": {"dateTime": e} })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_changes_become_and_stop_being_busy_time() {
    let w = World::new().await;
    let google = w.sim.google();
    google
        .upsert_event("ana@example.com", "primary", google_event("evt00001", 9))
        .ok();
    let id = w.google_connection("ana@example.com").await;
    google
        .upsert_event("ana@example.com", "primary", google_event("evt00001", 9))
        .unwrap();
    // Transparent ("free") time never blocks.
    let (s, e) = hour(13);
    google
        .upsert_event(
            "ana@example.com",
            "primary",
            json!({"id": "evtfree1", "transparency": "transparent",
                   "start": {"dateTime": s}, "end": {"dateTime": e}}),
        )
        .unwrap();

    assert!(!w.notify(id, "google:c1:1").await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 1
        })
        .await,
        "the first sync did not produce the busy interval: {:?}",
        w.busy(id).await
    );
    assert_eq!(w.busy(id).await[0].0, "evt00001");

    // A new event, then a notification: it becomes busy time.
    google
        .upsert_event("ana@example.com", "primary", google_event("evt00002", 11))
        .unwrap();
    w.notify(id, "google:c1:2").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 2
        })
        .await
    );

    // Moved: the interval moves. Deleted: it stops blocking.
    google
        .upsert_event("ana@example.com", "primary", google_event("evt00002", 15))
        .unwrap();
    google
        .delete_event("ana@example.com", "primary", "evt00001")
        .unwrap();
    w.notify(id, "google:c1:3").await;
    let moved = hour(15).0;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let busy = w.busy(id).await;
            busy.len() == 1 && busy[0].0 == "evt00002" && busy[0].1.to_rfc3339() == moved
        })
        .await,
        "{:?}",
        w.busy(id).await
    );
    let (status, errors, _) = w.status(id).await;
    assert_eq!((status.as_str(), errors), ("active", 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_notification_is_acknowledged_without_extra_sync() {
    let w = World::new().await;
    let id = w.google_connection("dup@example.com").await;
    assert!(!w.notify(id, "google:c9:5").await);
    // At rest: a sync that started after the last input has finished.
    w.at_rest(id, "dup@example.com").await;
    let lists_before = w.provider_calls("events.list");
    let rounds_before = w.count_events(id, "sync_round_completed").await;
    let accepted_before = w.count_events(id, "notification_accepted").await;
    for _ in 0..5 {
        assert!(
            w.notify(id, "google:c9:5").await,
            "a repeat must be a duplicate"
        );
    }
    // The actor has answered the repeats; any task they started has
    // finished once it is quiet, so its read would be in the log by now.
    w.settle(&[id]).await;
    assert_eq!(
        w.provider_calls("events.list"),
        lists_before,
        "duplicates triggered sync work"
    );
    assert_eq!(
        w.count_events(id, "notification_accepted").await,
        accepted_before,
        "a duplicate was logged"
    );
    // Positive control: a fresh notification does cause exactly one sync,
    // so the absence above was not for want of a working connection.
    w.at_rest(id, "dup@example.com").await;
    assert_eq!(w.provider_calls("events.list"), lists_before + 1);
    assert_eq!(
        w.count_events(id, "sync_round_completed").await,
        rounds_before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_delta_token_leads_to_a_full_resync_that_sweeps_deleted_events() {
    let w = World::new().await;
    let graph = w.sim.graph();
    let id = w.graph_connection("bo@contoso.com").await;
    let (s1, e1) = hour(9);
    let (s2, e2) = hour(10);
    let keep = graph
        .create_event("bo@contoso.com", json!({"subject": "keep", "showAs": "busy",
            "start": {"dateTime": s1[..19], "timeZone": "UTC"}, "end": {"dateTime": e1[..19], "timeZone": "UTC"}}))
        .unwrap();
    let gone = graph
        .create_event("bo@contoso.com", json!({"subject": "gone", "showAs": "busy",
            "start": {"dateTime": s2[..19], "timeZone": "UTC"}, "end": {"dateTime": e2[..19], "timeZone": "UTC"}}))
        .unwrap();
    w.notify(id, "graph:k1").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 2
        })
        .await,
        "{:?}",
        w.busy(id).await
    );
    // The provider forgets our delta state, and an event is deleted while
    // nothing tells us: only the full resync's sweep can notice.
    graph.invalidate_delta_tokens("bo@contoso.com");
    graph
        .delete_event("bo@contoso.com", gone["id"].as_str().unwrap())
        .unwrap();
    w.notify(id, "graph:k2").await;
    let keep_id = keep["id"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let busy = w.busy(id).await;
            busy.len() == 1 && busy[0].0 == keep_id
        })
        .await,
        "{:?}",
        w.busy(id).await
    );
    let client = w.db.client().await;
    let generation: i64 = client
        .query_one(
            "SELECT generation FROM connection_calendars WHERE connection_id = $1",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(generation, 2, "the resync opened a second generation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_marks_the_connection_and_stops_calls() {
    let w = World::new().await;
    let id = w.google_connection("gone@example.com").await;
    w.sim.google().revoke_grant("gone@example.com");
    w.notify(id, "google:r:1").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(id).await.0 == "needs_reauthorization"
        })
        .await,
        "{:?}",
        w.status(id).await
    );
    let calls = w.sim.requests().len();
    let accepted = w.count_events(id, "notification_accepted").await;
    for n in 2..6 {
        assert!(!w.notify(id, &format!("google:r:{n}")).await);
    }
    // Each notification was committed and planned (the notify returned),
    // and the actor is quiet afterwards: a call it made would have finished
    // and be in the simulator's log.
    w.settle(&[id]).await;
    assert_eq!(
        w.count_events(id, "notification_accepted").await,
        accepted + 4,
        "the notifications reached the actor"
    );
    assert_eq!(
        w.sim.requests().len(),
        calls,
        "provider called after invalid_grant"
    );
    assert_eq!(w.status(id).await.0, "needs_reauthorization");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_throttling_are_backed_off_and_the_connection_converges() {
    let w = World::new().await;
    let google = w.sim.google();
    let id = w.google_connection("busy@example.com").await;
    google
        .upsert_event("busy@example.com", "primary", google_event("evtslo01", 9))
        .unwrap();
    let throttle = w.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.list".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::Status {
            code: 429,
            retry_after: Some(1.5),
            reason: Some("rateLimitExceeded".into()),
        },
        remaining: None,
    });
    w.notify(id, "google:o:1").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(id).await.0 == "backoff"
        })
        .await
    );
    let (_, errors, until) = w.status(id).await;
    assert!(errors >= 1);
    let until = until.unwrap();
    // Retry-After: 1.5 s is honoured as a floor.
    let failed_at = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "events.list")
        .map(|r| r.at)
        .max()
        .unwrap();
    assert!(
        until >= failed_at + TimeDelta::milliseconds(1400),
        "{until} vs {failed_at}"
    );

    // Notifications during backoff are recorded but cause no provider call.
    for n in 2..8 {
        w.notify(id, &format!("google:o:{n}")).await;
    }
    let early: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == "events.list" && r.at > failed_at && r.at < until)
        .collect();
    assert!(early.is_empty(), "calls during backoff: {early:?}");

    // Then an outage (503) instead of throttling; still backing off.
    w.sim.remove_fault(throttle);
    let outage = w.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.list".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::Status {
            code: 503,
            retry_after: None,
            reason: Some("backendError".into()),
        },
        remaining: Some(2),
    });
    // The provider recovers after two more failures; the backoff timer (no
    // further notifications needed) brings the connection back.
    assert!(
        eventually(Duration::from_secs(20), || async {
            w.status(id).await.0 == "active" && w.busy(id).await.len() == 1
        })
        .await,
        "never converged: {:?}",
        w.status(id).await
    );
    w.sim.remove_fault(outage);
    // No call was ever made before the backoff_until in force at the time.
    let client = w.db.client().await;
    // Throttling backs the connection off (sync_failed), the outage its one
    // calendar (calendar_sync_failed): both windows are respected.
    let failures = client
        .query(
            "SELECT COALESCE(payload::jsonb->>'backoff_until', payload::jsonb->>'retry_at')::timestamptz, \
                    committed_at FROM events \
             WHERE stream = $1 AND event_type IN ('sync_failed', 'calendar_sync_failed') \
             ORDER BY version",
            &[&id.stream().as_str()],
        )
        .await
        .unwrap();
    assert!(failures.len() >= 2);
    let calls: Vec<DateTime<Utc>> = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "events.list")
        .map(|r| r.at)
        .collect();
    for f in &failures {
        let until: DateTime<Utc> = f.get(0);
        let at: DateTime<Utc> = f.get(1);
        assert!(
            !calls
                .iter()
                .any(|c| *c > at + TimeDelta::milliseconds(50) && *c < until),
            "a provider call inside the backoff window {at}..{until}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivated_connections_are_still_polled_when_their_poll_is_due() {
    let w = World::start(Options {
        actors: calsync::actors::ActorSettings {
            poll_sweep_every: Duration::from_millis(200),
            ..Default::default()
        },
        poll_every: Some(TimeDelta::seconds(2)),
        ..Default::default()
    })
    .await;
    let id = w.google_connection("poll@example.com").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(id).await.0 == "active"
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.count_events(id, "sync_round_completed").await >= 1
        })
        .await
    );
    // Idle: the actor is passivated; then the calendar changes and nobody
    // tells us (a dropped push notification).
    assert_eq!(w.connections.passivate_idle(Duration::ZERO), 1);
    w.sim
        .google()
        .upsert_event("poll@example.com", "primary", google_event("pollevt1", 9))
        .unwrap();
    assert!(
        eventually(Duration::from_secs(15), || async {
            w.busy(id).await.len() == 1
        })
        .await,
        "the poll never came"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendars_shared_as_free_busy_only_sync_through_the_free_busy_query() {
    use calsync::core::decide::ConnectionCommand;
    let w = World::new().await;
    let id = w.google_connection("fb@example.com").await;
    w.connections
        .command(
            id,
            ConnectionCommand::SetFreeBusyOnly {
                calendars: vec![calsync::core::ids::CalendarId::parse("primary").unwrap()],
            },
            uuid::Uuid::new_v4(),
        )
        .await
        .unwrap();
    let google = w.sim.google();
    google
        .upsert_event("fb@example.com", "primary", google_event("fbevt001", 9))
        .unwrap();
    google
        .upsert_event("fb@example.com", "primary", google_event("fbevt002", 13))
        .unwrap();
    // The selection's own sync has run (through the free/busy query) before
    // counting: from here on, no calendar read may be a listing.
    w.at_rest(id, "fb@example.com").await;
    let lists_before = w.provider_calls("events.list");
    let free_busy_before = w.provider_calls("freeBusy");
    w.notify(id, "fb:1").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 2
        })
        .await,
        "{:?}",
        w.busy(id).await
    );
    assert!(w
        .busy(id)
        .await
        .iter()
        .all(|(ext, _, _)| ext.starts_with("freebusy:")));
    // A deleted event disappears on the next read (each read sweeps the last).
    google
        .delete_event("fb@example.com", "primary", "fbevt001")
        .unwrap();
    w.notify(id, "fb:2").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.busy(id).await.len() == 1
        })
        .await
    );
    let (_, start, _) = w.busy(id).await[0].clone();
    assert_eq!(start.to_rfc3339(), hour(13).0);
    // Free/busy calendars are never listed event by event: not once after
    // the selection, though syncs ran (each a free/busy query): at least
    // the deletion's and the marker's.
    w.at_rest(id, "fb@example.com").await;
    assert!(w.provider_calls("freeBusy") >= free_busy_before + 2);
    assert_eq!(
        w.provider_calls("events.list"),
        lists_before,
        "events.list used for a free/busy-only calendar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_reuse_the_access_token_until_it_expires() {
    // Google does not rotate refresh tokens, so nothing is written back to
    // the vault; the access token a sync obtained must still serve the next
    // syncs instead of one token request per sync.
    let w = World::new().await;
    let google = w.sim.google();
    let id = w.google_connection("tok@example.com").await;
    for n in 1..=5u32 {
        google
            .upsert_event(
                "tok@example.com",
                "primary",
                google_event(&format!("evttok{n:02}"), 8 + i64::from(n)),
            )
            .unwrap();
        w.notify(id, &format!("google:tok:{n}")).await;
        let want = n as usize;
        assert!(
            eventually(Duration::from_secs(10), || async {
                w.busy(id).await.len() == want
            })
            .await,
            "change {n} never became busy time"
        );
    }
    let count = |endpoint: &str| {
        w.sim
            .requests()
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    };
    assert!(count("events.list") >= 5, "{} syncs", count("events.list"));
    assert_eq!(count("token"), 1, "one refresh for all syncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_calendars_in_several_zones_block_exactly_their_busy_time() {
    // Two connections of each provider, two platform providers, Sydney,
    // Berlin and New York (Graph under Windows zone names), each reading two
    // calendars with series, DST all-day events, declined, tentative, free
    // and out-of-office events, and writing to a third.
    let app = support::fixtures::spawn_app().with_range().start().await;
    let w = &app.world;
    for f in &app.fixtures {
        f.wait_for_expected_busy(w).await;
    }
    // A change in the last blocking calendar of each is synced too, and
    // nothing from the destination calendar ever blocks.
    let mut expected = Vec::new();
    for f in &app.fixtures {
        let start = f.zone.midnight(f.dst_day + TimeDelta::days(3)) + TimeDelta::hours(15);
        f.add_busy(w, f.blocking.len() - 1, start, 30);
        w.notify(f.id, "range:added").await;
        let mut want = f.expected_busy.clone();
        want.push((start, start + TimeDelta::minutes(30)));
        want.sort();
        expected.push(want);
    }
    for (f, want) in app.fixtures.iter().zip(expected) {
        let mut f = f.clone();
        f.expected_busy = want;
        f.wait_for_expected_busy(w).await;
        let client = w.db.client().await;
        let calendars: Vec<String> = client
            .query(
                "SELECT DISTINCT calendar_id FROM busy_intervals WHERE connection_id = $1",
                &[&f.id.as_uuid()],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            calendars.len(),
            f.blocking.len(),
            "every blocking calendar: {calendars:?}"
        );
        assert!(!calendars.contains(&f.destination));
    }
}
