//! `[outbound] on_cancel = "mark_cancelled"`: a cancelled booking's one
//! external event stays in the calendar, stops blocking its owner's time and
//! says "Cancelled: "; a re-activation PATCHes the same event back. Against
//! both simulators over HTTP, with the log alone rebuilding the projections.

mod support;

use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::{BookingId, CalendarId, CalendarProvider, ConnectionId};
use calsync::core::interval::Interval;
use calsync::core::outbound::{Booking, BookingStatus, CancelMode};
use calsync::providers::{http_client, CalendarApi, ProviderClient, ProviderEndpoints, SyncWindow};
use chrono::{DateTime, Duration as TimeDelta, Utc};
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, Options, World};
use uuid::Uuid;

fn base() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(3)
}

fn slot(hour: i64) -> Interval {
    let start = base() + TimeDelta::hours(hour);
    Interval::new(start, start + TimeDelta::minutes(45)).unwrap()
}

fn booking(version: u64, hour: i64, status: BookingStatus) -> Booking {
    Booking {
        booking_id: BookingId::parse("bk-m").unwrap(),
        version,
        status,
        start: slot(hour).start(),
        end: slot(hour).end(),
        time_zone: "Europe/Berlin".into(),
        title: format!("Booking bk-m v{version}"),
        attendees: vec!["client@example.com".into()],
    }
}

/// The provider-specific parts of the scenario.
#[derive(Clone, Copy)]
enum Side {
    Google,
    Graph,
}

/// One external event as the provider shows it.
#[derive(Debug)]
struct Shown {
    title: String,
    /// Google `transparency: transparent` / Graph `showAs: free`.
    free: bool,
}

impl Side {
    fn account(self) -> &'static str {
        match self {
            Side::Google => "mark@example.com",
            Side::Graph => "mark@contoso.com",
        }
    }

    fn provider(self) -> CalendarProvider {
        match self {
            Side::Google => CalendarProvider::Google,
            Side::Graph => CalendarProvider::Microsoft,
        }
    }

    async fn connect(self, w: &World) -> ConnectionId {
        match self {
            Side::Google => w.google_connection(self.account()).await,
            Side::Graph => w.graph_connection(self.account()).await,
        }
    }

    /// Someone else's busy event in the same calendar.
    fn add_foreign_busy(self, w: &World, at: Interval) {
        let wall = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
        match self {
            Side::Google => {
                w.sim
                    .google()
                    .upsert_event(
                        self.account(),
                        "primary",
                        json!({"id": "foreign01", "summary": "dentist",
                               "start": {"dateTime": at.start().to_rfc3339()},
                               "end": {"dateTime": at.end().to_rfc3339()}}),
                    )
                    .unwrap();
            }
            Side::Graph => {
                w.sim
                    .graph()
                    .create_event(
                        self.account(),
                        json!({"subject": "dentist", "showAs": "busy",
                               "start": {"dateTime": wall(at.start()), "timeZone": "UTC"},
                               "end": {"dateTime": wall(at.end()), "timeZone": "UTC"}}),
                    )
                    .unwrap();
            }
        }
    }

    /// Every event the calendar holds or held (Google keeps tombstones),
    /// so a second event ever created would count.
    fn event_count(self, w: &World) -> usize {
        match self {
            Side::Google => w
                .sim
                .google()
                .stored_events(self.account(), "primary")
                .unwrap()
                .len(),
            Side::Graph => w.sim.graph().event_count(self.account()),
        }
    }

    fn shown(self, w: &World, event_id: &str) -> Shown {
        match self {
            Side::Google => {
                let e = w
                    .sim
                    .google()
                    .get_event(self.account(), "primary", event_id)
                    .unwrap();
                assert_ne!(e["status"], "cancelled", "the event was deleted: {e}");
                Shown {
                    title: e["summary"].as_str().unwrap_or_default().into(),
                    free: e["transparency"] == "transparent",
                }
            }
            Side::Graph => {
                let e = w.sim.graph().get_event(self.account(), event_id).unwrap();
                Shown {
                    title: e["subject"].as_str().unwrap_or_default().into(),
                    free: e["showAs"] == "free",
                }
            }
        }
    }

    fn create_endpoint(self) -> &'static str {
        match self {
            Side::Google => "events.insert",
            Side::Graph => "events.create",
        }
    }

    /// The calendar as the provider's own free/busy query names it.
    fn free_busy_calendar(self) -> &'static str {
        match self {
            Side::Google => "primary",
            Side::Graph => self.account(),
        }
    }

    /// Busy time as the provider itself reports it to anyone asking.
    async fn provider_busy(self, w: &World, id: ConnectionId) -> Vec<Interval> {
        let endpoints = ProviderEndpoints {
            google_api: w.sim.google_base_url(),
            google_token: w.sim.google_token_url(),
            graph_api: w.sim.graph_base_url(),
            graph_token: w.sim.graph_token_url("common"),
        };
        let client =
            ProviderClient::for_provider(self.provider(), http_client().unwrap(), endpoints);
        // A copy of the connection's grant (old refresh tokens keep working
        // after a rotation, so the stored one is unaffected).
        let mut session = w.vault.load(&w.db.store(), id).await.unwrap().unwrap();
        let calendar = CalendarId::parse(self.free_busy_calendar()).unwrap();
        client
            .free_busy(
                &mut session,
                &[calendar],
                SyncWindow::from(calsync::core::window::WindowPolicy::default().base(Utc::now())),
            )
            .await
            .unwrap()
            .into_iter()
            .flat_map(|(_, busy)| busy)
            .collect()
    }
}

