//! `provider-outage` (Guarantee 5): the provider answers 503 (then 429 with
//! `Retry-After`) for a window. The connection goes into backoff, visible in
//! `/admin/status` (error count, last error, backoff until); the simulator's
//! request log shows no call to the provider before each `backoff_until`,
//! even while notifications keep arriving; after the window it converges.

use super::harness::{eventually, tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use calsim::{FaultKind, FaultRule, Provider};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const EMAIL: &str = "outage@example.com";

fn rule(kind: FaultKind) -> FaultRule {
    FaultRule {
        provider: Provider::Google,
        endpoint: None,
        account: None,
        path: None,
        body_contains: None,
        kind,
        remaining: None,
    }
}

/// The connection's row in `/admin/status`.
async fn status_row(h: &Harness, id: &str) -> Option<Value> {
    let (_, body) = h.admin(Method::GET, "/admin/status", None).await.ok()?;
    body["connections"]
        .as_array()?
        .iter()
        .find(|c| c["connection_id"] == id)
        .cloned()
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let outage = Duration::from_secs(sizes.pick(5, 60));
    let (id, channel) = h.google_ready(EMAIL, "pp-outage").await?;
    let started_at = Utc::now();
    let t0 = Instant::now();
    let first = h.sim.add_fault(rule(FaultKind::Status {
        code: 503,
        retry_after: None,
        reason: None,
    }));
    let mut fault = first;
    let mut switched = false;
    // An external change: its notification starts a sync that fails.
    let (start, end) = tomorrow(8);
    h.sim
        .google()
        .upsert_event(
            EMAIL,
            "primary",
            json!({"summary": "during outage", "start": {"dateTime": start.to_rfc3339()},
                   "end": {"dateTime": end.to_rfc3339()}}),
        )
        .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
    // (first seen, backoff_until) of every backoff observed.
    let mut backoffs: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut max_errors = 0;
    let mut last_error = String::new();
    let mut number = 2_000_000u64;
    let mut answered_during = Vec::new();
    while t0.elapsed() < outage {
        if !switched && t0.elapsed() > outage / 2 {
            // Second half: throttling with Retry-After, which must be honoured.
            h.sim.remove_fault(fault);
            fault = h.sim.add_fault(rule(FaultKind::Status {
                code: 429,
                retry_after: Some(2.0),
                reason: Some("rateLimitExceeded".into()),
            }));
            switched = true;
        }
        if let Some(row) = status_row(h, &id).await {
            max_errors = max_errors.max(row["error_count"].as_i64().unwrap_or(0));
            if let Some(e) = row["last_error"].as_str() {
                last_error = e.to_string();
            }
            if let Some(until) = row["backoff_until"]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
            {
                if backoffs.last().map(|(_, u)| *u) != Some(until) {
                    backoffs.push((Utc::now(), until));
                }
            }
        }
        // Notifications keep coming: they are logged but must not sync.
        answered_during.push(h.google_push(&channel, number).await?);
        number += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.sim.remove_fault(fault);
    let healed = Instant::now();
    // Every Google call (token refreshes included): the drill has one account.
    let calls = h.sim.requests();
    let during: Vec<_> = calls
        .iter()
        .filter(|c| c.at >= started_at && c.provider == Provider::Google)
        .collect();
    // Each call counted once, however many backoff periods it falls in.
    let early: Vec<String> = during
        .iter()
        .filter(|c| {
            backoffs
                .iter()
                .any(|(seen, until)| c.at > *seen && c.at < *until)
        })
        .map(|c| format!("{} at {}", c.endpoint, c.at.format("%H:%M:%S%.3f")))
        .collect();
    r.check(
        "backoff visible in /admin/status",
        !backoffs.is_empty() && max_errors > 0 && !last_error.is_empty(),
        format!(
            "{} backoff periods seen (until {:?}), error_count up to {max_errors}, last_error {last_error:?}",
            backoffs.len(),
            backoffs.iter().map(|(_, u)| u.format("%H:%M:%S%.3f").to_string()).collect::<Vec<_>>()
        ),
    );
    r.check(
        "zero provider calls before backoff_until",
        early.is_empty(),
        format!(
            "{} provider calls during the {} s outage, {} inside a backoff period (requests made during backoff: {:?}); {} notifications answered during it ({} 2xx)",
            during.len(),
            outage.as_secs(),
            early.len(),
            early.iter().take(5).collect::<Vec<_>>(),
            answered_during.len(),
            answered_during.iter().filter(|s| (200..300).contains(*s)).count()
        ),
    );
    let throttled = during.iter().filter(|c| c.status == 429).count();
    let unavailable = during.iter().filter(|c| c.status == 503).count();
    r.measure("provider_calls_503", unavailable);
    r.measure("provider_calls_429", throttled);
    let converged = eventually(outage + Duration::from_secs(120), || async {
        let busy = super::inbound::busy_count(h, "pp-outage").await == 1;
        let row = status_row(h, &id).await.unwrap_or(Value::Null);
        busy && row["error_count"] == 0 && row["backoff_until"].is_null()
    })
    .await;
    r.check(
        "converges after the outage",
        converged.is_some(),
        format!(
            "the change made during the outage became busy and the backoff cleared {} after the provider recovered",
            converged.map_or("never".into(), |_| format!("{} ms", healed.elapsed().as_millis()))
        ),
    );
    Ok(())
}
