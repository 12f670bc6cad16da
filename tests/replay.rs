//! `calsync replay`: the rebuild from the log equals the live tables after
//! real syncs and random histories, finds and repairs corrupted rows, and
//! swaps while appends run without losing or duplicating anything.

mod support;

use calsim::{SimConfig, SimHandle, Simulators};
use calsync::actors::runtime::{AllOpen, SyncRuntime};
use calsync::actors::{ActorSettings, Connections};
use calsync::core::backoff::BackoffPolicy;
use calsync::core::decide::{decide, ConnectionCommand};
use calsync::core::fault::{Fault, FaultKind};
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::core::projection::{connection_changes, BusyRow};
use calsync::core::state::ConnectionState;
use calsync::core::sync::FetchedPage;
use calsync::core::wire::ProviderChange;
use calsync::providers::{AuthSession, ProviderEndpoints};
use calsync::replay::model::Model;
use calsync::replay::{self, DiffKind, ProgressMode, ReplayOptions, Report};
use calsync::store::credentials::CredentialVault;
use calsync::testkit::TestDb;
use chrono::{DateTime, Duration as TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn quiet() -> ReplayOptions {
    ReplayOptions {
        progress: ProgressMode::Quiet,
        ..ReplayOptions::default()
    }
}

fn cal(s: &str) -> CalendarId {
    CalendarId::parse(s).unwrap()
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
}

/// A Google event change: busy, free (transparent), cancelled, all-day
/// (days in the calendar's zone) or an instance of a weekly series (wall
/// time in Sydney).
fn google(id: &str, hour: u32, kind: u8) -> ProviderChange {
    let s = base() + TimeDelta::hours(i64::from(hour));
    let e = s + TimeDelta::minutes(45);
    let mut v = json!({"id": id, "status": "confirmed",
        "start": {"dateTime": s.to_rfc3339()}, "end": {"dateTime": e.to_rfc3339()}});
    match kind {
        1 => v["transparency"] = json!("transparent"),
        2 => v = json!({"id": id, "status": "cancelled"}),
        3 => {
            let day = s.date_naive();
            v["start"] = json!({"date": day.to_string()});
            v["end"] =
                json!({"date": (day + TimeDelta::days(1 + i64::from(hour % 2))).to_string()});
        }
        4 => {
            let wall = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
            v = json!({"id": format!("{id}_{}", s.format("%Y%m%dT%H%M%SZ")),
                "recurringEventId": id, "status": "confirmed",
                "originalStartTime": {"dateTime": wall(s), "timeZone": "Australia/Sydney"},
                "start": {"dateTime": wall(s), "timeZone": "Australia/Sydney"},
                "end": {"dateTime": wall(e), "timeZone": "Australia/Sydney"}});
        }
        _ => {}
    }
    ProviderChange::Google(serde_json::from_value(v).unwrap())
}

/// The same kinds of change as Graph delivers them: busy, `showAs: free`,
/// `@removed`, all-day (floating midnights; the day in the event's own
/// zone or the mailbox's), or an occurrence labelled with a Windows zone.
fn graph_change(id: &str, hour: u32, kind: u8) -> ProviderChange {
    let s = base() + TimeDelta::hours(i64::from(hour));
    let e = s + TimeDelta::minutes(45);
    let at = |t: DateTime<Utc>, zone: &str| json!({"dateTime": t.format("%Y-%m-%dT%H:%M:%S.0000000").to_string(), "timeZone": zone});
    let mut v = json!({"id": id, "type": "singleInstance", "showAs": "busy",
        "start": at(s, "UTC"), "end": at(e, "UTC")});
    match kind {
        1 => v["showAs"] = json!("free"),
        2 => v = json!({"id": id, "@removed": {"reason": "deleted"}}),
        3 => {
            let midnight = s.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
            v["isAllDay"] = json!(true);
            v["start"] = at(midnight, "UTC");
            v["end"] = at(midnight + TimeDelta::days(1 + i64::from(hour % 2)), "UTC");
            if hour % 3 == 0 {
                v["originalStartTimeZone"] = json!("New Zealand Standard Time");
            }
        }
        4 => {
            v = json!({"id": format!("{id}-{}", s.format("%Y%m%d")), "type": "occurrence",
                "seriesMasterId": id, "showAs": "busy",
                "start": at(s, "AUS Eastern Standard Time"),
                "end": at(e, "AUS Eastern Standard Time")});
        }
        _ => {}
    }
    ProviderChange::Graph(serde_json::from_value(v).unwrap())
}

/// Each calendar's zone as the provider reports it (Google: IANA; Graph:
/// the mailbox's Windows name): what all-day events are days in.
fn zone_of(provider: CalendarProvider, calendar: &str) -> &'static str {
    let google = provider == CalendarProvider::Google;
    match calendar {
        "a" if google => "Australia/Sydney",
        "a" => "AUS Eastern Standard Time",
        "b" if google => "Pacific/Auckland",
        "b" => "New Zealand Standard Time",
        _ if google => "Pacific/Honolulu",
        _ => "Hawaiian Standard Time",
    }
}

