//! `malformed-webhooks` (Guarantee 7): a corpus of malformed, oversized,
//! unauthenticated and unknown-channel requests gets 4xx — never 5xx — and
//! leaves no trace in the log; the server stays healthy and still accepts a
//! good notification afterwards.

use super::harness::{google_request, Harness};
use super::report::DrillReport;
use super::Sizes;

const GRAPH_BODIES: [&str; 24] = [
    "",
    " ",
    "{",
    "[]",
    "null",
    "0",
    "\"x\"",
    "{\"value\":null}",
    "{\"value\":{}}",
    "{\"value\":[null]}",
    "{\"value\":[1,2]}",
    "{\"value\":[{}]}",
    "{\"value\":[{\"subscriptionId\":5}]}",
    "{\"value\":[{\"subscriptionId\":\"\"}]}",
    "{\"value\":[{\"subscriptionId\":\"' OR 1=1 --\",\"changeType\":\"updated\"}]}",
    "{\"value\":[{\"subscriptionId\":\"; DROP TABLE events;\",\"changeType\":\"created\"}]}",
    "{\"value\":[{\"subscriptionId\":\"\\u0000\",\"changeType\":\"deleted\"}]}",
    "{\"value\":[{\"subscriptionId\":\"日本語🙂\",\"changeType\":\"updated\"}]}",
    "{\"value\":[{\"subscriptionId\":\"x\",\"changeType\":[]}]}",
    "\u{feff}{\"value\":[]}",
    "\u{0}\u{1}\u{2}",
    "<xml/>",
    "value=1&x=2",
    "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resourceData\":7}]}",
];

/// The status, or 0 when the server dropped the connection (a crash in a
/// handler): recorded as a failure, not an abort of the drill.
async fn answer(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.map_or(0, |r| r.status().as_u16())
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let target = sizes.pick(120, 1000);
    let (_, channel) = h.google_ready("fuzz@example.com", "pp-fuzz").await?;
    let before = h.total_events().await?;
    let mut statuses: Vec<(String, u16)> = Vec::new();
    let mut round = 0u64;
    while statuses.len() < target {
        round += 1;
        for body in GRAPH_BODIES {
            for path in ["/webhooks/graph", "/webhooks/graph/lifecycle"] {
                let s = answer(
                    h.http
                        .post(format!("{}{path}", h.base))
                        .header("content-type", "application/json")
                        .body(body.to_string()),
                )
                .await;
                statuses.push((format!("{path} {body:?}"), s));
            }
        }
        let n = 600_000 + round;
        let long = "x".repeat(2000);
        let unknown = (
            "no-such-channel".to_string(),
            channel.1.clone(),
            channel.2.clone(),
        );
        let wrong_token = (channel.0.clone(), "wrong".to_string(), channel.2.clone());
        let variants: Vec<(&str, reqwest::RequestBuilder)> = vec![
            (
                "unknown channel",
                google_request(&h.http, &h.base, &unknown, n),
            ),
            (
                "wrong token",
                google_request(&h.http, &h.base, &wrong_token, n),
            ),
            (
                "bad message number",
                h.http
                    .post(format!("{}/webhooks/google", h.base))
                    .header("X-Goog-Channel-ID", channel.0.as_str())
                    .header("X-Goog-Channel-Token", channel.1.as_str())
                    .header("X-Goog-Resource-ID", channel.2.as_str())
                    .header("X-Goog-Resource-State", "exists")
                    .header("X-Goog-Message-Number", "abc"),
            ),
            (
                "over-long channel id",
                google_request(
                    &h.http,
                    &h.base,
                    &(long.clone(), channel.1.clone(), channel.2.clone()),
                    n,
                ),
            ),
            (
                "no headers",
                h.http.post(format!("{}/webhooks/google", h.base)),
            ),
            (
                "oversized body",
                google_request(&h.http, &h.base, &channel, n).body(vec![b'a'; 70 * 1024]),
            ),
            (
                "wrong method",
                h.http.get(format!("{}/webhooks/google", h.base)),
            ),
        ];
        for (what, req) in variants {
            statuses.push((format!("google {what}"), answer(req).await));
        }
    }
    let server_errors: Vec<&(String, u16)> = statuses.iter().filter(|(_, s)| *s >= 500).collect();
    let not_4xx: Vec<&(String, u16)> = statuses
        .iter()
        .filter(|(_, s)| !(400..500).contains(s))
        .collect();
    let after = h.total_events().await?;
    r.check(
        "every malformed request answered 4xx, none 5xx",
        not_4xx.is_empty(),
        format!(
            "{} requests: {} 4xx, {} 5xx; not 4xx: {:?}",
            statuses.len(),
            statuses.len() - not_4xx.len(),
            server_errors.len(),
            not_4xx.iter().take(5).collect::<Vec<_>>()
        ),
    );
    r.check(
        "nothing logged",
        after == before,
        format!("the log grew by {} events", after - before),
    );
    let healthy =
        h.status_of("/healthz").await == Some(200) && h.status_of("/readyz").await == Some(200);
    let good = h.google_push(&channel, 1_000_000).await?;
    r.check(
        "server healthy afterwards",
        healthy && good == 200,
        format!("/healthz and /readyz 200: {healthy}; a good notification answered {good}"),
    );
    r.measure("malformed_requests", statuses.len());
    Ok(())
}
