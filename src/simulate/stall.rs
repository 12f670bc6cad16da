//! "Nothing spins" (DESIGN.md guarantee 9) where the hourly invariants
//! cannot see it: a node that loops without letting virtual time move.
//!
//! The simulation's clock is paused: it advances only when every task
//! waits. A node that keeps itself busy — a write retried at once forever,
//! a plan that always finds work — never lets the workload's next step
//! come, so the invariants checked between steps never run, and the seed
//! hangs while its logs grow without bound (a reverted outbound gate did
//! exactly that: 17 GB in ten minutes, no verdict). The watch counts the
//! node's provider calls and appends per virtual minute; far more than any
//! real load (creating fifty connections at once is about a thousand) trips
//! it, and the workload stops the seed with a violation naming what the
//! node was doing. Counting is deterministic (virtual time, no wall clock),
//! so a tripped seed replays the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

/// Provider calls plus appends in one virtual minute that mean the node
/// spins (more than ten times the busiest minute of a normal run).
pub const LIMIT_PER_VIRTUAL_MINUTE: u64 = 20_000;

#[derive(Debug, Default)]
struct Window {
    started: Option<Instant>,
    count: u64,
    /// What the node did last, by kind, for the violation's text.
    recent: std::collections::BTreeMap<String, u64>,
}

/// Counts a node's work per virtual minute and trips past the limit.
#[derive(Debug, Default)]
pub struct StallWatch {
    window: Mutex<Window>,
    tripped: AtomicBool,
    report: Mutex<Option<String>>,
    notify: Notify,
}

impl StallWatch {
    /// One provider call or append, of kind `what` (an endpoint, a stream
    /// kind), at the current virtual instant.
    pub fn record(&self, what: &str) {
        if self.tripped.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = w
            .started
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(60));
        if fresh {
            *w = Window {
                started: Some(now),
                ..Window::default()
            };
        }
        w.count += 1;
        if w.count > LIMIT_PER_VIRTUAL_MINUTE / 2 {
            *w.recent.entry(what.to_string()).or_default() += 1;
        }
        if w.count > LIMIT_PER_VIRTUAL_MINUTE {
            let mut top: Vec<(&String, &u64)> = w.recent.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let doing: Vec<String> = top
                .iter()
                .take(4)
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                "the node spins: more than {LIMIT_PER_VIRTUAL_MINUTE} provider calls and appends \
                 within one virtual minute (mostly {})",
                doing.join(", ")
            ));
            self.tripped.store(true, Ordering::SeqCst);
            self.notify.notify_waiters();
        }
    }

    /// Resolves once the watch tripped (at once if it already has).
    pub async fn tripped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.tripped.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// The violation, once tripped.
    pub fn report(&self) -> Option<String> {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trips_only_past_the_limit_within_one_virtual_minute() {
        let watch = StallWatch::default();
        // A busy but normal pace: the limit spread over two minutes.
        for _ in 0..LIMIT_PER_VIRTUAL_MINUTE {
            watch.record("events.list");
        }
        tokio::time::sleep(Duration::from_secs(61)).await;
        for _ in 0..LIMIT_PER_VIRTUAL_MINUTE {
            watch.record("events.list");
        }
        assert!(watch.report().is_none());
        // One more in the same minute is a spin, and says what it was.
        watch.record("events.insert");
        let report = watch.report().expect("tripped");
        assert!(report.contains("events.list"), "{report}");
        tokio::time::timeout(Duration::from_secs(1), watch.tripped())
            .await
            .expect("tripped() resolves once tripped");
    }
}
