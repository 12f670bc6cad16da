//! Time zones and the wire formats of both providers: Google speaks RFC 3339
//! with offsets and IANA zones; Graph speaks offset-less wall times with
//! 7 fractional digits plus a zone name that may be a Windows name.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// Windows zone name ↔ IANA zone (subset of CLDR `windowsZones`).
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("UTC", "UTC"),
    ("GMT Standard Time", "Europe/London"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Romance Standard Time", "Europe/Paris"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Eastern Standard Time", "America/New_York"),
    ("Central Standard Time", "America/Chicago"),
    ("Mountain Standard Time", "America/Denver"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("India Standard Time", "Asia/Kolkata"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
];

/// Resolve a Windows or IANA zone name.
pub fn resolve_zone(name: &str) -> Option<Tz> {
    if let Some((_, iana)) = WINDOWS_ZONES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(name))
    {
        return iana.parse().ok();
    }
    name.parse().ok()
}

/// Windows name for an IANA zone, when one is known.
pub fn windows_name(iana: &str) -> Option<&'static str> {
    WINDOWS_ZONES
        .iter()
        .find(|(_, i)| *i == iana)
        .map(|(w, _)| *w)
}

/// Wall time → instant, resolving DST gaps by moving forward an hour and
/// ambiguities to the earlier instant (what calendar apps do).
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => {
            let shifted = local + chrono::Duration::hours(1);
            match tz.from_local_datetime(&shifted).earliest() {
                Some(t) => t.with_timezone(&Utc),
                // Zones never have two consecutive one-hour gaps.
                None => Utc.from_utc_datetime(&local),
            }
        }
    }
}

/// Google's instant format for metadata (`updated`, `timeMin` echoes).
pub fn google_instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// RFC 3339 with the zone's offset, as Google renders `start.dateTime`.
pub fn google_datetime_in(tz: Tz, t: DateTime<Utc>) -> String {
    let local = t.with_timezone(&tz);
    if tz == Tz::UTC {
        return local.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
    local.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Graph wall time: `2026-10-01T09:00:00.0000000`.
pub fn graph_wall(t: NaiveDateTime) -> String {
    format!(
        "{}.{:07}",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.nanosecond() / 100
    )
}

/// Graph instant: `2026-10-01T09:00:00.1234567Z`.
pub fn graph_instant(t: DateTime<Utc>) -> String {
    format!("{}Z", graph_wall(t.naive_utc()))
}

/// Parse an RFC 3339 instant.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parse a wall time with or without fractional digits (Graph inputs).
pub fn parse_wall(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim_end_matches('Z');
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .ok()
}

/// ISO 8601 query value: an offset is honoured, no offset means UTC (Graph rule).
pub fn parse_iso_utc_default(s: &str) -> Option<DateTime<Utc>> {
    parse_rfc3339(s).or_else(|| parse_wall(s).map(|n| Utc.from_utc_datetime(&n)))
}

pub fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// RFC 1123 as in `X-Goog-Channel-Expiration`.
pub fn rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_wall_has_seven_digits() {
        let t = parse_wall("2026-10-01T09:00:00").unwrap_or_default();
        assert_eq!(graph_wall(t), "2026-10-01T09:00:00.0000000");
    }

    #[test]
    fn windows_names_resolve() {
        assert_eq!(
            resolve_zone("Pacific Standard Time"),
            Some(chrono_tz::America::Los_Angeles)
        );
        assert_eq!(
            resolve_zone("Europe/Berlin"),
            Some(chrono_tz::Europe::Berlin)
        );
        assert_eq!(
            windows_name("Europe/Berlin"),
            Some("W. Europe Standard Time")
        );
    }

    #[test]
    fn dst_gap_moves_forward() {
        let tz = chrono_tz::Europe::Berlin;
        let gap = parse_wall("2026-03-29T02:30:00").unwrap_or_default();
        assert_eq!(
            local_to_utc(tz, gap).to_rfc3339(),
            "2026-03-29T01:30:00+00:00"
        );
    }
}
