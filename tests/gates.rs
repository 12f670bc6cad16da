//! The gate before every provider call, from outside: for every
//! combination of the three flags × production mode × allowlist membership
//! (provider and connection) × connection lifecycle, each kind of provider
//! call happens exactly when docs/FLAGS.md says it may — read from the
//! simulator's request log, per account — and every booking accepted while
//! gated reaches its calendar exactly once after the gates open.

mod support;

use calsim::{Provider, SimConfig};
use calsync::core::decide::ConnectionCommand;
use calsync::core::fault::{Fault, FaultKind};
use calsync::core::ids::{CalendarProvider, ConnectionId};
use calsync::core::settings::{Flag, SettingsCommand};
use chrono::{TimeDelta, Utc};
use serde_json::json;
use support::{Options, World};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Active,
    Paused,
    Quarantined,
    NeedsReauthorization,
    Removed,
}

const LIFECYCLES: [Lifecycle; 5] = [
    Lifecycle::Active,
    Lifecycle::Paused,
    Lifecycle::Quarantined,
    Lifecycle::NeedsReauthorization,
    Lifecycle::Removed,
];

#[derive(Debug, Clone, Copy)]
struct Settings {
    sync: bool,
    jobs: bool,
    webhooks: bool,
    production: bool,
}

/// One connection under test.
struct Subject {
    id: ConnectionId,
    account: String,
    provider: CalendarProvider,
    /// In production mode: its provider (Google) / itself is allowlisted.
    provider_listed: bool,
    connection_listed: bool,
    lifecycle: Lifecycle,
}

/// The endpoints of each kind of call, per provider.
fn endpoints(provider: CalendarProvider, kind: &str) -> &'static [&'static str] {
    match (provider, kind) {
        (CalendarProvider::Google, "list") => &["events.list"],
        (CalendarProvider::Google, "write") => &["events.insert"],
        (CalendarProvider::Google, "upkeep") => &["events.watch"],
        (CalendarProvider::Google, _) => &["channels.stop"],
        (CalendarProvider::Microsoft, "list") => &["delta", "mailboxSettings"],
        (CalendarProvider::Microsoft, "write") => &["events.create"],
        (CalendarProvider::Microsoft, "upkeep") => &["subscriptions.renew", "subscriptions.create"],
        (CalendarProvider::Microsoft, _) => &["subscriptions.delete"],
    }
}

fn calls(w: &World, s: &Subject, kind: &str) -> usize {
    let provider = match s.provider {
        CalendarProvider::Google => Provider::Google,
        CalendarProvider::Microsoft => Provider::Graph,
    };
    let names = endpoints(s.provider, kind);
    w.sim
        .requests_for(provider, Some(&s.account))
        .iter()
        .filter(|r| names.contains(&r.endpoint.as_str()))
        .count()
}

/// docs/FLAGS.md's table, written out here on its own.
fn allowed(settings: Settings, s: &Subject, kind: &str) -> bool {
    let listed = !settings.production || (s.provider_listed && s.connection_listed);
    let active = s.lifecycle == Lifecycle::Active;
    listed
        && active
        && settings.sync
        && match kind {
            "sync" | "write" => true,
            "poll" => settings.jobs,
            "upkeep" => settings.webhooks,
            // Closing what webhooks no longer want.
            _ => !settings.webhooks,
        }
}

fn booking(n: usize, pp: &str) -> serde_json::Value {
    let start = Utc::now() + TimeDelta::days(2) + TimeDelta::minutes(30 * n as i64);
    json!({"booking_id": format!("gate-{n}"), "version": 1, "platform_provider_id": pp,
        "status": "confirmed", "start": start, "end": start + TimeDelta::minutes(30),
        "time_zone": "UTC", "title": format!("Gate {n}")})
}

async fn post_booking(w: &World, body: &serde_json::Value) {
    let base = w.base.clone().unwrap();
    let status = reqwest::Client::new()
        .post(format!("{base}/v1/bookings"))
        .bearer_auth("admin")
        .json(body)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "booking answered {status}");
}

async fn set(w: &World, command: SettingsCommand) {
    w.settings_command(command).await;
}

