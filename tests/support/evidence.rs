//! Waiting for evidence instead of time.
//!
//! A test that sleeps and then asserts proves nothing about what happened in
//! between: on a loaded machine the sleep is too short (flaky), on an idle one
//! the assertion may run before the system had any chance to misbehave
//! (silent pass). These helpers wait, with a deadline, for something the
//! system leaves behind — an event in the log after a given position, a
//! request in the simulator's log, a sync round that started after a given
//! moment — and fail with a message naming what never came.
//!
//! "Nothing happened" assertions go the other way round: first wait for a
//! positive marker that proves the system had its chance (a later sync
//! round, the actor being quiet after processing the input), then assert
//! the absence.
//!
//! The only sleep here is [`poll_pause`], the interval between two looks.

#![allow(dead_code)] // each test binary uses a different part

use calsim::RequestRecord;
use calsync::core::ids::ConnectionId;
use calsync::testkit::TestDb;
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long any evidence may take to show up before the test fails. Generous
/// on purpose: a passing test never waits for it, it only bounds a failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The pause between two looks at the evidence. This is a polling interval,
/// not a wait for time to pass: every caller checks a condition after it.
pub async fn poll_pause() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Polls `probe` until it yields a value, failing the test after `within`
/// with `what` (which names the evidence that never came).
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no evidence within {within:?}: {what}"
        );
        poll_pause().await;
    }
}

/// One event from the log.
#[derive(Debug, Clone)]
pub struct Logged {
    pub position: i64,
    pub stream: String,
    pub event_type: String,
    pub payload: Value,
}

/// The highest position in the log (0 when empty): "after this" for later
/// waits.
pub async fn log_head(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT coalesce(max(position), 0) FROM events", &[])
        .await
        .unwrap()
        .get(0)
}

/// Events of `event_type` after `after`, on the stream of `connection` (or
/// any stream), in position order.
pub async fn events_after(
    db: &TestDb,
    connection: Option<ConnectionId>,
    event_type: &str,
    after: i64,
) -> Vec<Logged> {
    let stream = connection.map(|c| c.stream().as_str().to_string());
    db.client()
        .await
        .query(
            "SELECT position, stream, event_type, payload::text FROM events \
             WHERE position > $1 AND event_type = $2 AND ($3::text IS NULL OR stream = $3) \
             ORDER BY position",
            &[&after, &event_type, &stream],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Logged {
            position: r.get(0),
            stream: r.get(1),
            event_type: r.get(2),
            payload: serde_json::from_str(r.get::<_, &str>(3)).unwrap(),
        })
        .collect()
}

/// Waits for the first `event_type` after `after` (on `connection`'s stream
/// or any) whose payload satisfies `matches`; returns it.
pub async fn wait_for_event_where(
    db: &TestDb,
    connection: Option<ConnectionId>,
    event_type: &str,
    after: i64,
    matches: impl Fn(&Value) -> bool,
) -> Logged {
    let what = format!(
        "a {event_type} after position {after}{}",
        connection
            .map(|c| format!(" on connection {c}"))
            .unwrap_or_default()
    );
    wait_for(&what, DEADLINE, || async {
        events_after(db, connection, event_type, after)
            .await
            .into_iter()
            .find(|e| matches(&e.payload))
    })
    .await
}

/// Waits for the first `event_type` after `after`; returns it.
pub async fn wait_for_event(
    db: &TestDb,
    connection: Option<ConnectionId>,
    event_type: &str,
    after: i64,
) -> Logged {
    wait_for_event_where(db, connection, event_type, after, |_| true).await
}

/// The simulator's request log after sequence number `after_seq`.
pub fn requests_after(sim: &calsim::SimHandle, after_seq: u64) -> Vec<RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|r| r.seq > after_seq)
        .collect()
}

/// The newest request sequence number (0 when none): "after this".
pub fn request_head(sim: &calsim::SimHandle) -> u64 {
    sim.requests().iter().map(|r| r.seq).max().unwrap_or(0)
}

/// Waits for a request after `after_seq` that satisfies `matches`.
pub async fn wait_for_request(
    sim: &calsim::SimHandle,
    what: &str,
    after_seq: u64,
    matches: impl Fn(&RequestRecord) -> bool,
) -> RequestRecord {
    wait_for(
        &format!("a simulator request: {what}"),
        DEADLINE,
        || async { requests_after(sim, after_seq).into_iter().find(&matches) },
    )
    .await
}

/// The endpoints a sync reads a calendar through.
pub fn is_sync_read(r: &RequestRecord) -> bool {
    matches!(
        r.endpoint.as_str(),
        "events.list" | "freeBusy" | "delta" | "getSchedule"
    )
}
