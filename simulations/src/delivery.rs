//! Push delivery: one ordered queue (and worker task) per channel or
//! subscription and target URL — ordered per channel, concurrent across them — retries
//! per provider rules, notification faults, and a record of every attempt.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::request_log::{DeliveryRecord, Provider};
use crate::state::{lock, Shared};

#[derive(Clone, Debug)]
pub struct Outgoing {
    pub provider: Provider,
    pub kind: String,
    pub subject: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// JSON body (Graph); Google notifications have an empty body.
    pub body: Option<Value>,
    pub timeout: Duration,
}

type QueueItem = (Outgoing, Option<String>);

#[derive(Default)]
pub struct DeliveryQueues {
    queues: Mutex<HashMap<String, UnboundedSender<QueueItem>>>,
}

impl DeliveryQueues {
    /// Dropping the senders ends the workers.
    pub fn close(&self) {
        lock(&self.queues).clear();
    }
}

/// Queue one notification, applying this provider's notification faults.
pub fn enqueue(shared: &Arc<Shared>, out: Outgoing) {
    let f = shared.faults.notification_faults(out.provider);
    if shared.rng.chance(f.drop_rate) {
        record(shared, &out, 0, None, None, Some("dropped".to_string()));
        return;
    }
    let duplicate = shared.rng.chance(f.duplicate_rate);
    let replay = shared.rng.chance(f.replay_rate);
    if f.reorder_window_ms > 0 {
        let delay = shared.rng.range(0, f.reorder_window_ms);
        spawn_later(shared, out.clone(), delay, Some("reordered".to_string()));
    } else {
        push(shared, out.clone(), None);
    }
    if duplicate {
        push(shared, out.clone(), Some("duplicate".to_string()));
    }
    if replay {
        spawn_later(shared, out, f.replay_after_ms, Some("replay".to_string()));
    }
}

fn push(shared: &Arc<Shared>, out: Outgoing, fault: Option<String>) {
    let mut queues = lock(&shared.delivery.queues);
    let key = format!("{} {}", out.subject, out.target);
    let sender = queues.entry(key).or_insert_with(|| {
        let (tx, mut rx) = unbounded_channel::<QueueItem>();
        let weak = Arc::downgrade(shared);
        shared.runtime.spawn(async move {
            let mut held: Option<QueueItem> = None;
            loop {
                let (mut out, fault) = match held.take() {
                    Some(item) => item,
                    None => match rx.recv().await {
                        Some(item) => item,
                        None => break,
                    },
                };
                // Graph batches change notifications that piled up (e.g. while
                // an earlier one was being retried) into one POST.
                if batchable(&out, &fault) {
                    while let Ok(next) = rx.try_recv() {
                        if batchable(&next.0, &next.1) {
                            append_values(&mut out, &next.0);
                        } else {
                            held = Some(next);
                            break;
                        }
                    }
                }
                deliver_with_retries(weak.clone(), out, fault).await;
            }
        });
        tx
    });
    // A closed worker only happens during shutdown; the notification is moot then.
    let _ = sender.send((out, fault));
}

fn batchable(out: &Outgoing, fault: &Option<String>) -> bool {
    out.provider == Provider::Graph && out.kind == "change" && fault.is_none()
}

fn append_values(into: &mut Outgoing, from: &Outgoing) {
    let extra = from
        .body
        .as_ref()
        .and_then(|b| b["value"].as_array())
        .cloned()
        .unwrap_or_default();
    if let Some(values) = into
        .body
        .as_mut()
        .and_then(|b| b.get_mut("value"))
        .and_then(Value::as_array_mut)
    {
        values.extend(extra);
    }
}

fn spawn_later(shared: &Arc<Shared>, out: Outgoing, delay_ms: u64, fault: Option<String>) {
    let weak = Arc::downgrade(shared);
    shared.runtime.spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        deliver_with_retries(weak, out, fault).await;
    });
}

