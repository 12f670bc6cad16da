//! What must hold in every run, checked as it goes and at quiescence:
//! DESIGN.md's guarantees 1–10 as seen from outside (the simulator's
//! request log and calendars) and from the log.
//!
//! - no provider call from a connection while a gate holds it (flags,
//!   production allowlists, pause), after a grace for a task already
//!   running when the gate closed;
//! - no call of a connection inside its connection-wide backoff, and no
//!   listing of a calendar inside that calendar's backoff;
//! - provider calls per connection per virtual hour within the budget
//!   (plus what inputs asked for);
//! - channel upkeep (Google watch/stop, Graph subscription calls) at most
//!   once per ten minutes per calendar, checked every virtual hour so that
//!   a renewal loop fails its seed in the hour it starts, even while the
//!   call budget keeps it from spinning freely;
//! - one booking is at most one external event per calendar, always, and
//!   exactly one (or none when cancelled) once quiet;
//! - calsync's own events never block time;
//! - every notification acknowledged as new is in the log exactly once;
//! - at quiescence the busy projection equals the busy rules applied to a
//!   fresh full read of every calendar through the provider API;
//! - replay of the whole log equals the live read models.

use super::workload::World;
use crate::core::busy::{
    google_busy, graph_busy, parse_booking_tag, BusyDecision, BusyPolicy, BOOKING_TAG_PREFIX,
};
use crate::core::events::ConnectionEvent;
use crate::core::external_change::ExternalChangePolicy;
use crate::core::ids::{CalendarId, CalendarProvider, ConnectionId, StreamName};
use crate::core::plan::CallBudget;
use crate::core::tz::resolve_zone;
use crate::core::wire::ProviderChange;
use crate::providers::{CalendarApi, PageNext, ProviderClient, ProviderEndpoints, SyncPosition};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// A stretch of time in which a gate held `connection` (or every
/// connection) closed.
#[derive(Debug, Clone)]
pub struct GateWindow {
    pub connection: Option<ConnectionId>,
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
    pub why: String,
}

/// A task already running when a gate closes or a backoff starts finishes
/// its calls (slow calls included): this much grace.
const GRACE: Duration = Duration::seconds(60);

