//! Explanations: which busy rule made an event block time, or why the rules
//! ignored it — the answer to "why is this slot busy?" (and "why is it
//! not?"), decided here, recorded with the event in the log, so the busy
//! projection and the ignored-events projection carry it and replay
//! rebuilds it.
//!
//! [`crate::core::busy`] decides *whether* an event blocks; this module only
//! names the rule that decided, reading the same fields in the same order,
//! and adds the one decision the busy rules do not make: an event that lies
//! wholly outside the calendar's sync window blocks nothing
//! ([`IgnoreReason::OutsideWindow`]).
//!
//! Precedence of busy rules, when several apply: an all-day event is
//! explained by its zone (`all_day_in_zone(Europe/Berlin)`: that is what
//! places its midnights, the usual surprise), then `oof`, then
//! `tentative_default` (tentative time blocks by default, see
//! [`BusyPolicy::tentative_blocks`]), then `opaque`.

use chrono::DateTime;
use chrono::Utc;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::busy::{graph_all_day_zone, BusyDecision, BusyPolicy, FreeReason};
use super::interval::Interval;
use super::state::WindowBase;
use super::wire::{
    GoogleEvent, GoogleEventStatus, GoogleEventType, GoogleResponseStatus, GraphEvent,
    GraphResponse, GraphShowAs, ProviderChange,
};

/// The rule that made an event block time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum BusyRule {
    /// A plain busy event (Google `opaque`, Graph `showAs: busy`).
    Opaque,
    /// Tentative or unanswered, and tentative time blocks (the default).
    TentativeDefault,
    /// Out of office (Graph `showAs: oof`, Google `eventType: outOfOffice`).
    Oof,
    /// An all-day event, from midnight to midnight in this zone.
    AllDayInZone(String),
    /// Graph `showAs: unknown` (or a value calsync does not know): blocks,
    /// because hiding a slot is cheaper than a double booking.
    UnknownShowAs,
    /// A calendar shared as free/busy only: the provider's free/busy answer.
    FreeBusy,
}

impl BusyRule {
    pub fn as_string(&self) -> String {
        match self {
            BusyRule::Opaque => "opaque".into(),
            BusyRule::TentativeDefault => "tentative_default".into(),
            BusyRule::Oof => "oof".into(),
            BusyRule::AllDayInZone(zone) => format!("all_day_in_zone({zone})"),
            BusyRule::UnknownShowAs => "unknown_show_as".into(),
            BusyRule::FreeBusy => "free_busy".into(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "opaque" => BusyRule::Opaque,
            "tentative_default" => BusyRule::TentativeDefault,
            "oof" => BusyRule::Oof,
            "unknown_show_as" => BusyRule::UnknownShowAs,
            "free_busy" => BusyRule::FreeBusy,
            other => match other
                .strip_prefix("all_day_in_zone(")
                .and_then(|z| z.strip_suffix(')'))
            {
                Some(zone) if !zone.is_empty() => BusyRule::AllDayInZone(zone.to_string()),
                _ => return Err(format!("unknown busy rule {other:?}")),
            },
        })
    }
}

impl From<BusyRule> for String {
    fn from(rule: BusyRule) -> String {
        rule.as_string()
    }
}

impl TryFrom<String> for BusyRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        BusyRule::parse(&s)
    }
}

impl std::fmt::Display for BusyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// Why the rules ignored an event (it blocks nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoreReason {
    /// Google `transparency: transparent`, Graph `showAs: free`.
    Transparent,
    /// The owner declined.
    Declined,
    /// Google `eventType: workingLocation`, Graph `showAs: workingElsewhere`.
    WorkingLocation,
    /// calsync's own outbound event: the booking already blocks the time.
    OwnBooking,
    /// The event lies wholly outside the calendar's sync window.
    OutsideWindow,
    /// Cancelled or deleted at the provider.
    Cancelled,
    /// Tentative, and the owner's policy says tentative time is free.
    Tentative,
    /// Google `eventType: birthday`.
    Birthday,
    /// A Graph series master (its occurrences arrive on their own).
    SeriesMaster,
    /// Start equals end.
    ZeroDuration,
    /// The event cannot be read (no times, unknown zone …).
    Unreadable,
}

