//! The recurrence subset both simulators expand: FREQ=DAILY/WEEKLY/MONTHLY/
//! YEARLY with INTERVAL, COUNT, UNTIL, BYDAY (ordinals in MONTHLY, e.g.
//! `1MO`, `-1FR`), BYMONTHDAY (MONTHLY), plus EXDATE. Expansion happens in
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
    Yearly,
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
    /// `BYDAY` with an ordinal (MONTHLY): `(1, Mon)` first Monday, `(-1, Fri)` last Friday.
    pub by_day_nth: Vec<(i32, Weekday)>,
    /// `BYMONTHDAY` (MONTHLY): 1..=31, or -1..=-31 counted from the month's end.
    pub by_month_day: Vec<i32>,
    pub exdates: Vec<Bound>,
}

/// `MO`, `1MO`, `-1FR`, `+2TU` → (ordinal, weekday).
fn weekday_code(s: &str) -> Option<(Option<i32>, Weekday)> {
    let split = s.len().checked_sub(2)?;
    let (ord, code) = s.split_at(split);
    let ord = match ord {
        "" => None,
        o => Some(
            o.trim_start_matches('+')
                .parse::<i32>()
                .ok()
                .filter(|n| *n != 0 && n.abs() <= 5)?,
        ),
    };
    let day = match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    };
    Some((ord, day))
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
            by_day_nth: Vec::new(),
            by_month_day: Vec::new(),
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
                        "YEARLY" => Freq::Yearly,
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
                        match weekday_code(d).ok_or_else(|| format!("Invalid BYDAY: {d}"))? {
                            (Some(n), wd) => r.by_day_nth.push((n, wd)),
                            (None, wd) => r.by_day.push(wd),
                        }
                    }
                }
                "BYMONTHDAY" => {
                    for d in v.split(',') {
                        let n: i32 = d.parse().map_err(|_| format!("Invalid BYMONTHDAY: {d}"))?;
                        if n == 0 || n.abs() > 31 {
                            return Err(format!("Invalid BYMONTHDAY: {d}"));
                        }
                        r.by_month_day.push(n);
                    }
                }
                "WKST" => {}
                other => return Err(format!("Unsupported RRULE part: {other}")),
            }
        }
        if !freq_seen {
            return Err("RRULE without FREQ".to_string());
        }
        if r.freq != Freq::Monthly && (!r.by_day_nth.is_empty() || !r.by_month_day.is_empty()) {
            return Err(
                "BYDAY ordinals and BYMONTHDAY are supported with FREQ=MONTHLY only".to_string(),
            );
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
            "absoluteMonthly" | "relativeMonthly" => Freq::Monthly,
            "absoluteYearly" => Freq::Yearly,
            other => return Err(format!("Unsupported recurrence pattern type '{other}'")),
        };
        let relative = pattern["type"] == "relativeMonthly";
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
        let mut by_month_day = Vec::new();
        let mut by_day_nth = Vec::new();
        if relative {
            let n = match pattern["index"].as_str().unwrap_or("first") {
                "first" => 1,
                "second" => 2,
                "third" => 3,
                "fourth" => 4,
                "last" => -1,
                other => return Err(format!("Invalid index '{other}'")),
            };
            by_day_nth = by_day.drain(..).map(|wd| (n, wd)).collect();
        } else if freq == Freq::Monthly {
            if let Some(d) = pattern["dayOfMonth"].as_i64() {
                by_month_day.push(d as i32);
            }
        }
        Ok(Recurrence {
            freq,
            interval,
            count,
            until,
            by_day,
            by_day_nth,
            by_month_day,
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
                Freq::Monthly => self
                    .month_days(dtstart.date(), (k * interval) as u32)
                    .into_iter()
                    .map(|d| d.and_time(time))
                    .filter(|c| *c >= dtstart)
                    .collect(),
                // Feb 29 series skip non-leap years, as calendar apps do.
                Freq::Yearly => dtstart
                    .date()
                    .checked_add_months(Months::new((12 * k * interval) as u32))
                    .filter(|d| d.day() == dtstart.day())
                    .map(|d| vec![d.and_time(time)])
                    .unwrap_or_default(),
            };
            batch
        })
    }

    /// Days of the month `months` after `start`'s month that a MONTHLY rule selects.
    fn month_days(&self, start: NaiveDate, months: u32) -> Vec<NaiveDate> {
        let Some(first) = start
            .with_day(1)
            .and_then(|d| d.checked_add_months(Months::new(months)))
        else {
            return Vec::new();
        };
        let Some(next) = first.checked_add_months(Months::new(1)) else {
            return Vec::new();
        };
        let len = (next - first).num_days() as i32;
        let in_month: Vec<NaiveDate> = (0..len)
            .map(|i| first + Duration::days(i64::from(i)))
            .collect();
        let mut days: Vec<NaiveDate> = Vec::new();
        for n in &self.by_month_day {
            let idx = if *n > 0 { n - 1 } else { len + n };
            if (0..len).contains(&idx) {
                days.push(in_month[idx as usize]);
            }
        }
        for (n, wd) in &self.by_day_nth {
            let matching: Vec<&NaiveDate> =
                in_month.iter().filter(|d| d.weekday() == *wd).collect();
            let pick = if *n > 0 {
                matching.get((*n - 1) as usize)
            } else {
                matching
                    .len()
                    .checked_sub(n.unsigned_abs() as usize)
                    .and_then(|i| matching.get(i))
            };
            if let Some(d) = pick {
                days.push(**d);
            }
        }
        days.extend(
            in_month
                .iter()
                .filter(|d| self.by_day.contains(&d.weekday())),
        );
        if self.by_month_day.is_empty() && self.by_day_nth.is_empty() && self.by_day.is_empty() {
            // Plain MONTHLY: the start's day of month (months without it are skipped).
            days.extend(in_month.iter().filter(|d| d.day() == start.day()));
        }
        days.sort();
        days.dedup();
        days
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

    fn dates(rule: &str, start: &str) -> Vec<String> {
        let r = Recurrence::parse_google(&lines(&[rule]), chrono_tz::UTC).expect("parses");
        r.expand(
            wall(start).expect("wall"),
            chrono_tz::UTC,
            Utc::now() + Duration::days(36_500),
            100,
        )
        .iter()
        .map(|d| d.date().to_string())
        .collect()
    }

    #[test]
    fn monthly_ordinals_month_days_and_yearly() {
        assert_eq!(
            dates(
                "RRULE:FREQ=MONTHLY;BYDAY=1MO;COUNT=3",
                "2026-10-05T10:00:00"
            ),
            vec!["2026-10-05", "2026-11-02", "2026-12-07"]
        );
        assert_eq!(
            dates(
                "RRULE:FREQ=MONTHLY;BYDAY=-1FR;COUNT=2",
                "2026-10-30T10:00:00"
            ),
            vec!["2026-10-30", "2026-11-27"]
        );
        assert_eq!(
            dates(
                "RRULE:FREQ=MONTHLY;BYMONTHDAY=-1;COUNT=3",
                "2026-01-31T10:00:00"
            ),
            vec!["2026-01-31", "2026-02-28", "2026-03-31"]
        );
        assert_eq!(
            dates("RRULE:FREQ=MONTHLY;COUNT=3", "2026-01-31T10:00:00"),
            vec!["2026-01-31", "2026-03-31", "2026-05-31"],
            "months without the 31st are skipped"
        );
        assert_eq!(
            dates("RRULE:FREQ=YEARLY;COUNT=3", "2028-02-29T10:00:00"),
            vec!["2028-02-29", "2032-02-29", "2036-02-29"]
        );
        assert!(
            Recurrence::parse_google(&lines(&["RRULE:FREQ=WEEKLY;BYDAY=1MO"]), chrono_tz::UTC)
                .is_err()
        );
        let graph = serde_json::json!({"pattern":{"type":"relativeMonthly","interval":1,"index":"last","daysOfWeek":["friday"]},
            "range":{"type":"numbered","numberOfOccurrences":2}});
        let r = Recurrence::from_graph(&graph).expect("parses");
        let got = r.expand(
            wall("2026-10-30T10:00:00").expect("w"),
            chrono_tz::UTC,
            Utc::now() + Duration::days(3650),
            10,
        );
        assert_eq!(
            got.iter().map(|d| d.date().to_string()).collect::<Vec<_>>(),
            vec!["2026-10-30", "2026-11-27"]
        );
    }

    proptest::proptest! {
        /// Whatever the rule, occurrences are strictly increasing, start at
        /// or after DTSTART, respect COUNT and BYDAY, and keep the wall time.
        #[test]
        fn expansion_invariants(
            freq in 0u8..4,
            month_day in -3i32..29,
            interval in 1u32..4,
            count in 1u32..30,
            days in proptest::collection::vec(0u8..7, 0..4),
            day_offset in 0i64..365,
            hour in 0u32..24,
        ) {
            let names = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
            let freq_s = ["DAILY", "WEEKLY", "MONTHLY", "YEARLY"][freq as usize];
            let mut rule = format!("RRULE:FREQ={freq_s};INTERVAL={interval};COUNT={count}");
            if !days.is_empty() && freq < 2 {
                let list: Vec<&str> = days.iter().map(|d| names[*d as usize]).collect();
                rule.push_str(&format!(";BYDAY={}", list.join(",")));
            }
            if freq == 2 && month_day != 0 {
                rule.push_str(&format!(";BYMONTHDAY={month_day}"));
            }
            let tz = chrono_tz::Europe::Berlin;
            let r = Recurrence::parse_google(&[rule], tz).expect("parses");
            let start = wall("2026-01-05T00:00:00").expect("wall") + Duration::days(day_offset) + Duration::hours(i64::from(hour));
            let got = r.expand(start, tz, Utc::now() + Duration::days(36_500), 10_000);
            proptest::prop_assert!(got.len() <= count as usize);
            proptest::prop_assert!(got.windows(2).all(|w| w[0] < w[1]));
            proptest::prop_assert!(got.iter().all(|d| *d >= start && d.time() == start.time()));
            if freq < 2 && !days.is_empty() {
                let allowed: Vec<Weekday> = r.by_day.clone();
                proptest::prop_assert!(got.iter().all(|d| allowed.contains(&d.weekday())));
            }
        }
    }
}