fn page(calendar: &str, full: bool, changes: Vec<ProviderChange>, done: bool) -> ConnectionCommand {
    ConnectionCommand::RecordPage(FetchedPage {
        calendar: cal(calendar),
        full_round: full,
        changes,
        calendar_zone: None,
        completed_with: done.then(|| format!("cursor-{}", Uuid::new_v4())),
        first_page: full,
        window: None,
    })
}

fn failure(calendar: Option<&str>, kind: FaultKind, unit_random: f64) -> ConnectionCommand {
    ConnectionCommand::RecordSyncFailure {
        calendar: calendar.map(cal),
        fault: Fault::new(kind, "f", "m").with_status(503),
        unit_random,
        attempt_started: None,
    }
}

fn create(pp: &str, account: &str, calendars: &[&str]) -> ConnectionCommand {
    create_for(CalendarProvider::Google, pp, account, calendars)
}

fn create_for(
    provider: CalendarProvider,
    pp: &str,
    account: &str,
    calendars: &[&str],
) -> ConnectionCommand {
    ConnectionCommand::Create {
        platform_provider_id: PlatformProviderId::parse(pp).unwrap(),
        provider,
        account: ExternalAccount::parse(account).unwrap(),
        calendars: calendars.iter().map(|c| cal(c)).collect(),
        // Bookings are written to the first calendar.
        destination_calendar: calendars.first().map(|c| cal(c)),
    }
}

/// A booking change from the platform (outbound sync is off in these
/// tests: the log records it and the booking map projects it).
fn booking(id: u8, version: u64, cancelled: bool, hour: u32) -> ConnectionCommand {
    let s = base() + TimeDelta::hours(i64::from(hour));
    let value = json!({"booking_id": format!("b{id}"), "version": version,
        "status": if cancelled { "cancelled" } else { "confirmed" },
        "start": s.to_rfc3339(), "end": (s + TimeDelta::minutes(30)).to_rfc3339(),
        "time_zone": "Europe/Berlin", "title": "haircut"});
    ConnectionCommand::ApplyBooking(serde_json::from_value(value).unwrap())
}

async fn verify(db: &TestDb, options: &ReplayOptions) -> Report {
    replay::verify(&db.store(), options).await.unwrap()
}

fn assert_clean(report: &Report) {
    assert!(
        report.is_clean(),
        "replay found differences: {}",
        serde_json::to_string_pretty(&report.tables).unwrap()
    );
}

/// Actors without provider access: commands are the only inputs.
async fn actors(db: &TestDb) -> Connections {
    Connections::start(db.store(), ActorSettings::default())
        .await
        .unwrap()
}

async fn send(c: &Connections, id: ConnectionId, command: ConnectionCommand) {
    // Rejections (e.g. a page for a removed connection) are part of random
    // histories; only commits matter to the replay.
    let _ = c.command(id, command, Uuid::new_v4()).await;
}

// ---------------------------------------------------------------------
// Per append vs per event: the fold replay relies on.

/// Commands a connection may receive, for the pure property test (pages
/// of either provider's changes).
fn command_strategy() -> impl Strategy<Value = ConnectionCommand> {
    prop_oneof![
        command_strategy_for(CalendarProvider::Google),
        command_strategy_for(CalendarProvider::Microsoft),
    ]
}

