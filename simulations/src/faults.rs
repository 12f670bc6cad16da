//! Fault injection: rules matched per provider, endpoint (glob) and account,
//! evaluated by the HTTP gate before the handler runs; plus notification
//! faults applied by the push delivery queue.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

use crate::request_log::Provider;
use crate::rng::SimRng;
use crate::state::lock;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultRule {
    pub provider: Provider,
    /// Endpoint glob: `events.list`, `events.*`, `*` (None = every endpoint).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Only requests authenticated as this account (None = every account).
    #[serde(default)]
    pub account: Option<String>,
    /// Only requests whose path matches this glob, e.g.
    /// `*/calendars/zzz-missing/*` for one calendar (None = every path).
    #[serde(default)]
    pub path: Option<String>,
    /// Only requests whose JSON body contains this text (e.g. one booking's
    /// id in an `events.insert`) (None = every body).
    #[serde(default)]
    pub body_contains: Option<String>,
    pub kind: FaultKind,
    /// How many more requests this rule may hit (None = until removed).
    #[serde(default)]
    pub remaining: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status in the provider's error shape. `reason`
    /// overrides the default Google reason / Graph code for that status.
    Status {
        code: u16,
        #[serde(default)]
        retry_after: Option<f64>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Like `Status`, for a fraction `probability` of matching requests.
    ErrorRate {
        probability: f64,
        code: u16,
        #[serde(default)]
        retry_after: Option<f64>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Delay the response by `ms`, then serve normally.
    Latency { ms: u64 },
    /// Answer 503 until `until`.
    Outage { until: DateTime<Utc> },
    /// Perform the request (e.g. create the event) but answer an error
    /// (default: Google 500 `backendError`, Graph 503) as if the response was lost.
    CreatedButResponseLost {
        #[serde(default)]
        status: Option<u16>,
    },
    /// Hold the request, authenticated but not yet performed, until the
    /// hold `name` is released ([`crate::SimHandle::release_hold`]); how
    /// many requests reached it is [`crate::SimHandle::held`]. Lets a test
    /// keep a write in flight for exactly as long as it needs (e.g. until
    /// it has killed the caller), instead of guessing with latency.
    Hold { name: String },
}

/// What a fault rule can match a request on.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    pub provider: Provider,
    pub endpoint: &'a str,
    pub account: Option<&'a str>,
    pub path: &'a str,
    pub body: Option<&'a serde_json::Value>,
}

/// What the gate must do with one request.
#[derive(Clone, Debug, Default)]
pub struct FaultDecision {
    pub latency_ms: u64,
    pub respond: Option<InjectedStatus>,
    pub lose_response: Option<u16>,
    pub label: Option<String>,
    /// The hold this request waits at before it is performed.
    pub hold: Option<String>,
}

/// One named hold: how many requests reached it, and whether it is open.
pub struct Hold {
    reached: std::sync::atomic::AtomicUsize,
    released: tokio::sync::watch::Sender<bool>,
}

impl Hold {
    fn new() -> Self {
        Hold {
            reached: std::sync::atomic::AtomicUsize::new(0),
            released: tokio::sync::watch::channel(false).0,
        }
    }

    /// Counts the request in, then waits until the hold is released.
    pub async fn wait(&self) {
        let mut released = self.released.subscribe();
        self.reached
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = released.wait_for(|open| *open).await;
    }
}

#[derive(Clone, Debug)]
pub struct InjectedStatus {
    pub code: u16,
    pub retry_after: Option<f64>,
    pub reason: Option<String>,
}

/// Notification faults for one provider's push deliveries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationFaults {
    /// Fraction of notifications silently dropped.
    pub drop_rate: f64,
    /// Fraction of notifications delivered twice.
    pub duplicate_rate: f64,
    /// When > 0, each notification is delayed by a random 0..window ms outside
    /// the ordered queue, so close notifications arrive out of order.
    pub reorder_window_ms: u64,
    /// Fraction of notifications delivered again `replay_after_ms` later.
    pub replay_rate: f64,
    pub replay_after_ms: u64,
    /// Google: a stopped channel still gets notifications for this many
    /// more changes ([obs] "a few notifications may still arrive after stop").
    pub after_stop: u32,
}

#[derive(Default)]
pub struct FaultSet {
    rules: Mutex<Vec<(u64, FaultRule)>>,
    next_id: Mutex<u64>,
    notifications: Mutex<HashMap<Provider, NotificationFaults>>,
    holds: Mutex<HashMap<String, std::sync::Arc<Hold>>>,
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

impl FaultSet {
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut id = lock(&self.next_id);
        *id += 1;
        lock(&self.rules).push((*id, rule));
        *id
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut rules = lock(&self.rules);
        let before = rules.len();
        rules.retain(|(i, _)| *i != id);
        rules.len() != before
    }

    /// Removes every rule and releases every hold (nothing stays stuck).
    pub fn clear(&self) {
        lock(&self.rules).clear();
        lock(&self.notifications).clear();
        for hold in lock(&self.holds).values() {
            hold.released.send_replace(true);
        }
    }

