//! `inbound`: busy time added in a provider's calendar (Google and Graph)
//! becomes busy on the platform through push notifications, and stops being
//! busy when it is deleted. Seen only through `/v1/providers/{id}/busy`.

use super::harness::{eventually, tomorrow, Harness};
use super::report::DrillReport;
use super::{p50_max, Sizes};
use serde_json::json;
use std::time::{Duration, Instant};

/// How many busy intervals the platform sees for `pp` tomorrow.
pub async fn busy_count(h: &Harness, pp: &str) -> usize {
    let (from, _) = tomorrow(0);
    let to = from + chrono::TimeDelta::days(1);
    let path = format!(
        "/v1/providers/{pp}/busy?from={}&to={}",
        urlencode(&from.to_rfc3339()),
        urlencode(&to.to_rfc3339())
    );
    match h.admin(reqwest::Method::GET, &path, None).await {
        Ok((200, body)) => body["busy"].as_array().map_or(0, Vec::len),
        _ => usize::MAX,
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let n = sizes.pick(5, 50);
    let google = h
        .google_connection("inbound@example.com", "pp-google")
        .await?;
    let graph = h
        .graph_connection("inbound@contoso.com", "pp-graph")
        .await?;
    h.wait_connected(&google, Duration::from_secs(20)).await?;
    h.wait_connected(&graph, Duration::from_secs(20)).await?;

    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut all_seen = true;
    let mut all_gone = true;
    for (pp, is_google) in [("pp-google", true), ("pp-graph", false)] {
        let mut ids = Vec::new();
        for i in 0..n {
            let (start, end) = tomorrow((i % 20) as i64);
            let t = Instant::now();
            let id = if is_google {
                let e = h
                    .sim
                    .google()
                    .upsert_event(
                        "inbound@example.com",
                        "primary",
                        json!({
                            "summary": format!("external {i}"),
                            "start": {"dateTime": start.to_rfc3339()},
                            "end": {"dateTime": end.to_rfc3339()},
                        }),
                    )
                    .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
                e["id"].as_str().unwrap_or_default().to_string()
            } else {
                let fmt = "%Y-%m-%dT%H:%M:%S";
                let e = h
                    .sim
                    .graph()
                    .create_event(
                        "inbound@contoso.com",
                        json!({
                            "subject": format!("external {i}"),
                            "start": {"dateTime": start.format(fmt).to_string(), "timeZone": "UTC"},
                            "end": {"dateTime": end.format(fmt).to_string(), "timeZone": "UTC"},
                        }),
                    )
                    .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
                e["id"].as_str().unwrap_or_default().to_string()
            };
            ids.push(id);
            let want = i + 1;
            match eventually(Duration::from_secs(15), || async {
                busy_count(h, pp).await == want
            })
            .await
            {
                Some(_) => added.push(t.elapsed().as_millis()),
                None => {
                    // Broken: later events would only wait out the same timeout.
                    all_seen = false;
                    break;
                }
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let t = Instant::now();
            if is_google {
                h.sim
                    .google()
                    .delete_event("inbound@example.com", "primary", id)
                    .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
            } else {
                h.sim
                    .graph()
                    .delete_event("inbound@contoso.com", id)
                    .map_err(|e| anyhow::anyhow!("simulator: {e:?}"))?;
            }
            let want = n - i - 1;
            match eventually(Duration::from_secs(15), || async {
                busy_count(h, pp).await == want
            })
            .await
            {
                Some(_) => removed.push(t.elapsed().as_millis()),
                None => {
                    all_gone = false;
                    break;
                }
            }
        }
    }
    let (p50, max) = p50_max(added.clone());
    r.measure("busy_latency_ms_p50", p50);
    r.measure("busy_latency_ms_max", max);
    r.check(
        "external events become busy (Google and Graph)",
        all_seen,
        format!(
            "{}/{} events seen as busy via /v1/providers/{{id}}/busy; latency p50 {p50} ms, max {max} ms",
            added.len(),
            2 * n
        ),
    );
    let (p50, max) = p50_max(removed.clone());
    r.measure("free_latency_ms_p50", p50);
    r.measure("free_latency_ms_max", max);
    r.check(
        "deleted external events stop being busy",
        all_gone,
        format!(
            "{}/{} deletions cleared; latency p50 {p50} ms, max {max} ms",
            removed.len(),
            2 * n
        ),
    );
    let notifications = h.events_of_type("notification_accepted").await?;
    r.check(
        "the changes arrived as push notifications",
        notifications > 0,
        format!("{notifications} notifications committed to the log"),
    );
    Ok(())
}
