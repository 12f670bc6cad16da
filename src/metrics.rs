//! Prometheus metrics: every metric name and every recording helper lives
//! here, so `ops/METRICS.md`, the alert rules and the dashboard have one
//! place to agree with.
//!
//! Label values are never taken from input verbatim: each helper maps what
//! it is given onto a fixed set (`provider`, `kind`, `reason`, …) so a bad
//! caller cannot blow up the series count. Connection ids never become
//! labels; per-connection detail is in `calsync status` and
//! `GET /admin/status`.
//!
//! The recorder is process-wide (the `metrics` crate has one global
//! recorder): [`install`] is idempotent, so `serve`, the `/metrics` route
//! and tests can all call it.

pub mod refresh;

pub use refresh::refresh;

use metrics::{counter, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const WEBHOOKS_RECEIVED: &str = "calsync_webhooks_received_total";
pub const WEBHOOK_DURATION: &str = "calsync_webhook_duration_seconds";
pub const NOTIFICATIONS: &str = "calsync_notifications_total";
pub const WEBHOOK_TO_BUSY: &str = "calsync_webhook_to_busy_seconds";
pub const SYNCS_STARTED: &str = "calsync_syncs_started_total";
pub const SYNCS_SUCCEEDED: &str = "calsync_syncs_succeeded_total";
pub const SYNCS_FAILED: &str = "calsync_syncs_failed_total";
pub const SYNC_DURATION: &str = "calsync_sync_duration_seconds";
pub const EVENTS_APPENDED: &str = "calsync_events_appended_total";
pub const APPEND_CONFLICTS: &str = "calsync_append_conflicts_total";
pub const APPEND_DURATION: &str = "calsync_append_duration_seconds";
pub const APPEND_BATCH_SIZE: &str = "calsync_append_batch_size";
pub const CONNECTIONS: &str = "calsync_connections";
pub const ACTORS: &str = "calsync_actors";
pub const ACTOR_RESTARTS: &str = "calsync_actor_restarts_total";
pub const ACTOR_QUARANTINES: &str = "calsync_actor_quarantines_total";
pub const OUTBOUND_WRITES: &str = "calsync_outbound_writes_total";
pub const OUTBOUND_WRITE_DURATION: &str = "calsync_outbound_write_duration_seconds";
pub const OUTBOUND_PENDING: &str = "calsync_outbound_intents_pending";
pub const OUTBOUND_OLDEST_AGE: &str = "calsync_outbound_intent_oldest_age_seconds";
pub const CHANNEL_EXPIRY_HORIZON: &str = "calsync_channel_expiry_horizon_seconds";
pub const CHANNELS_OPEN: &str = "calsync_channels_open";
pub const CALENDAR_SYNC_AGE_MAX: &str = "calsync_calendar_sync_age_max_seconds";
pub const CALENDARS_NEVER_SYNCED: &str = "calsync_calendars_never_synced";
pub const FLAG_ENABLED: &str = "calsync_flag_enabled";
pub const PRODUCTION_MODE: &str = "calsync_production_mode";
pub const REFRESH_ERRORS: &str = "calsync_metrics_refresh_errors_total";
pub const BUILD_INFO: &str = "calsync_build_info";
pub const CALL_BUDGET_EXCEEDED: &str = "calsync_call_budget_exceeded_total";
pub const CHANNEL_UPKEEP_FAILURES: &str = "calsync_channel_upkeep_failures_total";
pub const CALENDARS_UNHEALTHY: &str = "calsync_calendars_unhealthy";
pub const BOOKINGS_FAILED: &str = "calsync_bookings_failed";

/// Every metric name above, for the documentation test.
pub const ALL: &[&str] = &[
    WEBHOOKS_RECEIVED,
    WEBHOOK_DURATION,
    NOTIFICATIONS,
    WEBHOOK_TO_BUSY,
    SYNCS_STARTED,
    SYNCS_SUCCEEDED,
    SYNCS_FAILED,
    SYNC_DURATION,
    EVENTS_APPENDED,
    APPEND_CONFLICTS,
    APPEND_DURATION,
    APPEND_BATCH_SIZE,
    CONNECTIONS,
    ACTORS,
    ACTOR_RESTARTS,
    ACTOR_QUARANTINES,
    OUTBOUND_WRITES,
    OUTBOUND_WRITE_DURATION,
    OUTBOUND_PENDING,
    OUTBOUND_OLDEST_AGE,
    CHANNEL_EXPIRY_HORIZON,
    CHANNELS_OPEN,
    CALENDAR_SYNC_AGE_MAX,
    CALENDARS_NEVER_SYNCED,
    FLAG_ENABLED,
    PRODUCTION_MODE,
    REFRESH_ERRORS,
    BUILD_INFO,
    CALL_BUDGET_EXCEEDED,
    CHANNEL_UPKEEP_FAILURES,
    CALENDARS_UNHEALTHY,
    BOOKINGS_FAILED,
    // Cluster mode (docs/CLUSTER.md), each labelled `node`.
    crate::cluster::metric_names::SLICES_HELD,
    crate::cluster::metric_names::FORWARDED,
    crate::cluster::metric_names::INBOXED,
    crate::cluster::metric_names::INBOX_DRAINED,
    crate::cluster::metric_names::SLICES_LOST,
    crate::cluster::metric_names::LEASE_TICK_FAILURES,
];

/// Histogram buckets (seconds): from a sub-millisecond append to a
/// minute-long full sync.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Histogram buckets of the group-commit batch size (appends).
const BATCH_BUCKETS: &[f64] = &[2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// How often the recorder drops idle histogram samples when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(10);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle
/// (rendering is `handle.render()`). Later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE.get_or_init(build).clone()
}

fn build() -> PrometheusHandle {
    let builder = match PrometheusBuilder::new().set_buckets(BUCKETS).and_then(|b| {
        b.set_buckets_for_metric(Matcher::Full(APPEND_BATCH_SIZE.into()), BATCH_BUCKETS)
    }) {
        Ok(b) => b,
        // Only an empty bucket list is refused, and neither list is empty.
        Err(e) => {
            tracing::error!(error = %e, "histogram buckets refused; using summaries");
            PrometheusBuilder::new()
        }
    };
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(e) = metrics::set_global_recorder(recorder) {
        // Someone installed another recorder first: /metrics still renders,
        // but only what this handle sees (nothing). Say so loudly.
        tracing::error!(error = %e, "a metrics recorder was already installed; /metrics will be empty");
    }
    describe();
    prime();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        // Histograms keep samples until rendered; without scrapes this
        // bounds their memory.
        let upkeep = handle.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_EVERY).await;
                upkeep.run_upkeep();
            }
        });
    }
    handle
}

