//! The consistency check: after a quiet period and a final sync of every
//! connection, the busy intervals in the projection must be exactly what
//! the busy rules say of the simulators' calendars.
//!
//! "What the busy rules say" is computed independently of everything the
//! run did: a fresh, full read of every calendar through the provider API
//! (no cursor, no webhook, no actor, no log), each event put through the
//! same pure busy rules (`core::busy`). The projection, by contrast, is the
//! fold of a log written by incremental syncs, deduped webhooks, an outage
//! with backoff and killed actors. Equal sets mean none of that lost,
//! doubled or misplaced an interval.

use super::accounts::Demoed;
use super::world::World;
use super::DemoError;
use crate::core::busy::{google_busy, graph_busy, BusyDecision, BusyPolicy, FreeReason};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{CalendarId, CalendarProvider};
use crate::core::tz::resolve_zone;
use crate::core::wire::ProviderChange;
use crate::providers::{CalendarApi, PageNext, ProviderClient, SyncPosition, SyncWindow};
use chrono::{DateTime, DurationRound, Utc};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Asks every connection to sync and waits until each has completed a
/// round that *started* after the request. One request is not enough: a
/// round already running when it arrives completes after it but may have
/// started before the last edit. So: request, wait for a completion, then
/// request again and wait again — the second completion belongs to a round
/// that started after the first one ended.
pub async fn final_sync(
    world: &World,
    demoed: &[Demoed],
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let ids: Vec<Uuid> = demoed.iter().map(|d| d.id.as_uuid()).collect();
    for _ in 0..2 {
        // Stored timestamps have microsecond precision.
        let asked = Utc::now()
            .duration_trunc(chrono::Duration::microseconds(1))
            .unwrap_or_else(|_| Utc::now());
        for d in demoed {
            world
                .connections
                .command(d.id, ConnectionCommand::RequestSync, Uuid::new_v4())
                .await
                .map_err(|e| DemoError::Command(d.account.clone(), e))?;
        }
        loop {
            let client = world.db.pool.get().await?;
            let done: i64 = client
                .query_one(
                    "SELECT count(*) FROM connection_calendars \
                     WHERE connection_id = ANY($1) AND last_success_at >= $2",
                    &[&ids, &asked],
                )
                .await?
                .get(0);
            drop(client);
            if done >= ids.len() as i64 {
                break;
            }
            if started.elapsed() > within {
                return Err(DemoError::FinalSyncTimeout {
                    done,
                    total: ids.len() as i64,
                    waited: within,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(started.elapsed())
}

/// The outcome of the check.
#[derive(Debug, Clone, Default)]
pub struct Consistency {
    /// Events the simulators hold (series counted once, deleted ones not).
    pub stored_events: usize,
    /// Items a full read of the sync window returns (series expanded).
    pub listed_items: usize,
    /// How many of those the busy rules say block time.
    pub expected_busy: usize,
    pub actual_busy: usize,
    /// Listed items that block nothing, by reason.
    pub free: BTreeMap<String, usize>,
    /// Busy per the rules, absent from the projection.
    pub missing: Vec<String>,
    /// In the projection, not busy per the rules.
    pub extra: Vec<String>,
    /// In both, with different times.
    pub moved: Vec<String>,
    /// calsync's own events found in the calendars, per booking id.
    pub ours: BTreeMap<String, usize>,
    /// Bookings: exactly one external event per live booking, none per
    /// cancelled one.
    pub outbound: super::bookings::OutboundCheck,
    /// Bookings created, rescheduled and cancelled during traffic.
    pub bookings: (usize, usize, usize),
}

impl Consistency {
    pub fn pass(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.moved.is_empty()
            && self.expected_busy == self.actual_busy
            && self.outbound.pass()
    }
}

type Times = (DateTime<Utc>, DateTime<Utc>);

pub async fn check(world: &World, demoed: &[Demoed]) -> anyhow::Result<Consistency> {
    let mut out = Consistency::default();
    let http = crate::providers::transport::http_client()?;
    let primary = CalendarId::parse("primary")?;
    for d in demoed {
        out.stored_events += stored_events(world, d);
        let client =
            ProviderClient::for_provider(d.provider, http.clone(), world.endpoints.clone());
        let expected = read_calendar(world, d, &client, &primary, &mut out).await?;
        let actual = projected(world, d).await?;
        out.expected_busy += expected.len();
        out.actual_busy += actual.len();
        for (id, times) in &expected {
            match actual.get(id) {
                None => out.missing.push(format!("{}: {id}", d.account)),
                Some(t) if t != times => out.moved.push(format!("{}: {id}", d.account)),
                Some(_) => {}
            }
        }
        for id in actual.keys().filter(|id| !expected.contains_key(*id)) {
            out.extra.push(format!("{}: {id}", d.account));
        }
    }
    Ok(out)
}

/// A full read of one calendar, busy rules applied: event id → times.
async fn read_calendar(
    world: &World,
    d: &Demoed,
    client: &ProviderClient,
    calendar: &CalendarId,
    out: &mut Consistency,
) -> anyhow::Result<HashMap<String, Times>> {
    let store = world.store();
    let mut session = world
        .vault
        .load(&store, d.id)
        .await?
        .ok_or_else(|| DemoError::NoCredentials(d.account.clone()))?;
    let window = SyncWindow::around(Utc::now());
    let policy = BusyPolicy::default();
    let mut position = SyncPosition::Start;
    let mut busy = HashMap::new();
    loop {
        let page = client
            .list_changes(&mut session, calendar, &position, window)
            .await;
        if session.refresh_token_rotated {
            // Microsoft rotated the refresh token: the connection needs the
            // new one, exactly as after one of its own syncs.
            world.vault.save(&store, d.id, &session).await?;
            session.refresh_token_rotated = false;
        }
        let page = page.map_err(|e| DemoError::Provider(d.account.clone(), e))?;
        let zone = page
            .calendar_zone
            .as_deref()
            .and_then(|z| resolve_zone(z).ok())
            .unwrap_or(chrono_tz::UTC);
        for change in &page.changes {
            let (id, decision) = match change {
                ProviderChange::Google(e) => (e.id.clone(), google_busy(e, zone, &policy)),
                ProviderChange::Graph(e) => (e.id.clone(), graph_busy(e, zone, &policy)),
            };
            match decision {
                BusyDecision::Free(FreeReason::Cancelled | FreeReason::Removed) => {}
                BusyDecision::Blocks(iv) => {
                    out.listed_items += 1;
                    busy.insert(id, (iv.start(), iv.end()));
                }
                BusyDecision::Free(reason) => {
                    out.listed_items += 1;
                    *out.free.entry(free_label(reason).into()).or_default() += 1;
                }
                BusyDecision::Ours { booking_id } => {
                    *out.ours.entry(booking_id).or_default() += 1;
                    out.listed_items += 1;
                    *out.free.entry("calsync's own booking".into()).or_default() += 1;
                }
                BusyDecision::Invalid(_) => {
                    out.listed_items += 1;
                    *out.free.entry("unreadable".into()).or_default() += 1;
                }
            }
        }
        match page.next {
            PageNext::More(token) => position = SyncPosition::Page(token),
            PageNext::Complete(_) => return Ok(busy),
        }
    }
}

fn free_label(reason: FreeReason) -> &'static str {
    match reason {
        FreeReason::Cancelled | FreeReason::Removed => "cancelled",
        FreeReason::Transparent | FreeReason::ShowAsFree => "free/transparent",
        FreeReason::WorkingElsewhere | FreeReason::WorkingLocation => "working location",
        FreeReason::Birthday => "birthday",
        FreeReason::Declined => "declined",
        FreeReason::Tentative => "tentative",
        FreeReason::SeriesMaster => "series master",
        FreeReason::ZeroDuration => "zero length",
    }
}

/// The projection's intervals of one connection: event id → times.
async fn projected(world: &World, d: &Demoed) -> anyhow::Result<HashMap<String, Times>> {
    let client = world.db.pool.get().await?;
    let rows = client
        .query(
            "SELECT external_event_id, starts_at, ends_at FROM busy_intervals \
             WHERE connection_id = $1",
            &[&d.id.as_uuid()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Events the simulator holds for the account's primary calendar: series
/// once, deleted events (Google keeps tombstones) not at all.
fn stored_events(world: &World, d: &Demoed) -> usize {
    match d.provider {
        CalendarProvider::Google => world
            .sim
            .google()
            .stored_events(&d.account, "primary")
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["status"].as_str() != Some("cancelled"))
                    .count()
            })
            .unwrap_or(0),
        CalendarProvider::Microsoft => world.sim.graph().event_count(&d.account),
    }
}
