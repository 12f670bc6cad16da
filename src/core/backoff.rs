//! How long a connection waits after consecutive provider failures.
//!
//! Owns the delay policy only; the connection state owns the failure count
//! and `backoff_until`. The policy is pure: randomness comes in as
//! `unit_random`, so replays and seeded simulations get the same delays.
//!
//! The legacy system waited a flat 5 minutes after any error: too long after
//! a single blip, too short against a provider that is down, and
//! synchronised across all connections hit by the same outage. This policy is
//! truncated exponential backoff with proportional jitter:
//!
//! `delay(n) = min(cap, min(cap, base · multiplier^(n−1)) · (1 − j + 2j·u))`
//!
//! for the n-th consecutive failure (n ≥ 1), jitter ratio `j` and
//! `u ∈ [0, 1)`. Jitter is applied after the first cap so that connections
//! stuck at the cap during a long outage still spread out (between
//! `(1 − j)·cap` and `cap`) instead of retrying in lockstep. Proportional ("±j") jitter was chosen over decorrelated
//! jitter because it needs no memory of the previous delay (the function
//! stays a pure function of the failure count) and, for a fixed `u`, keeps
//! the delay monotone in the failure count. A provider `Retry-After` is a
//! floor: the delay is never shorter, and may exceed `cap` to honour it, up
//! to `max_retry_after`, so a confused or hostile header cannot park a
//! connection for days.

use std::time::Duration;

/// The backoff policy. See the module docs for the formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay after the first failure, before jitter. Default 2 s.
    pub base: Duration,
    /// Growth per further failure. Default 2. Values below 1 (or not finite)
    /// are treated as 1, so delays never shrink as failures pile up.
    pub multiplier: f64,
    /// Longest delay the policy itself chooses. Default 15 min.
    pub cap: Duration,
    /// Half-width of the jitter band as a fraction of the delay. Default 0.2
    /// (±20 %). Clamped to `[0, 1]`.
    pub jitter_ratio: f64,
    /// Longest delay a `Retry-After` can impose. Default 1 h.
    pub max_retry_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            base: Duration::from_secs(2),
            multiplier: 2.0,
            cap: Duration::from_secs(15 * 60),
            jitter_ratio: 0.2,
            max_retry_after: Duration::from_secs(60 * 60),
        }
    }
}

impl BackoffPolicy {
    /// The delay before the next attempt after `consecutive_failures`
    /// failures in a row. `retry_after` is the provider's `Retry-After`, if
    /// any; `unit_random` is a uniform sample from `[0, 1)` (values outside
    /// are clamped, NaN counts as 0.5).
    ///
    /// Zero failures and no `Retry-After` means no delay.
    pub fn next_delay(
        &self,
        consecutive_failures: u32,
        retry_after: Option<Duration>,
        unit_random: f64,
    ) -> Duration {
        let jittered = if consecutive_failures == 0 {
            Duration::ZERO
        } else {
            let u = if unit_random.is_nan() {
                0.5
            } else {
                unit_random.clamp(0.0, 1.0)
            };
            let j = self.jitter().clamp(0.0, 1.0);
            let factor = 1.0 - j + 2.0 * j * u;
            let capped = self.delay_before_jitter(consecutive_failures);
            self.scale_capped(capped.as_secs_f64() * factor)
        };
        match retry_after {
            Some(floor) => jittered.max(floor.min(self.max_retry_after)),
            None => jittered,
        }
    }

    /// The delay before jitter: `min(cap, base · multiplier^(n−1))`, zero for
    /// no failures. Monotone non-decreasing in `consecutive_failures`.
    pub fn delay_before_jitter(&self, consecutive_failures: u32) -> Duration {
        if consecutive_failures == 0 {
            return Duration::ZERO;
        }
        self.scale_capped(self.raw_secs(consecutive_failures))
    }

    fn jitter(&self) -> f64 {
        if self.jitter_ratio.is_finite() {
            self.jitter_ratio
        } else {
            0.0
        }
    }

    /// `base · multiplier^(n−1)` in seconds; may be huge or infinite, which
    /// [`Self::scale_capped`] turns into `cap`.
    fn raw_secs(&self, consecutive_failures: u32) -> f64 {
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        // powi takes i32; beyond that the value is long past any cap anyway.
        let exponent = i32::try_from(consecutive_failures.saturating_sub(1)).unwrap_or(i32::MAX);
        self.base.as_secs_f64() * multiplier.powi(exponent)
    }

