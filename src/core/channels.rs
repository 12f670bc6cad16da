//! Pure channel lifecycle: which push channels (Google) or subscriptions
//! (Graph) a connection should open, renew or close right now.
//!
//! Rules (PROVIDERS.md §3, §8): one live channel per selected calendar;
//! renew before expiry, scheduled from the expiry the provider returned
//! minus a margin; Google channels cannot be extended, so a new channel is
//! opened and the old one stopped once the new one works (both fire during
//! the overlap; dedupe absorbs it); Graph subscriptions are renewed in place
//! (PATCH); channels of calendars no longer selected are closed.

use super::ids::{CalendarId, CalendarProvider};
use super::state::{ConnectionState, Lifecycle};
use chrono::{DateTime, Duration, Utc};

/// Renew this long before a channel expires.
pub const RENEW_MARGIN: Duration = Duration::hours(1);

/// Notifications on a closed channel are still accepted this long after it
/// closed (Google sends a few after `channels.stop`).
pub const CLOSED_GRACE: Duration = Duration::minutes(5);

/// One step of channel upkeep for the shell to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelStep {
    Open { calendar: CalendarId },
    Renew { channel_id: String },
    Close { channel_id: String },
}

/// What to do about channels at `now`. Nothing while the connection may not
/// use its grant (paused, removed, needs re-authorisation, quarantined).
pub fn channel_plan(
    state: &ConnectionState,
    provider: CalendarProvider,
    now: DateTime<Utc>,
) -> Vec<ChannelStep> {
    let mut steps = Vec::new();
    let usable = state.lifecycle == Lifecycle::Active
        && state.needs_reauthorization.is_none()
        && state.quarantined_at.is_none();
    for (channel_id, channel) in &state.channels {
        let selected = state.calendars.contains_key(&channel.calendar);
        if !selected || !usable && state.lifecycle == Lifecycle::Removed {
            steps.push(ChannelStep::Close {
                channel_id: channel_id.clone(),
            });
        }
    }
    if !usable {
        return steps;
    }
    for calendar in state.calendars.keys() {
        let mut live: Vec<(&String, DateTime<Utc>)> = state
            .channels
            .iter()
            .filter(|(_, c)| &c.calendar == calendar)
            .map(|(id, c)| (id, c.expires_at))
            .collect();
        live.sort_by_key(|(_, expires)| std::cmp::Reverse(*expires));
        match live.first() {
            None => steps.push(ChannelStep::Open {
                calendar: calendar.clone(),
            }),
            Some((newest, expires)) => {
                if *expires - RENEW_MARGIN <= now {
                    steps.push(match provider {
                        CalendarProvider::Microsoft if *expires > now => ChannelStep::Renew {
                            channel_id: (*newest).clone(),
                        },
                        _ => ChannelStep::Open {
                            calendar: calendar.clone(),
                        },
                    });
                }
                // Older channels of the same calendar: the newest works, so
                // stop the rest (Google overlap after a renewal).
                for (old, _) in live.iter().skip(1) {
                    steps.push(ChannelStep::Close {
                        channel_id: (*old).clone(),
                    });
                }
            }
        }
    }
    steps
}

/// When channel upkeep is next due: the earliest renewal time.
pub fn next_renewal(state: &ConnectionState) -> Option<DateTime<Utc>> {
    state
        .channels
        .values()
        .map(|c| c.expires_at - RENEW_MARGIN)
        .min()
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
        }
    }

    #[test]
    fn every_selected_calendar_gets_one_channel() {
        let s = state(&["a", "b"]);
        let plan = channel_plan(&s, CalendarProvider::Google, now());
        assert_eq!(
            plan,
            vec![
                ChannelStep::Open { calendar: cal("a") },
                ChannelStep::Open { calendar: cal("b") }
            ]
        );
        let s = s.fold(&[
            opened("a", "c1", Duration::days(7)),
            opened("b", "c2", Duration::days(7)),
        ]);
        assert!(channel_plan(&s, CalendarProvider::Google, now()).is_empty());
        assert_eq!(
            next_renewal(&s),
            Some(now() + Duration::days(7) - RENEW_MARGIN)
        );
    }

    #[test]
    fn google_renews_by_opening_a_new_channel_then_stops_the_old_one() {
        let s = state(&["a"]).fold(&[opened("a", "old", Duration::minutes(30))]);
        assert_eq!(
            channel_plan(&s, CalendarProvider::Google, now()),
            vec![ChannelStep::Open { calendar: cal("a") }]
        );
        let s = s.fold(&[opened("a", "new", Duration::days(7))]);
        assert_eq!(
            channel_plan(&s, CalendarProvider::Google, now()),
            vec![ChannelStep::Close {
                channel_id: "old".into()
            }]
        );
    }

    #[test]
    fn graph_renews_in_place_until_expired() {
        let s = state(&["a"]).fold(&[opened("a", "sub", Duration::minutes(30))]);
        assert_eq!(
            channel_plan(&s, CalendarProvider::Microsoft, now()),
            vec![ChannelStep::Renew {
                channel_id: "sub".into()
            }]
        );
        let expired = state(&["a"]).fold(&[opened("a", "sub", Duration::minutes(-1))]);
        assert_eq!(
            channel_plan(&expired, CalendarProvider::Microsoft, now()),
            vec![ChannelStep::Open { calendar: cal("a") }]
        );
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
            channel_plan(&s, CalendarProvider::Google, now()),
            vec![ChannelStep::Close {
                channel_id: "c2".into()
            }]
        );
        let paused =
            state(&["a"]).fold(&[ConnectionEvent::ConnectionPaused { reason: "x".into() }]);
        assert!(channel_plan(&paused, CalendarProvider::Google, now()).is_empty());
    }
}
