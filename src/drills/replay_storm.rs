//! `replay-storm` (Guarantees 1, 2): many concurrent copies of one
//! notification plus many distinct ones. The copies are one logged event,
//! every notification ends answered 2xx (503 load shedding is retried, as
//! providers do), the distinct ones coalesce into few syncs, and the
//! server's CPU and memory are measured from /proc while it runs.

use super::harness::Harness;
use super::report::DrillReport;
use super::Sizes;
use std::time::{Duration, Instant};

/// The message number every copy carries.
const COPIED: u64 = 4_242_424;

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let copies: usize = sizes.pick(200, 10_000);
    let distinct: u64 = sizes.pick(200, 10_000);
    let (_, channel) = h.google_ready("storm@example.com", "pp-storm").await?;
    let before = h.events_of_type("notification_accepted").await?;
    let lists_before = h.provider_calls("events.list");
    let load_before = h.serve_load();

    // Sample serve's RSS while the storm runs.
    let pid = h.serve_pid();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peak_in = peak.clone();
    let sampler = tokio::spawn(async move {
        while let Some(pid) = pid {
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                })
                .unwrap_or(0);
            peak_in.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // Copies first, then the distinct ones: the dedupe window is the last
    // 100 keys, so the copies must not be outrun by 100 distinct keys.
    let started = Instant::now();
    let one: Vec<u64> = std::iter::repeat_n(COPIED, copies).collect();
    let mut storm = h.push_many(&channel, one, 200).await;
    let many = h
        .push_many(
            &channel,
            (0..distinct).map(|i| 5_000_000 + i).collect(),
            200,
        )
        .await;
    storm.ok += many.ok;
    storm.duplicates += many.duplicates;
    storm.shed += many.shed;
    storm.failed.extend(many.failed);
    let storm_secs = started.elapsed().as_secs_f64();
    let load_after = h.serve_load();
    sampler.abort();
    let peak_rss = peak.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let logged = h.events_of_type("notification_accepted").await? - before;
    let key = crate::core::dedupe::DedupeKey::google(&channel.0, COPIED);
    let copies_logged: i64 = h
        .db()
        .await?
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'notification_accepted' \
             AND payload->>'key' = $1",
            &[&key.as_str()],
        )
        .await?
        .get(0);
    let syncs = h.provider_calls("events.list") - lists_before;
    let total = copies + distinct as usize;
    r.check(
        "every notification answered 2xx",
        storm.failed.is_empty() && storm.ok == total,
        format!(
            "{} of {total} answered 2xx in {storm_secs:.1} s ({:.0}/s); {} answers were 503 \
             (load shed) and retried; final failures {:?}",
            storm.ok,
            total as f64 / storm_secs.max(0.001),
            storm.shed,
            storm.failed.iter().take(5).collect::<Vec<_>>()
        ),
    );
    r.check(
        "copies of one notification are one event",
        copies_logged == 1,
        format!(
            "{copies} concurrent copies -> {copies_logged} logged; duplicates found: {}",
            (copies_logged - 1).max(0)
        ),
    );
    r.check(
        "distinct notifications are each logged once",
        logged == distinct as i64 + 1,
        format!("{distinct} distinct + 1 copied -> {logged} logged"),
    );
    let allowed = 10 + distinct as usize / 100;
    r.check(
        "few syncs: notifications coalesce",
        syncs <= allowed,
        format!(
            "{syncs} provider syncs (events.list) for {total} notifications (allowed {allowed})"
        ),
    );
    let cpu = match (load_before, load_after) {
        (Some((a, _)), Some((b, _))) => b - a,
        _ => f64::NAN,
    };
    r.measure("storm_seconds", storm_secs);
    r.measure("serve_cpu_seconds", cpu);
    r.measure(
        "serve_cpu_percent_of_one_core",
        100.0 * cpu / storm_secs.max(0.001),
    );
    r.measure("serve_peak_rss_kb", peak_rss);
    r.check(
        "system load measured",
        cpu.is_finite() && peak_rss > 0,
        format!(
            "serve used {cpu:.2} CPU s over {storm_secs:.1} s ({:.0}% of one core), peak RSS {} MiB",
            100.0 * cpu / storm_secs.max(0.001),
            peak_rss / 1024
        ),
    );
    Ok(())
}
