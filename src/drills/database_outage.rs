//! `database-outage` (Guarantee 1): PostgreSQL is stopped (immediate
//! shutdown, like a crash) under webhook traffic. `/readyz` answers 503,
//! webhooks answer 503 — never 2xx — and nothing is half-written: when the
//! database is back, the provider's retries of those notifications are
//! accepted as new (not `duplicate`), each logged once, and sync works.

use super::harness::{eventually, google_request, tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use crate::pg::StopMode;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let outage = Duration::from_secs(sizes.pick(5, 30));
    let (_, channel) = h.google_ready("dbdown@example.com", "pp-dbdown").await?;
    let before = h.events_of_type("notification_accepted").await?;

    // Stopped on this thread: the cluster belongs to the drill process.
    h.cluster
        .stop(StopMode::Immediate)
        .map_err(|e| anyhow::anyhow!("cannot stop PostgreSQL: {e}"))?;
    let stopped = Instant::now();
    let not_ready = eventually(Duration::from_secs(10), || async {
        h.status_of("/readyz").await == Some(503)
    })
    .await;
    let mut answers = Vec::new();
    let mut number = 3_000_000u64;
    while stopped.elapsed() < outage {
        let status = google_request(&h.http, &h.base, &channel, number)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        answers.push((number, status));
        number += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let healthz = h.status_of("/healthz").await;
    r.check(
        "/readyz answers 503 while the database is down",
        not_ready.is_some(),
        format!(
            "/readyz 503 {} after the stop; /healthz answered {healthz:?} (the process lives)",
            not_ready.map_or("never".into(), |d| format!("{} ms", d.as_millis()))
        ),
    );
    let accepted: Vec<&(u64, u16)> = answers
        .iter()
        .filter(|(_, s)| (200..300).contains(s))
        .collect();
    r.check(
        "webhooks answer 503, never 2xx, while the database is down",
        !answers.is_empty() && accepted.is_empty() && answers.iter().all(|(_, s)| *s == 503),
        format!(
            "{} notifications during the {} s outage: {} answered 503, {} answered 2xx, others {:?}",
            answers.len(),
            outage.as_secs(),
            answers.iter().filter(|(_, s)| *s == 503).count(),
            accepted.len(),
            answers.iter().filter(|(_, s)| *s != 503).map(|(_, s)| s).take(5).collect::<Vec<_>>()
        ),
    );

    h.cluster
        .restart()
        .map_err(|e| anyhow::anyhow!("cannot restart PostgreSQL: {e}"))?;
    let restarted = Instant::now();
    let ready = h.wait_ready(Duration::from_secs(60)).await;
    let recovery_ms = restarted.elapsed().as_millis();
    r.measure("outage_seconds", stopped.elapsed().as_secs_f64());
    r.measure("recovery_ms", recovery_ms);
    let logged_during = h.events_of_type("notification_accepted").await? - before;

    // The provider retries what got 503: each must be new, and logged once.
    let mut retried = Vec::new();
    for (n, _) in &answers {
        let mut answer = (0, String::new());
        for _ in 0..50 {
            let resp = google_request(&h.http, &h.base, &channel, *n).send().await;
            answer = match resp {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    (s, resp.text().await.unwrap_or_default())
                }
                Err(_) => (0, String::new()),
            };
            if answer.0 != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        retried.push(answer);
    }
    let fresh = retried
        .iter()
        .filter(|(s, body)| *s == 200 && body.contains("\"accepted\""))
        .count();
    let logged = h.events_of_type("notification_accepted").await? - before;
    r.check(
        "recovery: ready again, retries accepted as new (nothing half-written)",
        ready && logged_during == 0 && fresh == answers.len() && logged == answers.len() as i64,
        format!(
            "/readyz 200 {recovery_ms} ms after PostgreSQL restarted; {logged_during} notifications logged by the outage; \
             {fresh} of {} retries answered `accepted` (none `duplicate`); {logged} logged in all",
            answers.len()
        ),
    );
    let (start, end) = tomorrow(10);
    h.sim
        .google()
        .upsert_event(
            "dbdown@example.com",
            "primary",
            json!({"summary": "after outage", "start": {"dateTime": start.to_rfc3339()},
                   "end": {"dateTime": end.to_rfc3339()}}),
        )
        .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
    let busy = eventually(Duration::from_secs(30), || async {
        super::inbound::busy_count(h, "pp-dbdown").await == 1
    })
    .await;
    r.check(
        "later notifications accepted and synced",
        busy.is_some(),
        format!(
            "a change after the outage became busy {}",
            busy.map_or("never".into(), |d| format!("in {} ms", d.as_millis()))
        ),
    );
    Ok(())
}
