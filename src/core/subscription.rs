//! Push subscriptions of the platform feed, as a pure fold and decisions.
//!
//! A subscription is a stream of its own (`subscription-<uuid>`): created,
//! each delivery attempt and its outcome, dead-lettering, an operator's
//! replay, deletion. Its state — where it has delivered up to, how often it
//! failed in a row, whether it is parked — is nothing but the fold of that
//! stream, so deliveries are audited and a restart resumes exactly where
//! the log says. One delivery is in flight per subscription, so events
//! arrive in order; a failed delivery is retried with the same events (and
//! the same ids) after an exponential backoff with jitter, until failures
//! have lasted [`PushPolicy::max_retry_age`] (24 h): then the subscription
//! is parked (dead-lettered) until an operator replays it from a cursor.

use super::backoff::BackoffPolicy;
use super::platform_events::PlatformEventType;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Everything that happens to a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SubscriptionEvent {
    /// Created; deliveries start after `cursor` (an encoded feed cursor).
    /// Only a hash of the secret is recorded.
    SubscriptionCreated {
        url: String,
        types: Vec<PlatformEventType>,
        cursor: String,
        secret_sha256: String,
        at: DateTime<Utc>,
    },
    /// The receiver answered 2xx: everything up to `next_cursor` is delivered.
    DeliverySucceeded {
        delivery_id: String,
        event_ids: Vec<String>,
        next_cursor: String,
        attempt: u32,
        status: u16,
        at: DateTime<Utc>,
    },
    /// The receiver failed (status, timeout, refused connection, redirect);
    /// the same events are retried at `retry_at`.
    DeliveryFailed {
        delivery_id: String,
        event_ids: Vec<String>,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        error: String,
        retry_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Failures lasted too long: no delivery until an operator replays.
    DeadLettered {
        cursor: String,
        attempts: u32,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// An operator restarts deliveries from `cursor` (un-parks).
    ReplayRequested {
        cursor: String,
        at: DateTime<Utc>,
    },
    SubscriptionDeleted {
        at: DateTime<Utc>,
    },
}

impl SubscriptionEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            SubscriptionEvent::SubscriptionCreated { .. } => "subscription_created",
            SubscriptionEvent::DeliverySucceeded { .. } => "delivery_succeeded",
            SubscriptionEvent::DeliveryFailed { .. } => "delivery_failed",
            SubscriptionEvent::DeadLettered { .. } => "dead_lettered",
            SubscriptionEvent::ReplayRequested { .. } => "replay_requested",
            SubscriptionEvent::SubscriptionDeleted { .. } => "subscription_deleted",
        }
    }

    pub fn schema_version(&self) -> i32 {
        1
    }

    pub fn to_parts(
        &self,
    ) -> Result<(&'static str, serde_json::Value), super::events::EventDecodeError> {
        Ok((
            self.event_type(),
            super::events::untag(self, self.event_type())?,
        ))
    }

    pub fn from_parts(
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Self, super::events::EventDecodeError> {
        super::events::retag(
            event_type,
            super::events::upcast(event_type, schema_version, payload)?,
        )
    }
}

/// Where a subscription stands: the fold of its stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SubscriptionState {
    pub version: u64,
    pub url: String,
    pub types: Vec<PlatformEventType>,
    /// Delivered up to here (an encoded feed cursor).
    pub cursor: String,
    /// Failed attempts in a row of the current delivery.
    pub attempts: u32,
    /// When the current run of failures began.
    pub failing_since: Option<DateTime<Utc>>,
    pub retry_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Set while parked (dead-lettered).
    pub dead_since: Option<DateTime<Utc>>,
    pub delivered_events: u64,
    pub created: bool,
    pub deleted: bool,
}

impl SubscriptionState {
    pub fn evolve(mut self, event: &SubscriptionEvent) -> Self {
        self.version += 1;
        match event {
            SubscriptionEvent::SubscriptionCreated {
                url, types, cursor, ..
            } => {
                self.url = url.clone();
                self.types = types.clone();
                self.cursor = cursor.clone();
                self.created = true;
            }
            SubscriptionEvent::DeliverySucceeded {
                next_cursor,
                event_ids,
                ..
            } => {
                self.cursor = next_cursor.clone();
                self.delivered_events += event_ids.len() as u64;
                self.attempts = 0;
                self.failing_since = None;
                self.retry_at = None;
                self.last_error = None;
            }
            SubscriptionEvent::DeliveryFailed {
                attempt,
                error,
                retry_at,
                at,
                ..
            } => {
                self.attempts = *attempt;
                self.failing_since = self.failing_since.or(Some(*at));
                self.retry_at = Some(*retry_at);
                self.last_error = Some(error.clone());
            }
            SubscriptionEvent::DeadLettered { at, .. } => {
                self.dead_since = Some(*at);
                self.retry_at = None;
            }
            SubscriptionEvent::ReplayRequested { cursor, .. } => {
                self.cursor = cursor.clone();
                self.dead_since = None;
                self.attempts = 0;
                self.failing_since = None;
                self.retry_at = None;
            }
            SubscriptionEvent::SubscriptionDeleted { .. } => {
                self.deleted = true;
            }
        }
        self
    }

