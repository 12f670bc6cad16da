//! Channel upkeep over hours of provider time (the simulator's clock and
//! calsync's move together): short lifetimes are renewed without looping,
//! a channel that can never be (re)opened backs off and shows in status,
//! and turning webhooks off closes channels once. Every count is read from
//! the simulator's request log, per simulated hour.

mod support;

use calsim::{FaultKind, FaultRule, Provider, SimConfig};
use calsync::core::backoff::BackoffPolicy;
use calsync::core::ids::ConnectionId;
use calsync::core::settings::Flag;
use chrono::{DateTime, TimeDelta, Utc};
use support::{eventually, Options, World};

fn options(sim: SimConfig) -> Options {
    Options {
        serve: true,
        flag_gates: true,
        virtual_clock: true,
        // Production's backoff: the point is what an hour costs.
        backoff: Some(BackoffPolicy::default()),
        sim,
        ..Default::default()
    }
}

/// Calls of `account` to `endpoints` in each hour after `from`.
fn per_hour(
    w: &World,
    provider: Provider,
    account: &str,
    endpoints: &[&str],
    from: DateTime<Utc>,
    hours: usize,
) -> Vec<usize> {
    let mut counts = vec![0; hours];
    for r in w.sim.requests_for(provider, Some(account)) {
        if !endpoints.contains(&r.endpoint.as_str()) || r.at < from {
            continue;
        }
        let hour = ((r.at - from).num_seconds() / 3600) as usize;
        if hour < hours {
            counts[hour] += 1;
        }
    }
    eprintln!("{account} {endpoints:?} per hour: {counts:?}");
    counts
}

/// Runs `hours` of provider time in steps of `step`.
async fn run_for(w: &World, ids: &[ConnectionId], hours: i64, step: TimeDelta) {
    let steps = TimeDelta::hours(hours).num_seconds() / step.num_seconds();
    for _ in 0..steps {
        w.advance(step, ids).await;
    }
}

