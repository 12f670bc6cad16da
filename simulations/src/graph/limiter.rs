//! Outlook's per-mailbox concurrency limit (4 in flight per app + mailbox).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::state::lock;

#[derive(Default)]
pub struct MailboxLimiter {
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// Held while a request runs; releases its slot on drop.
pub struct Permit {
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    mailbox: String,
}

impl MailboxLimiter {
    pub fn try_acquire(&self, mailbox: &str, limit: usize) -> Option<Permit> {
        let key = mailbox.to_lowercase();
        let mut m = lock(&self.in_flight);
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Permit {
            in_flight: self.in_flight.clone(),
            mailbox: key,
        })
    }

    pub fn in_flight(&self, mailbox: &str) -> usize {
        lock(&self.in_flight)
            .get(&mailbox.to_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut m = lock(&self.in_flight);
        if let Some(n) = m.get_mut(&self.mailbox) {
            *n = n.saturating_sub(1);
        }
    }
}
