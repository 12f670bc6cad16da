//! The scenario driver is reproducible from its seed, and the `calsim`
//! binary starts on a port and prints its base URLs.

mod common;

use calsim::{Scenario, ScenarioConfig, SimConfig};
use chrono::TimeZone;
use common::sim_with;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

async fn run(seed: u64) -> (Vec<serde_json::Value>, Vec<String>) {
    let h = sim_with(SimConfig {
        seed: 9,
        ..SimConfig::default()
    })
    .await;
    let cfg = ScenarioConfig {
        seed,
        google_accounts: 2,
        graph_accounts: 2,
        events_per_account: 15,
        start: chrono::Utc.with_ymd_and_hms(2026, 10, 5, 0, 0, 0).single(),
        mutations_per_second: 1000.0,
        ..ScenarioConfig::default()
    };
    let sc = Scenario::new(cfg);
    let summary = sc.populate(&h.google(), &h.graph());
    assert_eq!(summary.events_created, 60);
    let labels = sc.run(&h.google(), &h.graph(), 30).await;
    let events = h
        .google()
        .stored_events("user0@example.com", "primary")
        .expect("events");
    h.shutdown().await;
    (events, labels)
}

#[tokio::test]
async fn scenario_is_reproducible_from_its_seed() {
    let (a, la) = run(11).await;
    let (b, lb) = run(11).await;
    let strip = |v: &[serde_json::Value]| -> Vec<serde_json::Value> {
        v.iter()
            .map(|e| {
                serde_json::json!([
                    e["id"],
                    e["start"],
                    e["end"],
                    e["status"],
                    e["transparency"],
                    e["eventType"]
                ])
            })
            .collect()
    };
    assert_eq!(la, lb);
    assert_eq!(strip(&a), strip(&b));
    let (c, _) = run(12).await;
    assert_ne!(strip(&a), strip(&c), "another seed, another calendar");
}

#[test]
fn calsim_binary_prints_base_urls() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calsim"))
        .args([
            "--port",
            "0",
            "--google-accounts",
            "1",
            "--events-per-account",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn calsim");
    let stdout = child.stdout.take().expect("stdout");
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(8)
        .map_while(Result::ok)
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines[0].starts_with("calsim listening on http://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(lines[1].contains("/google/calendar/v3"));
    assert!(lines[3].contains("/graph/v1.0"));
    assert!(lines[4].contains("/graph/{tenant}/oauth2/v2.0/token"));
    assert!(lines[5].contains("/google/authorize"), "{lines:?}");
    assert!(lines[6].ends_with("/control"), "{lines:?}");
    assert!(lines[7].starts_with("scenario {"), "{lines:?}");
}
