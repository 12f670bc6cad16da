//! The consistency check: after a quiet period and a final sync of every
//! connection, the busy intervals in the projection must be exactly what
//! the busy rules say of the simulators' calendars.
//!
//! "What the busy rules say" is computed independently of everything the
//! run did: a fresh, full read of every calendar through the provider API
//! (no cursor, no webhook, no actor, no log). The projection, by contrast,
//! is the fold of a log written by incremental syncs, deduped webhooks, an
//! outage with backoff and killed actors. Equal sets mean none of that
//! lost, doubled or misplaced an interval.
//!
//! The expectation does not lean on the rules it checks where a rule can be
//! wrong about time: every event's times, and all-day events entirely
//! (blocks or not, and which UTC span), come from [`own`], a plain reading
//! written here, with the simulator's zone names and the simulator's record
//! of each mailbox's zone. So a core that placed all-day days in the wrong
//! zone (UTC, say, for a Sydney mailbox) makes the check FAIL rather than
//! agree with itself. Only whether a *timed* event blocks (tentative,
//! declined, calsync's own …) is taken from `core::busy`.

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
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// All-day events the check's own rule placed, and the zones it placed
    /// them in.
    pub all_day: usize,
    pub all_day_zones: BTreeSet<String>,
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
    let window: SyncWindow = crate::core::window::WindowPolicy::default()
        .base(Utc::now())
        .into();
    let policy = BusyPolicy::default();
    let mut position = SyncPosition::Start;
    let mut busy = HashMap::new();
    // The simulator's own record, not what the client read from it.
    let mailbox_zone = match d.provider {
        CalendarProvider::Microsoft => world.sim.graph().mailbox_zone(&d.account),
        CalendarProvider::Google => None,
    };
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
        // As the engine resolves it, for the core's verdicts on timed events.
        let zone = page
            .calendar_zone
            .as_deref()
            .and_then(|z| resolve_zone(z).ok())
            .unwrap_or(chrono_tz::UTC);
        let own_zone = match d.provider {
            CalendarProvider::Google => page.calendar_zone.as_deref(),
            CalendarProvider::Microsoft => mailbox_zone.as_deref(),
        }
        .and_then(calsim::timefmt::resolve_zone)
        .unwrap_or(chrono_tz::UTC);
        for change in &page.changes {
            let (id, decision) = match change {
                ProviderChange::Google(e) => match own::google_all_day(e, own_zone) {
                    Some(reading) => {
                        out.all_day_zones.insert(own_zone.name().to_owned());
                        (e.id.clone(), reading)
                    }
                    None => (
                        e.id.clone(),
                        own::timed(google_busy(e, zone, &policy), || {
                            own::google_times(e, own_zone)
                        }),
                    ),
                },
                ProviderChange::Graph(e) => match own::graph_all_day(e, own_zone) {
                    Some(reading) => {
                        out.all_day_zones
                            .insert(own::graph_all_day_zone(e, own_zone).name().to_owned());
                        (e.id.clone(), reading)
                    }
                    None => (
                        e.id.clone(),
                        own::timed(graph_busy(e, zone, &policy), || own::graph_times(e)),
                    ),
                },
            };
            let all_day = match change {
                ProviderChange::Google(e) => own::is_google_all_day(e),
                ProviderChange::Graph(e) => e.is_all_day,
            };
            match decision {
                BusyDecision::Free(FreeReason::Cancelled | FreeReason::Removed) => {}
                BusyDecision::Blocks(iv) => {
                    out.listed_items += 1;
                    out.all_day += usize::from(all_day);
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

/// The check's own reading of provider times, apart from `core::busy` and
/// `core::tz`: plain chrono-tz, the simulator's zone names
/// (`calsim::timefmt`), the documented facts of `shared/PROVIDERS.md` §4.
/// An all-day event is a run of dates in a zone — Google's calendar zone;
/// Graph's `originalStartTimeZone` if the simulator knows the name, else
/// the mailbox's — from the first instant of its start date to the first
/// instant of its (exclusive) end date.
mod own {
    use crate::core::busy::{BusyDecision, FreeReason, InvalidEvent};
    use crate::core::interval::Interval;
    use crate::core::wire::{
        GoogleEvent, GoogleEventDateTime, GoogleEventStatus, GoogleEventType, GoogleResponseStatus,
        GoogleTransparency, GraphDateTimeTimeZone, GraphEvent, GraphEventType, GraphResponse,
        GraphShowAs,
    };
    use calsim::timefmt::resolve_zone;
    use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
    use chrono_tz::Tz;

    type Times = (DateTime<Utc>, DateTime<Utc>);

    /// The first instant of `date` in `zone` (where a DST change skips
    /// midnight, the first wall time that exists).
    fn day_start(zone: Tz, date: NaiveDate) -> Option<DateTime<Utc>> {
        let mut wall = date.and_hms_opt(0, 0, 0)?;
        for _ in 0..24 * 60 {
            if let Some(t) = zone.from_local_datetime(&wall).earliest() {
                return Some(t.with_timezone(&Utc));
            }
            wall += Duration::minutes(1);
        }
        None
    }

    fn date_of(raw: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(raw.get(..10)?, "%Y-%m-%d").ok()
    }

    fn days(zone: Tz, start: Option<&str>, end: Option<&str>) -> BusyDecision {
        let span = (
            start.and_then(date_of).and_then(|d| day_start(zone, d)),
            end.and_then(date_of).and_then(|d| day_start(zone, d)),
        );
        match span {
            (Some(s), Some(e)) => match Interval::new(s, e) {
                Ok(iv) if s < e => BusyDecision::Blocks(iv),
                _ => BusyDecision::Free(FreeReason::ZeroDuration),
            },
            _ => BusyDecision::Invalid(InvalidEvent::MissingTime(
                crate::core::busy::TimeField::Start,
            )),
        }
    }

    pub fn is_google_all_day(e: &GoogleEvent) -> bool {
        let date_only = |v: Option<&GoogleEventDateTime>| {
            v.is_some_and(|v| v.date.is_some() && v.date_time.is_none())
        };
        date_only(e.start.as_ref()) && date_only(e.end.as_ref())
    }

    /// `None` when the event is not all-day.
    pub fn google_all_day(e: &GoogleEvent, calendar_zone: Tz) -> Option<BusyDecision> {
        if !is_google_all_day(e) {
            return None;
        }
        let declined = e
            .attendees
            .iter()
            .any(|a| a.is_self && a.response_status == Some(GoogleResponseStatus::Declined));
        Some(if e.status() == GoogleEventStatus::Cancelled {
            BusyDecision::Free(FreeReason::Cancelled)
        } else if e.transparency == Some(GoogleTransparency::Transparent) {
            BusyDecision::Free(FreeReason::Transparent)
        } else if e.event_type == Some(GoogleEventType::WorkingLocation) {
            BusyDecision::Free(FreeReason::WorkingLocation)
        } else if e.event_type == Some(GoogleEventType::Birthday) {
            BusyDecision::Free(FreeReason::Birthday)
        } else if declined {
            BusyDecision::Free(FreeReason::Declined)
        } else {
            days(
                calendar_zone,
                e.start.as_ref().and_then(|v| v.date.as_deref()),
                e.end.as_ref().and_then(|v| v.date.as_deref()),
            )
        })
    }

    pub fn graph_all_day_zone(e: &GraphEvent, mailbox_zone: Tz) -> Tz {
        e.original_start_time_zone
            .as_deref()
            .and_then(resolve_zone)
            .unwrap_or(mailbox_zone)
    }

    /// `None` when the event is not all-day.
    pub fn graph_all_day(e: &GraphEvent, mailbox_zone: Tz) -> Option<BusyDecision> {
        if !e.is_all_day {
            return None;
        }
        let response = e.response_status.as_ref().and_then(|r| r.response.as_ref());
        Some(if e.removed.is_some() {
            BusyDecision::Free(FreeReason::Removed)
        } else if e.is_cancelled {
            BusyDecision::Free(FreeReason::Cancelled)
        } else if e.event_type == Some(GraphEventType::SeriesMaster) {
            BusyDecision::Free(FreeReason::SeriesMaster)
        } else if e.show_as == Some(GraphShowAs::Free) {
            BusyDecision::Free(FreeReason::ShowAsFree)
        } else if e.show_as == Some(GraphShowAs::WorkingElsewhere) {
            BusyDecision::Free(FreeReason::WorkingElsewhere)
        } else if response == Some(&GraphResponse::Declined) {
            BusyDecision::Free(FreeReason::Declined)
        } else {
            // Floating midnights: the date is all that counts.
            days(
                graph_all_day_zone(e, mailbox_zone),
                e.start.as_ref().map(|v| v.date_time.as_str()),
                e.end.as_ref().map(|v| v.date_time.as_str()),
            )
        })
    }

    /// The core's verdict on a timed event, with the times read here.
    pub fn timed(core: BusyDecision, times: impl FnOnce() -> Option<Times>) -> BusyDecision {
        match (core, times()) {
            (BusyDecision::Blocks(core), Some((s, e))) => {
                // Unreadable here but blocking there stays the core's, and
                // is then compared with the projection like any other.
                BusyDecision::Blocks(Interval::new(s, e).unwrap_or(core))
            }
            (other, _) => other,
        }
    }

    fn wall(raw: &str) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f").ok()
    }

    fn in_zone(zone: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        zone.from_local_datetime(&wall)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }

    fn google_instant(v: &GoogleEventDateTime, calendar_zone: Tz) -> Option<DateTime<Utc>> {
        let raw = v.date_time.as_deref()?;
        if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
            return Some(t.with_timezone(&Utc));
        }
        let zone = match v.time_zone.as_deref() {
            Some(name) => resolve_zone(name)?,
            None => calendar_zone,
        };
        in_zone(zone, wall(raw)?)
    }

    pub fn google_times(e: &GoogleEvent, calendar_zone: Tz) -> Option<Times> {
        Some((
            google_instant(e.start.as_ref()?, calendar_zone)?,
            google_instant(e.end.as_ref()?, calendar_zone)?,
        ))
    }

    fn graph_instant(v: &GraphDateTimeTimeZone) -> Option<DateTime<Utc>> {
        let zone = match v.time_zone.as_deref() {
            Some(name) => resolve_zone(name)?,
            None => Tz::UTC,
        };
        in_zone(zone, wall(&v.date_time)?)
    }

    pub fn graph_times(e: &GraphEvent) -> Option<Times> {
        Some((
            graph_instant(e.start.as_ref()?)?,
            graph_instant(e.end.as_ref()?)?,
        ))
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