/// Whether the provider's busy time covers any of `slot(hour)` (Graph's
/// schedule may round to its view interval).
fn busy_at(busy: &[Interval], hour: i64) -> bool {
    busy.iter().any(|b| b.overlaps(&slot(hour)))
}

async fn apply(w: &World, id: ConnectionId, b: Booking) {
    w.connections
        .command(id, ConnectionCommand::ApplyBooking(b), Uuid::new_v4())
        .await
        .unwrap();
}

/// `(state, external_event_id, written_version)` of the booking's row.
async fn row(w: &World, id: ConnectionId) -> Option<(String, Option<String>, Option<i64>)> {
    let client = w.db.client().await;
    client
        .query_opt(
            "SELECT state, external_event_id, written_version FROM booking_events \
             WHERE connection_id = $1 AND booking_id = 'bk-m'",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

async fn row_reaches(w: &World, id: ConnectionId, state: &str, version: i64) -> bool {
    eventually(Duration::from_secs(15), || async {
        row(w, id)
            .await
            .is_some_and(|(s, _, v)| s == state && v == Some(version))
    })
    .await
}

/// Busy rows calsync projects for the connection, by external event id.
async fn busy_ids(w: &World, id: ConnectionId) -> Vec<String> {
    w.busy(id).await.into_iter().map(|(e, _, _)| e).collect()
}

/// Intents in the log whose op is `op`.
async fn intents(w: &World, id: ConnectionId, op: &str) -> i64 {
    let client = w.db.client().await;
    client
        .query_one(
            "SELECT count(*) FROM events WHERE stream = $1 \
             AND event_type = 'outbound_intent_recorded' AND payload->'op'->>'op' = $2",
            &[&id.stream().as_str(), &op],
        )
        .await
        .unwrap()
        .get(0)
}

/// `calsync replay --verify` as an operator runs it: no configuration, so
/// the projections must follow from the log alone.
fn replay_verifies(w: &World) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["replay", "--verify", "--json"])
        .env("DATABASE_URL", w.db.url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["differences"], 0, "{summary}");
}