/// Moves to `s` without passing through a state more open than both ends
/// (each change is in force at once): allowlists and production mode first
/// when entering production, last when leaving it.
async fn apply_settings(w: &World, s: Settings, listed: &[ConnectionId]) {
    if s.production {
        production(w, s, listed).await;
    }
    for (flag, on) in [
        (Flag::SyncEnabled, s.sync),
        (Flag::JobsEnabled, s.jobs),
        (Flag::WebhooksEnabled, s.webhooks),
    ] {
        w.set_flag(flag, on).await;
    }
    if !s.production {
        production(w, s, listed).await;
    }
}

async fn production(w: &World, s: Settings, listed: &[ConnectionId]) {
    set(
        w,
        SettingsCommand::AllowProvider {
            provider: CalendarProvider::Google,
            reason: "test".into(),
        },
    )
    .await;
    for id in listed {
        set(
            w,
            SettingsCommand::AllowConnection {
                connection_id: *id,
                reason: "test".into(),
            },
        )
        .await;
    }
    set(
        w,
        SettingsCommand::SetProductionMode {
            enabled: s.production,
            reason: "test".into(),
        },
    )
    .await;
}

async fn into_lifecycle(w: &World, id: ConnectionId, lifecycle: Lifecycle) {
    let command = match lifecycle {
        Lifecycle::Active => return,
        Lifecycle::Paused => ConnectionCommand::Pause {
            reason: "test".into(),
        },
        Lifecycle::Quarantined => ConnectionCommand::Quarantine {
            restarts: 6,
            window_secs: 60,
            last_error: "test".into(),
        },
        Lifecycle::NeedsReauthorization => ConnectionCommand::RecordSyncFailure {
            calendar: None,
            fault: Fault::new(FaultKind::Reauthorize, "reauthorize", "invalid_grant"),
            unit_random: 0.5,
            attempt_started: None,
        },
        Lifecycle::Removed => ConnectionCommand::Remove {
            reason: "test".into(),
        },
    };
    w.connections
        .command(id, command, Uuid::new_v4())
        .await
        .unwrap();
}

