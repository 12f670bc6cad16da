//! What a connection does next: one pure function of its folded state, its
//! in-flight bookkeeping, the gates in force and `now`.
//!
//! [`next`] answers which calendars to sync now (and how: incremental,
//! full, free/busy), which channel upkeep to run, which bookings to write
//! (and the intents to record before the writes), and when to wake up if
//! nothing else happens. The actor does nothing but run that answer and
//! arm the one timer it names. Every call it plans has passed the gate
//! ([`admit`]); work a gate holds back stays due and is planned the moment
//! the gate opens (the actor re-plans on every settings change).
//!
//! Nothing spins:
//! - a sync never starts sooner than `min_sync_interval` after the last;
//! - a failing calendar, channel or booking waits for its own retry time;
//! - every wake-up is at least `min_sync_interval` away;
//! - work nobody asked for (polls, re-bases, retries, channel upkeep) stops
//!   once the connection spent its hourly budget of provider calls
//!   ([`CallBudget`]), until the hour has room again.

use super::channels::{channel_plan, ChannelStep};
use super::events::ConnectionEvent;
use super::gate::{admit, Call, GateView, Wait};
use super::ids::{CalendarId, ConnectionId};
use super::inflight::InFlight;
use super::outbound::write_to_run;
use super::state::{CalendarSync, ConnectionState, WindowBase};
use super::sync::{poll_interval, SyncPolicy};
use super::window::{rebase_at, WindowPolicy};
use chrono::{DateTime, Duration, Utc};

/// The hard backstop of guarantee 9: provider calls an hour a connection
/// may make without an input asking for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    pub per_hour: u32,
    pub per_calendar_per_hour: u32,
}

impl Default for CallBudget {
    /// 60 an hour plus 150 per selected calendar: four polls an hour of a
    /// calendar with a few pages each, its daily re-base, its unavailable
    /// probe and channel renewals once a minute (a provider granting
    /// two-minute lifetimes: Google's open + stop, 120 calls an hour) fit;
    /// a renewal loop of one call every few milliseconds is stopped within
    /// the first second of its hour.
    fn default() -> Self {
        CallBudget {
            per_hour: 60,
            per_calendar_per_hour: 150,
        }
    }
}

impl CallBudget {
    pub fn for_calendars(&self, calendars: usize) -> u32 {
        let calendars = u32::try_from(calendars).unwrap_or(u32::MAX);
        self.per_hour
            .saturating_add(self.per_calendar_per_hour.saturating_mul(calendars))
    }
}

/// The policies the planner follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub sync: SyncPolicy,
    /// Periodic poll interval before the per-connection spread.
    pub poll_every: Duration,
    /// Least time between the starts of two syncs of one connection.
    pub min_sync_interval: Duration,
    pub window: WindowPolicy,
    pub budget: CallBudget,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            sync: SyncPolicy::default(),
            poll_every: Duration::minutes(15),
            min_sync_interval: Duration::milliseconds(100),
            window: WindowPolicy::default(),
            budget: CallBudget::default(),
        }
    }
}

/// Everything [`next`] decides on besides the connection itself.
#[derive(Debug, Clone)]
pub struct Ctx<'a> {
    pub id: ConnectionId,
    pub view: GateView,
    pub policy: &'a Policy,
    pub now: DateTime<Utc>,
}

/// How one calendar's round runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundKind {
    /// From the stored cursor.
    Incremental { cursor: String },
    /// A full listing of `window`: first sync, invalid cursor, or re-base.
    Full { window: WindowBase },
    /// A free/busy read of `window` (calendars shared as free/busy only).
    FreeBusy { window: WindowBase },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarRound {
    pub calendar: CalendarId,
    pub kind: RoundKind,
}

/// A sync to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRun {
    pub rounds: Vec<CalendarRound>,
    /// An input asked for it (its calls are not budgeted).
    pub prompted: bool,
}

/// Outbound writes to start now: each booking's pending intent (recorded
/// by [`Next::events`] if new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRun {
    pub bookings: Vec<String>,
    pub prompted: bool,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Next {
    /// Events to append before starting anything (outbound intents,
    /// channels forgotten at expiry).
    pub events: Vec<ConnectionEvent>,
    pub sync: Option<SyncRun>,
    pub channels: Vec<ChannelStep>,
    pub writes: Option<WriteRun>,
    /// When to wake up if no input arrives first, and for which calls.
    pub wake_at: Option<DateTime<Utc>>,
    pub wake_for: Vec<Call>,
    /// Work nobody asked for was held back: the hourly budget is spent.
    pub over_budget: bool,
}