    /// `active`, `retrying`, `dead_letter` or `deleted`.
    pub fn status(&self) -> &'static str {
        if self.deleted {
            "deleted"
        } else if self.dead_since.is_some() {
            "dead_letter"
        } else if self.attempts > 0 {
            "retrying"
        } else {
            "active"
        }
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct PushPolicy {
    /// Exponential with jitter: 1 s doubling to 1 h by default.
    pub backoff: BackoffPolicy,
    /// Failures lasting this long park the subscription. Default 24 h.
    pub max_retry_age: chrono::Duration,
    /// Platform events per delivery, at most. Default 100.
    pub batch: usize,
    /// One delivery's deadline (connect to last byte). Default 10 s.
    pub timeout: Duration,
}

impl Default for PushPolicy {
    fn default() -> Self {
        PushPolicy {
            backoff: BackoffPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(3600),
                ..BackoffPolicy::default()
            },
            max_retry_age: chrono::Duration::hours(24),
            batch: 100,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a subscription's worker does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextDelivery {
    /// Read the feed after the cursor and deliver what there is.
    Deliver,
    /// Backing off until then.
    WaitUntil(DateTime<Utc>),
    /// Dead-lettered: nothing until an operator replays.
    Parked,
    /// Deleted (or never created): the worker stops.
    Stop,
}

/// The cluster slice a subscription belongs to. Only the node holding that
/// slice's lease delivers it — one worker cluster-wide, so deliveries stay
/// in order and a batch is not POSTed once per node. The same hash as a
/// connection's slice, so the cluster's leases and hand-overs cover it.
pub fn delivery_slice(id: &uuid::Uuid) -> u16 {
    super::cluster::slice_of(id)
}

pub fn next_delivery(state: &SubscriptionState, now: DateTime<Utc>) -> NextDelivery {
    if !state.created || state.deleted {
        return NextDelivery::Stop;
    }
    if state.dead_since.is_some() {
        return NextDelivery::Parked;
    }
    match state.retry_at {
        Some(at) if at > now => NextDelivery::WaitUntil(at),
        _ => NextDelivery::Deliver,
    }
}

/// One failed delivery attempt, as the shell saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    pub delivery_id: String,
    pub event_ids: Vec<String>,
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    pub error: String,
}

/// The events recording a failed delivery: retried after the backoff, or
/// dead-lettered once failures have lasted `max_retry_age`.
pub fn delivery_failed(
    state: &SubscriptionState,
    failed: FailedAttempt,
    now: DateTime<Utc>,
    unit_random: f64,
    policy: &PushPolicy,
) -> Vec<SubscriptionEvent> {
    let FailedAttempt {
        delivery_id,
        event_ids,
        status,
        error,
    } = failed;
    let attempt = state.attempts.saturating_add(1);
    let delay = policy.backoff.next_delay(attempt, None, unit_random);
    let retry_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
    let since = state.failing_since.unwrap_or(now);
    let mut events = vec![SubscriptionEvent::DeliveryFailed {
        delivery_id,
        event_ids,
        attempt,
        status,
        error: error.chars().take(500).collect(),
        retry_at,
        at: now,
    }];
    if now - since >= policy.max_retry_age {
        events.push(SubscriptionEvent::DeadLettered {
            cursor: state.cursor.clone(),
            attempts: attempt,
            since,
            at: now,
        });
    }
    events
}

/// Why a receiver URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url: not a valid absolute URL")]
    Invalid,
    #[error("url: https is required (http only to a loopback address)")]
    NotHttps,
    #[error("url: must not carry credentials or a fragment")]
    Credentials,
    #[error("url: at most 2000 characters")]
    TooLong,
}

