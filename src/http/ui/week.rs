//! The week view's layout: which part of which day each busy interval and
//! ignored event covers, and which colour each source (connection and
//! calendar) gets. Pure, so it is tested without a browser.

use crate::store::explain::{ExplainedBusy, IgnoredEvent, Source};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// How many source colours the stylesheet defines (`.src-0` …).
pub const COLOURS: usize = 6;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    /// Percent of the day from its top, and of its height.
    pub top: f64,
    pub height: f64,
    pub time: String,
    /// The rule (busy) or reason (ignored).
    pub why: String,
    pub ignored: bool,
    pub colour: usize,
    pub event_id: String,
    /// Everything about the block, for its tooltip.
    pub explanation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub label: String,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceLegend {
    pub label: String,
    pub colour: usize,
}

/// Colours by (connection, calendar), in the order of their ids.
pub fn colours(busy: &[ExplainedBusy]) -> BTreeMap<(uuid::Uuid, String), usize> {
    let mut keys: Vec<(uuid::Uuid, String)> = busy
        .iter()
        .map(|b| (b.source.connection_id, b.source.calendar_id.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| (k, i % COLOURS))
        .collect()
}

pub fn legend(colours: &BTreeMap<(uuid::Uuid, String), usize>) -> Vec<SourceLegend> {
    colours
        .iter()
        .map(|((conn, cal), colour)| SourceLegend {
            label: format!("{cal} ({})", &conn.to_string()[..8]),
            colour: *colour,
        })
        .collect()
}

fn describe(source: &Source) -> String {
    format!(
        "{} calendar {} event {} (connection {})",
        source.provider, source.calendar_id, source.external_event_id, source.connection_id
    )
}

/// The seven days from `start` with the parts of each interval in them.
pub fn lay_out(start: NaiveDate, busy: &[ExplainedBusy], ignored: &[IgnoredEvent]) -> Vec<Day> {
    let colours = colours(busy);
    (0..7)
        .map(|i| {
            let date = start + Duration::days(i);
            let from = date.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
            let Some(from) = from else {
                return Day {
                    label: date.to_string(),
                    blocks: Vec::new(),
                };
            };
            let to = from + Duration::days(1);
            let mut blocks = Vec::new();
            for b in busy {
                let colour = colours
                    .get(&(b.source.connection_id, b.source.calendar_id.clone()))
                    .copied()
                    .unwrap_or(0);
                let why = b.rule.clone().unwrap_or_else(|| "not recorded".into());
                if let Some(block) = clip(from, to, b.start, b.end) {
                    blocks.push(Block {
                        explanation: format!("busy: {why}; {}", describe(&b.source)),
                        why,
                        ignored: false,
                        colour,
                        event_id: b.source.external_event_id.clone(),
                        ..block
                    });
                }
            }
            for e in ignored {
                let (Some(s), Some(t)) = (e.start, e.end) else {
                    continue;
                };
                if let Some(block) = clip(from, to, s, t) {
                    blocks.push(Block {
                        explanation: format!("ignored: {}; {}", e.reason, describe(&e.source)),
                        why: e.reason.clone(),
                        ignored: true,
                        colour: 0,
                        event_id: e.source.external_event_id.clone(),
                        ..block
                    });
                }
            }
            Day {
                label: date.format("%a %d %b").to_string(),
                blocks,
            }
        })
        .collect()
}

/// The part of `[s, e)` within the day `[from, to)`, as a block.
fn clip(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    s: DateTime<Utc>,
    e: DateTime<Utc>,
) -> Option<Block> {
    let (s, e) = (s.max(from), e.min(to));
    if s >= e {
        return None;
    }
    let day = (to - from).num_seconds() as f64;
    let top = (s - from).num_seconds() as f64 / day * 100.0;
    let height = (e - s).num_seconds() as f64 / day * 100.0;
    Some(Block {
        top: (top * 10.0).round() / 10.0,
        height: (height * 10.0).round() / 10.0,
        time: format!("{}–{}", s.format("%H:%M"), e.format("%H:%M")),
        why: String::new(),
        ignored: false,
        colour: 0,
        event_id: String::new(),
        explanation: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn source(cal: &str, id: &str) -> Source {
        Source {
            connection_id: uuid::Uuid::nil(),
            provider: "google".into(),
            calendar_id: cal.into(),
            external_event_id: id.into(),
            title: None,
        }
    }

    #[test]
    fn intervals_split_over_days_and_sources_get_colours() {
        let start = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let at = |d, h| Utc.with_ymd_and_hms(2026, 12, d, h, 0, 0).unwrap();
        let busy = vec![
            ExplainedBusy {
                start: at(7, 6),
                end: at(7, 12),
                rule: Some("opaque".into()),
                source: source("work", "a"),
            },
            ExplainedBusy {
                start: at(8, 23),
                end: at(9, 23),
                rule: Some("all_day_in_zone(Europe/Berlin)".into()),
                source: source("home", "b"),
            },
        ];
        let ignored = vec![IgnoredEvent {
            start: Some(at(10, 9)),
            end: Some(at(10, 10)),
            reason: "declined".into(),
            booking_id: None,
            source: source("work", "c"),
        }];
        let days = lay_out(start, &busy, &ignored);
        assert_eq!(days.len(), 7);
        let first = &days[0].blocks[0];
        assert_eq!((first.top, first.height), (25.0, 25.0));
        assert_eq!(first.time, "06:00–12:00");
        // The all-day event in Berlin crosses UTC midnight: two blocks.
        assert_eq!(days[1].blocks.len(), 1);
        assert_eq!(days[2].blocks[0].height, 95.8);
        assert_ne!(days[0].blocks[0].colour, days[1].blocks[0].colour);
        let faint = &days[3].blocks[0];
        assert!(faint.ignored && faint.why == "declined", "{faint:?}");
        assert!(days[4].blocks.is_empty());
    }
}