fn should_retry(provider: Provider, status: Option<u16>) -> bool {
    match (provider, status) {
        // Google: only 500/502/503/504 are retried ("anything else = failed").
        (Provider::Google, Some(s)) => matches!(s, 500 | 502 | 503 | 504),
        // Graph: anything but 2xx within the deadline is retried.
        (Provider::Graph, Some(s)) => !(200..300).contains(&s),
        (_, None) => true,
    }
}

async fn deliver_with_retries(weak: Weak<Shared>, out: Outgoing, fault: Option<String>) {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let Some(shared) = weak.upgrade() else { return };
        let (status, error) = send_once(&shared, &out).await;
        record(&shared, &out, attempt, status, error, fault.clone());
        let retry = should_retry(out.provider, status);
        if !retry {
            return;
        }
        if attempt >= shared.config.push_max_attempts {
            // Graph tells the subscriber it dropped notifications.
            if out.provider == Provider::Graph && out.kind == "change" {
                crate::graph::subscriptions::notify_missed(&shared, &out.subject);
            }
            return;
        }
        let delay = shared
            .config
            .push_retry_delay_ms
            .saturating_mul(1 << (attempt - 1).min(10));
        drop(shared);
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
}

/// One POST; returns the status or the transport error text.
pub async fn send_once(shared: &Shared, out: &Outgoing) -> (Option<u16>, Option<String>) {
    if let Some(target) = &shared.deliver {
        let request = crate::state::PushRequest {
            url: out.target.clone(),
            headers: out.headers.clone(),
            body: out.body.as_ref().map(|b| b.to_string().into_bytes()),
        };
        return match tokio::time::timeout(out.timeout, target.post(request)).await {
            Ok(Ok(answer)) => (Some(answer.status), None),
            Ok(Err(e)) => (None, Some(e)),
            Err(_) => (None, Some("timeout".to_string())),
        };
    }
    let mut req = shared.http.post(&out.target).timeout(out.timeout);
    for (k, v) in &out.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req = match &out.body {
        Some(b) => req.json(b),
        None => req.header("Content-Length", "0"),
    };
    match req.send().await {
        Ok(resp) => (Some(resp.status().as_u16()), None),
        Err(e) if e.is_timeout() => (None, Some("timeout".to_string())),
        Err(e) => (None, Some(e.to_string())),
    }
}

pub fn record(
    shared: &Shared,
    out: &Outgoing,
    attempt: u32,
    status: Option<u16>,
    error: Option<String>,
    fault: Option<String>,
) {
    shared.log.record_delivery(DeliveryRecord {
        seq: 0,
        at: shared.now(),
        provider: out.provider,
        kind: out.kind.clone(),
        subject: out.subject.clone(),
        target: out.target.clone(),
        attempt,
        status,
        error,
        headers: out.headers.clone(),
        body: out.body.clone(),
        fault,
    });
}

/// Send again the last `count` notifications (optionally of one channel or
/// subscription), as a provider replaying old messages would. Returns how
/// many were queued. Validation handshakes are never replayed.
pub fn replay(shared: &Arc<Shared>, subject: Option<&str>, count: usize) -> usize {
    let log = shared.log.deliveries();
    let picked: Vec<&crate::request_log::DeliveryRecord> = log
        .iter()
        .filter(|d| {
            d.attempt <= 1 && d.kind != "validation" && d.fault.as_deref() != Some("replay")
        })
        .filter(|d| subject.is_none_or(|s| d.subject == s))
        .collect();
    let from = picked.len().saturating_sub(count);
    for d in &picked[from..] {
        let timeout_ms = match d.provider {
            Provider::Google => shared.config.google_push_timeout_ms,
            Provider::Graph => shared.config.graph_notification_timeout_ms,
        };
        let out = Outgoing {
            provider: d.provider,
            kind: d.kind.clone(),
            subject: d.subject.clone(),
            target: d.target.clone(),
            headers: d.headers.clone(),
            body: d.body.clone(),
            timeout: Duration::from_millis(timeout_ms),
        };
        push(shared, out, Some("replay".to_string()));
    }
    picked.len() - from
}