/// Runs one settings state over a fresh set of connections: every
/// lifecycle, both providers, listed and unlisted.
async fn one_state(w: &World, settings: Settings, round: usize) {
    // Set up with every gate open: first syncs done, channels open.
    apply_settings(
        w,
        Settings {
            sync: true,
            jobs: true,
            webhooks: true,
            production: false,
        },
        &[],
    )
    .await;
    let mut subjects = Vec::new();
    for lifecycle in LIFECYCLES {
        for provider in [CalendarProvider::Google, CalendarProvider::Microsoft] {
            for connection_listed in [true, false] {
                let n = subjects.len();
                let account = match provider {
                    CalendarProvider::Google => format!("g{round}x{n}@example.com"),
                    CalendarProvider::Microsoft => format!("m{round}x{n}@contoso.com"),
                };
                let pp = format!("pp-{round}-{n}");
                let id = w
                    .connect_calendars(provider, &account, &pp, &["primary"], Some("primary"))
                    .await;
                subjects.push(Subject {
                    id,
                    account,
                    provider,
                    provider_listed: provider == CalendarProvider::Google,
                    connection_listed,
                    lifecycle,
                });
            }
        }
    }
    let ids: Vec<ConnectionId> = subjects.iter().map(|s| s.id).collect();
    w.settle(&ids).await;
    for s in &subjects {
        assert!(calls(w, s, "upkeep") >= 1, "{}: no channel", s.account);
        into_lifecycle(w, s.id, s.lifecycle).await;
    }
    w.settle(&ids).await;

    // The state under test. From here on, the log tells what each gate let
    // through. Push deliveries are dropped meanwhile: a notification of our
    // own write would ask for a sync of its own and blur "sync" and "poll".
    for provider in [Provider::Google, Provider::Graph] {
        w.sim.set_notification_faults(
            provider,
            calsim::NotificationFaults {
                drop_rate: 1.0,
                ..Default::default()
            },
        );
    }
    w.sim.clear_log();
    let listed: Vec<ConnectionId> = subjects
        .iter()
        .filter(|s| s.connection_listed)
        .map(|s| s.id)
        .collect();
    apply_settings(w, settings, &listed).await;
    // Evidence that every actor planned under the new settings: a Tick
    // queued now is handled after the change, then the actor goes quiet.
    w.connections.wake_all();
    w.settle(&ids).await;
    let closes: Vec<usize> = subjects.iter().map(|s| calls(w, s, "close")).collect();
    for (n, s) in subjects.iter().enumerate() {
        // An input asks for a sync; the platform sends a booking.
        let _ = w
            .connections
            .command(
                s.id,
                ConnectionCommand::AcceptNotification {
                    key: format!("gates:{round}:{n}"),
                    channel_id: "test-channel".into(),
                },
                Uuid::new_v4(),
            )
            .await;
        if s.lifecycle != Lifecycle::Removed {
            post_booking(w, &booking(n, &format!("pp-{round}-{n}"))).await;
        }
    }
    w.settle(&ids).await;
    let synced: Vec<usize> = subjects.iter().map(|s| calls(w, s, "list")).collect();
    let written: Vec<usize> = subjects.iter().map(|s| calls(w, s, "write")).collect();
    // Twenty minutes on: the poll and the channel renewal fall due.
    w.advance(TimeDelta::minutes(20), &ids).await;
    for (n, s) in subjects.iter().enumerate() {
        let what = format!("{settings:?} {:?} {}", s.lifecycle, s.account);
        let listed_now = calls(w, s, "list");
        assert_eq!(synced[n] > 0, allowed(settings, s, "sync"), "sync: {what}");
        assert_eq!(
            written[n] > 0,
            allowed(settings, s, "write"),
            "write: {what}"
        );
        assert_eq!(
            listed_now > synced[n],
            allowed(settings, s, "poll"),
            "poll: {what}"
        );
        assert_eq!(
            calls(w, s, "upkeep") > 0,
            allowed(settings, s, "upkeep"),
            "upkeep: {what}"
        );
        assert_eq!(
            closes[n] > 0,
            allowed(settings, s, "close"),
            "close: {what}"
        );
        assert!(closes[n] <= 1, "closed more than once: {what}");
    }

    w.sim.clear_faults();
    // Every gate open: what waited is written, exactly once — started by
    // the settings change itself (no nudge from the test).
    apply_settings(
        w,
        Settings {
            sync: true,
            jobs: true,
            webhooks: true,
            production: false,
        },
        &[],
    )
    .await;
    for (n, s) in subjects.iter().enumerate() {
        if s.lifecycle != Lifecycle::Active {
            continue;
        }
        let written = support::eventually(std::time::Duration::from_secs(10), || async {
            calls(w, s, "write") > 0 || written[n] > 0
        })
        .await;
        assert!(written, "{settings:?} {}: never written", s.account);
        w.settle(&ids).await;
        let events = match s.provider {
            CalendarProvider::Google => w.sim.google().stored_events(&s.account, "primary"),
            CalendarProvider::Microsoft => {
                Ok::<_, calsim::ApiError>(w.sim.graph().stored_events(&s.account))
            }
        }
        .unwrap();
        let copies = events
            .iter()
            .filter(|e| e.to_string().contains(&format!("Gate {n}")))
            .filter(|e| e["status"] != "cancelled")
            .count();
        assert_eq!(copies, 1, "{settings:?} {}: booking copies", s.account);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gate_state_lets_through_exactly_the_calls_it_allows() {
    let w = World::start(Options {
        serve: true,
        flag_gates: true,
        virtual_clock: true,
        sim: SimConfig {
            // Renewal falls due within the observation's twenty minutes.
            google_channel_ttl_secs: 600,
            graph_subscription_max_minutes: 10,
            ..SimConfig::for_tests()
        },
        ..Default::default()
    })
    .await;
    for (round, bits) in (0..16u8).enumerate() {
        let settings = Settings {
            sync: bits & 1 != 0,
            jobs: bits & 2 != 0,
            webhooks: bits & 4 != 0,
            production: bits & 8 != 0,
        };
        one_state(&w, settings, round).await;
    }
}