async fn cancel_marks_the_one_event_and_reactivation_restores_it(side: Side) {
    let w = World::start(Options {
        on_cancel: CancelMode::MarkCancelled,
        ..Default::default()
    })
    .await;
    let id = side.connect(&w).await;
    side.add_foreign_busy(&w, slot(16));

    apply(&w, id, booking(1, 10, BookingStatus::Confirmed)).await;
    assert!(
        row_reaches(&w, id, "written", 1).await,
        "{:?}",
        row(&w, id).await
    );
    let event_id = row(&w, id).await.unwrap().1.unwrap();
    let shown = side.shown(&w, &event_id);
    assert_eq!(shown.title, "Booking bk-m v1");
    assert!(!shown.free);
    assert!(busy_at(&side.provider_busy(&w, id).await, 10));

    // Cancelled: the same event, free, titled so; nothing deleted.
    apply(&w, id, booking(2, 10, BookingStatus::Cancelled)).await;
    assert!(
        row_reaches(&w, id, "cancelled", 2).await,
        "{:?}",
        row(&w, id).await
    );
    assert_eq!(
        row(&w, id).await.unwrap().1.as_deref(),
        Some(event_id.as_str())
    );
    assert_eq!(
        side.event_count(&w),
        2,
        "the booking's event and the foreign one"
    );
    let shown = side.shown(&w, &event_id);
    assert_eq!(shown.title, "Cancelled: Booking bk-m v2");
    assert!(
        shown.free,
        "a cancelled booking still blocks time: {shown:?}"
    );
    assert_eq!(w.provider_calls(side.create_endpoint()), 1);
    assert_eq!(w.provider_calls("events.delete"), 0);
    assert_eq!(intents(&w, id, "mark_cancelled").await, 1);
    assert_eq!(intents(&w, id, "delete").await, 0);
    // The owner's time is free again at the provider, the foreign event
    // still blocks.
    let busy = side.provider_busy(&w, id).await;
    assert!(!busy_at(&busy, 10), "{busy:?}");
    assert!(busy_at(&busy, 16), "{busy:?}");

    // Our marked event comes back through inbound sync: recognised, and
    // free anyway; only the foreign event is busy time.
    // At rest: a sync that started after the mark was written has run, so
    // it read the marked event.
    w.at_rest(id, side.account()).await;
    let busy = busy_ids(&w, id).await;
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_ne!(busy[0], event_id, "our cancelled booking became busy time");
    replay_verifies(&w);

    // Re-activated (and moved): the same event is PATCHed back to normal.
    apply(&w, id, booking(3, 11, BookingStatus::Confirmed)).await;
    assert!(
        row_reaches(&w, id, "written", 3).await,
        "{:?}",
        row(&w, id).await
    );
    assert_eq!(
        row(&w, id).await.unwrap().1.as_deref(),
        Some(event_id.as_str())
    );
    let shown = side.shown(&w, &event_id);
    assert_eq!(shown.title, "Booking bk-m v3");
    assert!(!shown.free);
    assert_eq!(side.event_count(&w), 2);
    assert_eq!(w.provider_calls(side.create_endpoint()), 1, "re-created");
    assert!(busy_at(&side.provider_busy(&w, id).await, 11));
    let before = w.log_head().await;
    w.at_rest(id, side.account()).await;
    // The sync after the re-activation read our event and recognised it.
    assert!(
        w.events_after(id, "external_event_seen", before)
            .await
            .iter()
            .any(|e| e.payload["ours"] == "bk-m" && e.payload["blocks"].is_null()),
        "the re-activated event was not read back as ours"
    );
    let busy = busy_ids(&w, id).await;
    assert_eq!(
        busy.len(),
        1,
        "our own event counted as busy time: {busy:?}"
    );
    assert_ne!(busy[0], event_id);
    replay_verifies(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_cancel_marks_the_one_event_and_reactivation_restores_it() {
    cancel_marks_the_one_event_and_reactivation_restores_it(Side::Google).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_cancel_marks_the_one_event_and_reactivation_restores_it() {
    cancel_marks_the_one_event_and_reactivation_restores_it(Side::Graph).await;
}
