//! Pure channel lifecycle: which push channels (Google) or subscriptions
//! (Graph) a connection should open, renew or close right now.
//!
//! Rules (PROVIDERS.md §3, §8): one live channel per selected calendar;
//! renew before expiry, scheduled from the expiry the provider returned
//! (half its granted lifetime, at most an hour before expiry); Google
//! channels cannot be extended, so a new channel is opened and the old one
//! stopped once the new one works (both fire during the overlap; dedupe
//! absorbs it); Graph subscriptions are renewed in place (PATCH); channels
//! of calendars no longer selected are closed. A failed open or renewal
//! backs off like a failed sync (`channel_retry_at` on the calendar), so
//! upkeep makes one attempt per backoff step, never one per timer tick.

use super::gate::{admit, Call, GateView};
use super::ids::{CalendarId, CalendarProvider};
use super::state::{ChannelState, ConnectionState};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeSet;

/// Channels whose grant time is unknown (recorded before it was kept) are
/// renewed this long before they expire.
pub const RENEW_MARGIN: Duration = Duration::hours(1);

/// A calendar's channel upkeep (open or renew) happens at most once per
/// this long: a provider granting minutes or seconds cannot make upkeep
/// spin. A shorter-lived channel lapses until then, and the periodic poll
/// covers the gap. One minute was tried first: bounded, but a two-minute
/// grant then costs two provider calls and two log events a minute per
/// calendar, 2,880 events a day, forever (the deterministic simulation
/// found it over virtual weeks); ten minutes costs a tenth of that while
/// keeping push for any grant of twenty minutes or more.
pub const MIN_RENEW_AFTER: Duration = Duration::minutes(10);

/// Notifications on a closed channel are still accepted this long after it
/// closed (Google sends a few after `channels.stop`).
pub const CLOSED_GRACE: Duration = Duration::minutes(5);

/// One step of channel upkeep for the shell to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelStep {
    Open {
        calendar: CalendarId,
    },
    Renew {
        channel_id: String,
    },
    /// One attempt: whatever the provider answers, the channel is
    /// forgotten afterwards (a channel we failed to stop expires on its own).
    Close {
        channel_id: String,
    },
}

/// What channel upkeep is due now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChannelPlan {
    pub steps: Vec<ChannelStep>,
    /// Channels past their expiry: forgotten without a provider call.
    pub expired: Vec<String>,
    /// When upkeep is next due, if anything is scheduled.
    pub wake_at: Option<DateTime<Utc>>,
}

/// When `channel` is due for renewal: half way through the lifetime the
/// provider granted (PROVIDERS.md §8: renew at ~50–70 %), never sooner
/// than [`MIN_RENEW_AFTER`] after the grant. For lifetimes of two hours and
/// more this is also at least [`RENEW_MARGIN`] before expiry, leaving
/// room for retries; for short ones (a provider granting minutes) it is
/// what keeps a channel alive without renewing it back to back — "expiry
/// minus an hour" would already be past. Channels recorded before grant
/// times were kept renew by the margin alone.
pub fn renew_at(channel: &ChannelState) -> DateTime<Utc> {
    match channel.granted_at {
        Some(granted) => {
            let half = granted + (channel.expires_at - granted) / 2;
            half.max(granted + MIN_RENEW_AFTER)
        }
        None => channel.expires_at - RENEW_MARGIN,
    }
}

