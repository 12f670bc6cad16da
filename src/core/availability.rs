//! The availability overlay: which bookable slots remain once busy time is
//! laid over the owner's availability windows.
//!
//! Owns three pure steps:
//! - [`expand_weekly`]: weekly working hours in an IANA zone → UTC windows
//!   over a query range, DST-correct (a 09:00–17:00 day is 8 wall-clock hours
//!   on either side of a DST change; wall times in a DST gap follow
//!   [`crate::core::tz::local_to_utc`]);
//! - [`free_slots`]: windows + busy intervals + a [`SlotSpec`] → slots;
//! - [`weekly_free_slots`]: both, for the common case.
//!
//! Slot grid: windows are first merged (overlapping or touching windows form
//! one), then slots start at `window.start + k · step` and must fit entirely
//! inside the merged window. A slot is free when it does not overlap any busy
//! interval widened by the buffers: `[busy.start − buffer_before,
//! busy.end + buffer_after)`. So "buffer before" is the gap required before
//! a busy event, "buffer after" the gap required after it.

use chrono::{DateTime, Datelike, Days, NaiveTime, TimeDelta, Utc, Weekday};
use chrono_tz::Tz;

use crate::core::interval::{merge, Interval};
use crate::core::tz::local_to_utc;

/// One weekly availability rule: on `weekday`, from `start` to `end` local
/// time. An `end` at or before `start` runs past midnight into the next day,
/// so `22:00–06:00` is a night shift, `09:00–00:00` runs to midnight and
/// `00:00–00:00` is the whole day.
pub type WeeklyRule = (Weekday, NaiveTime, NaiveTime);

/// How slots are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpec {
    /// Length of every slot. Must be positive.
    pub length: TimeDelta,
    /// Distance between consecutive slot starts. Must be positive.
    pub step: TimeDelta,
    /// Free time required before each busy interval. Must not be negative.
    pub buffer_before: TimeDelta,
    /// Free time required after each busy interval. Must not be negative.
    pub buffer_after: TimeDelta,
}

impl SlotSpec {
    /// Back-to-back slots of `length` (step = length) without buffers.
    pub fn new(length: TimeDelta) -> Self {
        SlotSpec {
            length,
            step: length,
            buffer_before: TimeDelta::zero(),
            buffer_after: TimeDelta::zero(),
        }
    }

    pub fn with_step(self, step: TimeDelta) -> Self {
        SlotSpec { step, ..self }
    }

    pub fn with_buffers(self, before: TimeDelta, after: TimeDelta) -> Self {
        SlotSpec {
            buffer_before: before,
            buffer_after: after,
            ..self
        }
    }

    fn validate(&self) -> Result<(), AvailabilityError> {
        if self.length <= TimeDelta::zero() {
            return Err(AvailabilityError::NonPositiveLength);
        }
        if self.step <= TimeDelta::zero() {
            return Err(AvailabilityError::NonPositiveStep);
        }
        if self.buffer_before < TimeDelta::zero() || self.buffer_after < TimeDelta::zero() {
            return Err(AvailabilityError::NegativeBuffer);
        }
        Ok(())
    }
}

/// Why slots cannot be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AvailabilityError {
    #[error("slot length must be positive")]
    NonPositiveLength,
    #[error("slot step must be positive")]
    NonPositiveStep,
    #[error("buffers must not be negative")]
    NegativeBuffer,
}

