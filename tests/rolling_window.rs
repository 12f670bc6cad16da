//! The sync window keeps rolling (issue 16): with calsync's clock moved
//! with the simulator's by 30 and then 200 days, an event 170 days ahead of
//! the new "now" becomes busy (a Graph delta round freezes its window; a
//! Google sync token is tied to its full sync's), and an event the window
//! left behind is swept — each calendar is re-based with a full round.

mod support;

use calsim::SimConfig;
use calsync::core::ids::ConnectionId;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use std::time::Duration;
use support::{eventually, Options, World};

async fn busy_ids(w: &World, id: ConnectionId) -> Vec<String> {
    w.busy(id).await.into_iter().map(|(e, _, _)| e).collect()
}

fn graph_event(subject: &str, start: DateTime<Utc>) -> serde_json::Value {
    let fmt = "%Y-%m-%dT%H:%M:%S";
    json!({"subject": subject,
        "start": {"dateTime": start.format(fmt).to_string(), "timeZone": "UTC"},
        "end": {"dateTime": (start + TimeDelta::hours(1)).format(fmt).to_string(), "timeZone": "UTC"}})
}

fn google_event(id: &str, start: DateTime<Utc>) -> serde_json::Value {
    json!({"id": id, "summary": id,
        "start": {"dateTime": start.to_rfc3339()},
        "end": {"dateTime": (start + TimeDelta::hours(1)).to_rfc3339()}})
}

async fn world() -> World {
    World::start(Options {
        virtual_clock: true,
        flag_gates: true,
        sim: SimConfig::for_tests(),
        ..Default::default()
    })
    .await
}

/// Moves both clocks by `days` in one jump and lets the connection catch
/// up (its re-base is overdue at once).
async fn jump(w: &World, id: ConnectionId, days: i64) {
    w.advance(TimeDelta::days(days), &[id]).await;
    // A few more minutes for the work the jump made due (token refresh,
    // channel, the re-base round).
    for _ in 0..3 {
        w.advance(TimeDelta::minutes(1), &[id]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_window_rolls_over_30_and_200_days() {
    let w = world().await;
    let upn = "rolling@contoso.com";
    let id = w.graph_connection(upn).await;
    let graph = w.sim.graph();
    let soon = graph
        .create_event(upn, graph_event("soon", w.sim.now() + TimeDelta::days(2)))
        .unwrap();
    let soon_id = soon["id"].as_str().unwrap().to_string();
    w.notify(id, "graph:roll:0").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            busy_ids(&w, id).await == vec![soon_id.clone()]
        })
        .await,
        "{:?}",
        busy_ids(&w, id).await
    );
    for (n, days) in [(1, 30), (2, 200)] {
        jump(&w, id, days).await;
        let far = graph
            .create_event(
                upn,
                graph_event(&format!("far{n}"), w.sim.now() + TimeDelta::days(170)),
            )
            .unwrap();
        let far_id = far["id"].as_str().unwrap().to_string();
        w.notify(id, &format!("graph:roll:{n}")).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                busy_ids(&w, id).await.contains(&far_id)
            })
            .await,
            "after {days} days an event 170 days ahead is not busy: {:?}",
            busy_ids(&w, id).await
        );
        assert!(
            !busy_ids(&w, id).await.contains(&soon_id),
            "the event the window left behind was not swept"
        );
    }
    let rebases = w
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM events WHERE stream = $1 AND event_type = 'full_sync_started' \
             AND payload::jsonb->>'reason' = 'window re-based'",
            &[&id.stream().as_str()],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(rebases >= 2, "{rebases} re-bases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_window_rolls_over_30_and_200_days() {
    let w = world().await;
    let email = "rolling@example.com";
    let id = w.google_connection(email).await;
    let google = w.sim.google();
    google
        .upsert_event(
            email,
            "primary",
            google_event("evsoon", w.sim.now() + TimeDelta::days(2)),
        )
        .unwrap();
    w.notify(id, "google:roll:0").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            busy_ids(&w, id).await == vec!["evsoon".to_string()]
        })
        .await,
        "{:?}",
        busy_ids(&w, id).await
    );
    for (n, days) in [(1, 30), (2, 200)] {
        jump(&w, id, days).await;
        let far = format!("evfar{n}");
        google
            .upsert_event(
                email,
                "primary",
                google_event(&far, w.sim.now() + TimeDelta::days(170)),
            )
            .unwrap();
        w.notify(id, &format!("google:roll:{n}")).await;
        assert!(
            eventually(Duration::from_secs(10), || async {
                busy_ids(&w, id).await.contains(&far)
            })
            .await,
            "after {days} days an event 170 days ahead is not busy: {:?}",
            busy_ids(&w, id).await
        );
        assert!(
            !busy_ids(&w, id).await.contains(&"evsoon".to_string()),
            "the event the window left behind was not swept"
        );
    }
}