/// Commands a connection of `provider` may receive: its pages carry that
/// provider's changes (timed, free, removed, all-day on the days around
/// 2026-12-01, series instances) and name the calendar's zone.
fn command_strategy_for(provider: CalendarProvider) -> impl Strategy<Value = ConnectionCommand> {
    let change = (0u8..6, 0u32..48, 0u8..5).prop_map(move |(id, hour, kind)| match provider {
        CalendarProvider::Google => google(&format!("e{id}"), hour, kind),
        CalendarProvider::Microsoft => graph_change(&format!("e{id}"), hour, kind),
    });
    let calendars = prop::sample::subsequence(vec!["a", "b", "c"], 1..=3);
    prop_oneof![
        4 => (
            prop::sample::select(vec!["a", "b", "c"]),
            any::<bool>(),
            prop::collection::vec(change, 0..6),
            any::<bool>()
        )
            .prop_map(move |(c, full, changes, done)| match page(c, full, changes, done) {
                ConnectionCommand::RecordPage(p) => ConnectionCommand::RecordPage(FetchedPage {
                    calendar_zone: Some(zone_of(provider, c).into()),
                    ..p
                }),
                other => other,
            }),
        1 => calendars.prop_map(|cs| ConnectionCommand::SelectCalendars {
            calendars: cs.iter().map(|c| cal(c)).collect(),
            destination_calendar: None,
        }),
        1 => Just(ConnectionCommand::Pause { reason: "p".into() }),
        1 => Just(ConnectionCommand::Resume),
        1 => (0u8..20).prop_map(|k| ConnectionCommand::AcceptNotification {
            key: format!("k{k}"),
            channel_id: "ch".into(),
        }),
        1 => (0f64..1.0).prop_map(|r| failure(None, FaultKind::RateLimited, r)),
        1 => (prop::sample::select(vec!["a", "b", "c"]), 0f64..1.0)
            .prop_map(|(c, r)| failure(Some(c), FaultKind::Unavailable, r)),
        1 => prop::sample::select(vec!["a", "b", "c"])
            .prop_map(|c| failure(Some(c), FaultKind::NotFound, 0.5)),
        1 => prop::sample::select(vec!["a", "b", "c"])
            .prop_map(|c| failure(Some(c), FaultKind::ResyncRequired, 0.5)),
        1 => Just(failure(None, FaultKind::Reauthorize, 0.5)),
        1 => Just(ConnectionCommand::RecordReauthorized),
        1 => Just(ConnectionCommand::RecordCredentialsChanged),
        1 => Just(ConnectionCommand::Quarantine {
            restarts: 5,
            window_secs: 60,
            last_error: "boom".into(),
        }),
        1 => Just(ConnectionCommand::LiftQuarantine),
        2 => (0u8..4, 1u64..6, any::<bool>(), 0u32..48)
            .prop_map(|(id, v, cancelled, hour)| booking(id, v, cancelled, hour)),
    ]
}

proptest! {
    #![proptest_config(PropConfig { cases: 256, failure_persistence: None, ..PropConfig::default() })]

    /// `connection_changes` per append (the live path) and per event (one
    /// call after every event) give the same tables: the doc comment's
    /// claim, checked on random histories of two connections sharing a
    /// platform provider (so busy keys move between connections).
    #[test]
    fn projecting_per_event_equals_projecting_per_append(
        steps in prop::collection::vec((any::<bool>(), command_strategy()), 1..40)
    ) {
        let ids = [ConnectionId::new_random(), ConnectionId::new_random()];
        let mut states = [ConnectionState::default(), ConnectionState::default()];
        let (mut per_append, mut per_event) = (Model::default(), Model::default());
        let now = base();
        for (i, id) in ids.iter().enumerate() {
            let d = decide(&states[i], &create("pp", &format!("u{i}@example.com"), &["a", "b"]), now).unwrap();
            apply_both(&mut states[i], *id, &d.events, &mut per_append, &mut per_event);
        }
        for (second, command) in steps {
            let i = usize::from(second);
            if let Ok(d) = decide(&states[i], &command, now) {
                apply_both(&mut states[i], ids[i], &d.events, &mut per_append, &mut per_event);
            }
        }
        prop_assert_eq!(&per_append.connections, &per_event.connections);
        prop_assert_eq!(&per_append.calendars, &per_event.calendars);
        prop_assert_eq!(busy_by_key(&per_append), busy_by_key(&per_event));
    }
}

/// The model's busy rows by primary key — connection, calendar, external
/// event (schema 0006: the same event in two calendars is two rows) —
/// since their storage order is arbitrary.
fn busy_by_key(model: &Model) -> std::collections::BTreeMap<(String, String, String), &BusyRow> {
    model
        .busy()
        .map(|r| {
            let key = (
                r.connection_id.to_string(),
                r.calendar_id.clone(),
                r.external_event_id.clone(),
            );
            (key, r)
        })
        .collect()
}

fn apply_both(
    state: &mut ConnectionState,
    id: ConnectionId,
    events: &[calsync::core::events::ConnectionEvent],
    per_append: &mut Model,
    per_event: &mut Model,
) {
    let before = state.clone();
    *state = before.clone().fold(events);
    per_append
        .apply(connection_changes(id, state, events))
        .unwrap();
    let mut s = before;
    for e in events {
        s = s.evolve(e);
        per_event
            .apply(connection_changes(id, &s, std::slice::from_ref(e)))
            .unwrap();
    }
}

// ---------------------------------------------------------------------
// Random histories through the real actors.

#[derive(Debug, Clone)]
enum Step {
    Command(usize, ConnectionCommand),
    Kill(usize),
}

/// Connection 1 of a history is Microsoft's, the others Google's.
fn provider_of(i: usize) -> CalendarProvider {
    if i == 1 {
        CalendarProvider::Microsoft
    } else {
        CalendarProvider::Google
    }
}

