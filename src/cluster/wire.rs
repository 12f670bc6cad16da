//! What the internal routes carry: an input for a connection, and its
//! outcome as the owner saw it (the caller's `SendError`, or "I am not the
//! owner", which makes the caller fall back to the inbox or a 503).

use crate::actors::{Ack, SendError};
use crate::core::decide::{ConnectionCommand, Rejection};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use uuid::Uuid;

/// The header that carries the cluster secret between nodes.
pub const SECRET_HEADER: &str = "x-calsync-cluster-secret";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRequest {
    pub correlation_id: Uuid,
    pub input: ConnectionCommand,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyRequest {
    pub key: String,
    pub channel_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireAck {
    pub version: u64,
    pub appended: usize,
    pub duplicate: bool,
}

impl From<Ack> for WireAck {
    fn from(a: Ack) -> Self {
        WireAck {
            version: a.version,
            appended: a.appended,
            duplicate: a.duplicate,
        }
    }
}

impl From<WireAck> for Ack {
    fn from(a: WireAck) -> Self {
        Ack {
            version: a.version,
            appended: a.appended,
            duplicate: a.duplicate,
        }
    }
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome<T> {
    Done {
        value: T,
    },
    /// The receiving node does not hold the connection's slice (it moved).
    NotOwner,
    Busy {
        retry_after_ms: u64,
    },
    Quarantined,
    Fenced,
    Unavailable {
        message: String,
    },
    Rejected {
        rejection: Rejection,
    },
    BadData {
        message: String,
    },
    Stopped,
}

impl<T> Outcome<T> {
    pub fn from_result<U: Into<T>>(r: Result<U, SendError>) -> Self {
        match r {
            Ok(v) => Outcome::Done { value: v.into() },
            Err(SendError::Busy { retry_after }) => Outcome::Busy {
                retry_after_ms: retry_after.as_millis().min(u128::from(u64::MAX)) as u64,
            },
            Err(SendError::Quarantined) => Outcome::Quarantined,
            Err(SendError::Fenced) => Outcome::Fenced,
            Err(SendError::Unavailable(message)) => Outcome::Unavailable { message },
            Err(SendError::Rejected(rejection)) => Outcome::Rejected { rejection },
            Err(SendError::BadData(message)) => Outcome::BadData { message },
            Err(SendError::Stopped) => Outcome::Stopped,
        }
    }

    /// The caller's result; `None` for [`Outcome::NotOwner`].
    pub fn into_result<U: From<T>>(self) -> Option<Result<U, SendError>> {
        Some(match self {
            Outcome::Done { value } => Ok(value.into()),
            Outcome::NotOwner => return None,
            Outcome::Busy { retry_after_ms } => Err(SendError::Busy {
                retry_after: Duration::from_millis(retry_after_ms),
            }),
            Outcome::Quarantined => Err(SendError::Quarantined),
            Outcome::Fenced => Err(SendError::Fenced),
            Outcome::Unavailable { message } => Err(SendError::Unavailable(message)),
            Outcome::Rejected { rejection } => Err(SendError::Rejected(rejection)),
            Outcome::BadData { message } => Err(SendError::BadData(message)),
            Outcome::Stopped => Err(SendError::Stopped),
        })
    }
}

/// What a node says it holds (`GET /internal/v1/cluster/held`): tests and
/// `cluster status` sample it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub node: String,
    pub slices: Vec<u16>,
    /// Connection actors running on the node right now.
    pub active_actors: usize,
    /// Connection actors running whose slice the node does not hold (0
    /// unless a stop is under way).
    pub actors_outside_held: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_survives_the_wire() {
        let cases: Vec<Result<Ack, SendError>> = vec![
            Ok(Ack {
                version: 7,
                appended: 1,
                duplicate: true,
            }),
            Err(SendError::Busy {
                retry_after: Duration::from_millis(1500),
            }),
            Err(SendError::Quarantined),
            Err(SendError::Fenced),
            Err(SendError::Unavailable("db".into())),
            Err(SendError::Rejected(Rejection::NotFound)),
            Err(SendError::BadData("x".into())),
            Err(SendError::Stopped),
        ];
        for case in cases {
            let wire = Outcome::<WireAck>::from_result(case.clone());
            let text = serde_json::to_string(&wire).unwrap();
            let back: Outcome<WireAck> = serde_json::from_str(&text).unwrap();
            assert_eq!(back.into_result::<Ack>(), Some(case));
        }
        let not_owner: Outcome<WireAck> =
            serde_json::from_str(r#"{"outcome":"not_owner"}"#).unwrap();
        assert_eq!(not_owner.into_result::<Ack>(), None);
    }
}
