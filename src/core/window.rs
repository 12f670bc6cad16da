//! The sync window: how far back and ahead calsync mirrors a calendar, and
//! when a calendar's window is re-based so it keeps rolling.
//!
//! Both providers freeze the window of a round when it starts: a Graph
//! deltaLink encodes its `startDateTime`/`endDateTime` (PROVIDERS.md §2,
//! "the window is frozen at the initial request; to move a rolling window
//! you must start a new full round"), and a Google sync token must be used
//! with the same parameters as the full sync that produced it, which may
//! not combine with `timeMin`/`timeMax`. So without a new full round the
//! look-ahead shrinks by a day every day. calsync re-bases every calendar
//! with a fresh full round (mark and sweep, exactly like the 410 path) once
//! a day, at most ~24 h after the last base and spread over the day: each
//! calendar re-bases 20–24 h after its previous base, the offset fixed per
//! (connection, calendar), so a fleet created at once drifts apart instead
//! of re-basing in lockstep at midnight.

use super::ids::{CalendarId, ConnectionId};
use super::state::{CalendarSync, WindowBase};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Events ending before `start` or starting at/after `end` are outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// How far back and ahead calendars are mirrored (`[sync]
/// window_past_days` / `window_future_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowPolicy {
    pub past_days: u32,
    pub future_days: u32,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        WindowPolicy {
            past_days: 1,
            future_days: 180,
        }
    }
}

/// The longest a window goes unre-based.
pub const REBASE_EVERY: Duration = Duration::hours(24);
/// How much earlier than [`REBASE_EVERY`] a calendar may re-base.
pub const REBASE_SPREAD: Duration = Duration::hours(4);

impl WindowPolicy {
    pub const MAX_PAST_DAYS: u32 = 90;
    pub const MAX_FUTURE_DAYS: u32 = 730;

    /// Checks the documented bounds (past 0–90 days, future 1–730 days).
    pub fn new(past_days: u32, future_days: u32) -> Result<Self, String> {
        if past_days > Self::MAX_PAST_DAYS {
            return Err(format!(
                "window_past_days must be 0..={}, got {past_days}",
                Self::MAX_PAST_DAYS
            ));
        }
        if !(1..=Self::MAX_FUTURE_DAYS).contains(&future_days) {
            return Err(format!(
                "window_future_days must be 1..={}, got {future_days}",
                Self::MAX_FUTURE_DAYS
            ));
        }
        Ok(WindowPolicy {
            past_days,
            future_days,
        })
    }

    /// The window of a round starting at `now`.
    pub fn base(&self, now: DateTime<Utc>) -> WindowBase {
        WindowBase {
            based_at: now,
            start: now - Duration::days(i64::from(self.past_days)),
            end: now + Duration::days(i64::from(self.future_days)),
        }
    }

    /// Whether `base` was made under this policy.
    fn made_by(&self, base: &WindowBase) -> bool {
        base.based_at - base.start == Duration::days(i64::from(self.past_days))
            && base.end - base.based_at == Duration::days(i64::from(self.future_days))
    }
}

impl From<WindowBase> for SyncWindow {
    fn from(b: WindowBase) -> Self {
        SyncWindow {
            start: b.start,
            end: b.end,
        }
    }
}

/// A fixed offset in `[0, REBASE_SPREAD)` for one calendar of one
/// connection (FNV-1a of the ids: stable across processes and builds).
fn spread(connection: ConnectionId, calendar: &CalendarId) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in connection
        .as_uuid()
        .as_bytes()
        .iter()
        .chain(calendar.as_str().as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let spread_secs = REBASE_SPREAD.num_seconds().max(1) as u64;
    Duration::seconds((hash % spread_secs) as i64)
}

/// When `calendar`'s window must be re-based with a full round: 20–24 h
/// after its last base, or at once when the policy changed since. `None`
/// while the calendar has no completed round to re-base (its first full
/// round is due anyway).
pub fn rebase_at(
    sync: &CalendarSync,
    policy: &WindowPolicy,
    connection: ConnectionId,
    calendar: &CalendarId,
) -> Option<DateTime<Utc>> {
    sync.cursor.as_ref()?;
    match &sync.window {
        Some(base) if !policy.made_by(base) => Some(base.based_at),
        Some(base) => Some(base.based_at + REBASE_EVERY - spread(connection, calendar)),
        // Rounds recorded before windows were: re-base a day after the
        // last success.
        None => sync
            .last_success
            .map(|t| t + REBASE_EVERY - spread(connection, calendar)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn synced(base: WindowBase) -> CalendarSync {
        CalendarSync {
            cursor: Some("c".into()),
            window: Some(base),
            last_success: Some(base.based_at),
            ..CalendarSync::default()
        }
    }

    #[test]
    fn bounds_are_validated() {
        assert!(WindowPolicy::new(0, 1).is_ok());
        assert!(WindowPolicy::new(90, 730).is_ok());
        assert!(WindowPolicy::new(91, 180).is_err());
        assert!(WindowPolicy::new(1, 0).is_err());
        assert!(WindowPolicy::new(1, 731).is_err());
    }

    #[test]
    fn windows_rebase_within_a_day_and_spread_over_four_hours() {
        let policy = WindowPolicy::default();
        let cal = CalendarId::parse("primary").unwrap();
        let mut offsets = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let id = ConnectionId::new_random();
            let at = rebase_at(&synced(policy.base(now())), &policy, id, &cal).unwrap();
            assert!(at > now() + Duration::hours(20) - Duration::seconds(1));
            assert!(at <= now() + REBASE_EVERY);
            assert_eq!(
                at,
                rebase_at(&synced(policy.base(now())), &policy, id, &cal).unwrap()
            );
            offsets.insert((at - now()).num_minutes());
        }
        assert!(offsets.len() > 100, "re-bases are not spread: {offsets:?}");
    }

    #[test]
    fn a_changed_policy_rebases_at_once_and_nothing_is_rebased_before_a_first_round() {
        let id = ConnectionId::new_random();
        let cal = CalendarId::parse("primary").unwrap();
        let old = WindowPolicy::default().base(now());
        let wider = WindowPolicy::new(42, 201).unwrap();
        assert_eq!(rebase_at(&synced(old), &wider, id, &cal), Some(now()));
        let fresh = CalendarSync::default();
        assert_eq!(rebase_at(&fresh, &wider, id, &cal), None);
    }

    #[test]
    fn the_window_spans_the_configured_days() {
        let w = WindowPolicy::new(42, 201).unwrap().base(now());
        assert_eq!(w.start, now() - Duration::days(42));
        assert_eq!(w.end, now() + Duration::days(201));
    }
}
