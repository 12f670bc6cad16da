//! The ports the shell reaches the world through, besides the event store
//! and the provider API: a clock and a source of randomness.
//!
//! Production wires the system clock and the thread RNG. The deterministic
//! simulation (`calsync simulate`) wires a clock driven by tokio's paused
//! time and a seeded RNG, so one seed gives one run; tests that move a
//! simulator's clock forward by hours use [`OffsetClock`], whose sleepers
//! wake when the clock jumps.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// What time it is, and waiting until a given time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Completes at (or soon after) `at` by this clock.
    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// The system clock plus an offset that tests move forward (the way the
/// provider simulator's clock is moved), waking every sleeper on a jump.
#[derive(Debug)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
    jumped: tokio::sync::watch::Sender<i64>,
}

impl Default for OffsetClock {
    fn default() -> Self {
        OffsetClock {
            offset_ms: AtomicI64::new(0),
            jumped: tokio::sync::watch::channel(0).0,
        }
    }
}

impl OffsetClock {
    pub fn new() -> Arc<Self> {
        Arc::new(OffsetClock::default())
    }

    /// Moves the clock forward by `by`; sleepers re-check their deadline.
    pub fn advance(&self, by: chrono::Duration) {
        let total = self
            .offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst)
            + by.num_milliseconds();
        self.jumped.send_replace(total);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let mut jumped = self.jumped.subscribe();
        let offset = self.offset_ms.load(Ordering::SeqCst);
        Box::pin(async move {
            let mut offset = offset;
            loop {
                let now = Utc::now() + chrono::Duration::milliseconds(offset);
                let Ok(wait) = (at - now).to_std() else {
                    return;
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => return,
                    changed = jumped.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(wait).await;
                            return;
                        }
                        offset = *jumped.borrow();
                    }
                }
            }
        })
    }
}

/// Virtual time: `epoch` plus the time tokio's clock has moved since the
/// clock was made. Under a paused tokio runtime this is the deterministic
/// simulation's clock; sleeping is tokio's (auto-advanced when idle).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: DateTime<Utc>,
    base: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(epoch: DateTime<Utc>) -> Self {
        TokioClock {
            epoch,
            base: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.base;
        self.epoch + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (at - self.now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Randomness: backoff jitter, channel ids and secrets, correlation ids.
pub trait Entropy: Send + Sync + 'static {
    /// Uniform in `[0, 1)`.
    fn unit(&self) -> f64;
    fn uuid(&self) -> Uuid;
    fn bytes32(&self) -> [u8; 32];
}

/// The thread RNG (production).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn unit(&self) -> f64 {
        rand::random::<f64>()
    }
    fn uuid(&self) -> Uuid {
        Uuid::new_v4()
    }
    fn bytes32(&self) -> [u8; 32] {
        rand::random()
    }
}

/// A seeded RNG: the same seed, the same sequence (simulation).
pub struct SeededEntropy {
    rng: Mutex<rand::rngs::StdRng>,
}

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        SeededEntropy {
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut rand::rngs::StdRng) -> T) -> T {
        // A poisoned lock only means a panic elsewhere; the RNG is intact.
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut rng)
    }
}

impl Entropy for SeededEntropy {
    fn unit(&self) -> f64 {
        use rand::Rng;
        self.with(|r| r.random::<f64>())
    }
    fn uuid(&self) -> Uuid {
        use rand::Rng;
        uuid::Builder::from_random_bytes(self.with(|r| r.random::<[u8; 16]>())).into_uuid()
    }
    fn bytes32(&self) -> [u8; 32] {
        use rand::Rng;
        self.with(|r| r.random())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_entropy_repeats_itself() {
        let a = SeededEntropy::new(7);
        let b = SeededEntropy::new(7);
        for _ in 0..10 {
            assert_eq!(a.uuid(), b.uuid());
            assert_eq!(a.unit().to_bits(), b.unit().to_bits());
        }
        assert_eq!(a.uuid().get_version_num(), 4);
    }

    #[tokio::test]
    async fn an_offset_clock_wakes_its_sleepers_when_it_jumps() {
        let clock = OffsetClock::new();
        let at = clock.now() + chrono::Duration::hours(3);
        let sleeper = tokio::spawn(clock.sleep_until(at));
        tokio::task::yield_now().await;
        clock.advance(chrono::Duration::hours(3));
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
            .await
            .expect("the sleeper woke on the jump")
            .unwrap();
    }
}
