//! The wiring between the node and the in-process simulators: provider
//! calls go to the simulator's router without a socket, and its pushes
//! (notifications, Graph's validation handshake) come back into the node's
//! front door as the webhook edge would hand them over.

use crate::actors::{Connections, SendError};
use crate::core::dedupe::DedupeKey;
use crate::core::ids::ConnectionId;
use crate::providers::transport::InProcessHttp;
use crate::store::MemoryStore;
use axum::Router;
use calsim::{DeliveryTarget, PushRequest, PushResponse};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// The simulator's router, called in process.
pub struct InProcessSimulator {
    pub router: Router,
    /// Counts every call (a node that spins trips it: [`super::stall`]).
    pub watch: Arc<super::stall::StallWatch>,
}

impl InProcessHttp for InProcessSimulator {
    fn call(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> BoxFuture<'static, axum::http::Response<bytes::Bytes>> {
        self.watch.record(request.uri().path());
        let router = self.router.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let request = axum::http::Request::from_parts(parts, axum::body::Body::from(body));
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            axum::http::Response::from_parts(parts, bytes)
        })
    }
}

/// A notification the node acknowledged, and whether as a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub connection: ConnectionId,
    pub key: String,
    pub duplicate: bool,
}

/// Where the simulator's pushes go: the node's front door (set once the
/// node is up; `None` while it is down, when pushes fail like a dead host).
#[derive(Default)]
pub struct PushTarget {
    pub node: Mutex<Option<(Connections, MemoryStore)>>,
    pub acked: Mutex<Vec<Acked>>,
}

fn header<'a>(request: &'a PushRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn answer(status: u16) -> PushResponse {
    PushResponse {
        status,
        content_type: Some("application/json".into()),
        body: String::new(),
    }
}

impl PushTarget {
    fn node(&self) -> Option<(Connections, MemoryStore)> {
        self.node.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection a channel / subscription belongs to, from the
    /// `channels` read model (what the webhook edge looks up).
    fn owner(store: &MemoryStore, channel_or_resource: &str) -> Option<ConnectionId> {
        store
            .with_model(|m| {
                m.channels
                    .values()
                    .find(|(row, _)| {
                        row.channel_id == channel_or_resource
                            || row.resource_id == channel_or_resource
                    })
                    .map(|(row, _)| row.connection_id)
            })
            .ok()
            .flatten()
    }

    async fn notify(
        &self,
        connections: &Connections,
        id: ConnectionId,
        key: DedupeKey,
        channel: &str,
    ) -> u16 {
        match connections
            .notify(id, key.as_str().to_string(), channel.to_string())
            .await
        {
            Ok(ack) => {
                self.acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Acked {
                        connection: id,
                        key: key.as_str().to_string(),
                        duplicate: ack.duplicate,
                    });
                200
            }
            Err(SendError::Quarantined | SendError::Rejected(_)) => 200,
            Err(_) => 503,
        }
    }
}

/// Hands pushes to the node.
pub struct Pushes(pub Arc<PushTarget>);

impl DeliveryTarget for Pushes {
    fn post(&self, request: PushRequest) -> BoxFuture<'static, Result<PushResponse, String>> {
        let target = self.0.clone();
        Box::pin(async move {
            let Some((connections, store)) = target.node() else {
                return Err("connection refused: the node is down".into());
            };
            // Graph's handshake: echo the token.
            if let Some((_, query)) = request.url.split_once("validationToken=") {
                let token = query.split('&').next().unwrap_or_default();
                let decoded = percent_decode(token);
                return Ok(PushResponse {
                    status: 200,
                    content_type: Some("text/plain; charset=utf-8".into()),
                    body: decoded,
                });
            }
            if let Some(channel) = header(&request, "x-goog-channel-id") {
                let channel = channel.to_string();
                if header(&request, "x-goog-resource-state") == Some("sync") {
                    return Ok(answer(200));
                }
                let Some(number) =
                    header(&request, "x-goog-message-number").and_then(|n| n.parse().ok())
                else {
                    return Ok(answer(400));
                };
                let Some(id) = PushTarget::owner(&store, &channel) else {
                    return Ok(answer(404));
                };
                let key = DedupeKey::google(&channel, number);
                let status = target.notify(&connections, id, key, &channel).await;
                return Ok(answer(status));
            }
            // Graph change (or lifecycle) notifications.
            let body: serde_json::Value = request
                .body
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            let mut status = 202;
            for n in body["value"].as_array().cloned().unwrap_or_default() {
                let subscription = n["subscriptionId"].as_str().unwrap_or_default();
                if n.get("lifecycleEvent").is_some() {
                    continue;
                }
                let Some(id) = PushTarget::owner(&store, subscription) else {
                    continue;
                };
                let key = DedupeKey::graph(
                    subscription,
                    n["changeType"].as_str().unwrap_or_default(),
                    n["resourceData"]["id"].as_str().unwrap_or_default(),
                    n["resourceData"]["@odata.etag"]
                        .as_str()
                        .unwrap_or_default(),
                );
                if target.notify(&connections, id, key, subscription).await != 200 {
                    status = 503;
                }
            }
            Ok(answer(status))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
