//! Every provider API request and every push delivery attempt, recorded so
//! tests can assert on what calsync sent (e.g. "no call during backoff").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;

use crate::state::lock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Google,
    Graph,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub provider: Provider,
    /// Account the request authenticated as (email / UPN), if any.
    pub account: Option<String>,
    /// Logical endpoint, e.g. `events.list`, `delta` (see README).
    pub endpoint: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// `If-Match`, `If-None-Match`, `Prefer`, `Content-Type`, `User-Agent` as sent.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// JSON request body, if any (token requests are never logged: secrets).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    pub status: u16,
    /// Injected fault that shaped this response, if any.
    pub fault: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub provider: Provider,
    /// `sync`, `exists`, `validation`, `change`, `lifecycle`.
    pub kind: String,
    /// Channel id (Google) or subscription id (Graph).
    pub subject: String,
    pub target: String,
    pub attempt: u32,
    /// Status the receiver answered; `None` for timeouts and connection errors.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
    /// `dropped`, `duplicate`, `replay`, `reordered` when a notification fault applied.
    pub fault: Option<String>,
}

/// Bounded so a long-running `calsim` under load keeps constant memory:
/// past `capacity` records the oldest are dropped (`seq` keeps counting).
pub struct RequestLog {
    capacity: usize,
    requests: Mutex<(u64, VecDeque<RequestRecord>)>,
    deliveries: Mutex<(u64, VecDeque<DeliveryRecord>)>,
}

impl RequestLog {
    pub fn new(capacity: usize) -> Self {
        RequestLog {
            capacity: capacity.max(1),
            requests: Mutex::default(),
            deliveries: Mutex::default(),
        }
    }

    pub fn record(&self, mut r: RequestRecord) {
        let mut g = lock(&self.requests);
        g.0 += 1;
        r.seq = g.0;
        if g.1.len() >= self.capacity {
            g.1.pop_front();
        }
        g.1.push_back(r);
    }

    pub fn record_delivery(&self, mut d: DeliveryRecord) {
        let mut g = lock(&self.deliveries);
        g.0 += 1;
        d.seq = g.0;
        if g.1.len() >= self.capacity {
            g.1.pop_front();
        }
        g.1.push_back(d);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.requests).1.iter().cloned().collect()
    }

    pub fn requests_since(&self, t: DateTime<Utc>) -> Vec<RequestRecord> {
        lock(&self.requests)
            .1
            .iter()
            .filter(|r| r.at >= t)
            .cloned()
            .collect()
    }

    /// Calls `f` with each request, newest first, until it returns
    /// `false`: reads the recent end of a long log without copying it.
    pub fn visit_requests_newest_first(&self, mut f: impl FnMut(&RequestRecord) -> bool) {
        for r in lock(&self.requests).1.iter().rev() {
            if !f(r) {
                break;
            }
        }
    }

    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.deliveries).1.iter().cloned().collect()
    }

    pub fn clear(&self) {
        lock(&self.requests).1.clear();
        lock(&self.deliveries).1.clear();
    }
}
