//! `allowlist` (Guarantee 6): in production mode only allowlisted providers
//! and connections are served. Webhooks for an unlisted connection or
//! provider get 403 and write nothing; listed ones are accepted.

use super::harness::{tomorrow, Harness};
use super::report::DrillReport;
use super::Sizes;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let n: u64 = sizes.pick(10, 100);
    let (listed, listed_ch) = h.google_ready("listed@example.com", "pp-listed").await?;
    let (_, unlisted_ch) = h
        .google_ready("unlisted@example.com", "pp-unlisted")
        .await?;
    let graph = h.graph_connection("graph@contoso.com", "pp-graph").await?;
    h.wait_connected(&graph, Duration::from_secs(20)).await?;

    let (status, _) = h
        .admin(
            Method::PUT,
            "/admin/production",
            Some(json!({"enabled": true, "reason": "allowlist drill"})),
        )
        .await?;
    anyhow::ensure!(status == 200, "production mode answered {status}");
    for path in [
        "/admin/allowlist/providers/google".to_string(),
        format!("/admin/allowlist/connections/{listed}"),
    ] {
        let (status, body) = h.admin(Method::POST, &path, None).await?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
    }
    // Flag and allowlist changes take effect within a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = h.events_of_type("notification_accepted").await?;

    let mut unlisted = Vec::new();
    for i in 0..n {
        unlisted.push(h.google_push(&unlisted_ch, 800_000 + i).await?);
    }
    let after_unlisted = h.events_of_type("notification_accepted").await? - before;
    r.check(
        "unlisted connection: 403 and nothing logged",
        unlisted.iter().all(|s| *s == 403) && after_unlisted == 0,
        format!(
            "{} of {n} answered 403 (others {:?}); {after_unlisted} notifications logged",
            unlisted.iter().filter(|s| **s == 403).count(),
            unlisted
                .iter()
                .filter(|s| **s != 403)
                .take(5)
                .collect::<Vec<_>>()
        ),
    );

    // Graph is not allowlisted: a real change makes the simulator deliver.
    let since = chrono::Utc::now();
    let (start, end) = tomorrow(9);
    let fmt = "%Y-%m-%dT%H:%M:%S";
    h.sim
        .graph()
        .create_event(
            "graph@contoso.com",
            json!({
                "subject": "unlisted provider",
                "start": {"dateTime": start.format(fmt).to_string(), "timeZone": "UTC"},
                "end": {"dateTime": end.format(fmt).to_string(), "timeZone": "UTC"},
            }),
        )
        .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
    let delivered = super::harness::eventually(Duration::from_secs(10), || async {
        h.sim
            .deliveries()
            .iter()
            .any(|d| d.at >= since && d.kind != "validation" && d.status.is_some())
    })
    .await;
    let statuses: Vec<Option<u16>> = h
        .sim
        .deliveries()
        .iter()
        .filter(|d| d.at >= since && d.provider == calsim::Provider::Graph)
        .map(|d| d.status)
        .collect();
    let after_graph = h.events_of_type("notification_accepted").await? - before;
    r.check(
        "unlisted provider (Graph): 403 and nothing logged",
        delivered.is_some()
            && !statuses.is_empty()
            && statuses.iter().all(|s| *s == Some(403))
            && after_graph == 0,
        format!("simulator deliveries answered {statuses:?}; {after_graph} notifications logged"),
    );

    let mut accepted = Vec::new();
    for i in 0..n {
        accepted.push(h.google_push(&listed_ch, 900_000 + i).await?);
    }
    let after_listed = h.events_of_type("notification_accepted").await? - before;
    r.check(
        "listed provider and connection: accepted",
        accepted.iter().all(|s| *s == 200) && after_listed == n as i64,
        format!(
            "{} of {n} answered 200; {after_listed} notifications logged",
            accepted.iter().filter(|s| **s == 200).count()
        ),
    );
    let (_, flags) = h.admin(Method::GET, "/admin/allowlist", None).await?;
    r.measure("allowlist", flags);
    Ok(())
}
