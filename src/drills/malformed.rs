//! `malformed-webhooks` (Guarantee 7): a corpus of malformed, oversized,
//! unauthenticated and unknown-channel requests gets 4xx — never 5xx — and
//! leaves no trace in the log; the server stays healthy and still accepts a
//! good notification afterwards. Graph change notifications of the wrong
//! shape are sent both unauthenticated and from a real subscription with
//! the right `clientState`, so only the shape check can refuse the latter.

use super::harness::{google_request, Harness};
use super::report::DrillReport;
use super::Sizes;
use serde_json::{json, Value};

const GRAPH_BODIES: &[&str] = &[
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
    "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"exploded\",\"resource\":\"r\",\"resourceData\":{\"id\":\"e\"}}]}",
    "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"\",\"resource\":\"r\",\"resourceData\":{\"id\":\"e\"}}]}",
    "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"created,,deleted\",\"resource\":\"r\",\"resourceData\":{\"id\":\"e\"}}]}",
    "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resourceData\":{\"id\":\"e\"}}]}",
    "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resource\":\"r\"}]}",
    "{\"value\":[{\"subscriptionId\":\"a\",\"changeType\":\"updated\",\"resource\":\"r\",\"resourceData\":{}}]}",
];

/// Change notifications of every wrong shape, from a real subscription with
/// its right `clientState`: (what, body).
fn graph_shapes(subscription: &(String, String)) -> Vec<(String, Value)> {
    let (id, client_state) = subscription;
    let good = json!({ "subscriptionId": id, "clientState": client_state,
        "changeType": "updated", "resource": "Users/u/Events/AAMk1",
        "resourceData": { "@odata.etag": "W/\"1\"", "id": "AAMk1" } });
    let with = |field: &str, value: Option<Value>| {
        let mut n = good.clone();
        match (value, n.as_object_mut()) {
            (Some(v), _) => n[field] = v,
            (None, Some(map)) => {
                map.remove(field);
            }
            (None, None) => {}
        }
        n
    };
    let cases = [
        (
            "changeType exploded",
            with("changeType", Some(json!("exploded"))),
        ),
        ("changeType empty", with("changeType", Some(json!("")))),
        ("changeType ,", with("changeType", Some(json!(",")))),
        (
            "changeType created,,deleted",
            with("changeType", Some(json!("created,,deleted"))),
        ),
        (
            "changeType updated,exploded",
            with("changeType", Some(json!("updated,exploded"))),
        ),
        ("no changeType", with("changeType", None)),
        ("resource empty", with("resource", Some(json!("")))),
        ("no resource", with("resource", None)),
        ("no resourceData", with("resourceData", None)),
        ("resourceData {}", with("resourceData", Some(json!({})))),
        (
            "resourceData id empty",
            with("resourceData", Some(json!({ "id": "" }))),
        ),
        (
            "resourceData a string",
            with("resourceData", Some(json!("AAMk1"))),
        ),
    ];
    cases
        .into_iter()
        .flat_map(|(what, bad)| {
            [
                (
                    format!("graph shape: {what}"),
                    json!({ "value": [bad.clone()] }),
                ),
                // One bad notification refuses the whole batch.
                (
                    format!("graph shape: {what}, batched with a good one"),
                    json!({ "value": [good.clone(), bad] }),
                ),
            ]
        })
        .collect()
}

/// The status, or 0 when the server dropped the connection (a crash in a
/// handler): recorded as a failure, not an abort of the drill.
async fn answer(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.map_or(0, |r| r.status().as_u16())
}

pub async fn run(h: &mut Harness, r: &mut DrillReport, sizes: Sizes) -> anyhow::Result<()> {
    let target = sizes.pick(120, 1000);
    let (_, subscription) = h.graph_ready("fuzz@contoso.com", "pp-fuzz-graph").await?;
    let (_, channel) = h.google_ready("fuzz@example.com", "pp-fuzz").await?;
    let shapes = graph_shapes(&subscription);
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
        for (what, body) in &shapes {
            let s = answer(h.http.post(format!("{}/webhooks/graph", h.base)).json(body)).await;
            statuses.push((what.clone(), s));
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
    let (subscription_id, client_state) = &subscription;
    let good_graph = answer(
        h.http
            .post(format!("{}/webhooks/graph", h.base))
            .json(&json!({
        "value": [{ "subscriptionId": subscription_id, "clientState": client_state,
            "changeType": "created,updated", "resource": "Users/u/Events/AAMk1",
            "resourceData": { "@odata.etag": "W/\"2\"", "id": "AAMk1" } }] })),
    )
    .await;
    r.check(
        "server healthy afterwards",
        healthy && good == 200 && good_graph == 202,
        format!(
            "/healthz and /readyz 200: {healthy}; a good notification answered {good}, a good Graph batch {good_graph}"
        ),
    );
    r.measure("malformed_requests", statuses.len());
    Ok(())
}