impl Next {
    fn wake(&mut self, at: DateTime<Utc>, call: Call) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        if !self.wake_for.contains(&call) {
            self.wake_for.push(call);
        }
    }

    /// Nothing to start.
    pub fn is_idle(&self) -> bool {
        self.events.is_empty()
            && self.sync.is_none()
            && self.channels.is_empty()
            && self.writes.is_none()
    }
}

/// When one calendar is next due for a sync, which call that is, whether
/// an input asked for it, and whether the round must be full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    at: DateTime<Utc>,
    call: Call,
    prompted: bool,
    full: bool,
}

fn calendar_due(calendar: &CalendarId, sync: &CalendarSync, inflight: &InFlight, ctx: &Ctx) -> Due {
    let now = ctx.now;
    let full = sync.cursor.is_none();
    let due = |at, call, prompted, full| Due {
        at,
        call,
        prompted,
        full,
    };
    // A calendar in trouble is retried on its own schedule: an unavailable
    // one is probed rarely (background work), a failing one after its
    // backoff (the retry of work that was asked for).
    if sync.unavailable.is_some() {
        return due(sync.retry_at.unwrap_or(now), Call::Poll, false, full);
    }
    if sync.failures > 0 {
        return due(sync.retry_at.unwrap_or(now), Call::Sync, false, full);
    }
    if full {
        return due(now, Call::Sync, true, true);
    }
    if inflight.is_wanted(calendar) {
        return due(now, Call::Sync, true, false);
    }
    let poll = sync.last_success.unwrap_or(now) + poll_interval(ctx.policy.poll_every, ctx.id);
    match rebase_at(sync, &ctx.policy.window, ctx.id, calendar) {
        Some(rebase) if rebase <= poll => due(rebase, Call::Poll, false, true),
        _ => due(poll, Call::Poll, false, false),
    }
}

/// Polls due this soon after an earlier one join its run, so calendars
/// synced together stay together.
fn coalesce_within(policy: &Policy) -> Duration {
    (policy.poll_every / 10).min(Duration::minutes(1))
}

/// What the connection does next. See the module docs.
pub fn next(state: &ConnectionState, inflight: &InFlight, ctx: &Ctx) -> Next {
    let mut next = Next::default();
    let Some(profile) = &state.profile else {
        return next;
    };
    let now = ctx.now;
    let budget = ctx.policy.budget.for_calendars(state.calendars.len());
    let budget_reopens = inflight.budget_reopens_at(budget, now);
    plan_channels(
        state,
        inflight,
        ctx,
        profile.provider,
        budget_reopens,
        &mut next,
    );
    plan_sync(state, inflight, ctx, budget_reopens, &mut next);
    plan_writes(state, inflight, ctx, budget_reopens, &mut next);
    // Never wake sooner than a sync may start: a timer cannot spin.
    let floor = now + ctx.policy.min_sync_interval.max(Duration::milliseconds(1));
    next.wake_at = next.wake_at.map(|at| at.max(floor));
    next
}

/// Holds unprompted work back while the budget is spent.
fn held(next: &mut Next, reopens: Option<DateTime<Utc>>, call: Call) -> bool {
    match reopens {
        Some(at) => {
            next.over_budget = true;
            next.wake(at, call);
            true
        }
        None => false,
    }
}

fn plan_channels(
    state: &ConnectionState,
    inflight: &InFlight,
    ctx: &Ctx,
    provider: super::ids::CalendarProvider,
    budget_reopens: Option<DateTime<Utc>>,
    next: &mut Next,
) {
    if inflight.channels_running {
        return;
    }
    let plan = channel_plan(state, provider, &ctx.view, &inflight.renew_now, ctx.now);
    next.events.extend(
        plan.expired
            .into_iter()
            .map(|channel_id| ConnectionEvent::ChannelClosed {
                channel_id,
                reason: "expired".into(),
                at: ctx.now,
            }),
    );
    if let Some(at) = plan.wake_at {
        next.wake(at, Call::ChannelUpkeep);
    }
    if !plan.steps.is_empty() && !held(next, budget_reopens, Call::ChannelUpkeep) {
        next.channels = plan.steps;
    }
}

