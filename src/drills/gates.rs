//! `gates` (Guarantees 6, 9): under traffic, the three flags and
//! production mode are toggled through every combination, with one
//! allowlisted Google connection, one unlisted Google connection and one
//! Graph connection whose provider is not allowlisted. The simulator's
//! request log must show no sync and no write from a connection while its
//! gate is closed, no burst when a gate opens, and every booking accepted
//! while gated must reach its calendar exactly once afterwards.

use super::harness::{eventually, tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use calsim::Provider;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

struct Subject {
    id: String,
    account: &'static str,
    provider: Provider,
    pp: &'static str,
    /// Open in production mode (provider and connection allowlisted).
    listed: bool,
}

impl Subject {
    fn list_endpoints(&self) -> &'static [&'static str] {
        match self.provider {
            Provider::Google => &["events.list"],
            Provider::Graph => &["delta", "mailboxSettings"],
        }
    }
    fn write_endpoints(&self) -> &'static [&'static str] {
        match self.provider {
            Provider::Google => &["events.insert", "events.patch", "events.delete"],
            Provider::Graph => &["events.create", "events.update", "events.delete"],
        }
    }
}

/// A call made while a gate is closed may still be the tail of a task that
/// started just before it closed: this much grace.
const GRACE: Duration = Duration::from_millis(400);

async fn put(h: &Harness, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
    let (status, answer) = h.admin(Method::PUT, path, Some(body)).await?;
    anyhow::ensure!(status == 200, "PUT {path} answered {status}: {answer}");
    Ok(())
}