impl IgnoreReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            IgnoreReason::Transparent => "transparent",
            IgnoreReason::Declined => "declined",
            IgnoreReason::WorkingLocation => "working_location",
            IgnoreReason::OwnBooking => "own_booking",
            IgnoreReason::OutsideWindow => "outside_window",
            IgnoreReason::Cancelled => "cancelled",
            IgnoreReason::Tentative => "tentative",
            IgnoreReason::Birthday => "birthday",
            IgnoreReason::SeriesMaster => "series_master",
            IgnoreReason::ZeroDuration => "zero_duration",
            IgnoreReason::Unreadable => "unreadable",
        }
    }

    /// The reason for a "free" verdict of the busy rules.
    pub fn from_free(reason: FreeReason) -> Self {
        match reason {
            FreeReason::Cancelled | FreeReason::Removed => IgnoreReason::Cancelled,
            FreeReason::Transparent | FreeReason::ShowAsFree => IgnoreReason::Transparent,
            FreeReason::WorkingElsewhere | FreeReason::WorkingLocation => {
                IgnoreReason::WorkingLocation
            }
            FreeReason::Birthday => IgnoreReason::Birthday,
            FreeReason::Declined => IgnoreReason::Declined,
            FreeReason::Tentative => IgnoreReason::Tentative,
            FreeReason::SeriesMaster => IgnoreReason::SeriesMaster,
            FreeReason::ZeroDuration => IgnoreReason::ZeroDuration,
        }
    }
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rules made of one provider event, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Busy {
        interval: Interval,
        rule: BusyRule,
    },
    /// Blocks nothing. `span`: the event's times when they can be read
    /// (a tombstone has none).
    Ignored {
        reason: IgnoreReason,
        span: Option<Interval>,
        /// calsync's own booking, for [`IgnoreReason::OwnBooking`].
        booking_id: Option<String>,
    },
}

/// Explains the busy rules' `decision` on `change`; `zone` is the zone the
/// rules were given (Google: the calendar's, Graph: the mailbox's), and
/// `window` the calendar's sync window, when known.
pub fn explain(
    change: &ProviderChange,
    decision: BusyDecision,
    zone: Tz,
    policy: &BusyPolicy,
    window: Option<&WindowBase>,
) -> Verdict {
    let span = || match change {
        ProviderChange::Google(e) => super::busy::google_span(e, zone),
        ProviderChange::Graph(e) => super::busy::graph_span(e, zone),
    };
    match decision {
        BusyDecision::Blocks(interval) => {
            if window.is_some_and(|w| outside(&interval, w.start, w.end)) {
                return Verdict::Ignored {
                    reason: IgnoreReason::OutsideWindow,
                    span: Some(interval),
                    booking_id: None,
                };
            }
            let rule = match change {
                ProviderChange::Google(e) => google_rule(e, zone, policy),
                ProviderChange::Graph(e) => graph_rule(e, zone, policy),
            };
            Verdict::Busy { interval, rule }
        }
        BusyDecision::Free(reason) => Verdict::Ignored {
            reason: IgnoreReason::from_free(reason),
            span: span(),
            booking_id: None,
        },
        BusyDecision::Ours { booking_id } => Verdict::Ignored {
            reason: IgnoreReason::OwnBooking,
            span: span(),
            booking_id: Some(booking_id),
        },
        BusyDecision::Invalid(_) => Verdict::Ignored {
            reason: IgnoreReason::Unreadable,
            span: None,
            booking_id: None,
        },
    }
}

/// Events ending at or before `start`, or starting at or after `end`, are
/// outside the window.
fn outside(interval: &Interval, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    interval.end() <= start || interval.start() >= end
}

