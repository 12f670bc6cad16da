//! `idempotency` (Guarantees 1, 2): rapid duplicate delivery and a delayed
//! replay of the same notifications are one logged event each; every copy
//! is answered 2xx, the repeats with `duplicate`, and repeats cause no sync.

use super::harness::Harness;
use super::report::DrillReport;
use super::Sizes;
use std::time::Duration;

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    // Within the dedupe window (last 100 keys per connection) by design.
    let n: u64 = sizes.pick(20, 80);
    let copies = 3;
    let (_, channel) = h.google_ready("idem@example.com", "pp-idem").await?;
    let before = h.events_of_type("notification_accepted").await?;

    // Rapid duplicates: each message number three times at once.
    let numbers: Vec<u64> = (0..n)
        .flat_map(|i| std::iter::repeat_n(700_000 + i, copies))
        .collect();
    let rapid = h.push_many(&channel, numbers.clone(), 64).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after_rapid = h.events_of_type("notification_accepted").await? - before;
    r.check(
        "rapid duplicates: every copy answered 2xx",
        rapid.failed.is_empty() && rapid.ok == numbers.len(),
        format!(
            "{} of {} answered 2xx ({} of them `duplicate`), {} shed and retried, failures {:?}",
            rapid.ok,
            numbers.len(),
            rapid.duplicates,
            rapid.shed,
            rapid.failed
        ),
    );
    r.check(
        "rapid duplicates: one logged event per notification",
        after_rapid == n as i64 && rapid.duplicates == numbers.len() - n as usize,
        format!(
            "{n} distinct notifications x {copies} copies -> {after_rapid} logged, duplicates found in the log: {}",
            after_rapid - n as i64
        ),
    );

    // Delayed replay: the same notifications once more, later.
    tokio::time::sleep(Duration::from_millis(sizes.pick(1000, 5000))).await;
    let lists_before = h.provider_calls("events.list");
    let replay: Vec<u64> = (0..n).map(|i| 700_000 + i).collect();
    let delayed = h.push_many(&channel, replay, 16).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_replay = h.events_of_type("notification_accepted").await? - before;
    let lists = h.provider_calls("events.list") - lists_before;
    r.check(
        "delayed replay: answered 200 `duplicate`, nothing logged, no sync",
        delayed.failed.is_empty()
            && delayed.duplicates == n as usize
            && after_replay == after_rapid
            && lists == 0,
        format!(
            "{} of {n} replays answered `duplicate`; log grew by {}; \
             {lists} provider syncs (events.list) during the replay",
            delayed.duplicates,
            after_replay - after_rapid
        ),
    );
    r.measure("notifications_logged", after_replay);
    r.measure("duplicate_answers", rapid.duplicates + delayed.duplicates);
    Ok(())
}
