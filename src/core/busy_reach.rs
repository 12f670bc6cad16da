//! Which busy time can change an availability answer.
//!
//! A busy interval blocks `[start − buffer_before, end + buffer_after)`
//! (see [`crate::core::availability`]), and slots lie inside the
//! availability windows. So only busy intervals overlapping a window
//! widened by `buffer_after` before it and `buffer_before` after it can
//! remove a slot; the rest — nights and weekends outside weekly hours —
//! need not be read at all. [`busy_reach`] gives those spans, sorted and
//! apart, so the store can read each busy interval once (the first span it
//! overlaps) and the answer is the same as with every busy interval of the
//! range (property-tested below).

use crate::core::availability::SlotSpec;
use crate::core::interval::{merge, Interval};

/// The spans whose busy intervals can block a slot inside `windows` (the
/// availability windows, already within the query range): each window
/// widened by the buffers, merged, sorted, with a gap between any two.
pub fn busy_reach(windows: &[Interval], spec: &SlotSpec) -> Vec<Interval> {
    let widened: Vec<Interval> = windows
        .iter()
        .filter_map(|w| {
            let start = w.start().checked_sub_signed(spec.buffer_after)?;
            let end = w.end().checked_add_signed(spec.buffer_before)?;
            Interval::new(start, end).ok()
        })
        .collect();
    merge(widened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::availability::{expand_weekly, free_slots, weekly_free_slots, WeeklyRule};
    use chrono::{DateTime, NaiveTime, TimeDelta, TimeZone, Utc, Weekday};
    use proptest::prelude::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, 22, 0, 0, 0).unwrap() + TimeDelta::minutes(minutes)
    }

    fn iv((s, len): (i64, i64)) -> Interval {
        Interval::new(at(s), at(s + len)).unwrap()
    }

    /// The busy intervals the store returns for `reach`: each overlapping
    /// one once.
    fn reached(busy: &[Interval], reach: &[Interval]) -> Vec<Interval> {
        busy.iter()
            .filter(|b| reach.iter().any(|r| r.overlaps(b)))
            .copied()
            .collect()
    }

    #[test]
    fn spans_are_widened_by_the_buffers_and_merged_when_they_meet() {
        let spec = SlotSpec::new(TimeDelta::minutes(30))
            .with_buffers(TimeDelta::minutes(10), TimeDelta::minutes(15));
        let windows = [iv((60, 60)), iv((130, 30)), iv((600, 60))];
        let reach = busy_reach(&windows, &spec);
        assert_eq!(
            reach,
            vec![
                Interval::new(at(45), at(170)).unwrap(),
                Interval::new(at(585), at(670)).unwrap()
            ]
        );
        assert!(busy_reach(&[], &spec).is_empty());
    }

    proptest! {
        #[test]
        fn only_busy_time_within_reach_changes_the_slots(
            windows in prop::collection::vec((0i64..3000, 1i64..600), 0..6),
            busy in prop::collection::vec((-2000i64..5000, 1i64..3000), 0..40),
            len in 5i64..120,
            step in 5i64..120,
            before in 0i64..60,
            after in 0i64..60,
        ) {
            let spec = SlotSpec::new(TimeDelta::minutes(len))
                .with_step(TimeDelta::minutes(step))
                .with_buffers(TimeDelta::minutes(before), TimeDelta::minutes(after));
            let windows: Vec<Interval> = windows.into_iter().map(iv).collect();
            let busy: Vec<Interval> = busy.into_iter().map(iv).collect();
            let reach = busy_reach(&windows, &spec);
            for pair in reach.windows(2) {
                prop_assert!(pair[0].end() < pair[1].start());
            }
            prop_assert_eq!(
                free_slots(&windows, &reached(&busy, &reach), &spec).unwrap(),
                free_slots(&windows, &busy, &spec).unwrap()
            );
        }

        #[test]
        fn weekly_hours_read_only_their_reach(
            busy in prop::collection::vec((-2000i64..16000, 1i64..3000), 0..60),
            start_h in 0u32..24,
            end_h in 0u32..24,
            before in 0i64..60,
            after in 0i64..60,
            offset in 0i64..2000,
        ) {
            let zone = chrono_tz::Tz::Europe__Berlin;
            let range = Interval::new(at(offset), at(offset + 10_080)).unwrap();
            let rules: Vec<WeeklyRule> = [Weekday::Mon, Weekday::Wed, Weekday::Sat]
                .iter()
                .map(|d| (
                    *d,
                    NaiveTime::from_hms_opt(start_h, 0, 0).unwrap(),
                    NaiveTime::from_hms_opt(end_h, 30, 0).unwrap(),
                ))
                .collect();
            let spec = SlotSpec::new(TimeDelta::minutes(30))
                .with_buffers(TimeDelta::minutes(before), TimeDelta::minutes(after));
            let busy: Vec<Interval> = busy.into_iter().map(iv).collect();
            let reach = busy_reach(&expand_weekly(&rules, zone, range), &spec);
            prop_assert_eq!(
                weekly_free_slots(&rules, zone, range, &reached(&busy, &reach), &spec).unwrap(),
                weekly_free_slots(&rules, zone, range, &busy, &spec).unwrap()
            );
        }
    }
}
