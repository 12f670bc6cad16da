//! The recurrence subset both simulators expand: FREQ=DAILY/WEEKLY/MONTHLY
//! with INTERVAL, COUNT, UNTIL, BYDAY, plus EXDATE. Expansion happens in
//! wall-clock time of the series' zone, so DST shifts keep the local time,
//! as both providers do.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, Utc, Weekday};
use chrono_tz::Tz;
use serde_json::Value;

use crate::timefmt::{local_to_utc, parse_wall, resolve_zone};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freq {
    Daily,
    Weekly,
    Monthly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Instant(DateTime<Utc>),
    Date(NaiveDate),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recurrence {
    pub freq: Freq,
    pub interval: u32,
    pub count: Option<u32>,
    pub until: Option<Bound>,
    pub by_day: Vec<Weekday>,
    pub exdates: Vec<Bound>,
}

fn weekday_code(s: &str) -> Option<Weekday> {
    // BYDAY may carry an ordinal prefix (e.g. `1MO`); this subset ignores it.
    let code = s.trim_start_matches(|c: char| c == '+' || c == '-' || c.is_ascii_digit());
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

fn weekday_name(s: &str) -> Option<Weekday> {
    s.to_ascii_lowercase().parse::<Weekday>().ok()
}

/// `20261008T150000Z`, `20261008T150000` (in `tz`) or `20261008`.
fn parse_ical_time(value: &str, tz: Tz) -> Option<Bound> {
    if value.len() == 8 {
        return NaiveDate::parse_from_str(value, "%Y%m%d")
            .ok()
            .map(Bound::Date);
    }
    let (body, utc) = match value.strip_suffix('Z') {
        Some(b) => (b, true),
        None => (value, false),
    };
    let naive = NaiveDateTime::parse_from_str(body, "%Y%m%dT%H%M%S").ok()?;
    Some(Bound::Instant(if utc {
        naive.and_utc()
    } else {
        local_to_utc(tz, naive)
    }))
}

impl Recurrence {
    /// Parse Google `recurrence[]` lines (RRULE + EXDATE; RDATE/EXRULE unsupported).
    pub fn parse_google(lines: &[String], tz: Tz) -> Result<Self, String> {
        let mut rule: Option<Recurrence> = None;
        let mut exdates = Vec::new();
        for line in lines {
            let (head, value) = line
                .split_once(':')
                .ok_or_else(|| format!("Invalid recurrence rule: {line}"))?;
            let mut head_parts = head.split(';');
            let name = head_parts.next().unwrap_or_default().to_ascii_uppercase();
            let params: Vec<&str> = head_parts.collect();
            match name.as_str() {
                "RRULE" => rule = Some(Self::parse_rrule(value, tz)?),
                "EXDATE" => {
                    let zone = params
                        .iter()
                        .find_map(|p| p.strip_prefix("TZID="))
                        .and_then(resolve_zone)
                        .unwrap_or(tz);
                    for v in value.split(',') {
                        exdates.push(
                            parse_ical_time(v.trim(), zone)
                                .ok_or_else(|| format!("Invalid EXDATE: {v}"))?,
                        );
                    }
                }
                _ => return Err(format!("Unsupported recurrence line: {line}")),
            }
        }
        let mut rule = rule.ok_or_else(|| "Recurrence without RRULE".to_string())?;
        rule.exdates = exdates;
        Ok(rule)
    }

    fn parse_rrule(value: &str, tz: Tz) -> Result<Self, String> {
        let mut r = Recurrence {
            freq: Freq::Daily,
            interval: 1,
            count: None,
            until: None,
            by_day: Vec::new(),
            exdates: Vec::new(),
        };
        let mut freq_seen = false;
        for part in value.split(';') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("Invalid RRULE part: {part}"))?;
            match k.to_ascii_uppercase().as_str() {
                "FREQ" => {
                    freq_seen = true;
                    r.freq = match v {
                        "DAILY" => Freq::Daily,
                        "WEEKLY" => Freq::Weekly,
                        "MONTHLY" => Freq::Monthly,
                        _ => return Err(format!("Unsupported FREQ: {v}")),
                    }
                }
                "INTERVAL" => {
                    r.interval = v
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("Invalid INTERVAL: {v}"))?
                }
                "COUNT" => r.count = Some(v.parse().map_err(|_| format!("Invalid COUNT: {v}"))?),
                "UNTIL" => {
                    r.until =
                        Some(parse_ical_time(v, tz).ok_or_else(|| format!("Invalid UNTIL: {v}"))?)
                }
                "BYDAY" => {
                    for d in v.split(',') {
                        r.by_day
                            .push(weekday_code(d).ok_or_else(|| format!("Invalid BYDAY: {d}"))?);
                    }
                }
                "WKST" => {}
                other => return Err(format!("Unsupported RRULE part: {other}")),
            }
        }
        if !freq_seen {
            return Err("RRULE without FREQ".to_string());
        }
        Ok(r)
    }

    /// Graph `patternedRecurrence` (daily, weekly, absoluteMonthly; endDate/numbered/noEnd).
    pub fn from_graph(v: &Value) -> Result<Self, String> {
        let pattern = &v["pattern"];
        let range = &v["range"];
        let freq = match pattern["type"].as_str().unwrap_or_default() {
            "daily" => Freq::Daily,
            "weekly" => Freq::Weekly,
            "absoluteMonthly" => Freq::Monthly,
            other => return Err(format!("Unsupported recurrence pattern type '{other}'")),
        };
        let interval = pattern["interval"].as_u64().unwrap_or(1).max(1) as u32;
        let mut by_day = Vec::new();
        if let Some(days) = pattern["daysOfWeek"].as_array() {
            for d in days {
                by_day.push(
                    d.as_str()
                        .and_then(weekday_name)
                        .ok_or_else(|| format!("Invalid daysOfWeek value {d}"))?,
                );
            }
        }
        let (count, until) = match range["type"].as_str().unwrap_or("noEnd") {
            "numbered" => (
                Some(range["numberOfOccurrences"].as_u64().unwrap_or(1) as u32),
                None,
            ),
            "endDate" => {
                let d = range["endDate"]
                    .as_str()
                    .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                    .ok_or_else(|| "range.endDate is required".to_string())?;
                (None, Some(Bound::Date(d)))
            }
            _ => (None, None),
        };
        Ok(Recurrence {
            freq,
            interval,
            count,
            until,
            by_day,
            exdates: Vec::new(),
        })
    }

    /// Candidate starts in generation order (before COUNT/UNTIL/EXDATE).
    fn candidates(&self, dtstart: NaiveDateTime) -> impl Iterator<Item = NaiveDateTime> + '_ {
        let interval = i64::from(self.interval);
        let time = dtstart.time();
        let week0 =
            dtstart.date() - Duration::days(i64::from(dtstart.weekday().num_days_from_monday()));
        let mut days: Vec<Weekday> = if self.by_day.is_empty() {
            vec![dtstart.weekday()]
        } else {
            self.by_day.clone()
        };
        days.sort_by_key(|d| d.num_days_from_monday());
        // `BYDAY=MO,MO` names one day, not two occurrences.
        days.dedup();
        (0i64..20_000).flat_map(move |k| {
            let batch: Vec<NaiveDateTime> = match self.freq {
                Freq::Daily => {
                    let d = dtstart + Duration::days(k * interval);
                    if self.by_day.is_empty() || self.by_day.contains(&d.weekday()) {
                        vec![d]
                    } else {
                        vec![]
                    }
                }
                Freq::Weekly => days
                    .iter()
                    .map(|wd| {
                        (week0
                            + Duration::days(
                                7 * k * interval + i64::from(wd.num_days_from_monday()),
                            ))
                        .and_time(time)
                    })
                    .filter(|c| *c >= dtstart)
                    .collect(),
                Freq::Monthly => dtstart
                    .date()
                    .checked_add_months(Months::new((k * interval) as u32))
                    .filter(|d| d.day() == dtstart.day())
                    .map(|d| vec![d.and_time(time)])
                    .unwrap_or_default(),
            };
            batch
        })
    }

    /// Occurrence starts (wall time in `tz`) up to `horizon` or `max` items.
    pub fn expand(
        &self,
        dtstart: NaiveDateTime,
        tz: Tz,
        horizon: DateTime<Utc>,
        max: usize,
    ) -> Vec<NaiveDateTime> {
        let mut out = Vec::new();
        for (counted, cand) in self.candidates(dtstart).enumerate() {
            let at = local_to_utc(tz, cand);
            let past_until = match self.until {
                Some(Bound::Instant(u)) => at > u,
                Some(Bound::Date(d)) => cand.date() > d,
                None => false,
            };
            // COUNT counts occurrences before EXDATE removes any (RFC 5545).
            let past_count = self.count.is_some_and(|c| counted as u64 >= u64::from(c));
            if past_until || past_count || at > horizon || out.len() >= max {
                break;
            }
            let excluded = self.exdates.iter().any(|x| match x {
                Bound::Instant(u) => *u == at,
                Bound::Date(d) => *d == cand.date(),
            });
            if !excluded {
                out.push(cand);
            }
        }
        out
    }
}