/// The rule behind a blocking Google event (see the module's precedence).
pub fn google_rule(event: &GoogleEvent, calendar_zone: Tz, _policy: &BusyPolicy) -> BusyRule {
    let all_day = event.start.as_ref().is_some_and(|s| s.date.is_some());
    if all_day {
        return BusyRule::AllDayInZone(calendar_zone.name().to_string());
    }
    if event.event_type == Some(GoogleEventType::OutOfOffice) {
        return BusyRule::Oof;
    }
    let response = event
        .self_attendee()
        .and_then(|me| me.response_status.as_ref());
    let tentative = event.status() == GoogleEventStatus::Tentative
        || matches!(
            response,
            Some(GoogleResponseStatus::Tentative | GoogleResponseStatus::NeedsAction)
        );
    if tentative {
        BusyRule::TentativeDefault
    } else {
        BusyRule::Opaque
    }
}

/// The rule behind a blocking Graph event (see the module's precedence).
pub fn graph_rule(event: &GraphEvent, fallback_zone: Tz, _policy: &BusyPolicy) -> BusyRule {
    if event.is_all_day {
        let zone = graph_all_day_zone(event, fallback_zone);
        return BusyRule::AllDayInZone(zone.name().to_string());
    }
    if event.show_as == Some(GraphShowAs::Oof) {
        return BusyRule::Oof;
    }
    let tentative = event.show_as == Some(GraphShowAs::Tentative)
        || matches!(
            event.response(),
            Some(GraphResponse::TentativelyAccepted | GraphResponse::NotResponded)
        );
    if tentative {
        return BusyRule::TentativeDefault;
    }
    match event.show_as {
        None | Some(GraphShowAs::Busy) => BusyRule::Opaque,
        Some(_) => BusyRule::UnknownShowAs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::busy::{google_busy, graph_busy};
    use chrono::TimeZone;

    fn google(json: serde_json::Value) -> GoogleEvent {
        serde_json::from_value(json).unwrap()
    }

    fn graph(json: serde_json::Value) -> GraphEvent {
        serde_json::from_value(json).unwrap()
    }

    fn verdict_google(e: GoogleEvent, zone: Tz, window: Option<&WindowBase>) -> Verdict {
        let policy = BusyPolicy::default();
        let d = google_busy(&e, zone, &policy);
        explain(&ProviderChange::Google(e), d, zone, &policy, window)
    }

    fn verdict_graph(e: GraphEvent, zone: Tz, window: Option<&WindowBase>) -> Verdict {
        let policy = BusyPolicy::default();
        let d = graph_busy(&e, zone, &policy);
        explain(&ProviderChange::Graph(e), d, zone, &policy, window)
    }

    fn rule(v: &Verdict) -> String {
        match v {
            Verdict::Busy { rule, .. } => rule.to_string(),
            Verdict::Ignored { reason, .. } => format!("ignored:{reason}"),
        }
    }

    fn timed(extra: serde_json::Value) -> serde_json::Value {
        let mut base = serde_json::json!({
            "id": "e1",
            "start": {"dateTime": "2026-12-08T14:00:00Z"},
            "end": {"dateTime": "2026-12-08T15:00:00Z"},
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn graph_timed(extra: serde_json::Value) -> serde_json::Value {
        let mut base = serde_json::json!({
            "id": "g1",
            "start": {"dateTime": "2026-12-08T14:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-08T15:00:00.0000000", "timeZone": "UTC"},
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn google_rules_and_reasons() {
        let utc = chrono_tz::UTC;
        let berlin = chrono_tz::Europe::Berlin;
        let cases = [
            (timed(serde_json::json!({})), "opaque"),
            (
                timed(serde_json::json!({"status": "tentative"})),
                "tentative_default",
            ),
            (
                timed(serde_json::json!({"eventType": "outOfOffice"})),
                "oof",
            ),
            (
                timed(serde_json::json!({"transparency": "transparent"})),
                "ignored:transparent",
            ),
            (
                timed(serde_json::json!({"eventType": "workingLocation"})),
                "ignored:working_location",
            ),
            (
                timed(
                    serde_json::json!({"attendees": [{"email": "me@x", "self": true, "responseStatus": "declined"}]}),
                ),
                "ignored:declined",
            ),
            (
                timed(serde_json::json!({"status": "cancelled"})),
                "ignored:cancelled",
            ),
            (
                timed(
                    serde_json::json!({"extendedProperties": {"private": {"calsyncBookingId": "b1"}}}),
                ),
                "ignored:own_booking",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(
                rule(&verdict_google(google(json.clone()), utc, None)),
                expected,
                "{json}"
            );
        }
        let all_day = google(serde_json::json!({
            "id": "d", "start": {"date": "2026-12-08"}, "end": {"date": "2026-12-09"}
        }));
        let v = verdict_google(all_day, berlin, None);
        assert_eq!(rule(&v), "all_day_in_zone(Europe/Berlin)");
        let Verdict::Busy { interval, .. } = v else {
            panic!("{v:?}")
        };
        assert_eq!(
            interval.start(),
            Utc.with_ymd_and_hms(2026, 12, 7, 23, 0, 0).unwrap()
        );
    }

    #[test]
    fn graph_rules_and_reasons() {
        let utc = chrono_tz::UTC;
        let cases = [
            (graph_timed(serde_json::json!({"showAs": "busy"})), "opaque"),
            (
                graph_timed(serde_json::json!({"showAs": "tentative"})),
                "tentative_default",
            ),
            (graph_timed(serde_json::json!({"showAs": "oof"})), "oof"),
            (
                graph_timed(serde_json::json!({"showAs": "unknown"})),
                "unknown_show_as",
            ),
            (
                graph_timed(serde_json::json!({"showAs": "free"})),
                "ignored:transparent",
            ),
            (
                graph_timed(serde_json::json!({"showAs": "workingElsewhere"})),
                "ignored:working_location",
            ),
            (
                graph_timed(serde_json::json!({"responseStatus": {"response": "declined"}})),
                "ignored:declined",
            ),
            (
                graph_timed(serde_json::json!({"isCancelled": true})),
                "ignored:cancelled",
            ),
            (
                graph_timed(
                    serde_json::json!({"transactionId": crate::core::busy::booking_tag("b1", 0)}),
                ),
                "ignored:own_booking",
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(
                rule(&verdict_graph(graph(json.clone()), utc, None)),
                expected,
                "{json}"
            );
        }
        let all_day = graph(serde_json::json!({
            "id": "d", "isAllDay": true, "originalStartTimeZone": "W. Europe Standard Time",
            "start": {"dateTime": "2026-12-08T00:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-09T00:00:00.0000000", "timeZone": "UTC"},
        }));
        assert_eq!(
            rule(&verdict_graph(all_day, utc, None)),
            "all_day_in_zone(Europe/Berlin)"
        );
    }

    #[test]
    fn blocking_events_outside_the_window_are_ignored() {
        let window = WindowBase {
            based_at: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            start: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 12, 8, 14, 0, 0).unwrap(),
        };
        let e = google(timed(serde_json::json!({})));
        let v = verdict_google(e.clone(), chrono_tz::UTC, Some(&window));
        assert_eq!(rule(&v), "ignored:outside_window");
        let wider = WindowBase {
            end: Utc.with_ymd_and_hms(2026, 12, 8, 14, 30, 0).unwrap(),
            ..window
        };
        assert_eq!(
            rule(&verdict_google(e, chrono_tz::UTC, Some(&wider))),
            "opaque"
        );
    }

    #[test]
    fn rules_round_trip_through_their_names() {
        for r in [
            BusyRule::Opaque,
            BusyRule::TentativeDefault,
            BusyRule::Oof,
            BusyRule::AllDayInZone("America/New_York".into()),
            BusyRule::UnknownShowAs,
            BusyRule::FreeBusy,
        ] {
            assert_eq!(BusyRule::parse(&r.as_string()), Ok(r.clone()));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<BusyRule>(&json).unwrap(), r);
        }
        assert!(BusyRule::parse("all_day_in_zone()").is_err());
        assert!(BusyRule::parse("nope").is_err());
        assert_eq!(
            serde_json::to_string(&IgnoreReason::OutsideWindow).unwrap(),
            "\"outside_window\""
        );
    }
}