/// Registers every family at zero, so a fresh node exposes all of them
/// (dashboards and absence alerts see a 0, not nothing), each with its
/// main label sets.
fn prime() {
    for provider in ["google", "microsoft"] {
        for outcome in ["accepted", "duplicate"] {
            counter!(WEBHOOKS_RECEIVED, "provider" => provider, "outcome" => outcome, "reason" => "none")
                .absolute(0);
            let _ = histogram!(WEBHOOK_DURATION, "provider" => provider, "outcome" => outcome);
            counter!(NOTIFICATIONS, "provider" => provider, "result" => outcome).absolute(0);
        }
        let _ = histogram!(WEBHOOK_TO_BUSY, "provider" => provider);
        counter!(SYNCS_STARTED, "provider" => provider).absolute(0);
        counter!(SYNCS_SUCCEEDED, "provider" => provider).absolute(0);
        counter!(SYNCS_FAILED, "provider" => provider, "kind" => "other").absolute(0);
        for result in ["succeeded", "failed"] {
            let _ = histogram!(SYNC_DURATION, "provider" => provider, "result" => result);
        }
        for operation in ["create", "update", "delete"] {
            counter!(OUTBOUND_WRITES, "provider" => provider, "operation" => operation, "result" => "ok")
                .absolute(0);
            let _ = histogram!(OUTBOUND_WRITE_DURATION, "provider" => provider, "operation" => operation);
        }
        counter!(CALL_BUDGET_EXCEEDED, "provider" => provider).absolute(0);
        for op in ["open", "renew"] {
            counter!(CHANNEL_UPKEEP_FAILURES, "provider" => provider, "op" => op).absolute(0);
        }
    }
    for kind in ["connection", "settings"] {
        counter!(EVENTS_APPENDED, "stream_kind" => kind).absolute(0);
        counter!(APPEND_CONFLICTS, "stream_kind" => kind).absolute(0);
        let _ = histogram!(APPEND_DURATION, "stream_kind" => kind);
    }
    let _ = histogram!(APPEND_BATCH_SIZE);
    counter!(ACTOR_RESTARTS).absolute(0);
    counter!(ACTOR_QUARANTINES).absolute(0);
    counter!(REFRESH_ERRORS).absolute(0);
    for state in ["running", "passivated", "quarantined"] {
        gauge!(ACTORS, "state" => state).set(0.0);
    }
    for status in ["backoff", "unavailable"] {
        gauge!(CALENDARS_UNHEALTHY, "status" => status).set(0.0);
    }
    gauge!(BOOKINGS_FAILED).set(0.0);
    outbound_intents(0, None);
    channel_expiry_horizon(f64::INFINITY);
    gauge!(CHANNELS_OPEN).set(0.0);
    gauge!(CALENDAR_SYNC_AGE_MAX).set(0.0);
    gauge!(CALENDARS_NEVER_SYNCED).set(0.0);
    gauge!(PRODUCTION_MODE).set(0.0);
    for flag in crate::core::settings::Flag::ALL {
        gauge!(FLAG_ENABLED, "flag" => flag.as_str()).set(0.0);
    }
    refresh::prime_connections();
}

fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
    c!(WEBHOOKS_RECEIVED, Unit::Count, "Provider webhooks received, by provider, outcome (accepted, duplicate, rejected) and rejection reason");
    h!(
        WEBHOOK_DURATION,
        Unit::Seconds,
        "Time to answer a provider webhook, by provider and outcome"
    );
    c!(NOTIFICATIONS, Unit::Count, "Change notifications reaching a connection actor, by provider and result (accepted, duplicate)");
    h!(WEBHOOK_TO_BUSY, Unit::Seconds, "From an accepted notification to the end of the sync that followed it (busy intervals committed)");
    c!(
        SYNCS_STARTED,
        Unit::Count,
        "Provider syncs started, by provider"
    );
    c!(
        SYNCS_SUCCEEDED,
        Unit::Count,
        "Provider syncs that completed, by provider"
    );
    c!(
        SYNCS_FAILED,
        Unit::Count,
        "Provider syncs that failed, by provider and error kind"
    );
    h!(
        SYNC_DURATION,
        Unit::Seconds,
        "Duration of one sync of all of a connection's calendars, by provider and result"
    );
    c!(
        EVENTS_APPENDED,
        Unit::Count,
        "Events committed to the log, by stream kind"
    );
    c!(
        APPEND_CONFLICTS,
        Unit::Count,
        "Appends refused because the stream moved (fencing), by stream kind"
    );
    h!(
        APPEND_DURATION,
        Unit::Seconds,
        "Latency of a committed append (transaction including read-model changes), by stream kind"
    );
    h!(
        APPEND_BATCH_SIZE,
        Unit::Count,
        "Appends merged into one group-commit transaction (batches of two or more)"
    );
    g!(
        CONNECTIONS,
        Unit::Count,
        "Connections by status, from the connections read model"
    );
    g!(ACTORS, Unit::Count, "Connection actors on this node: running, passivated (live connection without an actor), quarantined");
    c!(
        ACTOR_RESTARTS,
        Unit::Count,
        "Connection actor failures that led to a scheduled restart"
    );
    c!(
        ACTOR_QUARANTINES,
        Unit::Count,
        "Connections quarantined after too many actor failures in the restart window"
    );
    c!(
        OUTBOUND_WRITES,
        Unit::Count,
        "Outbound calendar writes, by provider, operation and result"
    );
    h!(
        OUTBOUND_WRITE_DURATION,
        Unit::Seconds,
        "Latency of one outbound calendar write, by provider and operation"
    );
    g!(
        OUTBOUND_PENDING,
        Unit::Count,
        "Outbound intents recorded but not yet resolved"
    );
    g!(
        OUTBOUND_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest unresolved outbound intent (0 when none)"
    );
    g!(
        CHANNEL_EXPIRY_HORIZON,
        Unit::Seconds,
        "Time until the earliest open webhook channel / subscription expiry (negative: already expired; +Inf: none open)"
    );
    g!(
        CHANNELS_OPEN,
        Unit::Count,
        "Open (not closed) webhook channels / subscriptions"
    );
    g!(
        CALENDAR_SYNC_AGE_MAX,
        Unit::Seconds,
        "Age of the oldest last-successful-sync among calendars of live connections"
    );
    g!(
        CALENDARS_NEVER_SYNCED,
        Unit::Count,
        "Calendars of live connections that never completed a sync"
    );
    g!(
        FLAG_ENABLED,
        Unit::Count,
        "Feature flag state on this node (1 on, 0 off), by flag"
    );
    g!(
        PRODUCTION_MODE,
        Unit::Count,
        "1 when production mode (allowlists enforced) is on"
    );
    c!(
        REFRESH_ERRORS,
        Unit::Count,
        "Failures to refresh the gauges read from the database at scrape time"
    );
    g!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the version label says which build is running"
    );
}

