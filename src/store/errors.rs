//! Store errors, classified by what the caller should do next.

use super::ExpectedVersion;
use crate::core::ids::StreamName;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream moved since the caller read it: re-read and decide again,
    /// or stop writing (another owner holds the stream).
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        stream: StreamName,
        expected: ExpectedVersion,
        actual: u64,
    },
    /// The database cannot be reached or is shutting down: retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The request or the stored data is invalid: retrying will not help.
    #[error("bad data: {0}")]
    BadData(String),
}

impl StoreError {
    /// True if the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Classifies a driver error: connection and server-availability failures
/// are `Unavailable`; everything else is `BadData`.
impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        if let Some(db) = err.as_db_error() {
            let code = db.code();
            let class = &code.code()[..2];
            let unavailable = class == "08" // connection exception
                || class == "57" // operator intervention: shutdown, cannot connect now
                || class == "53" // insufficient resources
                || class == "58" // system error (I/O)
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED;
            let message = format!("{}: {}", code.code(), db.message());
            return if unavailable {
                StoreError::Unavailable(message)
            } else {
                StoreError::BadData(message)
            };
        }
        // No server error: the connection broke, closed or timed out.
        StoreError::Unavailable(err.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}
