//! An actor's mailbox counters, shared with the front door and the
//! supervisor and read without asking the actor.

use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

/// Counters shared between an actor and the front door.
#[derive(Debug, Default)]
pub struct Mailbox {
    pub queued: AtomicUsize,
    pub last_active_ms: AtomicU64,
    /// When the actor's own timer next wakes it (ms since the epoch; 0:
    /// no timer — it waits for an input or a settings change).
    pub wake_at_ms: AtomicI64,
}

impl Mailbox {
    pub fn touch(&self, now: DateTime<Utc>) {
        self.last_active_ms
            .store(now.timestamp_millis().max(0) as u64, Ordering::Relaxed);
    }

    pub fn set_wake_at(&self, at: Option<DateTime<Utc>>) {
        self.wake_at_ms
            .store(at.map_or(0, |t| t.timestamp_millis()), Ordering::Relaxed);
    }

    pub fn wake_at(&self) -> Option<DateTime<Utc>> {
        match self.wake_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => DateTime::from_timestamp_millis(ms),
        }
    }
}
