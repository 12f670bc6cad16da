//! Time-zone names and wall-clock → UTC conversion.
//!
//! Owns two things the inbound path needs and nothing else:
//! - naming: Microsoft Graph reports Windows zone names ("Pacific Standard
//!   Time"), Google reports IANA names; [`resolve_zone`] turns either into a
//!   [`chrono_tz::Tz`];
//! - the DST rule for turning a local wall time into an instant
//!   ([`local_to_utc`]), used for timed events, all-day midnights and weekly
//!   working hours alike, so every caller agrees on gaps and overlaps.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// A zone name that is neither a known Windows name nor an IANA name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}")]
pub struct UnknownZone(pub String);

/// Windows time-zone name → IANA zone: the territory "001" (primary) rows of
/// Unicode CLDR `common/supplemental/windowsZones.xml` (CLDR 47, tzdata
/// 2025b; 139 names).
///
/// CLDR still spells a few targets with their old IANA aliases
/// (`Asia/Calcutta`, `Asia/Katmandu`, `Asia/Rangoon`, `Europe/Kiev`,
/// `America/Godthab`, `America/Indianapolis`, `America/Buenos_Aires`,
/// `Etc/UTC` for "UTC"); we use the canonical names of the same zones
/// (identical rules), because those are what the rest of the system prints.
/// Variants are `Tz` constants, so a misspelt target cannot compile.
pub const WINDOWS_ZONES: &[(&str, Tz)] = &[
    ("Dateline Standard Time", Tz::Etc__GMTPlus12),
    ("UTC-11", Tz::Etc__GMTPlus11),
    ("Aleutian Standard Time", Tz::America__Adak),
    ("Hawaiian Standard Time", Tz::Pacific__Honolulu),
    ("Marquesas Standard Time", Tz::Pacific__Marquesas),
    ("Alaskan Standard Time", Tz::America__Anchorage),
    ("UTC-09", Tz::Etc__GMTPlus9),
    ("Pacific Standard Time (Mexico)", Tz::America__Tijuana),
    ("UTC-08", Tz::Etc__GMTPlus8),
    ("Pacific Standard Time", Tz::America__Los_Angeles),
    ("US Mountain Standard Time", Tz::America__Phoenix),
    ("Mountain Standard Time (Mexico)", Tz::America__Mazatlan),
    ("Mountain Standard Time", Tz::America__Denver),
    ("Yukon Standard Time", Tz::America__Whitehorse),
    ("Central America Standard Time", Tz::America__Guatemala),
    ("Central Standard Time", Tz::America__Chicago),
    ("Easter Island Standard Time", Tz::Pacific__Easter),
    ("Central Standard Time (Mexico)", Tz::America__Mexico_City),
    ("Canada Central Standard Time", Tz::America__Regina),
    ("SA Pacific Standard Time", Tz::America__Bogota),
    ("Eastern Standard Time (Mexico)", Tz::America__Cancun),
    ("Eastern Standard Time", Tz::America__New_York),
    ("Haiti Standard Time", Tz::America__PortauPrince),
    ("Cuba Standard Time", Tz::America__Havana),
    (
        "US Eastern Standard Time",
        Tz::America__Indiana__Indianapolis,
    ),
    ("Turks And Caicos Standard Time", Tz::America__Grand_Turk),
    ("Paraguay Standard Time", Tz::America__Asuncion),
    ("Atlantic Standard Time", Tz::America__Halifax),
    ("Venezuela Standard Time", Tz::America__Caracas),
    ("Central Brazilian Standard Time", Tz::America__Cuiaba),
    ("SA Western Standard Time", Tz::America__La_Paz),
    ("Pacific SA Standard Time", Tz::America__Santiago),
    ("Newfoundland Standard Time", Tz::America__St_Johns),
    ("Tocantins Standard Time", Tz::America__Araguaina),
    ("E. South America Standard Time", Tz::America__Sao_Paulo),
    ("SA Eastern Standard Time", Tz::America__Cayenne),
    (
        "Argentina Standard Time",
        Tz::America__Argentina__Buenos_Aires,
    ),
    ("Greenland Standard Time", Tz::America__Nuuk),
    ("Montevideo Standard Time", Tz::America__Montevideo),
    ("Magallanes Standard Time", Tz::America__Punta_Arenas),
    ("Saint Pierre Standard Time", Tz::America__Miquelon),
    ("Bahia Standard Time", Tz::America__Bahia),
    ("UTC-02", Tz::Etc__GMTPlus2),
    ("Azores Standard Time", Tz::Atlantic__Azores),
    ("Cape Verde Standard Time", Tz::Atlantic__Cape_Verde),
    ("UTC", Tz::UTC),
    ("GMT Standard Time", Tz::Europe__London),
    ("Greenwich Standard Time", Tz::Atlantic__Reykjavik),
    ("Sao Tome Standard Time", Tz::Africa__Sao_Tome),
    ("Morocco Standard Time", Tz::Africa__Casablanca),
    ("W. Europe Standard Time", Tz::Europe__Berlin),
    ("Central Europe Standard Time", Tz::Europe__Budapest),
    ("Romance Standard Time", Tz::Europe__Paris),
    ("Central European Standard Time", Tz::Europe__Warsaw),
    ("W. Central Africa Standard Time", Tz::Africa__Lagos),
    ("Jordan Standard Time", Tz::Asia__Amman),
    ("GTB Standard Time", Tz::Europe__Bucharest),
    ("Middle East Standard Time", Tz::Asia__Beirut),
    ("Egypt Standard Time", Tz::Africa__Cairo),
    ("E. Europe Standard Time", Tz::Europe__Chisinau),
    ("Syria Standard Time", Tz::Asia__Damascus),
    ("West Bank Standard Time", Tz::Asia__Hebron),
    ("South Africa Standard Time", Tz::Africa__Johannesburg),
    ("FLE Standard Time", Tz::Europe__Kyiv),
    ("Israel Standard Time", Tz::Asia__Jerusalem),
    ("South Sudan Standard Time", Tz::Africa__Juba),
    ("Kaliningrad Standard Time", Tz::Europe__Kaliningrad),
    ("Sudan Standard Time", Tz::Africa__Khartoum),
    ("Libya Standard Time", Tz::Africa__Tripoli),
    ("Namibia Standard Time", Tz::Africa__Windhoek),
    ("Arabic Standard Time", Tz::Asia__Baghdad),
    ("Turkey Standard Time", Tz::Europe__Istanbul),
    ("Arab Standard Time", Tz::Asia__Riyadh),
    ("Belarus Standard Time", Tz::Europe__Minsk),
    ("Russian Standard Time", Tz::Europe__Moscow),
    ("E. Africa Standard Time", Tz::Africa__Nairobi),
    ("Iran Standard Time", Tz::Asia__Tehran),
    ("Arabian Standard Time", Tz::Asia__Dubai),
    ("Astrakhan Standard Time", Tz::Europe__Astrakhan),
    ("Azerbaijan Standard Time", Tz::Asia__Baku),
    ("Russia Time Zone 3", Tz::Europe__Samara),
    ("Mauritius Standard Time", Tz::Indian__Mauritius),
    ("Saratov Standard Time", Tz::Europe__Saratov),
    ("Georgian Standard Time", Tz::Asia__Tbilisi),
    ("Volgograd Standard Time", Tz::Europe__Volgograd),
    ("Caucasus Standard Time", Tz::Asia__Yerevan),
    ("Afghanistan Standard Time", Tz::Asia__Kabul),
    ("West Asia Standard Time", Tz::Asia__Tashkent),
    ("Ekaterinburg Standard Time", Tz::Asia__Yekaterinburg),
    ("Pakistan Standard Time", Tz::Asia__Karachi),
    ("Qyzylorda Standard Time", Tz::Asia__Qyzylorda),
    ("India Standard Time", Tz::Asia__Kolkata),
    ("Sri Lanka Standard Time", Tz::Asia__Colombo),
    ("Nepal Standard Time", Tz::Asia__Kathmandu),
    ("Central Asia Standard Time", Tz::Asia__Bishkek),
    ("Bangladesh Standard Time", Tz::Asia__Dhaka),
    ("Omsk Standard Time", Tz::Asia__Omsk),
    ("Myanmar Standard Time", Tz::Asia__Yangon),
    ("SE Asia Standard Time", Tz::Asia__Bangkok),
    ("Altai Standard Time", Tz::Asia__Barnaul),
    ("W. Mongolia Standard Time", Tz::Asia__Hovd),
    ("North Asia Standard Time", Tz::Asia__Krasnoyarsk),
    ("N. Central Asia Standard Time", Tz::Asia__Novosibirsk),
    ("Tomsk Standard Time", Tz::Asia__Tomsk),
    ("China Standard Time", Tz::Asia__Shanghai),
    ("North Asia East Standard Time", Tz::Asia__Irkutsk),
    ("Singapore Standard Time", Tz::Asia__Singapore),
    ("W. Australia Standard Time", Tz::Australia__Perth),
    ("Taipei Standard Time", Tz::Asia__Taipei),
    ("Ulaanbaatar Standard Time", Tz::Asia__Ulaanbaatar),
    ("Aus Central W. Standard Time", Tz::Australia__Eucla),
    ("Transbaikal Standard Time", Tz::Asia__Chita),
    ("Tokyo Standard Time", Tz::Asia__Tokyo),
    ("North Korea Standard Time", Tz::Asia__Pyongyang),
    ("Korea Standard Time", Tz::Asia__Seoul),
    ("Yakutsk Standard Time", Tz::Asia__Yakutsk),
    ("Cen. Australia Standard Time", Tz::Australia__Adelaide),
    ("AUS Central Standard Time", Tz::Australia__Darwin),
    ("E. Australia Standard Time", Tz::Australia__Brisbane),
    ("AUS Eastern Standard Time", Tz::Australia__Sydney),
    ("West Pacific Standard Time", Tz::Pacific__Port_Moresby),
    ("Tasmania Standard Time", Tz::Australia__Hobart),
    ("Vladivostok Standard Time", Tz::Asia__Vladivostok),
    ("Lord Howe Standard Time", Tz::Australia__Lord_Howe),
    ("Bougainville Standard Time", Tz::Pacific__Bougainville),
    ("Russia Time Zone 10", Tz::Asia__Srednekolymsk),
    ("Magadan Standard Time", Tz::Asia__Magadan),
    ("Norfolk Standard Time", Tz::Pacific__Norfolk),
    ("Sakhalin Standard Time", Tz::Asia__Sakhalin),
    ("Central Pacific Standard Time", Tz::Pacific__Guadalcanal),
    ("Russia Time Zone 11", Tz::Asia__Kamchatka),
    ("New Zealand Standard Time", Tz::Pacific__Auckland),
    ("UTC+12", Tz::Etc__GMTMinus12),
    ("Fiji Standard Time", Tz::Pacific__Fiji),
    ("Chatham Islands Standard Time", Tz::Pacific__Chatham),
    ("UTC+13", Tz::Etc__GMTMinus13),
    ("Tonga Standard Time", Tz::Pacific__Tongatapu),
    ("Samoa Standard Time", Tz::Pacific__Apia),
    ("Line Islands Standard Time", Tz::Pacific__Kiritimati),
];