/// The UTC windows of weekly `rules` in `zone` that overlap `range`, merged,
/// not clipped (so a slot grid can stay anchored at the local start time).
fn weekly_windows(rules: &[WeeklyRule], zone: Tz, range: Interval) -> Vec<Interval> {
    // One local day of margin each side: the zone's offset moves the local
    // dates, and an overnight rule from the day before can reach into range.
    let first = range
        .start()
        .with_timezone(&zone)
        .date_naive()
        .checked_sub_days(Days::new(1));
    let last = range
        .end()
        .with_timezone(&zone)
        .date_naive()
        .checked_add_days(Days::new(1));
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new(); // only at the ends of chrono's calendar
    };
    let mut windows = Vec::new();
    for day in first.iter_days().take_while(|d| *d <= last) {
        for &(weekday, start, end) in rules {
            if day.weekday() != weekday {
                continue;
            }
            let end_day = if end <= start {
                day.succ_opt()
            } else {
                Some(day)
            };
            let Some(end_day) = end_day else { continue };
            let window = Interval::new(
                local_to_utc(day.and_time(start), zone),
                local_to_utc(end_day.and_time(end), zone),
            );
            // A window wholly inside a DST gap collapses to nothing.
            if let Ok(window) = window {
                if window.overlaps(&range) {
                    windows.push(window);
                }
            }
        }
    }
    merge(windows)
}

/// Weekly working hours in `zone`, expanded to merged UTC windows and
/// clipped to `range`.
pub fn expand_weekly(rules: &[WeeklyRule], zone: Tz, range: Interval) -> Vec<Interval> {
    weekly_windows(rules, zone, range)
        .iter()
        .filter_map(|w| w.intersection(&range))
        .collect()
}

/// The smallest `origin + k·step` (k ≥ 0) at or after `at`, or `None` if it
/// cannot be represented.
fn align_up(at: DateTime<Utc>, origin: DateTime<Utc>, step: TimeDelta) -> Option<DateTime<Utc>> {
    if at <= origin {
        return Some(origin);
    }
    let offset = (at - origin).num_nanoseconds()?;
    let step_ns = step.num_nanoseconds()?;
    let k = offset.div_euclid(step_ns) + i64::from(offset.rem_euclid(step_ns) != 0);
    origin.checked_add_signed(TimeDelta::nanoseconds(k.checked_mul(step_ns)?))
}

/// The free slots: each exactly `spec.length` long, on the grid of a merged
/// window, inside it, and overlapping no buffered busy interval. Sorted by
/// start.
pub fn free_slots(
    windows: &[Interval],
    busy: &[Interval],
    spec: &SlotSpec,
) -> Result<Vec<Interval>, AvailabilityError> {
    spec.validate()?;
    let windows = merge(windows.to_vec());
    let blocked = merge(
        busy.iter()
            .filter_map(|b| {
                let start = b.start().checked_sub_signed(spec.buffer_before)?;
                let end = b.end().checked_add_signed(spec.buffer_after)?;
                Interval::new(start, end).ok()
            })
            .collect(),
    );
    let mut slots = Vec::new();
    // Both lists are sorted and disjoint, so one forward pointer into
    // `blocked` serves every window: O(windows + busy + slots).
    let mut next_blocked = 0;
    for window in &windows {
        // `None` once the next grid point is past chrono's range.
        let mut cursor = Some(window.start());
        while let Some(start) = cursor {
            let end = match start.checked_add_signed(spec.length) {
                Some(end) if end <= window.end() => end,
                _ => break,
            };
            while next_blocked < blocked.len() && blocked[next_blocked].end() <= start {
                next_blocked += 1;
            }
            cursor = match blocked.get(next_blocked).filter(|b| b.start() < end) {
                // Skip straight to the first grid point after the clash; it
                // is past `start` because the clash ends after `start`.
                Some(clash) => align_up(clash.end(), window.start(), spec.step),
                None => {
                    if let Ok(slot) = Interval::new(start, end) {
                        slots.push(slot);
                    }
                    start.checked_add_signed(spec.step)
                }
            };
        }
    }
    Ok(slots)
}

