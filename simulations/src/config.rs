//! Simulator configuration: every knob has a documented default (see README).

use serde::{Deserialize, Serialize};

/// How the simulators behave. `Default` gives values close to the real
/// providers, except retry delays, which are short so tests stay fast.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Port to bind on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Seed of the deterministic RNG (ids, tokens, message-number gaps, error rates).
    pub seed: u64,
    /// Lifetime of access tokens from both token endpoints.
    pub access_token_lifetime_secs: i64,
    /// First delay between push delivery attempts; doubles per attempt.
    pub push_retry_delay_ms: u64,
    /// Attempts per push notification (first try included).
    pub push_max_attempts: u32,
    /// Google freeBusy: longest accepted range (undocumented in reality).
    pub google_freebusy_max_days: i64,
    /// Google watch: default and maximum channel lifetime (`params.ttl`).
    pub google_channel_ttl_secs: i64,
    /// Google push: HTTP timeout of one delivery attempt (undocumented in reality).
    pub google_push_timeout_ms: u64,
    /// Graph: longest subscription lifetime; longer requests are clamped.
    pub graph_subscription_max_minutes: i64,
    /// Graph: deadline of the validation handshake.
    pub graph_validation_timeout_ms: u64,
    /// Graph: deadline of one change/lifecycle notification delivery.
    pub graph_notification_timeout_ms: u64,
    /// Graph: concurrent requests per mailbox before 429 `ApplicationThrottled`.
    pub graph_mailbox_concurrency: usize,
    /// Graph: default page size of calendarView, delta and event lists.
    pub graph_page_size: usize,
    /// Graph delta: probability that an item is repeated within a page.
    pub graph_delta_repeat_rate: f64,
    /// How far past `now` unbounded recurring series are expanded.
    pub recurrence_horizon_days: i64,
    /// Google sync tokens older than this answer 410 (None = never expire).
    pub google_sync_token_ttl_secs: Option<i64>,
    /// Graph deltaLinks older than this answer 410 (None = never expire).
    pub graph_delta_token_ttl_secs: Option<i64>,
    /// Google per-user quota (requests per minute, sliding); over it → 403
    /// `userRateLimitExceeded`. None = off (the real default is 600).
    pub google_user_requests_per_minute: Option<u32>,
    /// Outlook per-mailbox quota (requests per 10 minutes, sliding); over it
    /// → 429 with `Retry-After`. Throttled requests count too. None = off
    /// (the real limit is 10,000).
    pub graph_mailbox_requests_per_10_min: Option<u32>,
    /// Google: `updatedMin` further back than this → 410
    /// `updatedMinTooLongAgo` (None = any age; the real limit is undocumented).
    pub google_updated_min_max_days: Option<i64>,
    /// Google events.list: probability that a page holds fewer than
    /// `maxResults` items (possibly none) although more pages follow.
    pub google_short_page_rate: f64,
    /// Graph delta: probability of an empty page with a nextLink (capped at 0.9).
    pub graph_delta_empty_page_rate: f64,
    /// Records kept in each of the request and delivery logs (oldest dropped).
    pub log_capacity: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            port: 0,
            seed: 42,
            access_token_lifetime_secs: 3600,
            push_retry_delay_ms: 200,
            push_max_attempts: 5,
            google_freebusy_max_days: 90,
            google_channel_ttl_secs: 604_800,
            google_push_timeout_ms: 10_000,
            graph_subscription_max_minutes: 4230,
            graph_validation_timeout_ms: 10_000,
            graph_notification_timeout_ms: 3_000,
            graph_mailbox_concurrency: 4,
            graph_page_size: 10,
            graph_delta_repeat_rate: 0.0,
            recurrence_horizon_days: 730,
            google_sync_token_ttl_secs: None,
            graph_delta_token_ttl_secs: None,
            google_user_requests_per_minute: None,
            graph_mailbox_requests_per_10_min: None,
            google_updated_min_max_days: None,
            google_short_page_rate: 0.0,
            graph_delta_empty_page_rate: 0.0,
            log_capacity: 100_000,
        }
    }
}

impl SimConfig {
    /// Defaults with fast push retries (20 ms) and short push deadlines
    /// (Google 2 s, Graph validation 2 s), for test suites.
    pub fn for_tests() -> Self {
        SimConfig {
            push_retry_delay_ms: 20,
            google_push_timeout_ms: 2_000,
            graph_validation_timeout_ms: 2_000,
            ..SimConfig::default()
        }
    }
}
