//! What a caller of a connection actor gets back: a committed input, or why
//! not. Shared by the front door, the actor and the HTTP edge.

use crate::core::decide::Rejection;
use serde::Serialize;
use std::time::Duration;

/// A committed input: the stream version after it and how many events it added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ack {
    pub version: u64,
    pub appended: usize,
    /// The input repeated one already accepted (nothing was appended).
    pub duplicate: bool,
}

/// Why an input was not applied. Each variant says what the caller does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Too many inputs queued for this connection: retry after a moment.
    #[error("connection busy: too many queued inputs")]
    Busy { retry_after: Duration },
    /// The connection failed too often and is quarantined: an operator
    /// must look at it (`calsync connections show`).
    #[error("connection quarantined")]
    Quarantined,
    /// The stream moved under the actor (another writer); nothing was
    /// written. Safe to retry: the next actor folds the new state.
    #[error("stream moved under the actor; nothing was written")]
    Fenced,
    /// The database is unavailable; nothing was acknowledged. Retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The command is not valid in the connection's state.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("bad data: {0}")]
    BadData(String),
    /// The actor stopped while handling the input (a crash). The input may
    /// or may not have been committed; inputs are idempotent, so retry.
    #[error("the connection actor stopped before answering")]
    Stopped,
}

impl SendError {
    /// A stable code for per-connection outcomes (booking fan-out).
    pub fn code(&self) -> &'static str {
        match self {
            SendError::Busy { .. } => "busy",
            SendError::Quarantined => "quarantined",
            SendError::Fenced => "fenced",
            SendError::Unavailable(_) => "unavailable",
            SendError::Rejected(_) => "rejected",
            SendError::BadData(_) => "bad_data",
            SendError::Stopped => "stopped",
        }
    }

    /// Retrying the same input later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            SendError::Busy { .. }
                | SendError::Fenced
                | SendError::Unavailable(_)
                | SendError::Stopped
        )
    }
}
