//! `graceful-degradation` (Guarantee 6): under webhook load, turning the
//! flags off makes the entry points answer 403 within a second and write
//! nothing after that second; removing a connection from the allowlist in
//! production mode does the same for that connection; turning everything
//! back on resumes service and sync.

use super::harness::{eventually, google_request, tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

/// Sends notifications every 5 ms for `for_ms`: (when, status) each.
fn load(
    h: &Harness,
    channel: &(String, String, String),
    first: u64,
    for_ms: u64,
) -> tokio::task::JoinHandle<Vec<(Instant, u16)>> {
    let (http, base, channel) = (h.http.clone(), h.base.clone(), channel.clone());
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let started = Instant::now();
        let mut n = first;
        while started.elapsed() < Duration::from_millis(for_ms) {
            let status = google_request(&http, &base, &channel, n)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            seen.push((Instant::now(), status));
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen
    })
}

/// Statuses answered between `from` and `to` after `at`.
fn between(seen: &[(Instant, u16)], at: Instant, from_ms: u64, to_ms: u64) -> Vec<u16> {
    seen.iter()
        .filter(|(t, _)| {
            *t > at + Duration::from_millis(from_ms) && *t < at + Duration::from_millis(to_ms)
        })
        .map(|(_, s)| *s)
        .collect()
}

async fn db_now(h: &Harness) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    Ok(h.db().await?.query_one("SELECT now()", &[]).await?.get(0))
}

async fn logged_since(h: &Harness, t: chrono::DateTime<chrono::Utc>) -> anyhow::Result<i64> {
    Ok(h.db()
        .await?
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'notification_accepted' \
             AND committed_at > $1::timestamptz + interval '1 second'",
            &[&t],
        )
        .await?
        .get(0))
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let off_ms = sizes.pick(2000, 10_000);
    let (id, channel) = h.google_ready("degrade@example.com", "pp-degrade").await?;

    // 1. Flags off under load.
    let running = load(h, &channel, 100_000, 600 + off_ms + 1500);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for flag in ["webhooks_enabled", "sync_enabled", "jobs_enabled"] {
        h.set_flag(flag, false).await?;
    }
    let off_at = Instant::now();
    let off_db = db_now(h).await?;
    let lists_before = h.provider_calls("events.list");
    // An external change while sync is off: no provider call may follow.
    let (start, end) = tomorrow(11);
    h.sim
        .google()
        .upsert_event(
            "degrade@example.com",
            "primary",
            json!({"summary": "while off", "start": {"dateTime": start.to_rfc3339()},
                   "end": {"dateTime": end.to_rfc3339()}}),
        )
        .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
    tokio::time::sleep(Duration::from_millis(off_ms)).await;
    let late = logged_since(h, off_db).await?;
    let lists_while_off = h.provider_calls("events.list") - lists_before;
    for flag in ["webhooks_enabled", "sync_enabled", "jobs_enabled"] {
        h.set_flag(flag, true).await?;
    }
    let seen = running.await?;
    let after_a_second = between(&seen, off_at, 1000, off_ms);
    r.check(
        "flags off: 403 within 1 s",
        !after_a_second.is_empty() && after_a_second.iter().all(|s| *s == 403),
        format!(
            "{} notifications sent from 1 s after the switch until it was undone: {} answered 403, others {:?}",
            after_a_second.len(),
            after_a_second.iter().filter(|s| **s == 403).count(),
            after_a_second.iter().filter(|s| **s != 403).take(5).collect::<Vec<_>>()
        ),
    );
    r.check(
        "flags off: nothing logged after 1 s, no provider sync",
        late == 0 && lists_while_off == 0,
        format!("{late} notifications committed > 1 s after the switch; {lists_while_off} provider syncs while sync was off"),
    );
    let resumed = seen.last().map(|(_, s)| *s);
    let busy = eventually(Duration::from_secs(20), || async {
        super::inbound::busy_count(h, "pp-degrade").await == 1
    })
    .await;
    r.check(
        "flags on: service and sync resume",
        resumed == Some(200) && busy.is_some(),
        format!(
            "last notification answered {resumed:?}; the change made while off became busy {}",
            busy.map_or("never".into(), |d| format!(
                "{} ms after flags on",
                d.as_millis()
            ))
        ),
    );

    // 2. Allowlist removal in production mode.
    let (status, _) = h
        .admin(
            Method::PUT,
            "/admin/production",
            Some(json!({"enabled": true})),
        )
        .await?;
    anyhow::ensure!(status == 200, "production mode answered {status}");
    for path in [
        "/admin/allowlist/providers/google".to_string(),
        format!("/admin/allowlist/connections/{id}"),
    ] {
        let (status, body) = h.admin(Method::POST, &path, None).await?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
    }
    let running = load(h, &channel, 300_000, 600 + off_ms + 1500);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = h
        .admin(
            Method::DELETE,
            &format!("/admin/allowlist/connections/{id}"),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "unlisting answered {status}: {body}");
    let off_at = Instant::now();
    let off_db = db_now(h).await?;
    tokio::time::sleep(Duration::from_millis(off_ms)).await;
    let late = logged_since(h, off_db).await?;
    let (status, body) = h
        .admin(
            Method::POST,
            &format!("/admin/allowlist/connections/{id}"),
            None,
        )
        .await?;
    anyhow::ensure!(status == 200, "relisting answered {status}: {body}");
    let seen = running.await?;
    let after_a_second = between(&seen, off_at, 1000, off_ms);
    r.check(
        "allowlist removal: 403 within 1 s, nothing logged",
        !after_a_second.is_empty() && after_a_second.iter().all(|s| *s == 403) && late == 0,
        format!(
            "{} of {} answered 403 from 1 s after the removal; {late} notifications committed after that",
            after_a_second.iter().filter(|s| **s == 403).count(),
            after_a_second.len()
        ),
    );
    r.check(
        "allowlist restored: accepted again",
        seen.last().map(|(_, s)| *s) == Some(200),
        format!(
            "last notification answered {:?}",
            seen.last().map(|(_, s)| *s)
        ),
    );
    Ok(())
}
