//! The availability read (`store::availability::availability_inputs`)
//! finds exactly the busy time overlapping a window, merged — short ones,
//! whole days, and long ones that began long before the window (the
//! query's second half, migration 0011's partial index) — for several
//! providers at once, each with its own freshness, and nothing of other
//! providers. Checked against a plain overlap filter over many windows.

use calsync::core::interval::Interval;
use calsync::store::availability::availability_inputs;
use calsync::testkit::TestDb;
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 3, 1, 0, 0, 0).unwrap()
}

/// (start, end) in minutes from t0: edge cases around a window at day 10,
/// then random spans from minutes to months.
fn spans(seed: u64) -> Vec<(i64, i64)> {
    let day = 24 * 60;
    let mut spans = vec![
        (10 * day - 30, 10 * day),            // ends exactly at the window start
        (10 * day - 30, 10 * day + 1),        // one minute inside
        (9 * day, 10 * day + 1),              // exactly a day + 1 min, from a day before
        (9 * day - 1, 10 * day + 1),          // longer than a day, started earlier
        (9 * day + 1, 10 * day + 2 * day),    // under a day before, long after
        (0, 400 * day),                       // a sabbatical over everything
        (8 * day, 9 * day),                   // a whole day, before
        (10 * day - 2 * day, 10 * day - day), // two days before, ends before
        (24 * day, 25 * day),                 // starts at the window end
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..400 {
        let start = rng.random_range(0..60 * day);
        let length = match rng.random_range(0..4) {
            0 => rng.random_range(1..120),
            1 => day,
            2 => rng.random_range(day + 1..10 * day),
            _ => rng.random_range(1..90 * day),
        };
        spans.push((start, start + length));
    }
    spans
}

/// A working calendar: mostly meetings of minutes to hours, which overlap
/// and touch each other often (so merging has work to do), a few whole
/// days, a few multi-day trips; no span covers the whole range.
fn meetings(seed: u64) -> Vec<(i64, i64)> {
    let day = 24 * 60;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut spans = vec![(10 * day - 30, 10 * day), (10 * day, 10 * day + 30)];
    for _ in 0..400 {
        // On a 15-minute grid, so intervals often touch exactly.
        let start = rng.random_range(0..60 * 96) * 15;
        let length = match rng.random_range(0..100) {
            0..=93 => rng.random_range(1..12) * 15,
            94..=97 => day,
            _ => rng.random_range(day + 1..3 * day),
        };
        spans.push((start, start + length));
    }
    spans
}

async fn insert(client: &tokio_postgres::Client, provider: &str, spans: &[(i64, i64)]) -> Uuid {
    let connection = Uuid::new_v4();
    client
        .execute(
            "INSERT INTO connections (connection_id, platform_provider_id, provider, account, \
               calendars, status, stream_version) \
             VALUES ($1, $2, 'google', $3, '[]', 'active', 1)",
            &[&connection, &provider, &format!("{provider}@example.com")],
        )
        .await
        .unwrap();
    for cal in ["primary", "team@group.calendar.google.com"] {
        client
            .execute(
                "INSERT INTO connection_calendars (connection_id, calendar_id, has_cursor, \
                   generation, full_sync_in_progress, last_success_at) \
                 VALUES ($1, $2, true, 1, false, now())",
                &[&connection, &cal],
            )
            .await
            .unwrap();
    }
    for (i, (s, e)) in spans.iter().enumerate() {
        let calendar = if i % 2 == 0 {
            "primary"
        } else {
            "team@group.calendar.google.com"
        };
        client
            .execute(
                "INSERT INTO busy_intervals (platform_provider_id, provider, external_event_id, \
                   connection_id, calendar_id, starts_at, ends_at, generation) \
                 VALUES ($1, 'google', $2, $3, $4, $5, $6, 1)",
                &[
                    &provider,
                    &format!("e{i}"),
                    &connection,
                    &calendar,
                    &(t0() + Duration::minutes(*s)),
                    &(t0() + Duration::minutes(*e)),
                ],
            )
            .await
            .unwrap();
    }
    connection
}

/// The busy time overlapping any of `reach`: every busy interval that
/// overlaps one, merged where they overlap or touch.
fn expected(spans: &[(i64, i64)], reach: &[Interval]) -> Vec<Interval> {
    let mut v: Vec<Interval> = spans
        .iter()
        .map(|(s, e)| {
            Interval::new(t0() + Duration::minutes(*s), t0() + Duration::minutes(*e)).unwrap()
        })
        .filter(|b| {
            reach
                .iter()
                .any(|r| b.start() < r.end() && b.end() > r.start())
        })
        .collect();
    v.sort();
    // The read answers the union: overlapping or touching intervals merged.
    let mut merged: Vec<Interval> = Vec::new();
    for b in v {
        match merged.last_mut() {
            Some(last) if b.start() <= last.end() => {
                if b.end() > last.end() {
                    *last = Interval::new(last.start(), b.end()).unwrap();
                }
            }
            _ => merged.push(b),
        }
    }
    merged
}

#[tokio::test]
async fn the_read_finds_exactly_the_busy_time_overlapping_its_spans_for_each_provider() {
    let db = TestDb::new().await;
    let client = db.client().await;
    // pp-a: long spans and a sabbatical (the query's second half); pp-b:
    // meetings, whose merged union has many pieces.
    let (a, b) = (spans(1), meetings(2));
    let conn_a = insert(&client, "pp-a", &a).await;
    insert(&client, "pp-b", &b).await;
    client
        .batch_execute("ANALYZE busy_intervals")
        .await
        .unwrap();
    let store = db.store();
    let ids = vec![
        "pp-a".to_string(),
        "pp-b".to_string(),
        "pp-none".to_string(),
    ];
    // Spans as the handler sends them: sorted and apart; one, none, or
    // several (the weekly hours of a fortnight), some of them days long.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let day = 24 * 60;
    let mut trials: Vec<Vec<(i64, i64)>> = vec![vec![(10 * day, 24 * day)], vec![]];
    for _ in 0..80 {
        let mut at = rng.random_range(-5 * day..70 * day);
        let mut reach = Vec::new();
        for _ in 0..rng.random_range(1..12) {
            let len = if rng.random_bool(0.2) {
                rng.random_range(1..5 * day)
            } else {
                rng.random_range(1..10 * 60)
            };
            reach.push((at, at + len));
            at += len + rng.random_range(1..2 * day);
        }
        trials.push(reach);
    }
    let mut found = 0;
    let mut pieces = 0;
    for minutes in trials {
        let reach: Vec<Interval> = minutes
            .iter()
            .map(|(s, e)| {
                Interval::new(t0() + Duration::minutes(*s), t0() + Duration::minutes(*e)).unwrap()
            })
            .collect();
        let inputs = availability_inputs(&store, &ids, &reach).await.unwrap();
        assert_eq!(inputs.len(), 3);
        for (input, spans) in inputs.iter().zip([&a, &b]) {
            // Ascending as read, not sorted here.
            let got = input.busy.clone();
            let want = expected(spans, &reach);
            assert_eq!(got, want, "spans {minutes:?}");
            found += got.len();
            // Merged means apart: no two answered intervals touch.
            assert!(got.windows(2).all(|p| p[0].end() < p[1].start()), "{got:?}");
        }
        pieces += inputs[1].busy.len();
        assert!(inputs[2].busy.is_empty() && inputs[2].freshness.is_empty());
        assert_eq!(inputs[0].freshness.len(), 1);
        assert_eq!(inputs[0].freshness[0].connection_id, conn_a);
        assert_eq!(inputs[0].freshness[0].calendars.len(), 2);
    }
    assert!(
        found > 500 && pieces > 300,
        "the spans found too little to prove anything: {found}, {pieces} of pp-b's"
    );
}