/// Free slots within `range` for weekly working hours in `zone`. The slot
/// grid is anchored at each working period's local start, even when `range`
/// begins in the middle of it (asking from 10:07 still yields 10:30, 11:00 …
/// for 30-minute slots in 09:00–17:00).
pub fn weekly_free_slots(
    rules: &[WeeklyRule],
    zone: Tz,
    range: Interval,
    busy: &[Interval],
    spec: &SlotSpec,
) -> Result<Vec<Interval>, AvailabilityError> {
    let windows = weekly_windows(rules, zone, range);
    let mut slots = free_slots(&windows, busy, spec)?;
    slots.retain(|slot| range.contains(slot));
    Ok(slots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn iv(s: &str, e: &str) -> Interval {
        Interval::new(utc(s), utc(e)).unwrap()
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn mins(m: i64) -> TimeDelta {
        TimeDelta::minutes(m)
    }

    fn weekdays(start: NaiveTime, end: NaiveTime) -> Vec<WeeklyRule> {
        [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ]
        .into_iter()
        .map(|d| (d, start, end))
        .collect()
    }

    #[test]
    fn slots_fill_a_window_and_skip_busy_time() {
        let window = iv("2026-07-01T09:00:00Z", "2026-07-01T12:00:00Z");
        let busy = iv("2026-07-01T10:00:00Z", "2026-07-01T10:30:00Z");
        let slots = free_slots(&[window], &[busy], &SlotSpec::new(mins(30))).unwrap();
        let starts: Vec<_> = slots
            .iter()
            .map(|s| s.start().format("%H:%M").to_string())
            .collect();
        assert_eq!(starts, ["09:00", "09:30", "10:30", "11:00", "11:30"]);
        assert!(slots.iter().all(|s| s.end() - s.start() == mins(30)));
    }

    #[test]
    fn buffers_widen_busy_time() {
        let window = iv("2026-07-01T09:00:00Z", "2026-07-01T12:00:00Z");
        let busy = iv("2026-07-01T10:00:00Z", "2026-07-01T10:30:00Z");
        let spec = SlotSpec::new(mins(30)).with_buffers(mins(15), mins(10));
        let starts: Vec<_> = free_slots(&[window], &[busy], &spec)
            .unwrap()
            .iter()
            .map(|s| s.start().format("%H:%M").to_string())
            .collect();
        // 09:30–10:00 ends inside the 15-minute lead-in; after 10:40 the grid
        // resumes at 11:00.
        assert_eq!(starts, ["09:00", "11:00", "11:30"]);
    }

    #[test]
    fn step_shorter_than_length_gives_overlapping_candidates() {
        let window = iv("2026-07-01T09:00:00Z", "2026-07-01T10:00:00Z");
        let spec = SlotSpec::new(mins(30)).with_step(mins(15));
        let slots = free_slots(&[window], &[], &spec).unwrap();
        assert_eq!(slots.len(), 3); // 09:00, 09:15, 09:30
    }

    #[test]
    fn touching_windows_merge_into_one_grid() {
        let a = iv("2026-07-01T09:00:00Z", "2026-07-01T09:45:00Z");
        let b = iv("2026-07-01T09:45:00Z", "2026-07-01T10:30:00Z");
        let slots = free_slots(&[b, a], &[], &SlotSpec::new(mins(30))).unwrap();
        assert_eq!(slots.len(), 3); // 09:00, 09:30, 10:00
    }

    #[test]
    fn bad_specs_are_rejected() {
        let w = [iv("2026-07-01T09:00:00Z", "2026-07-01T10:00:00Z")];
        assert_eq!(
            free_slots(&w, &[], &SlotSpec::new(mins(0))),
            Err(AvailabilityError::NonPositiveLength)
        );
        assert_eq!(
            free_slots(&w, &[], &SlotSpec::new(mins(30)).with_step(mins(-5))),
            Err(AvailabilityError::NonPositiveStep)
        );
        assert_eq!(
            free_slots(
                &w,
                &[],
                &SlotSpec::new(mins(30)).with_buffers(mins(-1), mins(0))
            ),
            Err(AvailabilityError::NegativeBuffer)
        );
    }

    #[test]
    fn weekly_hours_follow_the_wall_clock_across_spring_forward() {
        // Week of 2026-03-29 (Berlin springs forward on Sunday).
        let range = iv("2026-03-23T00:00:00Z", "2026-04-04T00:00:00Z");
        let windows = expand_weekly(&weekdays(hm(9, 0), hm(17, 0)), Tz::Europe__Berlin, range);
        assert_eq!(windows.len(), 10);
        assert_eq!(
            windows[4],
            iv("2026-03-27T08:00:00Z", "2026-03-27T16:00:00Z")
        );
        assert_eq!(
            windows[5],
            iv("2026-03-30T07:00:00Z", "2026-03-30T15:00:00Z")
        );
    }

    #[test]
    fn weekly_hours_across_fall_back_and_in_new_york() {
        let sunday = [(Weekday::Sun, hm(0, 0), hm(12, 0))];
        let range = iv("2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
        let windows = expand_weekly(&sunday, Tz::Europe__Berlin, range);
        // Local midnight to noon on the 25-hour day is 13 real hours.
        assert_eq!(
            windows,
            [iv("2026-10-24T22:00:00Z", "2026-10-25T11:00:00Z")]
        );

        let range = iv("2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z");
        let windows = expand_weekly(&weekdays(hm(9, 0), hm(17, 0)), Tz::America__New_York, range);
        assert_eq!(
            windows,
            [
                iv("2026-03-06T14:00:00Z", "2026-03-06T22:00:00Z"),
                iv("2026-03-09T13:00:00Z", "2026-03-09T21:00:00Z"),
            ]
        );
    }

    #[test]
    fn a_window_inside_the_dst_gap_disappears() {
        let gap = [(Weekday::Sun, hm(2, 0), hm(3, 0))];
        let range = iv("2026-03-28T00:00:00Z", "2026-03-30T00:00:00Z");
        assert!(expand_weekly(&gap, Tz::Europe__Berlin, range).is_empty());
    }

    #[test]
    fn overnight_and_whole_day_rules() {
        let night = [(Weekday::Fri, hm(22, 0), hm(6, 0))];
        let range = iv("2026-07-01T00:00:00Z", "2026-07-08T00:00:00Z");
        assert_eq!(
            expand_weekly(&night, Tz::UTC, range),
            [iv("2026-07-03T22:00:00Z", "2026-07-04T06:00:00Z")]
        );
        let saturday = [(Weekday::Sat, hm(0, 0), hm(0, 0))];
        assert_eq!(
            expand_weekly(&saturday, Tz::UTC, range),
            [iv("2026-07-04T00:00:00Z", "2026-07-05T00:00:00Z")]
        );
        // Friday night and the whole of Saturday touch and merge.
        let both = [night[0], saturday[0]];
        assert_eq!(
            expand_weekly(&both, Tz::UTC, range),
            [iv("2026-07-03T22:00:00Z", "2026-07-05T00:00:00Z")]
        );
    }

    #[test]
    fn expansion_is_clipped_but_the_grid_stays_anchored() {
        let rules = weekdays(hm(9, 0), hm(17, 0));
        let range = iv("2026-07-01T08:07:00Z", "2026-07-01T10:00:00Z"); // 10:07 Berlin
        assert_eq!(
            expand_weekly(&rules, Tz::Europe__Berlin, range),
            [iv("2026-07-01T08:07:00Z", "2026-07-01T10:00:00Z")]
        );
        let slots = weekly_free_slots(
            &rules,
            Tz::Europe__Berlin,
            range,
            &[],
            &SlotSpec::new(mins(30)),
        )
        .unwrap();
        let starts: Vec<_> = slots
            .iter()
            .map(|s| s.start().format("%H:%M").to_string())
            .collect();
        assert_eq!(starts, ["08:30", "09:00", "09:30"]);
    }

    // ---------------------------------------------------- property tests --

    const ORIGIN: &str = "2026-03-28T20:00:00Z";
    const SPAN: i64 = 600; // minutes covered by generated data

    fn at(minute: i64) -> DateTime<Utc> {
        utc(ORIGIN) + mins(minute)
    }

    fn intervals(max: usize) -> impl Strategy<Value = Vec<(i64, i64)>> {
        prop::collection::vec((0..SPAN, 1i64..180), 0..max)
    }

    fn to_intervals(raw: &[(i64, i64)]) -> Vec<Interval> {
        raw.iter()
            .map(|&(s, len)| Interval::new(at(s), at(s + len)).unwrap())
            .collect()
    }

    /// Brute force on a minute grid, sharing no code with `free_slots`.
    fn oracle(
        windows: &[(i64, i64)],
        busy: &[(i64, i64)],
        len: i64,
        step: i64,
        before: i64,
        after: i64,
    ) -> Vec<i64> {
        let size = (SPAN + 200) as usize;
        let mut open = vec![false; size];
        for &(s, l) in windows {
            for m in s..s + l {
                open[m as usize] = true;
            }
        }
        let blocked = |m: i64| {
            busy.iter()
                .any(|&(s, l)| s - before <= m && m < s + l + after)
        };
        let mut starts = Vec::new();
        let mut m = 0i64;
        while (m as usize) < size {
            if !open[m as usize] {
                m += 1;
                continue;
            }
            let run_start = m;
            while (m as usize) < size && open[m as usize] {
                m += 1;
            }
            let run_end = m;
            let mut t = run_start;
            while t + len <= run_end {
                if (t..t + len).all(|x| !blocked(x)) {
                    starts.push(t);
                }
                t += step;
            }
        }
        starts
    }

    proptest! {
        #[test]
        fn overlay_matches_the_minute_grid_oracle(
            windows in intervals(6),
            busy in intervals(8),
            len in 1i64..90,
            step in prop::option::of(1i64..90),
            before in 0i64..40,
            after in 0i64..40,
        ) {
            let step = step.unwrap_or(len);
            let spec = SlotSpec::new(mins(len))
                .with_step(mins(step))
                .with_buffers(mins(before), mins(after));
            let got = free_slots(&to_intervals(&windows), &to_intervals(&busy), &spec).unwrap();

            let windows_iv = to_intervals(&windows);
            let buffered: Vec<Interval> = to_intervals(&busy)
                .iter()
                .map(|b| Interval::new(b.start() - mins(before), b.end() + mins(after)).unwrap())
                .collect();
            for slot in &got {
                prop_assert_eq!(slot.end() - slot.start(), mins(len));
                prop_assert!(buffered.iter().all(|b| !b.overlaps(slot)), "{:?} overlaps busy", slot);
                prop_assert!(
                    merge(windows_iv.clone()).iter().any(|w| w.contains(slot)),
                    "{:?} outside windows", slot
                );
            }
            let got_minutes: Vec<i64> =
                got.iter().map(|s| (s.start() - utc(ORIGIN)).num_minutes()).collect();
            prop_assert_eq!(got_minutes, oracle(&windows, &busy, len, step, before, after));
        }

        #[test]
        fn weekly_windows_are_sorted_disjoint_and_inside_the_range(
            zone in prop::sample::select(vec![
                Tz::Europe__Berlin, Tz::America__New_York, Tz::Australia__Lord_Howe,
                Tz::Asia__Kolkata, Tz::America__Santiago, Tz::UTC,
            ]),
            start_day in 0i64..400,
            days in 1i64..20,
            start_h in 0u32..24,
            end_h in 0u32..24,
        ) {
            let origin = utc("2026-01-01T00:00:00Z");
            let range = Interval::new(
                origin + TimeDelta::days(start_day),
                origin + TimeDelta::days(start_day + days),
            ).unwrap();
            let rules = weekdays(hm(start_h, 0), hm(end_h, 30));
            let windows = expand_weekly(&rules, zone, range);
            for pair in windows.windows(2) {
                prop_assert!(pair[0].end() < pair[1].start());
            }
            for w in &windows {
                prop_assert!(range.contains(w));
                prop_assert!(w.end() - w.start() <= TimeDelta::hours(26));
            }
        }
    }
}
