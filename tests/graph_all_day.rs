//! Graph all-day events through the simulator, the sync engine and the
//! busy projection: a day off is a day in the owner's zone, not a UTC day.
//!
//! Graph renders all-day events as floating midnights labelled with the
//! requested zone (UTC here) and keeps the event's zone in
//! `originalStartTimeZone` (`shared/PROVIDERS.md` §4). So the day must be
//! read in that zone, or — when it is a legacy custom zone or missing — in
//! the mailbox's zone (`mailboxSettings.timeZone`). Read as UTC, a Sydney
//! day off left 09:00 and 10:00 bookable.
//!
//! The day is 12 December of the first year in which it is still ahead
//! (the sync window is around the real clock); Sydney is on AEDT (+11) and
//! Honolulu on HST (−10) every 12 December, so the expected instants are
//! fixed hours of fixed dates.

mod support;

use calsync::core::availability::{weekly_free_slots, SlotSpec, WeeklyRule};
use calsync::core::interval::Interval;
use chrono::{DateTime, Datelike, NaiveTime, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::{json, Value};
use std::time::Duration;
use support::{eventually, World};

/// The first 12 December at least two days ahead.
fn year_of_the_day() -> i32 {
    let soon = Utc::now() + chrono::Duration::days(2);
    if (soon.month(), soon.day()) <= (12, 12) {
        soon.year()
    } else {
        soon.year() + 1
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn all_day(year: i32, zone: &str, original: Option<Value>) -> Value {
    let mut event = json!({ "subject": "day off", "isAllDay": true, "showAs": "oof",
        "start": { "dateTime": format!("{year}-12-12T00:00:00"), "timeZone": zone },
        "end": { "dateTime": format!("{year}-12-13T00:00:00"), "timeZone": zone } });
    if let Some(original) = original {
        // What desktop Outlook leaves behind (simulator control API only).
        event["originalStartTimeZone"] = original;
    }
    event
}

/// 09:00–17:00 every day of the week, in `zone`, as 1-hour slots.
fn nine_to_five(zone: Tz, range: Interval, busy: &[Interval]) -> Vec<Interval> {
    let rules: Vec<WeeklyRule> = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ]
    .into_iter()
    .map(|d| {
        (
            d,
            NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
        )
    })
    .collect();
    weekly_free_slots(
        &rules,
        zone,
        range,
        busy,
        &SlotSpec::new(TimeDelta::hours(1)),
    )
    .unwrap()
}

async fn busy_when_synced(
    w: &World,
    id: calsync::core::ids::ConnectionId,
    rows: usize,
) -> Vec<Interval> {
    assert!(
        eventually(Duration::from_secs(15), || async {
            w.busy(id).await.len() == rows
        })
        .await,
        "busy rows: {:?}",
        w.busy(id).await
    );
    w.busy(id)
        .await
        .into_iter()
        .map(|(_, s, e)| Interval::new(s, e).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sydney_mailbox_day_off_blocks_the_sydney_day() {
    let w = World::new().await;
    let upn = "syd@contoso.com";
    let id = w
        .graph_connection_in(upn, "AUS Eastern Standard Time")
        .await;
    let year = year_of_the_day();
    // Its own zone unknown (a legacy custom zone) or absent: the mailbox's
    // zone decides.
    let graph = w.sim.graph();
    let custom = graph
        .create_event(
            upn,
            all_day(
                year,
                "AUS Eastern Standard Time",
                Some(json!("tzone://Microsoft/Custom")),
            ),
        )
        .unwrap();
    assert_eq!(custom["originalStartTimeZone"], "tzone://Microsoft/Custom");
    assert_eq!(
        custom["start"]["dateTime"],
        format!("{year}-12-12T00:00:00.0000000")
    );
    assert_eq!(custom["start"]["timeZone"], "UTC");
    graph
        .create_event(upn, all_day(year, "Australia/Sydney", Some(Value::Null)))
        .unwrap();
    w.notify(id, "graph:sydney:1").await;
    let busy = busy_when_synced(&w, id, 2).await;
    let day = Interval::new(
        utc(&format!("{year}-12-11T13:00:00Z")),
        utc(&format!("{year}-12-12T13:00:00Z")),
    )
    .unwrap();
    assert_eq!(busy, vec![day, day]);

    // With 09:00–17:00 Sydney hours, the day off offers nothing ...
    let sydney: Tz = "Australia/Sydney".parse().unwrap();
    assert_eq!(nine_to_five(sydney, day, &busy), Vec::<Interval>::new());
    // ... whereas the UTC reading of its dates left the morning open.
    let utc_day = Interval::new(
        utc(&format!("{year}-12-12T00:00:00Z")),
        utc(&format!("{year}-12-13T00:00:00Z")),
    )
    .unwrap();
    let wrong = nine_to_five(sydney, day, &[utc_day]);
    assert_eq!(
        wrong.iter().map(|s| s.start()).collect::<Vec<_>>(),
        vec![
            utc(&format!("{year}-12-11T22:00:00Z")),
            utc(&format!("{year}-12-11T23:00:00Z"))
        ],
        "09:00 and 10:00 Sydney"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hawaiian_day_off_in_a_utc_mailbox_blocks_the_hawaiian_day() {
    let w = World::new().await;
    let upn = "aloha@contoso.com";
    let id = w.graph_connection(upn).await;
    let year = year_of_the_day();
    let created = w
        .sim
        .graph()
        .create_event(upn, all_day(year, "Hawaiian Standard Time", None))
        .unwrap();
    assert_eq!(created["originalStartTimeZone"], "Hawaiian Standard Time");
    w.notify(id, "graph:hawaii:1").await;
    let busy = busy_when_synced(&w, id, 1).await;
    let day = Interval::new(
        utc(&format!("{year}-12-12T10:00:00Z")),
        utc(&format!("{year}-12-13T10:00:00Z")),
    )
    .unwrap();
    assert_eq!(busy, vec![day]);
    let honolulu: Tz = "Pacific/Honolulu".parse().unwrap();
    assert_eq!(nine_to_five(honolulu, day, &busy), Vec::<Interval>::new());
    // Read as a UTC day, 14:00–17:00 Honolulu stayed bookable.
    let utc_day = Interval::new(
        utc(&format!("{year}-12-12T00:00:00Z")),
        utc(&format!("{year}-12-13T00:00:00Z")),
    )
    .unwrap();
    let wrong = nine_to_five(honolulu, day, &[utc_day]);
    assert_eq!(
        wrong.iter().map(|s| s.start()).collect::<Vec<_>>(),
        vec![
            utc(&format!("{year}-12-13T00:00:00Z")),
            utc(&format!("{year}-12-13T01:00:00Z")),
            utc(&format!("{year}-12-13T02:00:00Z"))
        ],
        "14:00, 15:00 and 16:00 Honolulu"
    );
}