/// Checks a receiver URL: https, or http to loopback (`localhost`,
/// `127.0.0.0/8`, `[::1]`); no user info, no fragment.
pub fn validate_url(url: &str) -> Result<(), UrlError> {
    if url.len() > 2000 {
        return Err(UrlError::TooLong);
    }
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::Invalid)?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlError::Invalid);
    }
    if authority.contains('@') || url.contains('#') {
        return Err(UrlError::Credentials);
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(UrlError::NotHttps),
        _ => Err(UrlError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
    }

    fn created() -> SubscriptionState {
        SubscriptionState::default().evolve(&SubscriptionEvent::SubscriptionCreated {
            url: "https://platform.example/hooks".into(),
            types: vec![],
            cursor: "start".into(),
            secret_sha256: "00".into(),
            at: t0(),
        })
    }

    fn fail(
        s: SubscriptionState,
        now: DateTime<Utc>,
    ) -> (SubscriptionState, Vec<SubscriptionEvent>) {
        let events = delivery_failed(
            &s,
            FailedAttempt {
                delivery_id: "d1".into(),
                event_ids: vec!["e1".into()],
                status: Some(500),
                error: "500".into(),
            },
            now,
            0.5,
            &PushPolicy::default(),
        );
        (events.iter().fold(s, |s, e| s.evolve(e)), events)
    }

    #[test]
    fn failures_back_off_exponentially_and_park_after_a_day() {
        let mut s = created();
        assert_eq!(next_delivery(&s, t0()), NextDelivery::Deliver);
        let mut now = t0();
        let mut delays = Vec::new();
        loop {
            let (next, events) = fail(s, now);
            s = next;
            if events.len() == 2 {
                break;
            }
            let NextDelivery::WaitUntil(at) = next_delivery(&s, now) else {
                panic!("a failure waits");
            };
            delays.push((at - now).num_milliseconds());
            now = at;
        }
        assert!(delays.windows(2).take(5).all(|w| w[1] > w[0]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 3_600_000));
        assert!(now - t0() >= chrono::Duration::hours(24));
        assert!(now - t0() < chrono::Duration::hours(26));
        assert_eq!(next_delivery(&s, now), NextDelivery::Parked);
        assert_eq!(s.status(), "dead_letter");
        // The operator replays from a cursor: deliveries resume.
        let s = s.evolve(&SubscriptionEvent::ReplayRequested {
            cursor: "c7".into(),
            at: now,
        });
        assert_eq!(next_delivery(&s, now), NextDelivery::Deliver);
        assert_eq!(s.cursor, "c7");
        assert_eq!(s.status(), "active");
    }

    #[test]
    fn a_success_moves_the_cursor_and_ends_the_failures() {
        let (s, _) = fail(created(), t0());
        assert_eq!(s.status(), "retrying");
        let s = s.evolve(&SubscriptionEvent::DeliverySucceeded {
            delivery_id: "d1".into(),
            event_ids: vec!["e1".into(), "e2".into()],
            next_cursor: "c2".into(),
            attempt: 2,
            status: 204,
            at: t0(),
        });
        assert_eq!(s.cursor, "c2");
        assert_eq!(s.delivered_events, 2);
        assert_eq!(next_delivery(&s, t0()), NextDelivery::Deliver);
        let s = s.evolve(&SubscriptionEvent::SubscriptionDeleted { at: t0() });
        assert_eq!(next_delivery(&s, t0()), NextDelivery::Stop);
    }

    #[test]
    fn receiver_urls_must_be_https_outside_loopback() {
        for ok in [
            "https://platform.example/hooks",
            "https://platform.example:8443/h?x=1",
            "http://127.0.0.1:9000/h",
            "http://localhost/h",
            "http://[::1]:80/h",
        ] {
            assert_eq!(validate_url(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_url("http://platform.example/h"),
            Err(UrlError::NotHttps)
        );
        assert_eq!(validate_url("http://10.0.0.1/h"), Err(UrlError::NotHttps));
        assert_eq!(
            validate_url("http://127.0.0.1.evil.example/h"),
            Err(UrlError::NotHttps)
        );
        assert_eq!(validate_url("ftp://x/h"), Err(UrlError::Invalid));
        assert_eq!(validate_url("platform.example"), Err(UrlError::Invalid));
        assert_eq!(
            validate_url("https://u:p@platform.example/"),
            Err(UrlError::Credentials)
        );
        assert_eq!(
            validate_url(&format!("https://a/{}", "x".repeat(2000))),
            Err(UrlError::TooLong)
        );
    }

    #[test]
    fn events_round_trip_through_the_log_format() {
        let e = SubscriptionEvent::DeliveryFailed {
            delivery_id: "d".into(),
            event_ids: vec!["a".into()],
            attempt: 1,
            status: None,
            error: "timeout".into(),
            retry_at: t0(),
            at: t0(),
        };
        let (ty, payload) = e.to_parts().unwrap();
        assert_eq!(SubscriptionEvent::from_parts(ty, 1, payload).unwrap(), e);
    }
}
