//! `isolation` (Guarantee 10): one connection with a healthy calendar, one
//! the provider answers 404 for (missing) and one it answers 503 for
//! (flaky), and a batch of bookings whose last one the provider refuses for
//! good. From outside: the healthy calendar's changes become busy as
//! usual, the missing calendar is not hammered, every other booking is
//! written while the refused one is `failed` with its reason, and after
//! the fault is gone an operator retry writes it exactly once.

use super::harness::{eventually, tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use calsim::{FaultKind, FaultRule, Provider};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const EMAIL: &str = "isolation@example.com";
const PP: &str = "pp-isolation";

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let bookings: usize = sizes.pick(10, 50);
    let edits: usize = sizes.pick(3, 20);
    let google = h.sim.google();
    google.create_account(EMAIL);
    let flaky = google
        .create_calendar(EMAIL, "Flaky", "UTC")
        .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
    h.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.list".into()),
        account: None,
        path: Some(format!("*/calendars/{flaky}/*")),
        body_contains: None,
        kind: FaultKind::Status {
            code: 503,
            retry_after: None,
            reason: Some("backendError".into()),
        },
        remaining: None,
    });
    let last = format!("iso-{bookings}");
    let refusal = h.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.insert".into()),
        account: None,
        path: None,
        body_contains: Some(format!("\"{last}\"")),
        kind: FaultKind::Status {
            code: 400,
            retry_after: None,
            reason: Some("invalid".into()),
        },
        remaining: None,
    });
    let started = chrono::Utc::now();
    let id = h
        .google_calendars(
            EMAIL,
            PP,
            &["aaa-missing", "primary", &flaky],
            Some("primary"),
        )
        .await?;
    // Degraded, not active: two of its calendars fail by design. The
    // healthy one's channel opening says the connection works.
    let channel = format!(
        "SELECT count(*) FROM channels WHERE connection_id = '{id}' \
         AND calendar_id = 'primary' AND closed_at IS NULL"
    );
    let connected = eventually(Duration::from_secs(20), || async {
        h.count(&channel).await.unwrap_or(0) >= 1
    })
    .await;
    anyhow::ensure!(
        connected.is_some(),
        "the healthy calendar's channel never opened"
    );

    // The healthy calendar's changes become busy while its neighbours fail.
    let mut latencies = Vec::new();
    for i in 0..edits {
        let (start, end) = tomorrow(9 + i as i64);
        let event_id = format!("evisolation{i:03}");
        google
            .upsert_event(
                EMAIL,
                "primary",
                json!({"id": event_id, "summary": "healthy",
                    "start": {"dateTime": start.to_rfc3339()},
                    "end": {"dateTime": end.to_rfc3339()}}),
            )
            .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
        let t = Instant::now();
        let sql = format!(
            "SELECT count(*) FROM busy_intervals WHERE connection_id = '{id}' \
             AND calendar_id = 'primary' AND external_event_id = '{event_id}'"
        );
        let seen = eventually(Duration::from_secs(10), || async {
            h.count(&sql).await.unwrap_or(0) == 1
        })
        .await;
        latencies.push(seen.map(|_| t.elapsed().as_millis()));
    }
    let busy_ok = latencies.iter().all(Option::is_some);
    let ms: Vec<u128> = latencies.iter().flatten().copied().collect();
    let (p50, max) = super::p50_max(ms);
    r.check(
        "the healthy calendar's changes become busy while two others fail",
        busy_ok,
        format!("{edits} edits, change → busy p50 {p50} ms, max {max} ms"),
    );

    // Bookings: all but the last are written; the last is failed.
    for n in 1..=bookings {
        let (status, body) = h.book(&format!("iso-{n}"), PP, 12 + (n % 8) as i64).await?;
        anyhow::ensure!(status == 200, "booking iso-{n} answered {status}: {body}");
    }
    let states = format!(
        "SELECT count(*) FILTER (WHERE state = 'written'), \
                count(*) FILTER (WHERE state = 'failed' AND booking_id = '{last}') \
         FROM booking_events WHERE connection_id = '{id}'"
    );
    let settled = eventually(Duration::from_secs(20), || async {
        let Ok(client) = h.db().await else {
            return false;
        };
        let Ok(row) = client.query_one(&states, &[]).await else {
            return false;
        };
        row.get::<_, i64>(0) == bookings as i64 - 1 && row.get::<_, i64>(1) == 1
    })
    .await;
    let (_, shown) = h
        .admin(Method::GET, &format!("/v1/bookings/{last}"), None)
        .await?;
    let row = &shown["calendars"][0];
    r.check(
        "every other booking is written while the refused one is failed with its reason",
        settled.is_some()
            && row["state"] == "failed"
            && row["last_error"].as_str().unwrap_or("").contains("400"),
        format!(
            "{} of {bookings} written; {last}: state {}, last_error {}",
            bookings - 1,
            row["state"],
            row["last_error"]
        ),
    );

    // The missing calendar: probed once, then left alone for about an hour.
    let calls: Vec<String> = h
        .sim
        .requests_for(Provider::Google, Some(EMAIL))
        .iter()
        .filter(|r| r.at >= started && r.path.contains("aaa-missing"))
        .map(|r| {
            format!(
                "{} {} at {}",
                r.endpoint,
                r.status,
                r.at.format("%H:%M:%S%.3f")
            )
        })
        .collect();
    let missing = calls.len();
    let (_, status) = h
        .admin(Method::GET, &format!("/admin/connections/{id}"), None)
        .await?;
    r.check(
        "the missing calendar is called at most twice during the drill; the connection shows degraded",
        missing <= 2 && status["status"] == "degraded",
        format!(
            "{missing} calls to aaa-missing ({}); connection status {}",
            calls.join(", "),
            status["status"]
        ),
    );

    // The fault goes; an operator retry writes the booking exactly once.
    h.sim.remove_fault(refusal);
    let (status, body) = h
        .admin(
            Method::POST,
            &format!("/admin/bookings/{last}/retry"),
            Some(json!({})),
        )
        .await?;
    anyhow::ensure!(status == 200, "retry answered {status}: {body}");
    let sql = format!(
        "SELECT count(*) FROM booking_events WHERE connection_id = '{id}' AND state = 'written'"
    );
    let written = eventually(Duration::from_secs(10), || async {
        h.count(&sql).await.unwrap_or(0) == bookings as i64
    })
    .await;
    let title = format!("booking {last}");
    let copies = google
        .stored_events(EMAIL, "primary")
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["summary"] == title && e["status"] != "cancelled")
        .count();
    r.check(
        "after the retry the refused booking is written exactly once",
        written.is_some() && copies == 1,
        format!(
            "all {bookings} written: {}; {copies} event(s) for {last}",
            written.is_some()
        ),
    );
    r.measure("healthy_change_to_busy_p50_ms", p50);
    Ok(())
}
