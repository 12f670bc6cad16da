//! Half-open UTC time intervals `[start, end)`: the unit of busy time and of
//! availability. Providers report `end` exclusive, so do we.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A non-empty half-open interval `[start, end)` in UTC.
///
/// Constructed only through [`Interval::new`], so `start < end` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawInterval", into = "RawInterval")]
pub struct Interval {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct RawInterval {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// Why a pair of instants is not an interval.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("interval end {end} is not after start {start}")]
pub struct EmptyInterval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl TryFrom<RawInterval> for Interval {
    type Error = EmptyInterval;
    fn try_from(raw: RawInterval) -> Result<Self, Self::Error> {
        Interval::new(raw.start, raw.end)
    }
}

impl From<Interval> for RawInterval {
    fn from(i: Interval) -> Self {
        RawInterval {
            start: i.start,
            end: i.end,
        }
    }
}

impl Interval {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, EmptyInterval> {
        if start < end {
            Ok(Interval { start, end })
        } else {
            Err(EmptyInterval { start, end })
        }
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// True when the two intervals share at least one instant. Touching
    /// intervals (`a.end == b.start`) do not overlap: the end is exclusive.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The common part of two intervals, if any.
    pub fn intersection(&self, other: &Interval) -> Option<Interval> {
        Interval::new(self.start.max(other.start), self.end.min(other.end)).ok()
    }

    pub fn contains(&self, other: &Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Sorts intervals and merges those that overlap or touch: their union as
/// ascending intervals, no two of which touch.
pub fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for next in intervals {
        match merged.last_mut() {
            Some(last) if next.start() <= last.end() => {
                if next.end() > last.end() {
                    // Both ends come from real intervals and start < end.
                    if let Ok(joined) = Interval::new(last.start(), next.end()) {
                        *last = joined;
                    }
                }
            }
            _ => merged.push(next),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 10, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn empty_and_inverted_intervals_are_rejected() {
        assert!(Interval::new(t(3), t(3)).is_err());
        assert!(Interval::new(t(4), t(3)).is_err());
    }

    #[test]
    fn touching_intervals_do_not_overlap() {
        let a = Interval::new(t(1), t(2)).unwrap();
        let b = Interval::new(t(2), t(3)).unwrap();
        assert!(!a.overlaps(&b));
        assert_eq!(a.intersection(&b), None);
    }

    #[test]
    fn deserialising_an_inverted_interval_fails() {
        let json = r#"{"start":"2026-10-01T03:00:00Z","end":"2026-10-01T02:00:00Z"}"#;
        assert!(serde_json::from_str::<Interval>(json).is_err());
    }

    proptest::proptest! {
        /// The merge keeps exactly the input's instants, ascending and
        /// apart: minutes on a grid are covered by the output exactly when
        /// some input covers them, and no two outputs touch.
        #[test]
        fn merging_keeps_the_union_ascending_and_apart(
            spans in proptest::collection::vec((0i64..200, 1i64..30), 0..40)
        ) {
            let at = |m: i64| t(0) + chrono::Duration::minutes(m);
            let input: Vec<Interval> = spans
                .iter()
                .map(|(s, len)| Interval::new(at(*s), at(s + len)).unwrap())
                .collect();
            let merged = merge(input.clone());
            proptest::prop_assert!(merged.windows(2).all(|p| p[0].end() < p[1].start()));
            for m in 0..240 {
                let minute = Interval::new(at(m), at(m + 1)).unwrap();
                proptest::prop_assert_eq!(
                    input.iter().any(|i| i.contains(&minute)),
                    merged.iter().any(|i| i.contains(&minute)),
                    "minute {}", m
                );
            }
        }
    }
}