/// Maps a provider name onto the label set.
fn provider_label(provider: &str) -> &'static str {
    match provider {
        "google" => "google",
        "microsoft" | "graph" | "outlook" => "microsoft",
        _ => "other",
    }
}

/// Error kinds: the provider error kinds (`ProviderError::kind`) plus the
/// sync task's own (`credentials`, `record`).
fn kind_label(kind: &str) -> &'static str {
    const KINDS: &[&str] = &[
        "reauthorize",
        "rate_limited",
        "unavailable",
        "resync_required",
        "not_found",
        "gone",
        "duplicate",
        "precondition_failed",
        "rejected",
        "credentials",
        "record",
        "timeout",
    ];
    KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other")
}

/// Every `reason` label a rejected webhook can carry (bounded: anything
/// else is counted as `other`, the last entry).
pub const REJECTION_REASONS: &[&str] = &[
    "too_large",
    "bad_request",
    "unauthorized",
    "forbidden",
    "unknown_channel",
    "unknown_connection",
    "disabled",
    "not_allowlisted",
    "busy",
    "unavailable",
    "quarantined",
    "rejected",
    "other",
];

/// Why a webhook was refused, as the edge classifies it.
fn reason_label(reason: &str) -> &'static str {
    REJECTION_REASONS
        .iter()
        .find(|r| **r == reason)
        .copied()
        .unwrap_or("other")
}

fn stream_kind(stream: &str) -> &'static str {
    if stream.starts_with(crate::core::ids::StreamName::CONNECTION_PREFIX) {
        "connection"
    } else if stream == "settings" {
        "settings"
    } else {
        "other"
    }
}

/// One webhook answered at the HTTP edge. `outcome` is `accepted`,
/// `duplicate`, or the rejection reason (`too_large`, `bad_request`,
/// `unauthorized`, `forbidden`, `unknown_channel`, `unknown_connection`,
/// `disabled`, `not_allowlisted`, `busy`, `unavailable`, `quarantined`,
/// `rejected`; anything else is counted as `other`).
pub fn webhook_received(provider: &str, outcome: &str) {
    let provider = provider_label(provider);
    let (outcome, reason) = match outcome {
        "accepted" => ("accepted", "none"),
        "duplicate" => ("duplicate", "none"),
        reason => ("rejected", reason_label(reason)),
    };
    counter!(WEBHOOKS_RECEIVED, "provider" => provider, "outcome" => outcome, "reason" => reason)
        .increment(1);
}