fn plan_sync(
    state: &ConnectionState,
    inflight: &InFlight,
    ctx: &Ctx,
    budget_reopens: Option<DateTime<Utc>>,
    next: &mut Next,
) {
    if inflight.sync_running {
        return;
    }
    let now = ctx.now;
    let mut ready: Vec<(&CalendarId, &CalendarSync, Due)> = Vec::new();
    for (calendar, sync) in &state.calendars {
        let due = calendar_due(calendar, sync, inflight, ctx);
        match admit(&ctx.view, state, due.call, now) {
            Ok(()) if due.at <= now => ready.push((calendar, sync, due)),
            Ok(()) => next.wake(due.at, due.call),
            // The connection's own backoff ends by itself.
            Err(Wait::Backoff { until }) => next.wake(until.max(due.at), due.call),
            Err(_) => {}
        }
    }
    if ready.is_empty() {
        return;
    }
    if let Some(earliest) = inflight
        .last_sync_started
        .map(|t| t + ctx.policy.min_sync_interval)
        .filter(|t| *t > now)
    {
        next.wake(earliest, Call::Sync);
        return;
    }
    let prompted = ready.iter().any(|(_, _, d)| d.prompted);
    if !prompted && held(next, budget_reopens, Call::Poll) {
        return;
    }
    // Polls due shortly join this run.
    let soon = now + coalesce_within(ctx.policy);
    for (calendar, sync) in &state.calendars {
        if ready.iter().any(|(c, _, _)| *c == calendar) {
            continue;
        }
        let due = calendar_due(calendar, sync, inflight, ctx);
        if due.call == Call::Poll
            && !due.full
            && due.at <= soon
            && sync.failures == 0
            && sync.unavailable.is_none()
            && admit(&ctx.view, state, Call::Poll, now).is_ok()
        {
            ready.push((calendar, sync, due));
        }
    }
    let window = ctx.policy.window.base(now);
    let rounds = ready
        .into_iter()
        .map(|(calendar, sync, due)| CalendarRound {
            calendar: calendar.clone(),
            kind: match (&sync.cursor, sync.free_busy_only, due.full) {
                (_, true, _) => RoundKind::FreeBusy { window },
                (Some(cursor), false, false) => RoundKind::Incremental {
                    cursor: cursor.clone(),
                },
                _ => RoundKind::Full { window },
            },
        })
        .collect();
    next.sync = Some(SyncRun { rounds, prompted });
}

fn plan_writes(
    state: &ConnectionState,
    inflight: &InFlight,
    ctx: &Ctx,
    budget_reopens: Option<DateTime<Utc>>,
    next: &mut Next,
) {
    if inflight.outbound_running {
        return;
    }
    let has_destination = state
        .profile
        .as_ref()
        .is_some_and(|p| p.destination_calendar.is_some());
    if !has_destination {
        return;
    }
    let now = ctx.now;
    let owed = state
        .bookings
        .values()
        .any(|t| write_to_run(t, ctx.policy.sync.on_cancel).is_some());
    match admit(&ctx.view, state, Call::Write, now) {
        Ok(()) => {}
        Err(Wait::Backoff { until }) if owed => {
            next.wake(until, Call::Write);
            return;
        }
        Err(_) => return,
    }
    let mut bookings = Vec::new();
    let mut intents = Vec::new();
    let mut prompted = false;
    for (booking_id, track) in state.bookings.iter() {
        let Some((op, new_intent)) = write_to_run(track, ctx.policy.sync.on_cancel) else {
            continue;
        };
        if let Some(retry) = track.retry_at.filter(|t| *t > now) {
            next.wake(retry, Call::Write);
            continue;
        }
        prompted |= track.failures == 0;
        if new_intent {
            intents.push(ConnectionEvent::OutboundIntentRecorded {
                booking_id: booking_id.clone(),
                version: track.latest.version,
                op,
            });
        }
        bookings.push(booking_id.clone());
    }
    if bookings.is_empty() || (!prompted && held(next, budget_reopens, Call::Write)) {
        return;
    }
    next.events.extend(intents);
    next.writes = Some(WriteRun { bookings, prompted });
}

/// Why a booking's write waits right now, as `GET /v1/bookings/{id}` and
/// `calsync bookings show` say it (`waiting: sync_disabled`, …). `None`:
/// nothing is owed, or the write is about to run.
pub fn booking_wait(state: &ConnectionState, booking_id: &str, ctx: &Ctx) -> Option<Wait> {
    let track = state.bookings.get(booking_id)?;
    if track.failed.is_some() {
        return Some(Wait::Failed);
    }
    write_to_run(track, ctx.policy.sync.on_cancel)?;
    let has_destination = state
        .profile
        .as_ref()
        .is_some_and(|p| p.destination_calendar.is_some());
    if !has_destination {
        return Some(Wait::NoDestination);
    }
    if let Err(wait) = admit(&ctx.view, state, Call::Write, ctx.now) {
        return Some(wait);
    }
    track
        .retry_at
        .filter(|t| *t > ctx.now)
        .map(|until| Wait::WriteBackoff { until })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