/// The IANA zone for a Windows zone name (ASCII case-insensitive), if CLDR
/// lists it.
pub fn windows_to_iana(name: &str) -> Option<Tz> {
    WINDOWS_ZONES
        .iter()
        .find(|(windows, _)| windows.eq_ignore_ascii_case(name))
        .map(|&(_, tz)| tz)
}

/// Resolves a zone name as providers send it: a Windows name (Graph), an IANA
/// name (Google, and Graph when asked with `Prefer: outlook.timezone`), in
/// either case exact or ASCII case-insensitive. Surrounding whitespace is
/// ignored. Anything else — including Graph's `tzone://Microsoft/Custom` for
/// legacy custom zones — is [`UnknownZone`]: guessing a zone would put busy
/// time at the wrong hours, which is worse than reporting the event invalid.
pub fn resolve_zone(name: &str) -> Result<Tz, UnknownZone> {
    let trimmed = name.trim();
    if let Ok(tz) = trimmed.parse::<Tz>() {
        return Ok(tz);
    }
    if let Some(tz) = windows_to_iana(trimmed) {
        return Ok(tz);
    }
    chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
        .copied()
        .ok_or_else(|| UnknownZone(name.to_owned()))
}

/// The instant at which the wall clock in `zone` shows `wall`.
///
/// DST choices (RFC 5545 §3.3.5, which Google and Outlook also follow):
/// - a wall time that occurs twice (autumn overlap) means the **earlier**
///   instant, i.e. the first occurrence;
/// - a wall time that does not exist (spring gap) is read with the offset in
///   force **before** the gap, which rolls it forward by the gap's length:
///   02:30 on 2026-03-29 in Europe/Berlin is 01:30 UTC = 03:30 CEST.
///
/// Always returns an instant: calendar data containing a skipped time is
/// valid, so this is not an error.
pub fn local_to_utc(wall: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    if let Some(earliest) = zone.from_local_datetime(&wall).earliest() {
        return earliest.with_timezone(&Utc);
    }
    // In a gap: find the offset in force just before it by stepping back to
    // the nearest wall time that exists. Gaps are at most a day (Samoa,
    // 2011-12-30), so 48 hours of 15-minute steps always reaches one.
    let step = Duration::minutes(15);
    let mut probe = wall;
    for _ in 0..(48 * 4) {
        probe -= step;
        if let Some(before) = zone.from_local_datetime(&probe).latest() {
            let offset = before.offset().fix();
            return (wall - Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc();
        }
    }
    // Unreachable with real tz data; fall back to the offset at the instant
    // the wall time would have been in UTC rather than panic.
    let offset = zone.offset_from_utc_datetime(&wall).fix();
    (wall - Duration::seconds(i64::from(offset.local_minus_utc()))).and_utc()
}

/// The instant at which `date` begins in `zone` (local midnight, or the first
/// instant after a gap for zones that change DST at midnight).
pub fn local_midnight_utc(date: NaiveDate, zone: Tz) -> DateTime<Utc> {
    local_to_utc(date.and_time(NaiveTime::MIN), zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn wall(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn table_has_every_cldr_primary_name_once() {
        assert_eq!(WINDOWS_ZONES.len(), 139);
        let names: HashSet<String> = WINDOWS_ZONES
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        assert_eq!(names.len(), WINDOWS_ZONES.len(), "duplicate Windows name");
    }

    #[test]
    fn well_known_windows_names_map_to_their_cldr_zone() {
        let cases = [
            ("Pacific Standard Time", "America/Los_Angeles"),
            ("W. Europe Standard Time", "Europe/Berlin"),
            ("UTC", "UTC"),
            ("GMT Standard Time", "Europe/London"),
            ("India Standard Time", "Asia/Kolkata"),
            ("Eastern Standard Time", "America/New_York"),
            ("Tokyo Standard Time", "Asia/Tokyo"),
            ("AUS Eastern Standard Time", "Australia/Sydney"),
            ("Romance Standard Time", "Europe/Paris"),
            ("Dateline Standard Time", "Etc/GMT+12"),
            ("UTC+13", "Etc/GMT-13"),
        ];
        for (windows, iana) in cases {
            assert_eq!(resolve_zone(windows).unwrap().name(), iana, "{windows}");
        }
    }

    #[test]
    fn resolution_accepts_iana_and_ignores_case_and_padding() {
        assert_eq!(resolve_zone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(resolve_zone("europe/berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(
            resolve_zone("pacific standard time"),
            Ok(Tz::America__Los_Angeles)
        );
        assert_eq!(
            resolve_zone(" W. Europe Standard Time "),
            Ok(Tz::Europe__Berlin)
        );
        // Old aliases that CLDR itself uses still resolve.
        assert_eq!(
            resolve_zone("Asia/Calcutta").unwrap().name(),
            "Asia/Calcutta"
        );
    }

    #[test]
    fn unknown_and_custom_zones_are_errors() {
        for bad in [
            "",
            "tzone://Microsoft/Custom",
            "Mars Standard Time",
            "Europe/Atlantis",
        ] {
            assert_eq!(resolve_zone(bad), Err(UnknownZone(bad.to_owned())));
        }
    }

    #[test]
    fn ordinary_wall_times_use_the_zone_offset() {
        assert_eq!(
            local_to_utc(wall("2026-07-01T09:00"), Tz::Europe__Berlin),
            utc("2026-07-01T07:00:00Z")
        );
        assert_eq!(
            local_to_utc(wall("2026-01-15T09:00"), Tz::America__New_York),
            utc("2026-01-15T14:00:00Z")
        );
    }

    #[test]
    fn nonexistent_wall_times_roll_forward_by_the_gap() {
        // Berlin springs forward 02:00 → 03:00 on 2026-03-29.
        assert_eq!(
            local_to_utc(wall("2026-03-29T02:30"), Tz::Europe__Berlin),
            utc("2026-03-29T01:30:00Z")
        );
        assert_eq!(
            local_to_utc(wall("2026-03-29T02:00"), Tz::Europe__Berlin),
            utc("2026-03-29T01:00:00Z")
        );
        // New York springs forward on 2026-03-08.
        assert_eq!(
            local_to_utc(wall("2026-03-08T02:15"), Tz::America__New_York),
            utc("2026-03-08T07:15:00Z")
        );
        // Samoa skipped the whole of 2011-12-30.
        assert_eq!(
            local_to_utc(wall("2011-12-30T12:00"), Tz::Pacific__Apia),
            utc("2011-12-30T22:00:00Z")
        );
    }

    #[test]
    fn ambiguous_wall_times_take_the_earlier_instant() {
        // Berlin falls back 03:00 → 02:00 on 2026-10-25: 02:30 happens twice.
        assert_eq!(
            local_to_utc(wall("2026-10-25T02:30"), Tz::Europe__Berlin),
            utc("2026-10-25T00:30:00Z")
        );
        assert_eq!(
            local_to_utc(wall("2026-11-01T01:30"), Tz::America__New_York),
            utc("2026-11-01T05:30:00Z")
        );
    }

    #[test]
    fn midnight_that_does_not_exist_rolls_forward() {
        // Santiago springs forward at 24:00 → 01:00 on 2026-09-06.
        let date = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        let start = local_midnight_utc(date, Tz::America__Santiago);
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
    }
}
