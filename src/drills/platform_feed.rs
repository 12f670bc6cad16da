//! `platform-feed`: the platform is told. External changes and booking
//! changes flow while the webhook receiver is down and `calsync serve` is
//! killed and restarted; once the receiver is back every platform event of
//! the feed reaches it, in the feed's order, signed, within the delay
//! `docs/PLATFORM_EVENTS.md` documents. A booking's event deleted in the
//! calendar yields `booking.external_changed` and, under the default
//! `notify`, no re-creation.

use super::harness::{eventually, tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use crate::feed::subscriptions::signature;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EMAIL: &str = "feed@example.com";
const PP: &str = "pp-feed";

#[derive(Default)]
struct Receiver {
    down: AtomicBool,
    /// (signature header, body) of every request answered 2xx.
    accepted: Mutex<Vec<(String, Vec<u8>)>>,
    refused: Mutex<usize>,
}

async fn hook(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if r.down.load(Ordering::SeqCst) {
        *r.refused.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let sig = headers
        .get("calsync-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.accepted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((sig, body.to_vec()));
    StatusCode::NO_CONTENT
}

/// The receiver's events, first occurrences in arrival order, and how many
/// arrived more than once with different content (must be none).
fn received(r: &Receiver) -> (Vec<Value>, usize) {
    let accepted = r.accepted.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut order = Vec::new();
    let mut conflicting = 0;
    for (_, body) in accepted {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        for e in body["events"].as_array().cloned().unwrap_or_default() {
            let id = e["id"].as_str().unwrap_or_default().to_string();
            match seen.get(&id) {
                Some(before) if *before != e => conflicting += 1,
                Some(_) => {}
                None => {
                    seen.insert(id, e.clone());
                    order.push(e);
                }
            }
        }
    }
    (order, conflicting)
}

/// The whole pull feed from the start.
async fn pulled(h: &Harness) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = h
            .admin(
                Method::GET,
                &format!("/v1/changes?after={cursor}&limit=1000"),
                None,
            )
            .await?;
        if status != 200 {
            anyhow::bail!("GET /v1/changes answered {status}: {body}");
        }
        let events = body["events"].as_array().cloned().unwrap_or_default();
        cursor = body["next_cursor"].as_str().unwrap_or_default().to_string();
        if events.is_empty() && body["has_more"] != true {
            return Ok(out);
        }
        out.extend(events);
    }
}

async fn book(h: &Harness, id: &str, version: u64, hour: i64) -> anyhow::Result<()> {
    let (start, end) = tomorrow(hour);
    let (status, body) = h
        .admin(
            Method::POST,
            "/v1/bookings",
            Some(json!({
                "booking_id": id, "version": version, "platform_provider_id": PP,
                "status": "confirmed", "start": start, "end": end,
                "time_zone": "UTC", "title": format!("booking {id}"),
            })),
        )
        .await?;
    if status != 200 {
        anyhow::bail!("POST /v1/bookings {id} answered {status}: {body}");
    }
    Ok(())
}

async fn booking_state(h: &Harness, id: &str) -> String {
    match h
        .admin(Method::GET, &format!("/v1/bookings/{id}"), None)
        .await
    {
        Ok((200, body)) => body["calendars"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let changes: usize = sizes.pick(100, 1000);
    let bookings: usize = sizes.pick(4, 20);
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (status, sub) = h
        .admin(
            Method::POST,
            "/v1/subscriptions",
            Some(json!({"url": url, "after": "start"})),
        )
        .await?;
    if status != 201 {
        anyhow::bail!("POST /v1/subscriptions answered {status}: {sub}");
    }
    let secret = sub["secret"].as_str().unwrap_or_default().to_string();
    let (_, channel) = h.google_ready(EMAIL, PP).await?;
    for b in 0..bookings {
        book(h, &format!("fb-{b}"), 1, 20 + (b % 4) as i64).await?;
    }

    // External changes in three phases, each announced by push
    // notifications and synced before the next: the receiver is up for the
    // first, down from the second on; serve is SIGKILLed and restarted
    // before the third; the receiver comes back at the end.
    let (day, _) = tomorrow(0);
    let mut number = 1_000u64;
    let thirds = [0, changes / 3, 2 * changes / 3, changes];
    for phase in 0..3 {
        match phase {
            1 => receiver.down.store(true, Ordering::SeqCst),
            2 => {
                h.kill_serve().await?;
                h.start_serve().await?;
            }
            _ => {}
        }
        for i in thirds[phase]..thirds[phase + 1] {
            let start = day + chrono::TimeDelta::minutes(10 * i as i64);
            h.sim
                .google()
                .upsert_event(
                    EMAIL,
                    "primary",
                    json!({"id": format!("feed{i:05}"), "summary": "busy",
                           "start": {"dateTime": start.to_rfc3339()},
                           "end": {"dateTime": (start + chrono::TimeDelta::minutes(5)).to_rfc3339()}}),
                )
                .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
            if i % 50 == 49 {
                number += 1;
                h.google_push(&channel, number).await?;
            }
        }
        number += 1;
        h.google_push(&channel, number).await?;
        let want = thirds[phase + 1] as i64;
        let synced = eventually(Duration::from_secs(sizes.pick(60, 240)), || async {
            h.count(&format!(
                "SELECT count(*) FROM busy_intervals WHERE external_event_id LIKE 'feed%' \
                 AND platform_provider_id = '{PP}'"
            ))
            .await
            .unwrap_or(0)
                == want
        })
        .await;
        r.check(
            &format!("external changes of phase {} synced", phase + 1),
            synced.is_some(),
            format!("{want} of {changes} events in the calendar"),
        );
        if phase == 0 {
            // Delivered while the receiver is up.
            let delivered = eventually(Duration::from_secs(30), || async {
                received(&receiver).0.len() as i64 >= want
            })
            .await;
            r.check(
                "delivered while the receiver is up",
                delivered.is_some(),
                format!("{} events received", received(&receiver).0.len()),
            );
        }
    }

    // A booking's event deleted by the host: reported, not re-created.
    let victim = "fb-0";
    let written = eventually(Duration::from_secs(30), || async {
        booking_state(h, victim).await == "written"
    })
    .await;
    let event_id = h
        .sim
        .google()
        .stored_events(EMAIL, "primary")
        .unwrap_or_default()
        .into_iter()
        .find(|e| {
            e["extendedProperties"]["private"]["calsyncBookingId"] == victim
                && e["status"] != "cancelled"
        })
        .and_then(|e| e["id"].as_str().map(String::from));
    let since = h.sim.now();
    if let (Some(_), Some(event_id)) = (written, &event_id) {
        let _ = h.sim.google().delete_event(EMAIL, "primary", event_id);
        number += 1;
        h.google_push(&channel, number).await?;
    }
    let held = eventually(Duration::from_secs(30), || async {
        booking_state(h, victim).await == "external_changed"
    })
    .await;
    r.check(
        "a booking's event deleted in the calendar is recorded (state external_changed)",
        held.is_some(),
        format!("booking {victim}, event {event_id:?}"),
    );

    // The receiver recovers. The documented bound: the retry the backoff
    // then in force has scheduled, plus 10 s.
    let sub_id = sub["id"].as_str().unwrap_or_default().to_string();
    let (_, state) = h
        .admin(Method::GET, &format!("/v1/subscriptions/{sub_id}"), None)
        .await?;
    let retry_in = state["retry_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .num_milliseconds()
                .max(0)
        })
        .unwrap_or(0);
    let bound = Duration::from_millis(retry_in as u64) + Duration::from_secs(10);
    receiver.down.store(false, Ordering::SeqCst);
    let recovered = Instant::now();
    let expected = pulled(h).await?;
    let caught_up = eventually(Duration::from_secs(sizes.pick(120, 300)), || async {
        received(&receiver).0.len() >= expected.len()
    })
    .await;
    let delay = recovered.elapsed();
    let (got, conflicting) = received(&receiver);
    let prefix = got.len() >= expected.len() && got[..expected.len()] == expected[..];
    r.check(
        "every platform event delivered, in the feed's order, after the outage and a restart",
        caught_up.is_some() && prefix && conflicting == 0,
        format!(
            "{} expected, {} received (first occurrences), {conflicting} conflicting duplicates, \
             {} deliveries refused during the outage",
            expected.len(),
            got.len(),
            receiver.refused.lock().unwrap_or_else(|p| p.into_inner())
        ),
    );
    r.measure("delivery_delay_after_recovery_ms", delay.as_millis() as u64);
    r.check(
        "caught up within the documented delay after the receiver recovered",
        caught_up.is_some() && delay < bound,
        format!(
            "{} ms (bound: next scheduled retry + 10 s = {} ms)",
            delay.as_millis(),
            bound.as_millis()
        ),
    );
    let availability: BTreeSet<String> = got
        .iter()
        .filter(|e| e["type"] == "availability.changed" && e["platform_provider_id"] == PP)
        .filter_map(|e| e["data"]["from"].as_str().map(String::from))
        .collect();
    let missing = (0..changes)
        .filter(|i| {
            let start = day + chrono::TimeDelta::minutes(10 * *i as i64);
            !availability.iter().any(|f| {
                chrono::DateTime::parse_from_rfc3339(f)
                    .map(|t| t.with_timezone(&chrono::Utc) == start)
                    .unwrap_or(false)
            })
        })
        .count();
    r.check(
        "one availability.changed per external change",
        missing == 0,
        format!("{missing} of {changes} external changes without their event"),
    );
    let externally_changed = got.iter().any(|e| {
        e["type"] == "booking.external_changed"
            && e["data"]["booking_id"] == victim
            && e["data"]["change"]["kind"] == "deleted"
    });
    r.check(
        "booking.external_changed delivered for the deleted event",
        externally_changed,
        format!("booking {victim}"),
    );
    let recreated = h
        .sim
        .requests()
        .iter()
        .filter(|q| q.at >= since && q.endpoint == "events.insert")
        .filter(|q| {
            q.body
                .as_ref()
                .is_some_and(|b| b["extendedProperties"]["private"]["calsyncBookingId"] == victim)
        })
        .count();
    r.check(
        "no re-creation under notify",
        recreated == 0,
        format!("{recreated} creates of {victim}'s event after its deletion"),
    );
    let accepted = receiver
        .accepted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let bad = accepted
        .iter()
        .filter(|(sig, body)| {
            let t = sig
                .split(',')
                .find_map(|p| p.strip_prefix("t="))
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or(0);
            signature(&secret, t, body) != *sig
        })
        .count();
    r.check(
        "every delivery is signed with the subscription's secret",
        bad == 0 && !accepted.is_empty(),
        format!("{} deliveries, {bad} bad signatures", accepted.len()),
    );
    r.measure("platform_events", expected.len());
    r.measure("deliveries", accepted.len());
    server.abort();
    Ok(())
}
