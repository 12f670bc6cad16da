//! Where a change's webhook → busy latency goes, stage by stage, from
//! records kept outside the code under test as far as possible: the
//! simulator's delivery and request logs, the event log's own fields, and
//! the visibility probe.
//!
//! For the k-th change on an account (changes go round-robin, one
//! notification each, no faults), the k-th notification of its channel
//! (by `X-Goog-Message-Number`, which calsync keeps in the dedupe key):
//! 1. `push`: change made → webhook received (that notification's
//!    `received_at` in `notification_accepted`): the simulator's push
//!    queue and the HTTP hop;
//! 2. `notification commit`: received → the simulator got its answer (the
//!    delivery of the same message number; calsync answers after the
//!    commit);
//! 3. `sync start`: received → the first `events.list` of that account the
//!    simulator logged at or after it: the actor's scheduling, the sync
//!    spacing, credentials;
//! 4. `provider + page`: that request → the transaction that recorded the
//!    event began (`committed_at` of its `external_event_seen`, which is
//!    the transaction's start): the round trip, the page's decoding, the
//!    wait for the group commit;
//! 5. `page commit`: that transaction began → the probe saw the busy row:
//!    the commit itself plus the probe's resolution.
//!
//! Each stage is reported by its percentiles; they need not add up (a p99
//! of a sum is not the sum of p99s).

use super::report::{percentile, Figure, Report};
use super::visible::Seen;
use calsim::request_log::{DeliveryRecord, RequestRecord};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// One change: the account it went to and when it was made.
pub(super) struct Change {
    pub event_id: String,
    pub account: String,
    pub connection: String,
    pub channel: String,
    pub made: DateTime<Utc>,
}

/// What the event log says of the run.
#[derive(Default)]
pub(super) struct LogTimes {
    /// Per connection: each accepted notification's message number and
    /// `received_at`, by message number.
    pub received: HashMap<String, Vec<(u64, DateTime<Utc>)>>,
    /// Per external event id: when the transaction that recorded it began.
    pub page_began: HashMap<String, DateTime<Utc>>,
}

pub(super) async fn log_times(
    client: &tokio_postgres::Client,
    since: DateTime<Utc>,
) -> anyhow::Result<LogTimes> {
    let mut times = LogTimes::default();
    for row in client
        .query(
            "SELECT substr(stream, 12), payload->>'key', \
                    (payload->>'received_at')::timestamptz \
               FROM events WHERE event_type = 'notification_accepted' AND committed_at >= $1",
            &[&since],
        )
        .await?
    {
        let key: String = row.get(1);
        if let Some(number) = message_number(&key) {
            times
                .received
                .entry(row.get(0))
                .or_default()
                .push((number, row.get(2)));
        }
    }
    for list in times.received.values_mut() {
        list.sort();
    }
    for row in client
        .query(
            "SELECT payload->>'event_id', committed_at FROM events \
              WHERE event_type = 'external_event_seen' AND committed_at >= $1",
            &[&since],
        )
        .await?
    {
        times.page_began.insert(row.get(0), row.get(1));
    }
    Ok(times)
}

/// The message number at the end of a Google dedupe key
/// (`google|<n>:<channel>|<n>:<number>`, see `core::dedupe`).
fn message_number(key: &str) -> Option<u64> {
    key.rsplit(':').next()?.parse().ok()
}

fn header<'a>(d: &'a DeliveryRecord, name: &str) -> Option<&'a str> {
    d.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// Adds each stage's p50 / p99 to `report`; returns how many changes could
/// be traced through every stage.
pub(super) fn report_stages(
    report: &mut Report,
    changes: &[Change],
    log: &LogTimes,
    deliveries: &[DeliveryRecord],
    requests: &[RequestRecord],
    seen: &[Seen],
) -> usize {
    // The simulator's answers by (channel, message number), lists per
    // account in order.
    let mut answered: HashMap<(&str, u64), DateTime<Utc>> = HashMap::new();
    for d in deliveries.iter().filter(|d| d.attempt <= 1) {
        if let Some(n) = header(d, "X-Goog-Message-Number").and_then(|n| n.parse().ok()) {
            answered.insert((d.subject.as_str(), n), d.at);
        }
    }
    let mut lists: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for r in requests.iter().filter(|r| r.endpoint == "events.list") {
        if let Some(account) = &r.account {
            lists.entry(account.as_str()).or_default().push(r.at);
        }
    }
    let visible: HashMap<&str, DateTime<Utc>> =
        seen.iter().map(|s| (s.event_id.as_str(), s.at)).collect();

    let mut nth: HashMap<&str, usize> = HashMap::new();
    let mut stages: [Vec<f64>; 5] = Default::default();
    let mut traced = 0;
    for change in changes {
        let k = nth.entry(change.account.as_str()).or_default();
        let index = *k;
        *k += 1;
        let Some(&(number, received)) = log
            .received
            .get(&change.connection)
            .and_then(|v| v.get(index))
        else {
            continue;
        };
        let Some(&answer) = answered.get(&(change.channel.as_str(), number)) else {
            continue;
        };
        let list = lists
            .get(change.account.as_str())
            .and_then(|v| v.iter().find(|at| **at >= received));
        let began = log.page_began.get(&change.event_id);
        let shown = visible.get(change.event_id.as_str());
        let (Some(&list), Some(&began), Some(&shown)) = (list, began, shown) else {
            continue;
        };
        traced += 1;
        stages[0].push(ms(change.made, received));
        stages[1].push(ms(received, answer));
        stages[2].push(ms(received, list));
        stages[3].push(ms(list, began));
        stages[4].push(ms(began, shown));
    }
    let names = [
        "stage 1 push (made -> webhook received)",
        "stage 2 notification commit (received -> answered)",
        "stage 3 sync start (received -> events.list)",
        "stage 4 provider + page (events.list -> page txn began)",
        "stage 5 page commit (page txn began -> visible)",
    ];
    for (name, values) in names.iter().zip(&stages) {
        report.figure(Figure::single(
            &format!("{name} p50"),
            "ms",
            percentile(values, 50.0),
        ));
        report.figure(Figure::single(
            &format!("{name} p99"),
            "ms",
            percentile(values, 99.0),
        ));
    }
    report.figure(Figure::single(
        "changes traced through every stage",
        "changes",
        traced as f64,
    ));
    traced
}
