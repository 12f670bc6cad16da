//! Every provider API request and every push delivery attempt, recorded so
//! tests can assert on what calsync sent (e.g. "no call during backoff").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
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

#[derive(Default)]
pub struct RequestLog {
    requests: Mutex<Vec<RequestRecord>>,
    deliveries: Mutex<Vec<DeliveryRecord>>,
}

impl RequestLog {
    pub fn record(&self, mut r: RequestRecord) {
        let mut v = lock(&self.requests);
        r.seq = v.len() as u64 + 1;
        v.push(r);
    }

    pub fn record_delivery(&self, mut d: DeliveryRecord) {
        let mut v = lock(&self.deliveries);
        d.seq = v.len() as u64 + 1;
        v.push(d);
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.requests).clone()
    }

    pub fn requests_since(&self, t: DateTime<Utc>) -> Vec<RequestRecord> {
        lock(&self.requests)
            .iter()
            .filter(|r| r.at >= t)
            .cloned()
            .collect()
    }

    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.deliveries).clone()
    }

    pub fn clear(&self) {
        lock(&self.requests).clear();
        lock(&self.deliveries).clear();
    }
}