    fn scale_capped(&self, secs: f64) -> Duration {
        // NaN and infinity count as "past the cap".
        if secs.is_nan() || secs >= self.cap.as_secs_f64() {
            return self.cap;
        }
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn defaults_are_documented_values() {
        let p = BackoffPolicy::default();
        assert_eq!(p.base, secs(2));
        assert_eq!(p.multiplier, 2.0);
        assert_eq!(p.cap, secs(900));
        assert_eq!(p.jitter_ratio, 0.2);
        assert_eq!(p.max_retry_after, secs(3600));
    }

    #[test]
    fn doubles_from_base_until_the_cap() {
        let p = BackoffPolicy::default();
        let expected = [0, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(p.delay_before_jitter(n as u32), secs(*want), "n={n}");
        }
        assert_eq!(p.delay_before_jitter(u32::MAX), p.cap);
    }

    #[test]
    fn jitter_spans_plus_minus_twenty_percent() {
        let p = BackoffPolicy::default();
        assert_eq!(p.next_delay(3, None, 0.0), Duration::from_secs_f64(6.4));
        assert_eq!(p.next_delay(3, None, 0.5), secs(8));
        assert!(p.next_delay(3, None, 0.999_999) < Duration::from_secs_f64(9.6));
        // At the cap, jitter only ever shortens the wait.
        assert_eq!(p.next_delay(30, None, 0.999), p.cap);
        assert_eq!(p.next_delay(30, None, 0.0), Duration::from_secs(720));
    }

    #[test]
    fn retry_after_is_a_floor_and_may_exceed_the_cap_up_to_its_clamp() {
        let p = BackoffPolicy::default();
        assert_eq!(p.next_delay(1, Some(secs(30)), 0.5), secs(30));
        assert_eq!(p.next_delay(9, Some(secs(1)), 0.5), secs(512));
        assert_eq!(p.next_delay(1, Some(secs(1800)), 0.5), secs(1800));
        assert_eq!(p.next_delay(1, Some(secs(86_400)), 0.5), secs(3600));
        // Graph's fractional Retry-After survives.
        assert_eq!(
            p.next_delay(0, Some(Duration::from_millis(2128)), 0.5),
            Duration::from_millis(2128)
        );
    }

    #[test]
    fn no_failures_no_delay() {
        assert_eq!(
            BackoffPolicy::default().next_delay(0, None, 0.7),
            Duration::ZERO
        );
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let p = BackoffPolicy {
            base: secs(1),
            multiplier: f64::NAN,
            cap: secs(10),
            jitter_ratio: f64::INFINITY,
            max_retry_after: secs(20),
        };
        assert_eq!(p.next_delay(5, None, f64::NAN), secs(1));
        let shrinking = BackoffPolicy {
            multiplier: 0.5,
            ..BackoffPolicy::default()
        };
        assert_eq!(shrinking.delay_before_jitter(10), secs(2));
        let huge = BackoffPolicy {
            multiplier: 1e300,
            ..BackoffPolicy::default()
        };
        assert_eq!(huge.next_delay(1000, None, -3.0), Duration::from_secs(720));
    }

    fn policy() -> impl Strategy<Value = BackoffPolicy> {
        (
            1u64..10_000,
            1.0f64..4.0,
            1u64..100_000,
            0.0f64..=1.0,
            1u64..200_000,
        )
            .prop_map(|(base_ms, multiplier, cap_ms, jitter_ratio, max_ra_ms)| {
                BackoffPolicy {
                    base: Duration::from_millis(base_ms),
                    multiplier,
                    cap: Duration::from_millis(cap_ms),
                    jitter_ratio,
                    max_retry_after: Duration::from_millis(max_ra_ms),
                }
            })
    }

    proptest! {
        #[test]
        fn monotone_in_failures_before_jitter(p in policy(), n in 0u32..200) {
            prop_assert!(p.delay_before_jitter(n) <= p.delay_before_jitter(n + 1));
        }

        #[test]
        fn monotone_in_failures_for_a_fixed_random_draw(
            p in policy(), n in 0u32..200, u in 0.0f64..1.0
        ) {
            prop_assert!(p.next_delay(n, None, u) <= p.next_delay(n + 1, None, u));
        }

        #[test]
        fn never_above_cap_without_retry_after(p in policy(), n in 0u32..10_000, u in 0.0f64..1.0) {
            prop_assert!(p.next_delay(n, None, u) <= p.cap);
        }

        #[test]
        fn within_the_jitter_band(p in policy(), n in 1u32..100, u in 0.0f64..1.0) {
            let raw = p.delay_before_jitter(n).as_secs_f64();
            let got = p.next_delay(n, None, u).as_secs_f64();
            prop_assert!(got >= raw * (1.0 - p.jitter_ratio) - 1e-6);
            prop_assert!(got <= raw * (1.0 + p.jitter_ratio) + 1e-6);
        }

        #[test]
        fn never_below_retry_after_and_never_above_its_clamp(
            p in policy(), n in 0u32..200, u in 0.0f64..1.0, ra_ms in 0u64..500_000
        ) {
            let ra = Duration::from_millis(ra_ms);
            let got = p.next_delay(n, Some(ra), u);
            prop_assert!(got >= ra.min(p.max_retry_after));
            prop_assert!(got <= p.cap.max(ra.min(p.max_retry_after)));
        }
    }
}