/// Checked every step: no booking has two events in one calendar, our own
/// events never block time.
pub fn continuous(w: &mut World) {
    let now = w.node.now();
    let mut ours: BTreeMap<ConnectionId, BTreeSet<String>> = BTreeMap::new();
    for a in &w.accounts {
        let tags = booking_events(w, a.provider, &a.email);
        let mut per_booking: BTreeMap<&str, usize> = BTreeMap::new();
        for (booking, _) in &tags {
            *per_booking.entry(booking).or_default() += 1;
        }
        for (booking, n) in per_booking {
            if n > 1 {
                w.violations.push(format!(
                    "{now}: booking {booking} has {n} events in {}'s calendar",
                    a.email
                ));
            }
        }
        ours.entry(a.id)
            .or_default()
            .extend(tags.into_iter().map(|(_, id)| id));
    }
    // One pass over the busy rows for every account at once.
    let busy_ours: Vec<(ConnectionId, String)> = w
        .node
        .store
        .with_model(|m| {
            m.busy()
                .filter(|r| {
                    ours.get(&r.connection_id)
                        .is_some_and(|ids| ids.contains(&r.external_event_id))
                })
                .map(|r| (r.connection_id, r.external_event_id.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (connection, id) in busy_ours {
        let email = w
            .accounts
            .iter()
            .find(|a| a.id == connection)
            .map_or("?", |a| a.email.as_str());
        w.violations
            .push(format!("{now}: our own event {id} blocks {email}'s time"));
    }
}

/// Channel-upkeep endpoints in the simulators' request log.
const UPKEEP: [&str; 6] = [
    "events.watch",
    "channels.stop",
    "subscriptions.create",
    "subscriptions.renew",
    "subscriptions.reauthorize",
    "subscriptions.delete",
];

/// The documented guarantee (README, "Nothing spins"): at most one upkeep
/// round per calendar per ten minutes. Spelled out here rather than read
/// from `core::channels`, so a regression of the core's constant is caught.
const UPKEEP_SLOTS_PER_HOUR: usize = 60 / 10;
/// Calls one slot may make for one calendar: an open (or renew) and a stop.
const CALLS_PER_SLOT: usize = 2;
/// Slack per calendar and per account for inputs in the hour: webhook
/// toggles, grant changes and restarts each open or close once.
const SLACK_PER_CALENDAR: usize = 4;
const SLACK_PER_ACCOUNT: usize = 4;

/// Checked every virtual hour over the calls since `since`: channel upkeep
/// per connection stays within one open (or renew) plus one stop per
/// calendar per ten minutes, plus room for a few webhook toggles, grant
/// changes and restarts in the hour.
pub fn hourly(w: &mut World, since: DateTime<Utc>) {
    let mut upkeep: BTreeMap<String, usize> = BTreeMap::new();
    // The log is in order of completion and a record carries its arrival:
    // reading back to an hour before `since` finds every call that arrived
    // since, as no call of the simulation takes that long (injected
    // latency is seconds), without walking the whole week each hour.
    let horizon = since - Duration::hours(1);
    w.node.sim.visit_requests_newest_first(|r| {
        if r.at >= since {
            if let (Some(account), true) = (&r.account, UPKEEP.contains(&r.endpoint.as_str())) {
                *upkeep.entry(account.to_lowercase()).or_default() += 1;
            }
        }
        r.at >= horizon
    });
    for a in &w.accounts {
        let n = upkeep.get(&a.email.to_lowercase()).copied().unwrap_or(0);
        let calendars = a.calendars.len() + usize::from(a.missing.is_some());
        let allowed = calendars * (CALLS_PER_SLOT * UPKEEP_SLOTS_PER_HOUR + SLACK_PER_CALENDAR)
            + SLACK_PER_ACCOUNT;
        if n > allowed {
            w.violations.push(format!(
                "{} made {n} channel-upkeep calls in the hour from {since} (at most {allowed} for {calendars} calendars)",
                a.email
            ));
        }
    }
}

/// Live events calsync wrote in `email`'s destination calendar: (booking
/// id, external event id). Read in place (nothing rendered or copied but
/// our own events): this runs for every account after every step.
pub(super) fn booking_events(
    w: &World,
    provider: CalendarProvider,
    email: &str,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match provider {
        CalendarProvider::Google => {
            let _ = w.node.sim.google().visit_live_event_ids_with_prefix(
                email,
                "primary",
                BOOKING_TAG_PREFIX,
                |id| {
                    if let Some((b, _)) = parse_booking_tag(id) {
                        out.push((b, id.to_string()));
                    }
                },
            );
        }
        CalendarProvider::Microsoft => {
            w.node
                .sim
                .graph()
                .visit_live_transaction_ids(email, |id, tag| {
                    if let Some((b, _)) = tag.and_then(parse_booking_tag) {
                        out.push((b, id.to_string()));
                    }
                });
        }
    }
    out
}

/// The checks once the run is quiet. Returns the final log and request
/// trace (read once: they are the largest things a run holds).
pub async fn at_quiescence(
    w: &mut World,
) -> (Vec<crate::store::RecordedEvent>, Vec<calsim::RequestRecord>) {
    bookings_exactly_once(w);
    restored_where_the_host_moved_them(w);
    busy_equals_a_fresh_read(w).await;
    let events = w.node.store.all_events().unwrap_or_default();
    let requests = w.node.sim.requests();
    replay_equals_live(w, &events);
    notifications_logged_once(w, &events);
    calls_respect_gates_backoff_and_budget(w, &events, &requests);
    (events, requests)
}

fn bookings_exactly_once(w: &mut World) {
    for a in w.accounts.clone() {
        let events = booking_events(w, a.provider, &a.email);
        for (id, planned) in w.bookings.clone() {
            if planned.pp != a.pp {
                continue;
            }
            let n = events.iter().filter(|(b, _)| *b == id).count();
            let expected = usize::from(!planned.cancelled);
            // Under `notify` a booking whose event the host deleted (and
            // that has no newer version) keeps none — or one, when the
            // deletion met a write of calsync's in flight, whose 404
            // re-created it. A moved one keeps its one event; `restore`
            // writes every booking back.
            let host_deleted = w
                .host_changed
                .get(&(id.clone(), a.email.clone()))
                .is_some_and(|h| h.deleted && h.version == planned.version);
            let held = host_deleted && w.node.external_change == ExternalChangePolicy::Notify;
            if n != expected && !(held && n < expected) {
                w.violations.push(format!(
                    "at quiescence booking {id} (v{}, {}) has {n} events in {}'s calendar, expected {expected}",
                    planned.version,
                    if planned.cancelled { "cancelled" } else { "confirmed" },
                    a.email
                ));
            }
        }
    }
}

/// Under `restore`, a booking's event the host moved is back at the
/// booking's times once quiet.
fn restored_where_the_host_moved_them(w: &mut World) {
    if w.node.external_change != ExternalChangePolicy::Restore {
        return;
    }
    for ((booking, email), change) in w.host_changed.clone() {
        let Some(planned) = w.bookings.get(&booking).cloned() else {
            continue;
        };
        if change.deleted || planned.cancelled || change.version != planned.version {
            continue;
        }
        let Some(a) = w.accounts.iter().find(|a| a.email == email).cloned() else {
            continue;
        };
        for (_, event_id) in booking_events(w, a.provider, &email)
            .into_iter()
            .filter(|(b, _)| *b == booking)
        {
            let start = match a.provider {
                CalendarProvider::Google => w
                    .node
                    .sim
                    .google()
                    .get_event(&email, "primary", &event_id)
                    .ok()
                    .and_then(|e| {
                        DateTime::parse_from_rfc3339(e["start"]["dateTime"].as_str()?).ok()
                    })
                    .map(|t| t.with_timezone(&Utc)),
                CalendarProvider::Microsoft => w
                    .node
                    .sim
                    .graph()
                    .get_event(&email, &event_id)
                    .ok()
                    .and_then(|e| {
                        chrono::NaiveDateTime::parse_from_str(
                            e["start"]["dateTime"].as_str()?,
                            "%Y-%m-%dT%H:%M:%S%.f",
                        )
                        .ok()
                    })
                    .map(|t| t.and_utc()),
            };
            if start != Some(planned.start) {
                w.violations.push(format!(
                    "at quiescence booking {booking} (v{}) moved by the host in {email}'s calendar starts at {start:?}, not back at {} under restore",
                    planned.version, planned.start
                ));
            }
        }
    }
}

type Busy = BTreeSet<(String, String, DateTime<Utc>, DateTime<Utc>)>;

async fn busy_equals_a_fresh_read(w: &mut World) {
    let now = w.node.now();
    let horizon = now + Duration::days(170);
    let keep = |start: DateTime<Utc>, end: DateTime<Utc>| end > now && start < horizon;
    let endpoints = ProviderEndpoints {
        google_api: w.node.sim.google_base_url(),
        google_token: w.node.sim.google_token_url(),
        graph_api: w.node.sim.graph_base_url(),
        graph_token: w.node.sim.graph_token_url("common"),
    };
    let window = crate::core::window::WindowPolicy::default()
        .base(now)
        .into();
    for a in w.accounts.clone() {
        let client = ProviderClient::for_provider(a.provider, w.node.http(), endpoints.clone())
            .with_clock(w.node.clock.clone());
        let Ok(Some(mut session)) = w.node.vault.load(&w.node.store, a.id).await else {
            w.violations
                .push(format!("no grant for {} at the end", a.email));
            continue;
        };
        let mut expected = Busy::new();
        for calendar in &a.calendars {
            let Ok(calendar_id) = CalendarId::parse(calendar.clone()) else {
                continue;
            };
            let mut position = SyncPosition::Start;
            loop {
                let page = match client
                    .list_changes(&mut session, &calendar_id, &position, window)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        w.violations
                            .push(format!("the final read of {} failed: {e}", a.email));
                        break;
                    }
                };
                let zone = page
                    .calendar_zone
                    .as_deref()
                    .and_then(|z| resolve_zone(z).ok())
                    .unwrap_or(chrono_tz::UTC);
                for change in &page.changes {
                    let (id, decision) = match change {
                        ProviderChange::Google(e) => {
                            (e.id.clone(), google_busy(e, zone, &BusyPolicy::default()))
                        }
                        ProviderChange::Graph(e) => {
                            (e.id.clone(), graph_busy(e, zone, &BusyPolicy::default()))
                        }
                    };
                    if let BusyDecision::Blocks(i) = decision {
                        if keep(i.start(), i.end()) {
                            expected.insert((calendar.clone(), id, i.start(), i.end()));
                        }
                    }
                }
                match page.next {
                    PageNext::More(token) => position = SyncPosition::Page(token),
                    PageNext::Complete(_) => break,
                }
            }
        }
        let actual: Busy = w
            .node
            .store
            .with_model(|m| {
                m.busy()
                    .filter(|r| r.connection_id == a.id)
                    .filter(|r| keep(r.interval.start(), r.interval.end()))
                    .map(|r| {
                        (
                            r.calendar_id.clone(),
                            r.external_event_id.clone(),
                            r.interval.start(),
                            r.interval.end(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if expected != actual {
            let missing: Vec<_> = expected.difference(&actual).take(3).collect();
            let extra: Vec<_> = actual.difference(&expected).take(3).collect();
            w.violations.push(format!(
                "at quiescence {}'s busy projection differs from the provider: missing {missing:?}, extra {extra:?}",
                a.email
            ));
        }
    }
}

fn replay_equals_live(w: &mut World, events: &[crate::store::RecordedEvent]) {
    let mut folder = crate::replay::fold::Folder::new(None);
    if let Err(e) = crate::replay::read::fold_recorded(&mut folder, events) {
        w.violations.push(format!("replay failed: {e}"));
        return;
    }
    let rebuilt = tables(&folder.model);
    let live = w.node.store.with_model(tables).unwrap_or_default();
    for (table, rows) in &rebuilt {
        let other = live.get(table).cloned().unwrap_or_default();
        if *rows != other {
            let missing: Vec<_> = rows.difference(&other).take(2).collect();
            let extra: Vec<_> = other.difference(rows).take(2).collect();
            w.violations.push(format!(
                "replay differs from the live {table}: rebuilt only {missing:?}, live only {extra:?}"
            ));
        }
    }
}

/// Every read-model table as a set of JSON rows.
fn tables(m: &crate::replay::model::Model) -> BTreeMap<&'static str, BTreeSet<String>> {
    let json = |v: serde_json::Result<String>| v.unwrap_or_default();
    let mut t: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    t.insert(
        "connections",
        m.connections
            .values()
            .map(|r| json(serde_json::to_string(r)))
            .collect(),
    );
    t.insert(
        "connection_calendars",
        m.calendars
            .values()
            .flatten()
            .map(|r| json(serde_json::to_string(r)))
            .collect(),
    );
    t.insert(
        "busy_intervals",
        m.busy().map(|r| json(serde_json::to_string(r))).collect(),
    );
    t.insert(
        "booking_events",
        m.bookings
            .values()
            .flat_map(|b| b.values())
            .map(|r| json(serde_json::to_string(r)))
            .collect(),
    );
    t.insert(
        "channels",
        m.channels
            .values()
            .map(|(r, closed)| json(serde_json::to_string(&(r, closed))))
            .collect(),
    );
    t
}

fn notifications_logged_once(w: &mut World, events: &[crate::store::RecordedEvent]) {
    let mut logged: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in events {
        if e.event_type == "notification_accepted" {
            let key = serde_json::from_str::<serde_json::Value>(&e.payload)
                .ok()
                .and_then(|v| v["key"].as_str().map(String::from))
                .unwrap_or_default();
            *logged
                .entry((e.stream.as_str().to_string(), key))
                .or_default() += 1;
        }
    }
    let acked = w
        .node
        .push
        .acked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for a in acked {
        let n = logged
            .get(&(a.connection.stream().as_str().to_string(), a.key.clone()))
            .copied()
            .unwrap_or(0);
        if n != 1 {
            w.violations.push(format!(
                "notification {} of {} was acknowledged ({}) but is in the log {n} times",
                a.key,
                a.connection,
                if a.duplicate {
                    "as a duplicate"
                } else {
                    "as new"
                }
            ));
        }
    }
}

fn calls_respect_gates_backoff_and_budget(
    w: &mut World,
    events: &[crate::store::RecordedEvent],
    requests: &[calsim::RequestRecord],
) {
    let start = super::workload::epoch();
    let budget = CallBudget::default();
    // One pass each over the trace and the log, grouped by account.
    let mut calls_of: BTreeMap<String, Vec<&calsim::RequestRecord>> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.endpoint != "token") {
        if let Some(account) = &r.account {
            calls_of.entry(account.to_lowercase()).or_default().push(r);
        }
    }
    let mut log_of: BTreeMap<&StreamName, Vec<&crate::store::RecordedEvent>> = BTreeMap::new();
    for e in events {
        log_of.entry(&e.stream).or_default().push(e);
    }
    for a in w.accounts.clone() {
        let mut calls = calls_of.remove(&a.email.to_lowercase()).unwrap_or_default();
        // The trace is in order of completion; by arrival, each window
        // below is one slice found by binary search, not a scan of the
        // week's calls for every failure in the log.
        calls.sort_by_key(|r| r.at);
        let stream = a.id.stream();
        let log = log_of.get(&stream).cloned().unwrap_or_default();
        // Gates.
        for g in &w.gates {
            if g.connection.is_some_and(|c| c != a.id) {
                continue;
            }
            let to = g.to.unwrap_or(DateTime::<Utc>::MAX_UTC);
            if let Some(c) = arrived_between(&calls, g.from + GRACE, to).first() {
                w.violations.push(format!(
                    "{} called {} at {} while gated ({}, {} – {})",
                    a.email, c.endpoint, c.at, g.why, g.from, to
                ));
            }
        }
        // Backoff windows, from the log. New credentials end every window
        // (the core retries at once what the old grant could not reach),
        // so each window closes at the next credentials change.
        // Only the kinds read below are decoded (most of a log is sync
        // rounds).
        let decoded: Vec<ConnectionEvent> = log
            .iter()
            .filter(|e| {
                matches!(
                    e.event_type.as_str(),
                    "sync_failed" | "calendar_sync_failed" | "credentials_changed"
                )
            })
            .filter_map(|e| {
                ConnectionEvent::from_json(&e.event_type, e.schema_version, e.payload.as_bytes())
                    .ok()
            })
            .collect();
        let regrants: Vec<DateTime<Utc>> = decoded
            .iter()
            .filter_map(|e| match e {
                ConnectionEvent::CredentialsChanged { at } => Some(*at),
                _ => None,
            })
            .collect();
        let until = |at: DateTime<Utc>, until: DateTime<Utc>| {
            regrants
                .iter()
                .copied()
                .filter(|r| *r >= at)
                .fold(until, DateTime::min)
        };
        for event in decoded {
            match event {
                ConnectionEvent::SyncFailed {
                    backoff_until,
                    at: Some(at),
                    ..
                } => {
                    let backoff_until = until(at, backoff_until);
                    if let Some(c) = arrived_between(&calls, at + GRACE, backoff_until).first() {
                        w.violations.push(format!(
                            "{} called {} at {} inside its backoff {at} – {backoff_until}",
                            a.email, c.endpoint, c.at
                        ));
                    }
                }
                ConnectionEvent::CalendarSyncFailed {
                    calendar,
                    retry_at,
                    at,
                    ..
                } => {
                    let path = format!("/calendars/{calendar}/");
                    let lists_it = |r: &&&calsim::RequestRecord| match a.provider {
                        CalendarProvider::Google => {
                            r.endpoint == "events.list" && r.path.contains(&path)
                        }
                        CalendarProvider::Microsoft => r.endpoint == "delta",
                    };
                    let retry_at = until(at, retry_at);
                    if let Some(c) =
                        arrived_between(&calls, at + Duration::milliseconds(1), retry_at)
                            .iter()
                            .find(lists_it)
                    {
                        w.violations.push(format!(
                            "{} listed {calendar} at {} inside its backoff {at} – {retry_at}",
                            a.email, c.at
                        ));
                    }
                }
                _ => {}
            }
        }
        // The hourly budget, with room for what inputs asked for.
        let inputs: Vec<DateTime<Utc>> = log
            .iter()
            .filter(|e| {
                matches!(
                    e.event_type.as_str(),
                    "notification_accepted"
                        | "booking_received"
                        | "credentials_changed"
                        | "connection_resumed"
                )
            })
            .map(|e| e.committed_at)
            .collect();
        let calendars = a.calendars.len() + usize::from(a.missing.is_some());
        let allowed = budget.for_calendars(calendars) as usize;
        let hour = |t: DateTime<Utc>| (t - start).num_hours();
        let per_hour = count_by(calls.iter().map(|c| hour(c.at)));
        let asked_in = count_by(inputs.iter().map(|t| hour(*t)));
        for (h, n) in per_hour {
            let asked = asked_in.get(&h).copied().unwrap_or(0);
            if n > allowed + 30 * asked + 20 {
                w.violations.push(format!(
                    "{} made {n} provider calls in hour {h} ({asked} inputs; budget {allowed})",
                    a.email
                ));
            }
        }
    }
}

/// How many times each key occurs.
fn count_by<K: Ord>(keys: impl Iterator<Item = K>) -> BTreeMap<K, usize> {
    let mut counts = BTreeMap::new();
    for k in keys {
        *counts.entry(k).or_default() += 1;
    }
    counts
}

/// The calls (sorted by arrival) that arrived strictly after `after` and
/// strictly before `before`.
fn arrived_between<'a, 'r>(
    calls: &'a [&'r calsim::RequestRecord],
    after: DateTime<Utc>,
    before: DateTime<Utc>,
) -> &'a [&'r calsim::RequestRecord] {
    let from = calls.partition_point(|r| r.at <= after);
    let to = calls.partition_point(|r| r.at < before).max(from);
    &calls[from..to]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(seq: u64, minute: i64) -> calsim::RequestRecord {
        calsim::RequestRecord {
            seq,
            at: super::super::workload::epoch() + Duration::minutes(minute),
            provider: calsim::Provider::Google,
            account: Some("a@example.com".into()),
            endpoint: "events.list".into(),
            method: "GET".into(),
            path: "/calendar/v3/calendars/primary/events".into(),
            query: None,
            headers: Vec::new(),
            body: None,
            status: 200,
            fault: None,
        }
    }

    /// A backoff or gate window is open at both ends: a call at the
    /// instant the window starts or ends is not inside it, and one a
    /// minute in is, wherever it sits in the trace.
    #[test]
    fn a_window_finds_exactly_the_calls_that_arrived_inside_it() {
        let records: Vec<calsim::RequestRecord> = [0, 10, 10, 20, 30, 40]
            .iter()
            .enumerate()
            .map(|(i, m)| call(i as u64, *m))
            .collect();
        let calls: Vec<&calsim::RequestRecord> = records.iter().collect();
        let at = |m: i64| super::super::workload::epoch() + Duration::minutes(m);
        let seqs = |from: i64, to: i64| -> Vec<u64> {
            arrived_between(&calls, at(from), at(to))
                .iter()
                .map(|r| r.seq)
                .collect()
        };
        assert_eq!(seqs(10, 30), vec![3]);
        assert_eq!(seqs(9, 31), vec![1, 2, 3, 4]);
        assert_eq!(seqs(-5, 0), Vec::<u64>::new());
        assert_eq!(seqs(40, 50), Vec::<u64>::new());
        assert_eq!(seqs(39, 100), vec![5]);
        // An empty or inverted window holds nothing.
        assert_eq!(seqs(20, 20), Vec::<u64>::new());
        assert_eq!(seqs(30, 10), Vec::<u64>::new());
    }
}