/// Time from a webhook's arrival to its answer (same `outcome` as
/// [`webhook_received`], folded to accepted / duplicate / rejected).
pub fn webhook_duration(provider: &str, outcome: &str, elapsed: Duration) {
    let outcome = match outcome {
        "accepted" => "accepted",
        "duplicate" => "duplicate",
        _ => "rejected",
    };
    histogram!(WEBHOOK_DURATION, "provider" => provider_label(provider), "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// A notification committed (or recognised as a duplicate) by its
/// connection actor: the dedupe window's view, whatever the transport.
pub fn notification(provider: &str, duplicate: bool) {
    let result = if duplicate { "duplicate" } else { "accepted" };
    counter!(NOTIFICATIONS, "provider" => provider_label(provider), "result" => result)
        .increment(1);
}

/// From an accepted notification to the end of the sync it triggered.
pub fn webhook_to_busy(provider: &str, elapsed: Duration) {
    histogram!(WEBHOOK_TO_BUSY, "provider" => provider_label(provider))
        .record(elapsed.as_secs_f64());
}

pub fn sync_started(provider: &str) {
    counter!(SYNCS_STARTED, "provider" => provider_label(provider)).increment(1);
}

/// A sync ended: `failure` is `None` on success, else the error kind.
pub fn sync_finished(provider: &str, failure: Option<&str>, elapsed: Duration) {
    let provider = provider_label(provider);
    let result = match failure {
        None => {
            counter!(SYNCS_SUCCEEDED, "provider" => provider).increment(1);
            "succeeded"
        }
        Some(kind) => {
            counter!(SYNCS_FAILED, "provider" => provider, "kind" => kind_label(kind)).increment(1);
            "failed"
        }
    };
    histogram!(SYNC_DURATION, "provider" => provider, "result" => result)
        .record(elapsed.as_secs_f64());
}

/// A committed append of `n` events to `stream`, which took `elapsed`.
pub fn events_appended(stream: &str, n: usize, elapsed: Duration) {
    let kind = stream_kind(stream);
    counter!(EVENTS_APPENDED, "stream_kind" => kind).increment(n as u64);
    histogram!(APPEND_DURATION, "stream_kind" => kind).record(elapsed.as_secs_f64());
}

/// A group-commit batch of `appends` appends went to the database as one
/// transaction.
pub fn append_batch(appends: usize) {
    histogram!(APPEND_BATCH_SIZE).record(appends as f64);
}

/// An append refused because the stream moved (another writer: fencing).
pub fn append_conflict(stream: &str) {
    counter!(APPEND_CONFLICTS, "stream_kind" => stream_kind(stream)).increment(1);
}

/// The supervisor scheduled a restart after a connection actor failed.
pub fn actor_restarted() {
    counter!(ACTOR_RESTARTS).increment(1);
}

/// The supervisor quarantined a connection.
pub fn actor_quarantined() {
    counter!(ACTOR_QUARANTINES).increment(1);
}

/// One outbound calendar write. `operation`: `create`, `update`, `delete`,
/// `mark_cancelled` (anything else: `other`); `result`: `ok` or a
/// `ProviderError::kind`.
pub fn outbound_write(provider: &str, operation: &str, result: &str, elapsed: Duration) {
    let provider = provider_label(provider);
    let operation = match operation {
        "create" => "create",
        "update" => "update",
        "delete" => "delete",
        "mark_cancelled" => "mark_cancelled",
        _ => "other",
    };
    let result = if result == "ok" {
        "ok"
    } else {
        kind_label(result)
    };
    counter!(OUTBOUND_WRITES, "provider" => provider, "operation" => operation, "result" => result)
        .increment(1);
    histogram!(OUTBOUND_WRITE_DURATION, "provider" => provider, "operation" => operation)
        .record(elapsed.as_secs_f64());
}

/// A connection spent its hourly budget of provider calls nobody asked
/// for: background work waits (guarantee 9's backstop).
pub fn call_budget_exceeded(provider: &str) {
    counter!(CALL_BUDGET_EXCEEDED, "provider" => provider_label(provider)).increment(1);
}

/// Opening, renewing or closing a channel failed (`op`: `open`, `renew`).
pub fn channel_upkeep_failed(provider: &str, op: &str) {
    let op = match op {
        "open" => "open",
        "renew" => "renew",
        _ => "other",
    };
    counter!(CHANNEL_UPKEEP_FAILURES, "provider" => provider_label(provider), "op" => op)
        .increment(1);
}

/// Selected calendars that are backing off or unavailable, by status.
pub fn calendars_unhealthy(status: &str, n: u64) {
    let status = match status {
        "backoff" => "backoff",
        "unavailable" => "unavailable",
        _ => "other",
    };
    gauge!(CALENDARS_UNHEALTHY, "status" => status).set(n as f64);
}

/// Bookings whose write failed for good and waits for a change or a retry.
pub fn bookings_failed(n: u64) {
    gauge!(BOOKINGS_FAILED).set(n as f64);
}

/// Unresolved outbound intents and the age of the oldest (`None`: none).
pub fn outbound_intents(pending: u64, oldest: Option<Duration>) {
    gauge!(OUTBOUND_PENDING).set(pending as f64);
    gauge!(OUTBOUND_OLDEST_AGE).set(oldest.map_or(0.0, |d| d.as_secs_f64()));
}

/// Seconds until the earliest channel / subscription expiry (negative if
/// one already expired).
pub fn channel_expiry_horizon(seconds: f64) {
    gauge!(CHANNEL_EXPIRY_HORIZON).set(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(provider_label("google"), "google");
        assert_eq!(provider_label("x".repeat(500).as_str()), "other");
        assert_eq!(kind_label("unavailable"), "unavailable");
        assert_eq!(kind_label("connection 1234 exploded"), "other");
        assert_eq!(reason_label("too_large"), "too_large");
        assert_eq!(reason_label("a fresh reason"), "other");
        assert_eq!(stream_kind("connection-abc"), "connection");
        assert_eq!(stream_kind("settings"), "settings");
    }

    #[test]
    fn install_is_idempotent_and_renders_what_was_recorded() {
        let handle = install();
        actor_restarted();
        sync_finished("google", Some("unavailable"), Duration::from_millis(5));
        let text = install().render();
        assert!(text.contains(ACTOR_RESTARTS), "{text}");
        assert!(
            text.contains(r#"calsync_syncs_failed_total{provider="google",kind="unavailable"}"#),
            "{text}"
        );
        assert!(handle
            .render()
            .contains("calsync_sync_duration_seconds_bucket"));
    }
}
