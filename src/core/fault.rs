//! What a failed provider call means, and whom it concerns (guarantee 10).
//!
//! The shell reports a failure as a [`Fault`]: what the provider said, as
//! plain data. The core decides its *scope* — the whole connection, one
//! calendar, one channel or one booking — and whether retrying can help.
//! The rules (documented in README's "Failure isolation"):
//!
//! - the grant is gone (`invalid_grant`, a 401 after a refresh) → the
//!   connection needs re-authorisation; nothing is called until then;
//! - throttling (429, 403 `rateLimitExceeded`) and failures before any
//!   calendar is touched (the token endpoint down, credentials unreadable)
//!   → the connection backs off: quotas are per user / mailbox;
//! - a calendar's own call failing with 5xx, a timeout or an unreadable
//!   answer → that calendar backs off; the others carry on;
//! - 404, 403 or another 4xx on one calendar → that calendar is
//!   `unavailable` with the provider's reason, probed again rarely;
//! - an outbound write failing with 5xx → that booking backs off; with a
//!   4xx retrying cannot fix → that booking is `failed` until it changes or
//!   an operator retries it; a Google 409 on a deleted event's id → the
//!   booking moves to the next id generation.

use super::outbound::{OutboundOp, WriteOutcome};
use serde::{Deserialize, Serialize};

/// What the provider said about one call, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The grant is gone.
    Reauthorize,
    /// Throttled.
    RateLimited,
    /// 5xx, timeout, refused connection, unreadable body.
    Unavailable,
    /// The sync cursor is invalid (Google 410 `fullSyncRequired`, Graph
    /// `SyncStateNotFound`).
    ResyncRequired,
    /// 404.
    NotFound,
    /// 410 (other than a resync).
    Gone,
    /// 409 on an id that exists (and is not a deleted event of ours).
    Duplicate,
    /// 409 on our deterministic id whose event was deleted: the id is
    /// reserved for good.
    IdRetired,
    /// 412.
    PreconditionFailed,
    /// Any other refusal (400, 403 …) with `status`.
    Rejected,
}

/// A failed call, as the shell reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// The HTTP status, when there was one.
    #[serde(default)]
    pub status: Option<u16>,
    /// Short stable label for events and metrics (`not_found`, …).
    pub label: String,
    pub message: String,
    /// The provider's `Retry-After`, in milliseconds.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

impl Fault {
    pub fn new(kind: FaultKind, label: impl Into<String>, message: impl Into<String>) -> Self {
        Fault {
            kind,
            status: None,
            label: label.into(),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_retry_after_ms(mut self, ms: Option<u64>) -> Self {
        self.retry_after_ms = ms;
        self
    }

    /// Transient trouble before any calendar was touched (credentials
    /// unreadable, the database unavailable while recording).
    pub fn transient(label: impl Into<String>, message: impl Into<String>) -> Self {
        Fault::new(FaultKind::Unavailable, label, message)
    }

    /// `label: message`, as status shows it.
    pub fn describe(&self) -> String {
        match self.status {
            Some(status) => format!("{} ({status}): {}", self.label, self.message),
            None => format!("{}: {}", self.label, self.message),
        }
    }
}

/// Whether a failure ends the rest of a task's calls: the grant is gone or
/// the account is throttled, so every further call would fail the same way
/// (and count against the quota).
pub fn stops_run(fault: &Fault) -> bool {
    matches!(fault.kind, FaultKind::Reauthorize | FaultKind::RateLimited)
}

/// Whom a sync failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncScope {
    /// Stop every call until re-authorised.
    Reauthorize,
    /// The whole connection backs off.
    Connection,
    /// This calendar backs off; the others carry on.
    CalendarTransient,
    /// This calendar is unavailable (permanent for now), probed rarely.
    CalendarUnavailable,
    /// This calendar's cursor is invalid: full round now.
    Resync,
}

/// The scope of a failed call of a sync round. `calendar_call` is false for
/// failures before any calendar was touched (loading the grant, refreshing
/// the access token).
pub fn sync_scope(fault: &Fault, calendar_call: bool) -> SyncScope {
    match fault.kind {
        FaultKind::Reauthorize => SyncScope::Reauthorize,
        FaultKind::RateLimited => SyncScope::Connection,
        _ if !calendar_call => SyncScope::Connection,
        FaultKind::ResyncRequired => SyncScope::Resync,
        FaultKind::Unavailable | FaultKind::PreconditionFailed | FaultKind::Duplicate => {
            SyncScope::CalendarTransient
        }
        FaultKind::NotFound | FaultKind::Gone | FaultKind::IdRetired | FaultKind::Rejected => {
            SyncScope::CalendarUnavailable
        }
    }
}

/// Whom a channel failure concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelScope {
    Reauthorize,
    /// The channel is gone at the provider: forget it (the plan opens a
    /// new one if one is wanted).
    Gone,
    /// This calendar's channel upkeep backs off.
    Backoff,
}

pub fn channel_scope(fault: &Fault) -> ChannelScope {
    match fault.kind {
        FaultKind::Reauthorize => ChannelScope::Reauthorize,
        FaultKind::NotFound | FaultKind::Gone => ChannelScope::Gone,
        _ => ChannelScope::Backoff,
    }
}