/// What to do about channels at `now` under the gates in `view`. Rules:
/// one live channel per selected, available calendar, while webhooks are on
/// and a public URL is configured; renewal at [`renew_at`] (Graph PATCH in
/// place; Google cannot extend, so it opens a new channel and stops the old
/// one once the new one works); a failing calendar's upkeep waits for its
/// `channel_retry_at`; channels nobody wants any more (deselected calendar,
/// removed connection, webhooks off, no public URL) are closed once.
pub fn channel_plan(
    state: &ConnectionState,
    provider: CalendarProvider,
    view: &GateView,
    renew_now: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> ChannelPlan {
    let mut plan = ChannelPlan::default();
    let may_close = admit(view, state, Call::ChannelClose, now).is_ok();
    let upkeep = admit(view, state, Call::ChannelUpkeep, now).is_ok();
    let wanted = |calendar: &CalendarId| {
        upkeep
            && state
                .calendars
                .get(calendar)
                .is_some_and(|c| c.unavailable.is_none())
    };
    for (channel_id, channel) in &state.channels {
        if channel.expires_at <= now {
            plan.expired.push(channel_id.clone());
            continue;
        }
        let unwanted = !state.calendars.contains_key(&channel.calendar)
            || state.lifecycle == super::state::Lifecycle::Removed
            || !view.channels_wanted();
        if unwanted && may_close {
            plan.steps.push(ChannelStep::Close {
                channel_id: channel_id.clone(),
            });
        }
    }
    if !upkeep {
        return plan;
    }
    let wake = |at: DateTime<Utc>, plan: &mut ChannelPlan| {
        plan.wake_at = Some(plan.wake_at.map_or(at, |w| w.min(at)));
    };
    for (calendar, sync) in &state.calendars {
        if !wanted(calendar) {
            continue;
        }
        if let Some(retry) = sync.channel_retry_at.filter(|t| *t > now) {
            wake(retry, &mut plan);
            continue;
        }
        let mut live: Vec<(&String, &ChannelState)> = state
            .channels
            .iter()
            .filter(|(_, c)| &c.calendar == calendar && c.expires_at > now)
            .collect();
        live.sort_by_key(|(_, c)| std::cmp::Reverse(c.expires_at));
        match live.first() {
            None => match sync
                .channel_granted_at
                .map(|t| t + MIN_RENEW_AFTER)
                .filter(|t| *t > now)
            {
                // A short-lived channel lapsed: not again before the floor.
                Some(next) => wake(next, &mut plan),
                None => plan.steps.push(ChannelStep::Open {
                    calendar: calendar.clone(),
                }),
            },
            Some((newest, channel)) => {
                let due = renew_at(channel);
                if due <= now || renew_now.contains(*newest) {
                    plan.steps.push(match provider {
                        CalendarProvider::Microsoft => ChannelStep::Renew {
                            channel_id: (*newest).clone(),
                        },
                        CalendarProvider::Google => ChannelStep::Open {
                            calendar: calendar.clone(),
                        },
                    });
                } else {
                    wake(due, &mut plan);
                }
                // Older channels of the same calendar: the newest works, so
                // stop the rest (Google overlap after a renewal).
                for (old, _) in live.iter().skip(1) {
                    plan.steps.push(ChannelStep::Close {
                        channel_id: (*old).clone(),
                    });
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::ConnectionEvent;
    use crate::core::ids::{ExternalAccount, PlatformProviderId};
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
    }

    fn cal(s: &str) -> CalendarId {
        CalendarId::parse(s).unwrap()
    }

    fn state(calendars: &[&str]) -> ConnectionState {
        ConnectionState::default().fold(&[ConnectionEvent::ConnectionCreated {
            platform_provider_id: PlatformProviderId::parse("p").unwrap(),
            provider: CalendarProvider::Google,
            account: ExternalAccount::parse("a@x").unwrap(),
            calendars: calendars.iter().map(|c| cal(c)).collect(),
            destination_calendar: None,
        }])
    }

    fn opened(calendar: &str, id: &str, expires_in: Duration) -> ConnectionEvent {
        ConnectionEvent::ChannelOpened {
            calendar: cal(calendar),
            channel_id: id.into(),
            resource_id: format!("res-{id}"),
            secret_sha256: "00".into(),
            expires_at: now() + expires_in,
            at: Some(now()),
        }
    }

    fn granted(
        calendar: &str,
        id: &str,
        expires_in: Duration,
        at: DateTime<Utc>,
    ) -> ConnectionEvent {
        ConnectionEvent::ChannelOpened {
            calendar: cal(calendar),
            channel_id: id.into(),
            resource_id: format!("res-{id}"),
            secret_sha256: "00".into(),
            expires_at: now() + expires_in,
            at: Some(at),
        }
    }

    fn plan(s: &ConnectionState, provider: CalendarProvider) -> ChannelPlan {
        channel_plan(
            s,
            provider,
            &GateView::all_open(true),
            &BTreeSet::new(),
            now(),
        )
    }

    #[test]
    fn every_selected_calendar_gets_one_channel() {
        let s = state(&["a", "b"]);
        assert_eq!(
            plan(&s, CalendarProvider::Google).steps,
            vec![
                ChannelStep::Open { calendar: cal("a") },
                ChannelStep::Open { calendar: cal("b") }
            ]
        );
        let s = s.fold(&[
            opened("a", "c1", Duration::days(7)),
            opened("b", "c2", Duration::days(7)),
        ]);
        let p = plan(&s, CalendarProvider::Google);
        assert!(p.steps.is_empty());
        // Half of the seven days granted comes before "an hour before".
        assert_eq!(p.wake_at, Some(now() + Duration::hours(84)));
    }

    #[test]
    fn renewal_is_due_at_half_the_granted_lifetime_but_never_within_ten_minutes() {
        let channel = |lifetime: Duration| ChannelState {
            calendar: cal("a"),
            resource_id: "r".into(),
            expires_at: now() + lifetime,
            granted_at: Some(now()),
        };
        assert_eq!(
            renew_at(&channel(Duration::minutes(2))),
            now() + Duration::minutes(10)
        );
        assert_eq!(
            renew_at(&channel(Duration::seconds(30))),
            now() + MIN_RENEW_AFTER
        );
        assert_eq!(
            renew_at(&channel(Duration::minutes(20))),
            now() + Duration::minutes(10)
        );
        assert_eq!(
            renew_at(&channel(Duration::minutes(4230))),
            now() + Duration::minutes(2115)
        );
        // An hour's lifetime: half way, not "an hour before expiry" (now).
        assert_eq!(
            renew_at(&channel(Duration::hours(1))),
            now() + Duration::minutes(30)
        );
        // Recorded before grant times were kept: the margin alone.
        let old = ChannelState {
            granted_at: None,
            ..channel(Duration::days(7))
        };
        assert_eq!(renew_at(&old), now() + Duration::days(7) - RENEW_MARGIN);
    }

    #[test]
    fn google_renews_by_opening_a_new_channel_then_stops_the_old_one() {
        let s = state(&["a"]).fold(&[granted(
            "a",
            "old",
            Duration::minutes(30),
            now() - Duration::days(7),
        )]);
        assert_eq!(
            plan(&s, CalendarProvider::Google).steps,
            vec![ChannelStep::Open { calendar: cal("a") }]
        );
        let s = s.fold(&[opened("a", "new", Duration::days(7))]);
        assert_eq!(
            plan(&s, CalendarProvider::Google).steps,
            vec![ChannelStep::Close {
                channel_id: "old".into()
            }]
        );
    }

    #[test]
    fn graph_renews_in_place_and_forgets_expired_subscriptions() {
        let s = state(&["a"]).fold(&[granted(
            "a",
            "sub",
            Duration::minutes(30),
            now() - Duration::days(3),
        )]);
        assert_eq!(
            plan(&s, CalendarProvider::Microsoft).steps,
            vec![ChannelStep::Renew {
                channel_id: "sub".into()
            }]
        );
        let expired = state(&["a"]).fold(&[granted(
            "a",
            "sub",
            Duration::minutes(-1),
            now() - Duration::hours(1),
        )]);
        let p = plan(&expired, CalendarProvider::Microsoft);
        assert_eq!(p.expired, vec!["sub".to_string()]);
        assert_eq!(p.steps, vec![ChannelStep::Open { calendar: cal("a") }]);
    }

    #[test]
    fn a_lapsed_short_lived_channel_is_reopened_only_ten_minutes_after_its_grant() {
        for provider in [CalendarProvider::Google, CalendarProvider::Microsoft] {
            // Granted for two minutes, three minutes ago: lapsed.
            let s = state(&["a"]).fold(&[granted(
                "a",
                "short",
                Duration::minutes(-1),
                now() - Duration::minutes(3),
            )]);
            let p = plan(&s, provider);
            assert_eq!(p.expired, vec!["short".to_string()]);
            assert!(p.steps.is_empty(), "{provider:?}: {:?}", p.steps);
            assert_eq!(p.wake_at, Some(now() + Duration::minutes(7)));
            // Once forgotten, the calendar still remembers the grant.
            let s = s.fold(&[ConnectionEvent::ChannelClosed {
                channel_id: "short".into(),
                reason: "expired".into(),
                at: now(),
            }]);
            let p = plan(&s, provider);
            assert!(p.steps.is_empty(), "{provider:?}: {:?}", p.steps);
            let later = channel_plan(
                &s,
                provider,
                &GateView::all_open(true),
                &BTreeSet::new(),
                now() + Duration::minutes(7),
            );
            assert_eq!(later.steps, vec![ChannelStep::Open { calendar: cal("a") }]);
        }
    }

    #[test]
    fn deselected_calendars_lose_their_channels_and_paused_connections_open_none() {
        let s = state(&["a", "b"]).fold(&[
            opened("a", "c1", Duration::days(7)),
            opened("b", "c2", Duration::days(7)),
            ConnectionEvent::CalendarsSelected {
                calendars: vec![cal("a")],
                destination_calendar: None,
            },
        ]);
        assert_eq!(
            plan(&s, CalendarProvider::Google).steps,
            vec![ChannelStep::Close {
                channel_id: "c2".into()
            }]
        );
        let paused =
            state(&["a"]).fold(&[ConnectionEvent::ConnectionPaused { reason: "x".into() }]);
        assert_eq!(
            plan(&paused, CalendarProvider::Google),
            ChannelPlan::default()
        );
    }

    #[test]
    fn a_failing_calendar_waits_for_its_channel_retry_time() {
        let s = state(&["a", "b"]).fold(&[ConnectionEvent::ChannelUpkeepFailed {
            calendar: cal("a"),
            op: "open".into(),
            kind: "rejected".into(),
            message: "403".into(),
            failures: 3,
            retry_at: now() + Duration::seconds(8),
            at: now(),
        }]);
        let p = plan(&s, CalendarProvider::Google);
        assert_eq!(p.steps, vec![ChannelStep::Open { calendar: cal("b") }]);
        assert_eq!(p.wake_at, Some(now() + Duration::seconds(8)));
    }

    #[test]
    fn without_webhooks_or_a_public_url_channels_are_closed_and_none_opened() {
        let s = state(&["a"]).fold(&[opened("a", "c1", Duration::days(7))]);
        for view in [
            GateView {
                webhooks_enabled: false,
                ..GateView::all_open(true)
            },
            GateView::all_open(false),
        ] {
            let p = channel_plan(&s, CalendarProvider::Google, &view, &BTreeSet::new(), now());
            assert_eq!(
                p.steps,
                vec![ChannelStep::Close {
                    channel_id: "c1".into()
                }]
            );
            assert_eq!(p.wake_at, None);
        }
    }
}