async fn settings(
    h: &Harness,
    sync: bool,
    jobs: bool,
    webhooks: bool,
    prod: bool,
) -> anyhow::Result<()> {
    // Never through a state more open than both ends: production on first,
    // off last (changes made through this node are in force at once).
    if prod {
        put(
            h,
            "/admin/production",
            json!({"enabled": true, "reason": "gates drill"}),
        )
        .await?;
    }
    for (flag, on) in [
        ("sync_enabled", sync),
        ("jobs_enabled", jobs),
        ("webhooks_enabled", webhooks),
    ] {
        h.set_flag(flag, on).await?;
    }
    if !prod {
        put(
            h,
            "/admin/production",
            json!({"enabled": false, "reason": "gates drill"}),
        )
        .await?;
    }
    Ok(())
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let traffic = Duration::from_millis(sizes.pick(1200, 4000));
    let (listed, _) = h
        .google_ready("gate-listed@example.com", "pp-gate-listed")
        .await?;
    let (unlisted, _) = h
        .google_ready("gate-unlisted@example.com", "pp-gate-unlisted")
        .await?;
    let (graph, _) = h
        .graph_ready("gate-graph@contoso.com", "pp-gate-graph")
        .await?;
    for path in [
        "/admin/allowlist/providers/google".to_string(),
        format!("/admin/allowlist/connections/{listed}"),
        format!("/admin/allowlist/connections/{graph}"),
    ] {
        let (status, body) = h.admin(Method::POST, &path, None).await?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
    }
    let subjects = [
        Subject {
            id: listed,
            account: "gate-listed@example.com",
            provider: Provider::Google,
            pp: "pp-gate-listed",
            listed: true,
        },
        Subject {
            id: unlisted,
            account: "gate-unlisted@example.com",
            provider: Provider::Google,
            pp: "pp-gate-unlisted",
            listed: false,
        },
        Subject {
            id: graph,
            account: "gate-graph@contoso.com",
            provider: Provider::Graph,
            pp: "pp-gate-graph",
            listed: false,
        },
    ];
    let mut violations = Vec::new();
    let mut booked = Vec::new();
    let mut edits = 0u64;
    for bits in 0..16u8 {
        let (sync, jobs, webhooks, prod) =
            (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0);
        settings(h, sync, jobs, webhooks, prod).await?;
        tokio::time::sleep(GRACE).await;
        let from = chrono::Utc::now();
        // Traffic: calendar edits (the simulators push notifications when
        // webhooks are on) and bookings, for every connection.
        let end = std::time::Instant::now() + traffic;
        let mut n = 0;
        while std::time::Instant::now() < end {
            for s in &subjects {
                let (start, stop) = tomorrow(8 + (edits % 10) as i64);
                edits += 1;
                match s.provider {
                    Provider::Google => {
                        let _ = h.sim.google().upsert_event(
                            s.account,
                            "primary",
                            json!({
                                "summary": format!("edit {edits}"),
                                "start": {"dateTime": start.to_rfc3339()},
                                "end": {"dateTime": stop.to_rfc3339()},
                            }),
                        );
                    }
                    Provider::Graph => {
                        let fmt = "%Y-%m-%dT%H:%M:%S";
                        let _ = h.sim.graph().create_event(s.account, json!({
                            "subject": format!("edit {edits}"),
                            "start": {"dateTime": start.format(fmt).to_string(), "timeZone": "UTC"},
                            "end": {"dateTime": stop.format(fmt).to_string(), "timeZone": "UTC"},
                        }));
                    }
                }
                let id = format!("gate-{bits}-{n}-{}", s.pp);
                let (status, body) = h.book(&id, s.pp, 12 + (n % 6) as i64).await?;
                anyhow::ensure!(status == 200, "booking {id} answered {status}: {body}");
                booked.push((id, s.provider, s.account));
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let to = chrono::Utc::now();
        for s in &subjects {
            let open = sync && (!prod || s.listed);
            if open {
                continue;
            }
            let lists = h.calls_since(s.provider, s.account, s.list_endpoints(), from)
                - h.calls_since(s.provider, s.account, s.list_endpoints(), to);
            let writes = h.calls_since(s.provider, s.account, s.write_endpoints(), from)
                - h.calls_since(s.provider, s.account, s.write_endpoints(), to);
            if lists + writes > 0 {
                violations.push(format!(
                    "sync={sync} jobs={jobs} webhooks={webhooks} production={prod}: {} made {lists} sync and {writes} write calls while gated",
                    s.account
                ));
            }
        }
    }
    r.check(
        "no sync or write call from a gated connection, in 16 flag × production combinations",
        violations.is_empty(),
        if violations.is_empty() {
            format!(
                "{} bookings and {edits} calendar edits under traffic; request log clean",
                booked.len()
            )
        } else {
            violations.join("; ")
        },
    );

    // Every gate open: what waited goes out once, without a burst.
    let opened = chrono::Utc::now();
    settings(h, true, true, true, false).await?;
    let all_written = eventually(Duration::from_secs(sizes.pick(30, 60)), || async {
        let pending = h
            .count("SELECT count(*) FROM booking_events WHERE state <> 'written'")
            .await
            .unwrap_or(-1);
        pending == 0
    })
    .await;
    // Sync rounds completed in the first two seconds: the syncs the gates
    // held back coalesce into one round; any further round answers a
    // notification that arrived after the gates opened (the bookings going
    // out make the provider push), never one per input held back.
    let mut burst = Vec::new();
    let window = |event: &str, id: &str| {
        format!(
            "SELECT count(*) FROM events WHERE stream = 'connection-{id}' \
             AND event_type = '{event}' AND committed_at BETWEEN '{}' AND '{}'",
            opened.to_rfc3339(),
            (opened + chrono::Duration::seconds(2)).to_rfc3339()
        )
    };
    for s in &subjects {
        let rounds = h.count(&window("sync_round_completed", &s.id)).await?;
        let fresh = h.count(&window("notification_accepted", &s.id)).await?;
        let held = h
            .count(&format!(
                "SELECT count(*) FROM events WHERE stream = 'connection-{}' \
                 AND event_type = 'notification_accepted' AND committed_at < '{}'",
                s.id,
                opened.to_rfc3339()
            ))
            .await?;
        burst.push((s.account, rounds, fresh, held));
    }
    let mut duplicates = Vec::new();
    for (id, provider, account) in &booked {
        let title = format!("booking {id}");
        let copies = match provider {
            Provider::Google => h
                .sim
                .google()
                .stored_events(account, "primary")
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["summary"] == title && e["status"] != "cancelled")
                .count(),
            Provider::Graph => h
                .sim
                .graph()
                .stored_events(account)
                .into_iter()
                .filter(|e| e["subject"] == title)
                .count(),
        };
        if copies != 1 {
            duplicates.push(format!("{id}: {copies}"));
        }
    }
    r.check(
        "every booking accepted while gated reaches its calendar exactly once after",
        all_written.is_some() && duplicates.is_empty(),
        format!(
            "{} bookings; all written in {:?}; not exactly once: {:?}",
            booked.len(),
            all_written,
            duplicates.iter().take(5).collect::<Vec<_>>()
        ),
    );
    r.check(
        "no call burst when the gates open: held syncs coalesce into one round",
        burst.iter().all(|(_, rounds, fresh, _)| *rounds <= 1 + *fresh),
        burst
            .iter()
            .map(|(a, rounds, fresh, held)| {
                format!("{a}: {rounds} rounds in 2 s for {fresh} new notifications ({held} held before)")
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    r.measure("bookings", booked.len());
    r.measure("calendar_edits", edits);
    Ok(())
}
