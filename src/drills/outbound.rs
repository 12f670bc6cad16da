//! `outbound` (Guarantees 3, 4): bookings sent to `/v1/bookings` are created,
//! moved and cancelled in the provider's calendar, even when a create is
//! performed but its response is lost; the simulator's calendar ends equal
//! to the bookings, with zero duplicates, and our own events never come back
//! as busy time.

use super::harness::{eventually, tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use calsim::{FaultKind, FaultRule, Provider};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const EMAIL: &str = "outbound@example.com";
const PP: &str = "pp-outbound";

/// What the platform wants in the calendar: booking id -> (start, end, live).
type Expected = BTreeMap<
    String,
    (
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        bool,
    ),
>;

async fn send(
    h: &Harness,
    id: &str,
    version: u64,
    hour: i64,
    cancelled: bool,
) -> anyhow::Result<u16> {
    let (start, end) = tomorrow(hour);
    let (status, body) = h
        .admin(
            Method::POST,
            "/v1/bookings",
            Some(json!({
                "booking_id": id,
                "version": version,
                "platform_provider_id": PP,
                "status": if cancelled { "cancelled" } else { "confirmed" },
                "start": start,
                "end": end,
                "time_zone": "UTC",
                "title": format!("booking {id}"),
            })),
        )
        .await?;
    if status != 200 {
        anyhow::bail!("POST /v1/bookings {id} v{version} answered {status}: {body}");
    }
    Ok(status)
}

fn live_events(h: &Harness) -> Vec<Value> {
    h.sim
        .google()
        .stored_events(EMAIL, "primary")
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["status"] != "cancelled")
        .collect()
}

fn time_of(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v["dateTime"].as_str()?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Differences between the calendar and the bookings (empty: equal).
fn compare(h: &Harness, expected: &Expected) -> Vec<String> {
    let events = live_events(h);
    let mut problems = Vec::new();
    for (id, (start, end, live)) in expected {
        let title = format!("booking {id}");
        let matching: Vec<&Value> = events.iter().filter(|e| e["summary"] == title).collect();
        match (live, matching.len()) {
            (false, 0) => {}
            (false, n) => problems.push(format!("{id}: cancelled but {n} events")),
            (true, 1) => {
                let e = matching[0];
                if time_of(&e["start"]) != Some(*start) || time_of(&e["end"]) != Some(*end) {
                    problems.push(format!("{id}: wrong times {} {}", e["start"], e["end"]));
                }
            }
            (true, n) => problems.push(format!("{id}: {n} events")),
        }
    }
    let ours = expected.values().filter(|(_, _, live)| *live).count();
    if events.len() != ours {
        problems.push(format!(
            "{} live events for {ours} live bookings",
            events.len()
        ));
    }
    problems
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let n: usize = sizes.pick(6, 50);
    let (_, _) = h.google_ready(EMAIL, PP).await?;
    // The first two creates are performed but their answers are lost.
    h.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.insert".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::CreatedButResponseLost { status: None },
        remaining: Some(2),
    });
    let mut expected = Expected::new();
    for i in 0..n {
        let id = format!("b-{i}");
        let hour = (i % 12) as i64;
        send(h, &id, 1, hour, false).await?;
        let (s, e) = tomorrow(hour);
        expected.insert(id, (s, e, true));
    }
    // Move a third, cancel a third.
    for i in 0..n {
        let id = format!("b-{i}");
        match i % 3 {
            1 => {
                let hour = 12 + (i % 10) as i64;
                send(h, &id, 2, hour, false).await?;
                let (s, e) = tomorrow(hour);
                expected.insert(id, (s, e, true));
            }
            2 => {
                let hour = (i % 12) as i64;
                send(h, &id, 2, hour, true).await?;
                let (s, e) = tomorrow(hour);
                expected.insert(id, (s, e, false));
            }
            _ => {}
        }
    }
    let converged = eventually(Duration::from_secs(sizes.pick(30, 120)), || async {
        compare(h, &expected).is_empty()
    })
    .await;
    let problems = compare(h, &expected);
    let lost = h
        .sim
        .requests()
        .iter()
        .filter(|q| q.endpoint == "events.insert" && q.fault.is_some())
        .count();
    r.check(
        "the calendar equals the bookings (create, move, cancel)",
        converged.is_some() && problems.is_empty(),
        format!(
            "{n} bookings ({} live) converged {}; {lost} creates had their response lost; differences: {:?}",
            expected.values().filter(|(_, _, l)| *l).count(),
            converged.map_or("never".into(), |d| format!("in {} ms after the last change", d.as_millis())),
            problems.iter().take(5).collect::<Vec<_>>()
        ),
    );
    let duplicates = problems.iter().filter(|p| p.contains("events")).count();
    r.check(
        "zero duplicate external events",
        duplicates == 0,
        format!(
            "duplicates found: {duplicates} ({} live events in the simulator)",
            live_events(h).len()
        ),
    );
    let (status, state) = h.admin(Method::GET, "/v1/bookings/b-0", None).await?;
    r.check(
        "/v1/bookings/{id} reports the external event",
        status == 200 && state["calendars"].as_array().is_some_and(|c| !c.is_empty()),
        format!("GET /v1/bookings/b-0 answered {status}: {state}"),
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let busy = super::inbound::busy_count(h, PP).await;
    r.check(
        "our own events never come back as busy time",
        busy == 0,
        format!("{busy} busy intervals for the provider whose calendar holds only our bookings"),
    );
    Ok(())
}