fn history_strategy() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        8 => (0usize..3).prop_flat_map(|i| {
            command_strategy_for(provider_of(i)).prop_map(move |c| Step::Command(i, c))
        }),
        1 => (0usize..3).prop_map(|i| Step::Command(i, ConnectionCommand::Remove { reason: "r".into() })),
        1 => (0usize..3).prop_map(Step::Kill),
    ];
    prop::collection::vec(step, 5..40)
}

async fn run_history(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let db = TestDb::new().await;
    // Frequent snapshots: a killed actor comes back from snapshot + tail.
    let settings = ActorSettings {
        snapshot_every: 3,
        ..ActorSettings::default()
    };
    let c = Connections::start(db.store(), settings).await.unwrap();
    let ids = [
        ConnectionId::new_random(),
        ConnectionId::new_random(),
        ConnectionId::new_random(),
    ];
    // Connections 0 (Google) and 1 (Microsoft) share a platform provider:
    // the same external event id may be seen by both.
    for (i, id) in ids.iter().enumerate() {
        let pp = if i == 2 { "pp-2" } else { "pp-shared" };
        send(
            &c,
            *id,
            create_for(
                provider_of(i),
                pp,
                &format!("u{i}@example.com"),
                &["a", "b"],
            ),
        )
        .await;
    }
    for step in steps {
        match step {
            Step::Command(i, command) => send(&c, ids[i], command).await,
            Step::Kill(i) => {
                c.kill(ids[i]);
                // The next command re-activates it from snapshot and tail.
                // Not a wait for evidence: a short pause so the kill usually
                // lands first; the property holds either way.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    let report = verify(&db, &quiet()).await;
    c.shutdown();
    prop_assert!(
        report.is_clean(),
        "differences: {}",
        serde_json::to_string_pretty(&report.tables).unwrap()
    );
    // At least the three creations: a history whose other steps all decide
    // nothing (e.g. a resync of an unselected calendar) is valid.
    prop_assert!(
        report.events_read >= 3,
        "{} events read",
        report.events_read
    );
    Ok(())
}

#[test]
fn random_histories_through_the_actors_replay_to_the_live_tables() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(PropConfig {
        cases: 12,
        failure_persistence: None,
        ..PropConfig::default()
    });
    runner
        .run(&history_strategy(), |steps| rt.block_on(run_history(steps)))
        .unwrap();
}

// ---------------------------------------------------------------------
// Corruption: reported with connection and key, repaired by a swap.

/// Three connections with busy rows, through the actors.
async fn seeded(db: &TestDb) -> (Connections, Vec<ConnectionId>) {
    let c = actors(db).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = ConnectionId::new_random();
        send(
            &c,
            id,
            create(&format!("pp-{i}"), &format!("s{i}@example.com"), &["a"]),
        )
        .await;
        let changes = (0..5)
            .map(|n| google(&format!("ev{i}x{n}"), n, 0))
            .collect();
        send(&c, id, page("a", true, changes, true)).await;
        send(&c, id, booking(i, 1, false, 20)).await;
        ids.push(id);
    }
    (c, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_live_rows_are_reported_with_connection_and_key_and_swap_repairs_them() {
    let db = TestDb::new().await;
    let (c, ids) = seeded(&db).await;
    assert_clean(&verify(&db, &quiet()).await);

    let sql = db.client().await;
    sql.execute(
        "UPDATE busy_intervals SET ends_at = ends_at + interval '1 hour' \
         WHERE external_event_id = 'ev0x1'",
        &[],
    )
    .await
    .unwrap();
    sql.execute(
        "DELETE FROM busy_intervals WHERE external_event_id = 'ev1x2'",
        &[],
    )
    .await
    .unwrap();
    sql.execute(
        "INSERT INTO busy_intervals VALUES ('pp-2', 'google', 'bogus', $1, 'a', \
         now(), now() + interval '1 hour', 1)",
        &[&ids[2].as_uuid()],
    )
    .await
    .unwrap();
    sql.execute(
        "UPDATE connections SET error_count = 42 WHERE connection_id = $1",
        &[&ids[1].as_uuid()],
    )
    .await
    .unwrap();

    let report = verify(&db, &quiet()).await;
    assert_eq!(report.differences, 4, "{:#?}", report.tables);
    let busy = report
        .tables
        .iter()
        .find(|t| t.table == "busy_intervals")
        .unwrap();
    assert_eq!((busy.missing, busy.extra, busy.different), (1, 1, 1));
    let find = |kind: DiffKind| busy.samples.iter().find(|d| d.kind == kind).unwrap();
    let different = find(DiffKind::Different);
    assert_eq!(different.connection_id, Some(ids[0].to_string()));
    assert_eq!(different.key["external_event_id"], "ev0x1");
    assert_eq!(different.key["calendar_id"], "a");
    assert!(different.live.is_some() && different.rebuilt.is_some());
    let missing = find(DiffKind::Missing);
    assert_eq!(missing.connection_id, Some(ids[1].to_string()));
    assert_eq!(missing.key["external_event_id"], "ev1x2");
    let extra = find(DiffKind::Extra);
    assert_eq!(extra.connection_id, Some(ids[2].to_string()));
    assert_eq!(extra.key["external_event_id"], "bogus");
    let conns = report
        .tables
        .iter()
        .find(|t| t.table == "connections")
        .unwrap();
    assert_eq!(conns.different, 1);
    assert_eq!(conns.samples[0].key["connection_id"], ids[1].to_string());

    // --connection sees only its own rows.
    let scoped = verify(
        &db,
        &ReplayOptions {
            connection: Some(ids[0]),
            ..quiet()
        },
    )
    .await;
    assert_eq!(scoped.differences, 1, "{:#?}", scoped.tables);
    assert_eq!(scoped.streams, 1);

    let swapped = replay::swap(&db.store(), &quiet()).await.unwrap();
    assert_eq!(swapped.differences, 4);
    assert!(swapped.rows_repaired >= 4);
    assert_clean(&verify(&db, &quiet()).await);
    // Repaired rows are the log's: the corrupted interval is back.
    let ends: DateTime<Utc> = sql
        .query_one(
            "SELECT ends_at FROM busy_intervals WHERE external_event_id = 'ev0x1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ends, base() + TimeDelta::hours(1) + TimeDelta::minutes(45));
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_scoped_swap_repairs_only_that_connection() {
    let db = TestDb::new().await;
    let (c, ids) = seeded(&db).await;
    let sql = db.client().await;
    sql.execute("DELETE FROM busy_intervals", &[])
        .await
        .unwrap();
    let scoped = ReplayOptions {
        connection: Some(ids[1]),
        ..quiet()
    };
    let swapped = replay::swap(&db.store(), &scoped).await.unwrap();
    assert_eq!(swapped.differences, 5);
    assert_clean(&verify(&db, &scoped).await);
    let full = verify(&db, &quiet()).await;
    assert_eq!(
        full.differences, 10,
        "the other two connections stay broken"
    );
    c.shutdown();
}

// ---------------------------------------------------------------------
// Swap beside live appends.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_while_appends_run_loses_and_duplicates_nothing() {
    let db = TestDb::new().await;
    let (c, ids) = seeded(&db).await;
    let sql = db.client().await;
    // Something for the swap to repair while appends run.
    sql.execute(
        "DELETE FROM busy_intervals WHERE external_event_id LIKE 'ev2%'",
        &[],
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    // The third connection stays idle, so its corruption survives until
    // the swap; the other two are written all along.
    for (w, id) in ids.iter().take(2).copied().enumerate() {
        let (c, stop, appended) = (c.clone(), stop.clone(), appended.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let command = if n % 7 == 0 {
                    page(
                        "a",
                        true,
                        vec![google(&format!("w{w}n{n}"), n % 40, 0)],
                        true,
                    )
                } else if n % 5 == 0 {
                    ConnectionCommand::AcceptNotification {
                        key: format!("n{n}"),
                        channel_id: "ch".into(),
                    }
                } else {
                    let id = format!("w{w}e{}", n % 30);
                    page(
                        "a",
                        false,
                        vec![google(&id, n % 40, (n % 3) as u8 % 3)],
                        n % 2 == 0,
                    )
                };
                if let Ok(ack) = c.command(id, command, Uuid::new_v4()).await {
                    appended.fetch_add(ack.appended as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    // The writers are under way before the first swap ...
    let written = |n: u64| {
        let appended = appended.clone();
        async move {
            support::wait_for(
                &format!("{n} events appended by the writers"),
                support::DEADLINE,
                || {
                    let done = appended.load(Ordering::Relaxed) >= n;
                    async move { done.then_some(()) }
                },
            )
            .await
        }
    };
    written(50).await;
    let first = replay::swap(&db.store(), &quiet()).await.unwrap();
    assert!(first.differences >= 5, "{:#?}", first.tables);
    let second = replay::swap(&db.store(), &quiet()).await.unwrap();
    assert_eq!(second.differences, 0, "{:#?}", second.tables);
    // ... and still writing after the second.
    written(appended.load(Ordering::Relaxed) + 50).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        appended.load(Ordering::Relaxed) > 50,
        "the writers barely ran"
    );
    let after = verify(&db, &quiet()).await;
    assert_clean(&after);
    // Every stream's version in the read model is the log's.
    let behind: i64 = sql
        .query_one(
            "SELECT count(*) FROM connections c WHERE c.stream_version <> \
             (SELECT max(version) FROM events e WHERE e.stream = 'connection-' || c.connection_id)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(behind, 0);
    let total: i64 = sql
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after.events_read, total as u64);
    c.shutdown();
}

// ---------------------------------------------------------------------
// Real syncs against the simulators.

struct World {
    db: TestDb,
    sim: SimHandle,
    connections: Connections,
    vault: CredentialVault,
}

impl World {
    async fn new() -> World {
        let db = TestDb::new().await;
        let sim = Simulators::start(SimConfig::default()).await.unwrap();
        let endpoints = ProviderEndpoints {
            google_api: sim.google_base_url(),
            google_token: sim.google_token_url(),
            graph_api: sim.graph_base_url(),
            graph_token: sim.graph_token_url("common"),
        };
        let vault = CredentialVault::random();
        let mut runtime =
            SyncRuntime::new(endpoints, vault.clone(), db.store(), Arc::new(AllOpen)).unwrap();
        runtime.policy.sync.backoff = BackoffPolicy {
            base: Duration::from_millis(300),
            cap: Duration::from_secs(2),
            ..BackoffPolicy::default()
        };
        let connections = Connections::start_with_sync(
            db.store(),
            ActorSettings::default(),
            Some(Arc::new(runtime)),
        )
        .await
        .unwrap();
        World {
            db,
            sim,
            connections,
            vault,
        }
    }

    async fn connect(&self, provider: CalendarProvider, account: &str) -> ConnectionId {
        let (client_id, client_secret, refresh_token) = match provider {
            CalendarProvider::Google => {
                let a = self.sim.google().create_account(account);
                (a.client_id, a.client_secret, a.refresh_token)
            }
            _ => {
                let a = self.sim.graph().create_account(account);
                (a.client_id, a.client_secret, a.refresh_token)
            }
        };
        let session = AuthSession {
            client_id,
            client_secret,
            refresh_token,
            access_token: None,
            access_expires_at: None,
            refresh_token_rotated: false,
            access_token_refreshed: false,
        };
        let id = ConnectionId::new_random();
        self.vault
            .save(&self.db.store(), id, &session)
            .await
            .unwrap();
        let command = ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse(format!("pp-{account}")).unwrap(),
            provider,
            account: ExternalAccount::parse(account).unwrap(),
            calendars: vec![cal("primary")],
            destination_calendar: None,
        };
        self.connections
            .command(id, command, Uuid::new_v4())
            .await
            .unwrap();
        id
    }

    async fn notify(&self, id: ConnectionId, key: &str) {
        let command = ConnectionCommand::AcceptNotification {
            key: key.into(),
            channel_id: "test-channel".into(),
        };
        self.connections
            .command(id, command, Uuid::new_v4())
            .await
            .unwrap();
    }

    async fn busy(&self, id: ConnectionId) -> usize {
        let n: i64 = self
            .db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM busy_intervals WHERE connection_id = $1",
                &[&id.as_uuid()],
            )
            .await
            .unwrap()
            .get(0);
        n as usize
    }

    async fn generation(&self, id: ConnectionId) -> i64 {
        self.db
            .client()
            .await
            .query_one(
                "SELECT max(generation) FROM connection_calendars WHERE connection_id = $1",
                &[&id.as_uuid()],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn until(&self, what: &str, check: impl AsyncFn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if check().await {
                return;
            }
            // Poll interval: the condition is checked again right after.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

fn graph_event(subject: &str, hour: i64) -> serde_json::Value {
    let s = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(2)
        + TimeDelta::hours(hour);
    let e = s + TimeDelta::minutes(30);
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    json!({"subject": subject, "showAs": "busy",
        "start": {"dateTime": fmt(s), "timeZone": "UTC"},
        "end": {"dateTime": fmt(e), "timeZone": "UTC"}})
}

fn google_sim_event(id: &str, hour: i64) -> serde_json::Value {
    let s = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(2)
        + TimeDelta::hours(hour);
    let e = s + TimeDelta::minutes(30);
    json!({"id": id, "summary": "x", "start": {"dateTime": s.to_rfc3339()},
        "end": {"dateTime": e.to_rfc3339()}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_real_syncs_with_410_resyncs_finds_no_difference() {
    let w = World::new().await;
    let google = w.sim.google();
    let graph = w.sim.graph();
    let g1 = w.connect(CalendarProvider::Google, "ana@example.com").await;
    let g2 = w.connect(CalendarProvider::Google, "ben@example.com").await;
    let m1 = w
        .connect(CalendarProvider::Microsoft, "cy@contoso.com")
        .await;
    for (n, who) in ["ana@example.com", "ben@example.com"].iter().enumerate() {
        for h in 0..4 {
            google
                .upsert_event(
                    who,
                    "primary",
                    google_sim_event(&format!("evt{n}00{h}"), 8 + h),
                )
                .unwrap();
        }
    }
    let mut graph_ids = Vec::new();
    for h in 0..3 {
        let e = graph
            .create_event("cy@contoso.com", graph_event(&format!("m{h}"), 9 + h))
            .unwrap();
        graph_ids.push(e["id"].as_str().unwrap().to_string());
    }
    w.notify(g1, "g1:1").await;
    w.notify(g2, "g2:1").await;
    w.notify(m1, "m1:1").await;
    w.until("first syncs", async || {
        w.busy(g1).await == 4 && w.busy(g2).await == 4 && w.busy(m1).await == 3
    })
    .await;
    assert_clean(&verify(&w.db, &quiet()).await);

    // 410s: tokens forgotten and events deleted silently; only the full
    // resync's sweep notices.
    google.invalidate_sync_tokens("ana@example.com");
    google
        .delete_event("ana@example.com", "primary", "evt0000")
        .unwrap();
    graph.invalidate_delta_tokens("cy@contoso.com");
    graph.delete_event("cy@contoso.com", &graph_ids[0]).unwrap();
    google
        .upsert_event(
            "ben@example.com",
            "primary",
            google_sim_event("evt1000", 20),
        )
        .unwrap();
    w.notify(g1, "g1:2").await;
    w.notify(g2, "g2:2").await;
    w.notify(m1, "m1:2").await;
    w.until("resyncs", async || {
        w.busy(g1).await == 3
            && w.busy(m1).await == 2
            && w.generation(g1).await == 2
            && w.generation(m1).await == 2
    })
    .await;
    // The rounds that swept are complete once no connection runs a task.
    for id in [g1, g2, m1] {
        w.until("the connection is quiet", async || {
            w.connections.quiet(id).await.unwrap_or(false)
        })
        .await;
    }

    let report = verify(&w.db, &quiet()).await;
    assert_clean(&report);
    assert_eq!(report.streams, 3);
    assert!(report.rows_written["busy_intervals"] >= 9);
    let swapped = replay::swap(&w.db.store(), &quiet()).await.unwrap();
    assert_eq!((swapped.differences, swapped.rows_repaired), (0, 0));
    w.connections.shutdown();
}

// ---------------------------------------------------------------------
// Snapshots and the command line.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_rebuilt_from_the_fold() {
    let db = TestDb::new().await;
    let (c, ids) = seeded(&db).await;
    let sql = db.client().await;
    sql.execute("DELETE FROM snapshots", &[]).await.unwrap();
    let report = replay::verify(
        &db.store(),
        &ReplayOptions {
            snapshots: true,
            ..quiet()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.snapshots_written, 3);
    let state = c.inspect(ids[0]).await.unwrap();
    let stored: String = sql
        .query_one(
            "SELECT state::text FROM snapshots WHERE stream = $1",
            &[&ids[0].stream().as_str()],
        )
        .await
        .unwrap()
        .get(0);
    let stored: ConnectionState = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored, state);
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_json_summary_and_fails_on_differences() {
    let db = TestDb::new().await;
    let (c, _) = seeded(&db).await;
    c.shutdown();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(["replay", "--verify", "--json"])
            .env("DATABASE_URL", db.url())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["events_read"].as_u64().unwrap() >= 6);
    assert_eq!(summary["rows_written"]["busy_intervals"], 15);
    assert_eq!(summary["rows_written"]["booking_events"], 3);
    assert_eq!(summary["differences"], 0);
    assert!(summary["seconds"].as_f64().is_some());

    db.client()
        .await
        .execute("DELETE FROM connection_calendars", &[])
        .await
        .unwrap();
    let out = run();
    assert!(!out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["differences"], 3);
}

// ---------------------------------------------------------------------
// Rate, beside a bare COPY of the log (a benchmark run with a large log:
// CALSYNC_REPLAY_BENCH_EVENTS=1000000 cargo test --release --test replay
// rate -- --nocapture; the default log is small and only checked).

/// Appends `streams` connection streams of about `per_stream` events,
/// eight events per append (one statement, one transaction each), rounds
/// in order so every stream's versions follow its transaction ids.
async fn generate_log(db: &TestDb, streams: usize, per_stream: usize) {
    use calsync::core::events::ConnectionEvent;
    use calsync::core::interval::Interval;
    use futures::StreamExt;
    let ids: Vec<ConnectionId> = (0..streams).map(|_| ConnectionId::new_random()).collect();
    let appends = per_stream.div_ceil(8);
    let pool = db.pool.clone();
    for round in 0..appends {
        let jobs = ids.iter().enumerate().map(|(s, id)| {
            let pool = pool.clone();
            let id = *id;
            async move {
                let mut events = Vec::with_capacity(8);
                for k in 0..8 {
                    let v = round * 8 + k + 1;
                    let start = base() + TimeDelta::minutes((v % 500) as i64 * 30);
                    let event = match (v, v % 11) {
                        (1, _) => ConnectionEvent::ConnectionCreated {
                            platform_provider_id: PlatformProviderId::parse(format!("pp{s}"))
                                .unwrap(),
                            provider: CalendarProvider::Google,
                            account: ExternalAccount::parse(format!("u{s}@example.com")).unwrap(),
                            calendars: vec![cal("primary")],
                            destination_calendar: None,
                        },
                        (_, 0) => ConnectionEvent::NotificationAccepted {
                            key: format!("k{v}"),
                            channel_id: "ch".into(),
                            received_at: start,
                        },
                        (_, 5) => ConnectionEvent::ExternalEventRemoved {
                            calendar: cal("primary"),
                            event_id: format!("e{}", v % 97),
                            reason: None,
                            span: None,
                        },
                        (_, 7) => ConnectionEvent::SyncRoundCompleted {
                            zone: None,
                            calendar: cal("primary"),
                            cursor: format!("c{v}"),
                            swept_generation: None,
                            at: start,
                        },
                        _ => ConnectionEvent::ExternalEventSeen {
                            calendar: cal("primary"),
                            event_id: format!("e{}", v % 97),
                            blocks: Some(
                                Interval::new(start, start + TimeDelta::minutes(30)).unwrap(),
                            ),
                            ours: None,
                            rule: None,
                            ignored: None,
                            span: None,
                        },
                    };
                    events.push((v as i64, event));
                }
                let (mut vs, mut types, mut payloads) = (vec![], vec![], vec![]);
                for (v, e) in &events {
                    let (t, p) = e.to_parts().unwrap();
                    vs.push(*v);
                    types.push(t.to_string());
                    payloads.push(p.to_string());
                }
                let client = pool.get().await.unwrap();
                client
                    .execute(
                        "INSERT INTO events (stream, version, event_type, schema_version, payload, metadata) \
                         SELECT $1, v, t, 1, p::json, '{}' FROM unnest($2::bigint[], $3::text[], $4::text[]) AS u(v, t, p) ORDER BY v",
                        &[&id.stream().as_str(), &vs, &types, &payloads],
                    )
                    .await
                    .unwrap();
            }
        });
        futures::stream::iter(jobs)
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rate_beside_a_bare_copy_of_the_log() {
    use futures::StreamExt;
    let events: usize = std::env::var("CALSYNC_REPLAY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16_000);
    let db = TestDb::new().await;
    let streams = (events / 500).max(4);
    generate_log(&db, streams, events / streams).await;
    // The generated log was appended without projections: the first swap
    // builds the live tables, then verify must find them equal.
    let built = replay::swap(&db.store(), &quiet()).await.unwrap();
    assert!(built.differences > 0);
    let report = verify(&db, &quiet()).await;
    assert_clean(&report);

    let client = db.client().await;
    let started = std::time::Instant::now();
    let copy = client.copy_out("COPY events TO STDOUT").await.unwrap();
    futures::pin_mut!(copy);
    let mut rows = 0u64;
    while let Some(chunk) = copy.next().await {
        rows += chunk.unwrap().iter().filter(|b| **b == b'\n').count() as u64;
    }
    let copy_rate = rows as f64 / started.elapsed().as_secs_f64();
    assert_eq!(rows, report.events_read);
    // The rebuild's own read, drained without folding: the server's share.
    let started = std::time::Instant::now();
    let sql = replay::read::copy_sql(replay::read::Range::Visible, None);
    let copy = client.copy_out(&sql).await.unwrap();
    futures::pin_mut!(copy);
    while let Some(chunk) = copy.next().await {
        chunk.unwrap();
    }
    let ordered_rate = rows as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "replay: {} events, rebuild {:.0} events/s ({:.2}s, read+fold {:.2}s), bare COPY {:.0} rows/s: {:.0}% (ordered binary COPY alone {:.0} rows/s)",
        report.events_read,
        report.events_per_second,
        report.rebuild_seconds,
        report.read_seconds,
        copy_rate,
        100.0 * report.events_per_second / copy_rate,
        ordered_rate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_realistic_connections_of_both_providers_finds_no_difference() {
    let app = support::fixtures::spawn_app().with_range().start().await;
    let w = &app.world;
    for f in &app.fixtures {
        f.wait_for_expected_busy(w).await;
        w.at_rest(f.id, &f.account).await;
    }
    let report = verify(&w.db, &quiet()).await;
    assert_clean(&report);
    assert_eq!(report.streams, app.fixtures.len() as u64);
}