/// What a failed outbound write means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteVerdict {
    /// Not a failure after all: record this outcome.
    Outcome(WriteOutcome),
    Reauthorize,
    /// The connection backs off (throttled).
    Connection,
    /// This booking backs off.
    Transient,
    /// Retrying cannot help: the booking is `failed`.
    Permanent,
}

pub fn write_verdict(op: &OutboundOp, fault: &Fault) -> WriteVerdict {
    match (fault.kind, op) {
        (FaultKind::Reauthorize, _) => WriteVerdict::Reauthorize,
        (FaultKind::RateLimited, _) => WriteVerdict::Connection,
        // Our deterministic id belongs to an event someone deleted: Google
        // keeps it reserved, so the booking moves to the next generation.
        (FaultKind::IdRetired, OutboundOp::Create { .. }) => {
            WriteVerdict::Outcome(WriteOutcome::Missing)
        }
        // The event we update is gone at the provider: create anew (or, for
        // a mark, nothing is left to mark).
        (
            FaultKind::NotFound | FaultKind::Gone,
            OutboundOp::Update { .. } | OutboundOp::MarkCancelled { .. },
        ) => WriteVerdict::Outcome(WriteOutcome::Missing),
        (
            FaultKind::NotFound | FaultKind::Gone,
            OutboundOp::Delete { .. } | OutboundOp::DeleteTagged { .. },
        ) => WriteVerdict::Outcome(WriteOutcome::Deleted),
        (FaultKind::Unavailable | FaultKind::PreconditionFailed | FaultKind::ResyncRequired, _) => {
            WriteVerdict::Transient
        }
        (
            FaultKind::NotFound
            | FaultKind::Gone
            | FaultKind::Duplicate
            | FaultKind::IdRetired
            | FaultKind::Rejected,
            _,
        ) => WriteVerdict::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: FaultKind) -> Fault {
        Fault::new(kind, "x", "y")
    }

    const KINDS: [FaultKind; 10] = [
        FaultKind::Reauthorize,
        FaultKind::RateLimited,
        FaultKind::Unavailable,
        FaultKind::ResyncRequired,
        FaultKind::NotFound,
        FaultKind::Gone,
        FaultKind::Duplicate,
        FaultKind::IdRetired,
        FaultKind::PreconditionFailed,
        FaultKind::Rejected,
    ];

    #[test]
    fn one_calendar_failing_never_backs_off_the_connection_unless_throttled() {
        for kind in KINDS {
            let scope = sync_scope(&fault(kind), true);
            let connection_wide = matches!(scope, SyncScope::Connection | SyncScope::Reauthorize);
            assert_eq!(
                connection_wide,
                matches!(kind, FaultKind::RateLimited | FaultKind::Reauthorize),
                "{kind:?} → {scope:?}"
            );
        }
        assert_eq!(
            sync_scope(&fault(FaultKind::NotFound), true),
            SyncScope::CalendarUnavailable
        );
        assert_eq!(
            sync_scope(&fault(FaultKind::Unavailable), true),
            SyncScope::CalendarTransient
        );
        // Before any calendar: the token endpoint is down for everyone.
        assert_eq!(
            sync_scope(&fault(FaultKind::Unavailable), false),
            SyncScope::Connection
        );
    }

    #[test]
    fn write_failures_are_isolated_to_their_booking() {
        let create = OutboundOp::Create { generation: 0 };
        let update = OutboundOp::Update {
            external_event_id: "e".into(),
        };
        assert_eq!(
            write_verdict(&create, &fault(FaultKind::IdRetired)),
            WriteVerdict::Outcome(WriteOutcome::Missing)
        );
        assert_eq!(
            write_verdict(&update, &fault(FaultKind::NotFound)),
            WriteVerdict::Outcome(WriteOutcome::Missing)
        );
        assert_eq!(
            write_verdict(&create, &fault(FaultKind::Rejected).with_status(400)),
            WriteVerdict::Permanent
        );
        assert_eq!(
            write_verdict(&create, &fault(FaultKind::Duplicate)),
            WriteVerdict::Permanent,
            "an id owned by another booking never becomes ours by retrying"
        );
        assert_eq!(
            write_verdict(&create, &fault(FaultKind::Unavailable)),
            WriteVerdict::Transient
        );
        assert_eq!(
            write_verdict(&create, &fault(FaultKind::RateLimited)),
            WriteVerdict::Connection
        );
        for kind in KINDS {
            for op in [&create, &update] {
                let verdict = write_verdict(op, &fault(kind));
                if verdict == WriteVerdict::Connection {
                    assert_eq!(kind, FaultKind::RateLimited);
                }
            }
        }
    }

    #[test]
    fn channels_forget_what_the_provider_no_longer_has() {
        assert_eq!(
            channel_scope(&fault(FaultKind::NotFound)),
            ChannelScope::Gone
        );
        assert_eq!(
            channel_scope(&fault(FaultKind::Rejected)),
            ChannelScope::Backoff
        );
        assert_eq!(
            channel_scope(&fault(FaultKind::Reauthorize)),
            ChannelScope::Reauthorize
        );
    }
}