    /// The hold called `name` (created closed on first use).
    pub fn hold(&self, name: &str) -> std::sync::Arc<Hold> {
        lock(&self.holds)
            .entry(name.to_string())
            .or_insert_with(|| std::sync::Arc::new(Hold::new()))
            .clone()
    }

    /// How many requests have reached the hold `name` so far.
    pub fn held(&self, name: &str) -> usize {
        self.hold(name)
            .reached
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every request waiting at `name`, and every later one, through.
    pub fn release_hold(&self, name: &str) {
        self.hold(name).released.send_replace(true);
    }

    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        lock(&self.rules).clone()
    }

    pub fn set_notification_faults(&self, provider: Provider, f: NotificationFaults) {
        lock(&self.notifications).insert(provider, f);
    }

    pub fn notification_faults(&self, provider: Provider) -> NotificationFaults {
        lock(&self.notifications)
            .get(&provider)
            .cloned()
            .unwrap_or_default()
    }

    /// Decide the fate of one request. Latency rules add up; the first
    /// matching status-like rule wins. Matched rules consume `remaining`.
    pub fn evaluate(&self, request: &Probe<'_>, now: DateTime<Utc>, rng: &SimRng) -> FaultDecision {
        let Probe {
            provider,
            endpoint,
            account,
            path,
            body,
        } = *request;
        let body_text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut decision = FaultDecision::default();
        let mut rules = lock(&self.rules);
        for (_, rule) in rules.iter_mut() {
            if rule.provider != provider || rule.remaining == Some(0) {
                continue;
            }
            if let Some(pat) = &rule.endpoint {
                if !glob_match(pat, endpoint) {
                    continue;
                }
            }
            if rule.path.as_ref().is_some_and(|p| !glob_match(p, path)) {
                continue;
            }
            if rule
                .body_contains
                .as_ref()
                .is_some_and(|needle| !body_text.contains(needle.as_str()))
            {
                continue;
            }
            if let Some(acc) = &rule.account {
                if account
                    .map(|a| !a.eq_ignore_ascii_case(acc))
                    .unwrap_or(true)
                {
                    continue;
                }
            }
            let decided = decision.respond.is_some() || decision.lose_response.is_some();
            let hit = match &rule.kind {
                FaultKind::Latency { ms } => {
                    decision.latency_ms += ms;
                    true
                }
                FaultKind::Hold { name } => {
                    if decision.hold.is_none() {
                        decision.hold = Some(name.clone());
                        true
                    } else {
                        false
                    }
                }
                _ if decided => false,
                FaultKind::Status {
                    code,
                    retry_after,
                    reason,
                } => {
                    decision.respond = Some(InjectedStatus {
                        code: *code,
                        retry_after: *retry_after,
                        reason: reason.clone(),
                    });
                    decision.label = Some(format!("status {code}"));
                    true
                }
                FaultKind::ErrorRate {
                    probability,
                    code,
                    retry_after,
                    reason,
                } => {
                    if rng.chance(*probability) {
                        decision.respond = Some(InjectedStatus {
                            code: *code,
                            retry_after: *retry_after,
                            reason: reason.clone(),
                        });
                        decision.label = Some(format!("error_rate {code}"));
                        true
                    } else {
                        false
                    }
                }
                FaultKind::Outage { until } => {
                    if now < *until {
                        decision.respond = Some(InjectedStatus {
                            code: 503,
                            retry_after: None,
                            reason: None,
                        });
                        decision.label = Some("outage".to_string());
                        true
                    } else {
                        false
                    }
                }
                FaultKind::CreatedButResponseLost { status } => {
                    let default = match provider {
                        Provider::Google => 500,
                        Provider::Graph => 503,
                    };
                    decision.lose_response = Some(status.unwrap_or(default));
                    decision.label = Some("created_but_response_lost".to_string());
                    true
                }
            };
            if hit {
                if let Some(n) = rule.remaining.as_mut() {
                    *n = n.saturating_sub(1);
                }
            }
        }
        rules.retain(|(_, r)| r.remaining != Some(0));
        if decision.latency_ms > 0 && decision.label.is_none() {
            decision.label = Some(format!("latency {}ms", decision.latency_ms));
        }
        if let (Some(hold), None) = (&decision.hold, &decision.label) {
            decision.label = Some(format!("hold {hold}"));
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "events.list"));
        assert!(glob_match("events.*", "events.list"));
        assert!(!glob_match("events.*", "freeBusy"));
        assert!(glob_match("*.list", "events.list"));
        assert!(glob_match("events.list", "events.list"));
        assert!(!glob_match("events.lis", "events.list"));
        assert!(glob_match(
            "*/calendars/zzz-missing/*",
            "/google/calendar/v3/calendars/zzz-missing/events"
        ));
        assert!(!glob_match(
            "*/calendars/zzz-missing/*",
            "/google/calendar/v3/calendars/primary/events"
        ));
    }
}
