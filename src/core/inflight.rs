//! In-flight bookkeeping of one connection actor: which tasks run right
//! now, what inputs asked for since, and how many provider calls nobody
//! asked for went out in the last hour.
//!
//! This is the only state of a connection that is not folded from its
//! stream: it describes the running process, not the connection, and dies
//! with the actor. Transitions:
//!
//! - an input is committed → [`InFlight::asked`] records what it asks for
//!   ([`asks_for`]: a notification wants its calendar synced, a resume wants
//!   every calendar, a Graph `reauthorizationRequired` wants a renewal);
//! - the planner's [`Next`](super::plan::Next) is started →
//!   [`InFlight::started`]: a task kind becomes running, the calendars it
//!   syncs stop being wanted (a notification arriving later wants them
//!   again, which is the one coalesced follow-up);
//! - a task reports back → [`InFlight::finished`]: it stops running, and
//!   its provider calls are counted against the hourly budget unless an
//!   input asked for the work.

use super::decide::{ConnectionCommand, LifecycleEvent};
use super::ids::CalendarId;
use super::state::ConnectionState;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use uuid::Uuid;

/// The kinds of task an actor runs, at most one of each at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Sync,
    Channels,
    Outbound,
}

impl Task {
    pub fn as_str(&self) -> &'static str {
        match self {
            Task::Sync => "sync",
            Task::Channels => "channels",
            Task::Outbound => "outbound",
        }
    }
}

/// What a committed input asks the connection to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ask {
    /// Sync every calendar.
    pub sync_all: bool,
    /// Sync these calendars.
    pub sync: Vec<CalendarId>,
    /// Renew this channel now (Graph `reauthorizationRequired`).
    pub renew: Option<String>,
}

/// What `command`, just committed against `before`, asks for. Duplicates
/// ask for nothing: they never trigger extra work (guarantee 2).
pub fn asks_for(before: &ConnectionState, command: &ConnectionCommand, duplicate: bool) -> Ask {
    use ConnectionCommand as C;
    if duplicate {
        return Ask::default();
    }
    let calendar_of =
        |channel_id: &str| before.channels.get(channel_id).map(|c| c.calendar.clone());
    let one_or_all = |calendar: Option<CalendarId>| match calendar {
        Some(c) => Ask {
            sync: vec![c],
            ..Ask::default()
        },
        None => Ask {
            sync_all: true,
            ..Ask::default()
        },
    };
    let all = Ask {
        sync_all: true,
        ..Ask::default()
    };
    match command {
        C::AcceptNotification { channel_id, .. } => one_or_all(calendar_of(channel_id)),
        C::ChannelLifecycle { channel_id, event } => match event {
            LifecycleEvent::ReauthorizationRequired => Ask {
                renew: Some(channel_id.clone()),
                ..Ask::default()
            },
            LifecycleEvent::Missed | LifecycleEvent::SubscriptionRemoved => {
                one_or_all(calendar_of(channel_id))
            }
        },
        C::RequestSync
        | C::Create { .. }
        | C::SelectCalendars { .. }
        | C::Resume
        | C::LiftQuarantine
        | C::RecordReauthorized
        | C::RecordCredentialsChanged
        | C::SetFreeBusyOnly { .. } => all,
        _ => Ask::default(),
    }
}

/// The in-flight state of one actor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InFlight {
    pub sync_running: bool,
    pub channels_running: bool,
    pub outbound_running: bool,
    /// Every calendar is wanted (an input asked for a whole sync).
    pub wanted_all: bool,
    /// Calendars an input asked to sync since their last sync started.
    pub wanted: BTreeSet<CalendarId>,
    /// The correlation id of the newest input that asked for a sync, so
    /// the sync it causes (perhaps later) names it in logs.
    pub cause: Option<Uuid>,
    pub last_sync_started: Option<DateTime<Utc>>,
    /// Channels to renew at once, whatever their schedule.
    pub renew_now: BTreeSet<String>,
    /// Provider calls made by work nobody asked for, per finished task, in
    /// the last hour (the budget's sliding window).
    pub unprompted: VecDeque<(DateTime<Utc>, u32)>,
}

impl InFlight {
    /// Records what a committed input asks for.
    pub fn asked(&mut self, ask: Ask, cause: Option<Uuid>) {
        if ask.sync_all || !ask.sync.is_empty() {
            self.cause = cause.or(self.cause);
        }
        self.wanted_all |= ask.sync_all;
        self.wanted.extend(ask.sync);
        if let Some(channel) = ask.renew {
            self.renew_now.insert(channel);
        }
    }

