//! Optional sliding-window request quotas per account: Google's per-user
//! per-minute quota and Outlook's per-mailbox 10-minute limit. Rejected
//! requests still count, as both providers document.

use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::request_log::Provider;
use crate::state::lock;

/// Request times within the window, per (provider, account).
type Windows = HashMap<(Provider, String), VecDeque<DateTime<Utc>>>;

#[derive(Default)]
pub struct Quotas {
    windows: Mutex<Windows>,
}

impl Quotas {
    /// Count one request; `Err(seconds until a slot frees)` when over `limit`.
    pub fn admit(
        &self,
        provider: Provider,
        account: &str,
        limit: u32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), f64> {
        let mut m = lock(&self.windows);
        let q = m.entry((provider, account.to_lowercase())).or_default();
        while q.front().is_some_and(|t| *t <= now - window) {
            q.pop_front();
        }
        let over = q.len() >= limit as usize;
        q.push_back(now);
        if !over {
            return Ok(());
        }
        // The request that must age out before the next one fits.
        let idx = q.len().saturating_sub(limit as usize);
        let frees_at = q.get(idx).copied().unwrap_or(now) + window;
        let ms = (frees_at - now).num_milliseconds().max(1);
        Err(ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_over_limit_and_counts_rejections() {
        let q = Quotas::default();
        let t0 = Utc::now();
        let w = Duration::seconds(60);
        assert!(q.admit(Provider::Google, "a", 2, w, t0).is_ok());
        assert!(q.admit(Provider::Google, "a", 2, w, t0).is_ok());
        let retry = q
            .admit(Provider::Google, "a", 2, w, t0)
            .err()
            .unwrap_or_default();
        assert!(retry > 59.0 && retry <= 60.0, "{retry}");
        assert!(
            q.admit(Provider::Google, "b", 2, w, t0).is_ok(),
            "per account"
        );
        assert!(
            q.admit(Provider::Google, "a", 2, w, t0 + Duration::seconds(61))
                .is_ok(),
            "window slid"
        );
    }
}