async fn open_channels(w: &World, id: ConnectionId) -> i64 {
    w.db.client()
        .await
        .query_one(
            "SELECT count(*) FROM channels WHERE connection_id = $1 AND closed_at IS NULL",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_channel(w: &World, id: ConnectionId) {
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            open_channels(w, id).await >= 1
        })
        .await,
        "no channel was opened"
    );
    w.settle(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_minute_google_channel_is_reestablished_every_ten_minutes_for_hours_and_never_loops()
{
    let w = World::start(options(SimConfig {
        google_channel_ttl_secs: 120,
        ..SimConfig::for_tests()
    }))
    .await;
    let account = "short@example.com";
    let id = w.google_connection(account).await;
    wait_for_channel(&w, id).await;
    let from = w.sim.now();
    run_for(&w, &[id], 3, TimeDelta::seconds(30)).await;
    let watches = per_hour(&w, Provider::Google, account, &["events.watch"], from, 3);
    let stops = per_hour(&w, Provider::Google, account, &["channels.stop"], from, 3);
    let all = per_hour(
        &w,
        Provider::Google,
        account,
        &["events.watch", "channels.stop", "events.list"],
        from,
        3,
    );
    for h in 0..3 {
        // A grant of two minutes lapses; upkeep waits out the ten-minute
        // floor, so about six watches an hour (never one a minute, which
        // would log 2,880 events a day for this one calendar). A lapsed
        // channel needs no stop.
        assert!((5..=7).contains(&watches[h]), "hour {h}: {watches:?}");
        assert!(stops[h] <= 7, "hour {h}: {stops:?}");
        assert!(all[h] < 40, "hour {h}: {all:?} calls");
    }
    assert!(open_channels(&w, id).await <= 1, "never two live channels");
    let (status, errors, _) = w.status(id).await;
    assert_eq!((status.as_str(), errors), ("active", 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_minute_graph_subscription_is_renewed_in_place_for_hours() {
    let w = World::start(options(SimConfig {
        graph_subscription_max_minutes: 30,
        ..SimConfig::for_tests()
    }))
    .await;
    let account = "short@contoso.com";
    let id = w.graph_connection(account).await;
    wait_for_channel(&w, id).await;
    let from = w.sim.now();
    run_for(&w, &[id], 3, TimeDelta::seconds(30)).await;
    let renews = per_hour(
        &w,
        Provider::Graph,
        account,
        &["subscriptions.renew"],
        from,
        3,
    );
    let creates = per_hour(
        &w,
        Provider::Graph,
        account,
        &["subscriptions.create"],
        from,
        3,
    );
    for h in 0..3 {
        // Half of the granted thirty minutes.
        assert!((3..=5).contains(&renews[h]), "hour {h}: {renews:?}");
        assert_eq!(
            creates[h], 0,
            "hour {h}: renewed in place, never re-created"
        );
    }
    assert_eq!(open_channels(&w, id).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_channel_that_can_never_reopen_backs_off_and_shows_in_status() {
    let w = World::start(options(SimConfig {
        google_channel_ttl_secs: 3600,
        ..SimConfig::for_tests()
    }))
    .await;
    let account = "noreopen@example.com";
    let id = w.google_connection(account).await;
    wait_for_channel(&w, id).await;
    // From now on the provider refuses every watch, for good.
    w.sim.add_fault(FaultRule {
        provider: Provider::Google,
        endpoint: Some("events.watch".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::Status {
            code: 403,
            retry_after: None,
            reason: Some("forbidden".into()),
        },
        remaining: None,
    });
    let from = w.sim.now();
    run_for(&w, &[id], 6, TimeDelta::seconds(60)).await;
    let watches = per_hour(&w, Provider::Google, account, &["events.watch"], from, 6);
    let lists = per_hour(&w, Provider::Google, account, &["events.list"], from, 6);
    // Renewal falls due after 30 min; then one attempt per backoff step
    // (2 s doubling to the 15-minute cap), never one per tick.
    assert!(watches.iter().sum::<usize>() >= 10, "{watches:?}");
    for h in 1..6 {
        assert!(watches[h] <= 12, "hour {h}: {watches:?} watch attempts");
        assert!(lists[h] <= 8, "hour {h}: {lists:?} lists (polls only)");
    }
    for h in 3..6 {
        assert!(watches[h] <= 5, "hour {h}: backoff at its cap: {watches:?}");
    }
    let (status, errors, _) = w.status(id).await;
    assert_eq!(status, "degraded");
    assert!(errors > 5, "error_count {errors}");
    let client = w.db.client().await;
    let row = client
        .query_one(
            "SELECT c.last_error, k.channel_failures, k.channel_error FROM connections c \
             JOIN connection_calendars k USING (connection_id) WHERE connection_id = $1",
            &[&id.as_uuid()],
        )
        .await
        .unwrap();
    let last_error: String = row.get(0);
    let failures: i32 = row.get(1);
    let channel_error: String = row.get(2);
    assert!(last_error.contains("channel open"), "{last_error}");
    assert!(failures > 5, "{failures}");
    assert!(channel_error.contains("403"), "{channel_error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_subscription_whose_renewal_fails_for_good_backs_off() {
    let w = World::start(options(SimConfig {
        graph_subscription_max_minutes: 120,
        ..SimConfig::for_tests()
    }))
    .await;
    let account = "norenew@contoso.com";
    let id = w.graph_connection(account).await;
    wait_for_channel(&w, id).await;
    for endpoint in ["subscriptions.renew", "subscriptions.create"] {
        w.sim.add_fault(FaultRule {
            provider: Provider::Graph,
            endpoint: Some(endpoint.into()),
            account: None,
            path: None,
            body_contains: None,
            kind: FaultKind::Status {
                code: 400,
                retry_after: None,
                reason: None,
            },
            remaining: None,
        });
    }
    let from = w.sim.now();
    run_for(&w, &[id], 5, TimeDelta::seconds(60)).await;
    let attempts = per_hour(
        &w,
        Provider::Graph,
        account,
        &["subscriptions.renew", "subscriptions.create"],
        from,
        5,
    );
    let deltas = per_hour(&w, Provider::Graph, account, &["delta"], from, 5);
    for h in 0..5 {
        assert!(attempts[h] <= 12, "hour {h}: {attempts:?}");
        assert!(deltas[h] <= 8, "hour {h}: {deltas:?} delta rounds");
    }
    assert!(attempts.iter().sum::<usize>() >= 5, "{attempts:?}");
    let (status, errors, _) = w.status(id).await;
    assert_eq!(status, "degraded");
    assert!(errors > 3, "error_count {errors}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_off_closes_the_open_channel_once_and_syncs_only_at_the_poll() {
    let w = World::start(options(SimConfig::for_tests())).await;
    let account = "hooksoff@example.com";
    let id = w.google_connection(account).await;
    wait_for_channel(&w, id).await;
    let from = w.sim.now();
    w.set_flag(Flag::WebhooksEnabled, false).await;
    assert!(
        eventually(std::time::Duration::from_secs(10), || async {
            open_channels(&w, id).await == 0
        })
        .await,
        "the channel was not closed"
    );
    w.settle(&[id]).await;
    run_for(&w, &[id], 2, TimeDelta::seconds(60)).await;
    let stops = per_hour(&w, Provider::Google, account, &["channels.stop"], from, 2);
    let watches = per_hour(&w, Provider::Google, account, &["events.watch"], from, 2);
    let lists = per_hour(&w, Provider::Google, account, &["events.list"], from, 2);
    assert_eq!(stops.iter().sum::<usize>(), 1, "{stops:?}");
    assert_eq!(watches.iter().sum::<usize>(), 0, "{watches:?}");
    for h in 0..2 {
        // The 15-minute poll (±10 %), nothing back to back.
        assert!((3..=6).contains(&lists[h]), "hour {h}: {lists:?}");
    }
}