    pub fn is_wanted(&self, calendar: &CalendarId) -> bool {
        self.wanted_all || self.wanted.contains(calendar)
    }

    pub fn is_running(&self, task: Task) -> bool {
        match task {
            Task::Sync => self.sync_running,
            Task::Channels => self.channels_running,
            Task::Outbound => self.outbound_running,
        }
    }

    /// A sync of `calendars` started at `now`; returns the cause it
    /// serves. A calendar left out of the run (backing off, unavailable) is
    /// retried on its own schedule, so "every calendar" is satisfied too.
    pub fn sync_started(&mut self, calendars: &[CalendarId], now: DateTime<Utc>) -> Option<Uuid> {
        self.sync_running = true;
        self.last_sync_started = Some(now);
        self.wanted_all = false;
        for c in calendars {
            self.wanted.remove(c);
        }
        if self.wanted.is_empty() {
            self.cause.take()
        } else {
            self.cause
        }
    }

    pub fn channels_started(&mut self) {
        self.channels_running = true;
        self.renew_now.clear();
    }

    pub fn outbound_started(&mut self) {
        self.outbound_running = true;
    }

    /// `task` finished at `now` after `calls` provider calls; `prompted`
    /// when an input asked for the work (then the calls are not counted
    /// against the budget).
    pub fn finished(&mut self, task: Task, calls: u32, prompted: bool, now: DateTime<Utc>) {
        match task {
            Task::Sync => self.sync_running = false,
            Task::Channels => self.channels_running = false,
            Task::Outbound => self.outbound_running = false,
        }
        if !prompted && calls > 0 {
            self.unprompted.push_back((now, calls));
        }
        self.forget_before(now - Duration::hours(1));
    }

    fn forget_before(&mut self, cutoff: DateTime<Utc>) {
        while self.unprompted.front().is_some_and(|(at, _)| *at <= cutoff) {
            self.unprompted.pop_front();
        }
    }

    /// Unprompted provider calls within the hour before `now`.
    pub fn unprompted_calls(&self, now: DateTime<Utc>) -> u32 {
        let cutoff = now - Duration::hours(1);
        self.unprompted
            .iter()
            .filter(|(at, _)| *at > cutoff)
            .map(|(_, n)| *n)
            .fold(0u32, u32::saturating_add)
    }

    /// When the budget has room again for unprompted work, given `budget`
    /// calls an hour: as soon as enough of the oldest calls leave the hour.
    pub fn budget_reopens_at(&self, budget: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cutoff = now - Duration::hours(1);
        let mut total = self.unprompted_calls(now);
        if total < budget {
            return None;
        }
        for (at, n) in self.unprompted.iter().filter(|(at, _)| *at > cutoff) {
            total = total.saturating_sub(*n);
            if total < budget {
                return Some(*at + Duration::hours(1));
            }
        }
        Some(now + Duration::hours(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn cal(s: &str) -> CalendarId {
        CalendarId::parse(s).unwrap()
    }

    #[test]
    fn a_notification_during_a_sync_wants_exactly_one_follow_up() {
        let mut f = InFlight::default();
        f.asked(
            Ask {
                sync: vec![cal("a")],
                ..Ask::default()
            },
            None,
        );
        f.sync_started(&[cal("a"), cal("b")], now());
        assert!(!f.is_wanted(&cal("a")));
        for _ in 0..50 {
            f.asked(
                Ask {
                    sync: vec![cal("a")],
                    ..Ask::default()
                },
                None,
            );
        }
        assert_eq!(f.wanted.len(), 1, "copies coalesce into one want");
        f.finished(Task::Sync, 3, true, now());
        assert!(!f.sync_running && f.is_wanted(&cal("a")));
        assert_eq!(
            f.unprompted_calls(now()),
            0,
            "prompted calls are not budgeted"
        );
    }

    #[test]
    fn the_budget_window_slides_over_one_hour() {
        let mut f = InFlight::default();
        for minute in 0..10 {
            f.finished(Task::Sync, 10, false, now() + Duration::minutes(minute));
        }
        let t = now() + Duration::minutes(10);
        assert_eq!(f.unprompted_calls(t), 100);
        assert_eq!(f.budget_reopens_at(200, t), None);
        // 100 ≥ 95: room again once the first batch leaves the hour.
        assert_eq!(f.budget_reopens_at(95, t), Some(now() + Duration::hours(1)));
        assert_eq!(f.unprompted_calls(now() + Duration::minutes(65)), 40);
    }
}