/// Helper for tests and builders: a wall time literal.
pub fn wall(s: &str) -> Option<NaiveDateTime> {
    parse_wall(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn weekly_byday_count_and_exdate() {
        let tz = chrono_tz::Europe::Berlin;
        let r = Recurrence::parse_google(
            &lines(&[
                "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4",
                "EXDATE;TZID=Europe/Berlin:20261007T090000",
            ]),
            tz,
        )
        .expect("parses");
        let start = wall("2026-10-05T09:00:00").expect("wall");
        let got = r.expand(start, tz, Utc::now() + Duration::days(3650), 100);
        let s: Vec<String> = got.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            s,
            vec![
                "2026-10-05 09:00:00",
                "2026-10-12 09:00:00",
                "2026-10-14 09:00:00"
            ]
        );
    }

    #[test]
    fn daily_interval_until_keeps_wall_time_across_dst() {
        let tz = chrono_tz::Europe::Berlin;
        let r = Recurrence::parse_google(
            &lines(&["RRULE:FREQ=DAILY;INTERVAL=2;UNTIL=20261030T000000Z"]),
            tz,
        )
        .expect("parses");
        let got = r.expand(
            wall("2026-10-23T09:00:00").expect("wall"),
            tz,
            Utc::now() + Duration::days(3650),
            100,
        );
        assert_eq!(got.len(), 4);
        assert!(got
            .iter()
            .all(|d| d.time() == wall("2026-10-23T09:00:00").expect("w").time()));
    }

    #[test]
    fn graph_pattern_weekly_numbered() {
        let v = serde_json::json!({"pattern":{"type":"weekly","interval":1,"daysOfWeek":["tuesday"]},
            "range":{"type":"numbered","numberOfOccurrences":3,"startDate":"2026-10-06"}});
        let r = Recurrence::from_graph(&v).expect("parses");
        let got = r.expand(
            wall("2026-10-06T10:00:00").expect("wall"),
            chrono_tz::UTC,
            Utc::now() + Duration::days(3650),
            100,
        );
        assert_eq!(got.len(), 3);
    }

    proptest::proptest! {
        /// Whatever the rule, occurrences are strictly increasing, start at
        /// or after DTSTART, respect COUNT and BYDAY, and keep the wall time.
        #[test]
        fn expansion_invariants(
            freq in 0u8..3,
            interval in 1u32..4,
            count in 1u32..30,
            days in proptest::collection::vec(0u8..7, 0..4),
            day_offset in 0i64..365,
            hour in 0u32..24,
        ) {
            let names = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
            let freq_s = ["DAILY", "WEEKLY", "MONTHLY"][freq as usize];
            let mut rule = format!("RRULE:FREQ={freq_s};INTERVAL={interval};COUNT={count}");
            if !days.is_empty() && freq != 2 {
                let list: Vec<&str> = days.iter().map(|d| names[*d as usize]).collect();
                rule.push_str(&format!(";BYDAY={}", list.join(",")));
            }
            let tz = chrono_tz::Europe::Berlin;
            let r = Recurrence::parse_google(&[rule], tz).expect("parses");
            let start = wall("2026-01-05T00:00:00").expect("wall") + Duration::days(day_offset) + Duration::hours(i64::from(hour));
            let got = r.expand(start, tz, Utc::now() + Duration::days(36_500), 10_000);
            proptest::prop_assert!(got.len() <= count as usize);
            proptest::prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
            proptest::prop_assert!(got.iter().all(|d| *d >= start && d.time() == start.time()));
            if freq != 2 && !days.is_empty() {
                let allowed: Vec<Weekday> = r.by_day.clone();
                proptest::prop_assert!(got.iter().all(|d| allowed.contains(&d.weekday())));
            }
        }
    }
}
