//! The busy rules' times against an oracle written separately (kept beside
//! `busy.rs` to keep it small): for generated timed and all-day events of
//! both providers, in zones with and without DST, on ordinary and DST days
//! of 2026–2027, the blocked interval is what a few lines of chrono-tz say.
//!
//! The oracle calls nothing in `busy.rs` or `tz.rs`: its zone names resolve
//! through its own table, its local times through chrono-tz directly. It
//! states the rules as the module documents them:
//! - a wall time that occurs twice is the earlier instant; one that does not
//!   occur (a DST gap) is read with the offset in force before the gap;
//! - an all-day event runs from the start of its first date to the start of
//!   its (exclusive) end date, in Google's calendar zone, or in Graph's
//!   `originalStartTimeZone` if real, else the mailbox's zone, else UTC;
//! - a Graph timed event is read in the zone its times are labelled with.

use super::*;
use chrono::{Duration, FixedOffset, LocalResult, NaiveDate, Offset, TimeZone};
use proptest::prelude::*;

/// (IANA, Windows) names drawn from. Sydney, Auckland, Berlin, London and
/// New York change by an hour at night; Lord Howe by half an hour;
/// Santiago at midnight (so a day can start at 01:00); the rest never.
const ZONES: &[(&str, &str)] = &[
    ("Australia/Sydney", "AUS Eastern Standard Time"),
    ("Pacific/Auckland", "New Zealand Standard Time"),
    ("Europe/Berlin", "W. Europe Standard Time"),
    ("Europe/London", "GMT Standard Time"),
    ("America/New_York", "Eastern Standard Time"),
    ("Australia/Lord_Howe", "Lord Howe Standard Time"),
    ("America/Santiago", "Pacific SA Standard Time"),
    ("Pacific/Honolulu", "Hawaiian Standard Time"),
    ("Asia/Kolkata", "India Standard Time"),
    ("Asia/Tokyo", "Tokyo Standard Time"),
    ("UTC", "UTC"),
];

/// DST change days of the zones above in 2026 and 2027.
const DST_DAYS: &[&str] = &[
    "2026-03-08",
    "2026-03-29",
    "2026-04-05",
    "2026-09-06",
    "2026-09-27",
    "2026-10-04",
    "2026-10-25",
    "2026-11-01",
    "2027-03-14",
    "2027-03-28",
    "2027-04-04",
    "2027-09-05",
    "2027-09-26",
    "2027-10-03",
    "2027-10-31",
    "2027-11-07",
];

/// The oracle's own name lookup: exact IANA or Windows names of [`ZONES`].
fn oracle_zone(name: &str) -> Option<Tz> {
    ZONES
        .iter()
        .find(|(iana, windows)| *iana == name || *windows == name)
        .and_then(|(iana, _)| iana.parse().ok())
}

/// Where the wall clock in `zone` shows `wall`.
fn oracle_instant(zone: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
        LocalResult::None => {
            // These zones change offset at most twice a year, so one day
            // before the wall time (taken as UTC) is still before the gap.
            let before = zone
                .offset_from_utc_datetime(&(wall - Duration::days(1)))
                .fix();
            (wall - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

fn oracle_day_start(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    oracle_instant(zone, date.and_hms_opt(0, 0, 0).unwrap())
}

/// A zone as an event names it: index into [`ZONES`], Windows name or not.
#[derive(Debug, Clone, Copy)]
struct Named {
    zone: usize,
    windows: bool,
}

impl Named {
    fn name(self) -> &'static str {
        let (iana, windows) = ZONES[self.zone];
        if self.windows {
            windows
        } else {
            iana
        }
    }

    fn tz(self) -> Tz {
        ZONES[self.zone].0.parse().unwrap()
    }
}

/// What a Graph all-day event says in `originalStartTimeZone`.
#[derive(Debug, Clone)]
enum Original {
    Named(Named),
    Custom,
    Unknown,
    Absent,
}

#[derive(Debug, Clone)]
enum Generated {
    GoogleAllDay {
        calendar: usize,
        date: NaiveDate,
        days: i64,
    },
    /// `dateTime` with an explicit offset.
    GoogleOffset {
        calendar: usize,
        wall: NaiveDateTime,
        offset_minutes: i32,
        minutes: i64,
    },
    /// Offset-less `dateTime`, in its `timeZone` (IANA) or the calendar's.
    GoogleLocal {
        calendar: usize,
        zone: Option<usize>,
        wall: NaiveDateTime,
        minutes: i64,
    },
    GraphTimed {
        label: Named,
        mailbox: Option<usize>,
        wall: NaiveDateTime,
        minutes: i64,
    },
    GraphAllDay {
        original: Original,
        mailbox: Option<usize>,
        /// The zone the floating midnights are labelled with (the
        /// request's `Prefer`), which must not matter.
        label: Named,
        date: NaiveDate,
        days: i64,
    },
}

fn date() -> impl Strategy<Value = NaiveDate> {
    let first = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    prop_oneof![
        (0..730i64).prop_map(move |d| first + Duration::days(d)),
        prop::sample::select(DST_DAYS)
            .prop_map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()),
    ]
}

/// Wall times bunch around the small hours, where DST changes happen.
fn wall() -> impl Strategy<Value = NaiveDateTime> {
    (
        date(),
        prop_oneof![0..4u32, 0..24u32],
        prop::sample::select(vec![0u32, 15, 30, 45, 59]),
    )
        .prop_map(|(d, h, m)| d.and_hms_opt(h, m, 0).unwrap())
}

fn zone() -> impl Strategy<Value = usize> {
    0..ZONES.len()
}

fn named() -> impl Strategy<Value = Named> {
    (zone(), any::<bool>()).prop_map(|(zone, windows)| Named { zone, windows })
}

fn minutes() -> impl Strategy<Value = i64> {
    prop_oneof![1..180i64, 1..3000i64]
}

fn generated() -> impl Strategy<Value = Generated> {
    let original = prop_oneof![
        4 => named().prop_map(Original::Named),
        1 => Just(Original::Custom),
        1 => Just(Original::Unknown),
        1 => Just(Original::Absent),
    ];
    prop_oneof![
        (zone(), date(), 1..4i64).prop_map(|(calendar, date, days)| Generated::GoogleAllDay {
            calendar,
            date,
            days
        }),
        (
            zone(),
            wall(),
            (-48..=56i32).prop_map(|q| q * 15),
            minutes()
        )
            .prop_map(|(calendar, wall, offset_minutes, minutes)| {
                Generated::GoogleOffset {
                    calendar,
                    wall,
                    offset_minutes,
                    minutes,
                }
            }),
        (zone(), prop::option::of(zone()), wall(), minutes()).prop_map(
            |(calendar, zone, wall, minutes)| Generated::GoogleLocal {
                calendar,
                zone,
                wall,
                minutes
            }
        ),
        (named(), prop::option::of(zone()), wall(), minutes()).prop_map(
            |(label, mailbox, wall, minutes)| Generated::GraphTimed {
                label,
                mailbox,
                wall,
                minutes
            }
        ),
        (original, prop::option::of(zone()), named(), date(), 1..4i64).prop_map(
            |(original, mailbox, label, date, days)| Generated::GraphAllDay {
                original,
                mailbox,
                label,
                date,
                days
            }
        ),
    ]
}

fn local(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn graph_local(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.0000000").to_string()
}

fn mailbox_tz(mailbox: Option<usize>) -> Tz {
    mailbox.map_or(Tz::UTC, |z| ZONES[z].0.parse().unwrap())
}

/// The rule's verdict and the oracle's interval for one generated event.
fn run(g: &Generated) -> (BusyDecision, DateTime<Utc>, DateTime<Utc>) {
    run_with(g, &Flags::Plain, &BusyPolicy::default())
}

/// [`run`] for the event with `flags` merged into its JSON, under `policy`.
fn run_with(
    g: &Generated,
    flags: &Flags,
    policy: &BusyPolicy,
) -> (BusyDecision, DateTime<Utc>, DateTime<Utc>) {
    let google = |json: String, calendar: usize| {
        let event: GoogleEvent = serde_json::from_value(flags.merge(&json)).unwrap();
        google_busy(&event, ZONES[calendar].0.parse().unwrap(), policy)
    };
    let graph = |json: String, mailbox: Option<usize>| {
        let event: GraphEvent = serde_json::from_value(flags.merge(&json)).unwrap();
        graph_busy(&event, mailbox_tz(mailbox), policy)
    };
    match g.clone() {
        Generated::GoogleAllDay {
            calendar,
            date,
            days,
        } => {
            let end = date + Duration::days(days);
            let json =
                format!(r#"{{"id":"g1","start":{{"date":"{date}"}},"end":{{"date":"{end}"}}}}"#);
            let zone: Tz = ZONES[calendar].0.parse().unwrap();
            (
                google(json, calendar),
                oracle_day_start(zone, date),
                oracle_day_start(zone, end),
            )
        }
        Generated::GoogleOffset {
            calendar,
            wall,
            offset_minutes,
            minutes,
        } => {
            let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let at = |w: NaiveDateTime| offset.from_local_datetime(&w).unwrap().to_rfc3339();
            let end = wall + Duration::minutes(minutes);
            let json = format!(
                r#"{{"id":"g2","start":{{"dateTime":"{}"}},"end":{{"dateTime":"{}"}}}}"#,
                at(wall),
                at(end)
            );
            let shift = Duration::minutes(i64::from(offset_minutes));
            (
                google(json, calendar),
                (wall - shift).and_utc(),
                (end - shift).and_utc(),
            )
        }
        Generated::GoogleLocal {
            calendar,
            zone,
            wall,
            minutes,
        } => {
            let end = wall + Duration::minutes(minutes);
            let tz_field = zone
                .map(|z| format!(r#","timeZone":"{}""#, ZONES[z].0))
                .unwrap_or_default();
            let json = format!(
                r#"{{"id":"g3","start":{{"dateTime":"{}"{tz_field}}},"end":{{"dateTime":"{}"{tz_field}}}}}"#,
                local(wall),
                local(end)
            );
            let tz: Tz = ZONES[zone.unwrap_or(calendar)].0.parse().unwrap();
            (
                google(json, calendar),
                oracle_instant(tz, wall),
                oracle_instant(tz, end),
            )
        }
        Generated::GraphTimed {
            label,
            mailbox,
            wall,
            minutes,
        } => {
            let end = wall + Duration::minutes(minutes);
            let json = format!(
                r#"{{"id":"m1","start":{{"dateTime":"{}","timeZone":"{}"}},
                    "end":{{"dateTime":"{}","timeZone":"{}"}}}}"#,
                graph_local(wall),
                label.name(),
                graph_local(end),
                label.name()
            );
            let tz = oracle_zone(label.name()).unwrap();
            (
                graph(json, mailbox),
                oracle_instant(tz, wall),
                oracle_instant(tz, end),
            )
        }
        Generated::GraphAllDay {
            original,
            mailbox,
            label,
            date,
            days,
        } => {
            let end = date + Duration::days(days);
            let original_name = match &original {
                Original::Named(n) => Some(n.name().to_owned()),
                Original::Custom => Some("tzone://Microsoft/Custom".to_owned()),
                Original::Unknown => Some("Mars Standard Time".to_owned()),
                Original::Absent => None,
            };
            let original_field = original_name
                .as_deref()
                .map(|z| format!(r#","originalStartTimeZone":"{z}""#))
                .unwrap_or_default();
            let json = format!(
                r#"{{"id":"m2","isAllDay":true,"start":{{"dateTime":"{date}T00:00:00.0000000","timeZone":"{l}"}},
                    "end":{{"dateTime":"{end}T00:00:00.0000000","timeZone":"{l}"}}{original_field}}}"#,
                l = label.name()
            );
            let tz = original_name
                .as_deref()
                .and_then(oracle_zone)
                .or_else(|| mailbox.map(|z| ZONES[z].0.parse().unwrap()))
                .unwrap_or(Tz::UTC);
            if let Original::Named(n) = original {
                assert_eq!(tz, n.tz(), "the oracle's table resolves {n:?}");
            }
            (
                graph(json, mailbox),
                oracle_day_start(tz, date),
                oracle_day_start(tz, end),
            )
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn busy_times_equal_the_oracle(g in generated()) {
        let (decision, start, end) = run(&g);
        // Rolling a gap's wall time forward can put it after a later wall
        // time just past the gap (00:15–01:00 on Santiago's spring day is
        // 04:15Z–04:00Z): the rule must then call the event unreadable.
        let want = match start.cmp(&end) {
            std::cmp::Ordering::Equal => BusyDecision::Free(FreeReason::ZeroDuration),
            std::cmp::Ordering::Greater => {
                BusyDecision::Invalid(InvalidEvent::EndBeforeStart { start, end })
            }
            std::cmp::Ordering::Less => BusyDecision::Blocks(Interval::new(start, end).unwrap()),
        };
        prop_assert_eq!(decision, want, "{:?}", g);
    }
}

#[test]
fn the_oracle_agrees_with_hand_worked_instants() {
    // Santiago skips 2026-09-06 00:00–01:00: the day starts at 04:00Z.
    let santiago: Tz = "America/Santiago".parse().unwrap();
    let sept6 = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
    assert_eq!(
        oracle_day_start(santiago, sept6).to_rfc3339(),
        "2026-09-06T04:00:00+00:00"
    );
    // Berlin 02:30 on the spring-forward day rolls forward to 03:30 CEST.
    let berlin = oracle_zone("W. Europe Standard Time").unwrap();
    let wall = NaiveDate::from_ymd_opt(2026, 3, 29)
        .unwrap()
        .and_hms_opt(2, 30, 0)
        .unwrap();
    assert_eq!(
        oracle_instant(berlin, wall).to_rfc3339(),
        "2026-03-29T01:30:00+00:00"
    );
    // New York 01:30 on the fall-back day is the first (EDT) one.
    let new_york = oracle_zone("Eastern Standard Time").unwrap();
    let wall = NaiveDate::from_ymd_opt(2026, 11, 1)
        .unwrap()
        .and_hms_opt(1, 30, 0)
        .unwrap();
    assert_eq!(
        oracle_instant(new_york, wall).to_rfc3339(),
        "2026-11-01T05:30:00+00:00"
    );
    assert_eq!(oracle_zone("tzone://Microsoft/Custom"), None);
}

// ------------------------------------------------ verdicts, not only times --
//
// The same generated times, now with the fields that decide *whether* an
// event blocks: status, transparency / showAs, event type, the owner's
// answer, the organizer, and calsync's own markers. The oracle below is the
// suggested rule of `shared/PROVIDERS.md` §4 in the order the module
// documents (gone, then ours, then free, then times), written out over the
// generated flags themselves: it never looks at a parsed event.

/// The booking id our markers name.
const OUR_BOOKING: &str = "bk-7";

/// `"cs"` + lower-case unpadded base32hex of `"0:bk-7"`, worked out by hand
/// (Python's `base64.b32hexencode`), not by `booking_tag`.
const OUR_TAG: &str = "cs60t64qpd6s";

/// How an event says it is calsync's own.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Marker {
    None,
    /// Google `extendedProperties.private.calsyncBookingId` / the Graph
    /// single-value extended property.
    Property,
    /// Google: our tag as the event id; Graph: as `transactionId`.
    Tag,
}

#[derive(Debug, Clone)]
struct GoogleFlags {
    status: Option<&'static str>,
    transparency: Option<&'static str>,
    event_type: Option<&'static str>,
    /// The owner's attendee entry: (is the organizer, responseStatus).
    me: Option<(bool, &'static str)>,
    /// `organizer.self: false`: someone else's event, we are invited.
    other_organizer: bool,
    marker: Marker,
}

#[derive(Debug, Clone)]
struct GraphFlags {
    removed: bool,
    cancelled: bool,
    kind: Option<&'static str>,
    show_as: Option<&'static str>,
    response: Option<&'static str>,
    marker: Marker,
}

#[derive(Debug, Clone)]
enum Flags {
    /// Nothing but the times (the times-only property).
    Plain,
    Google(GoogleFlags),
    Graph(GraphFlags),
}

impl Flags {
    /// The generated event JSON with these fields set.
    fn merge(&self, json: &str) -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
        let o = v.as_object_mut().unwrap();
        let mut set = |k: &str, x: Option<&str>| {
            if let Some(x) = x {
                o.insert(k.into(), serde_json::json!(x));
            }
        };
        match self {
            Flags::Plain => {}
            Flags::Google(f) => {
                set("status", f.status);
                set("transparency", f.transparency);
                set("eventType", f.event_type);
                if let Some((organizer, response)) = f.me {
                    o.insert(
                        "attendees".into(),
                        serde_json::json!([
                            {"email": "other@example.com", "responseStatus": "accepted"},
                            {"email": "me@example.com", "self": true,
                             "organizer": organizer, "responseStatus": response}
                        ]),
                    );
                }
                if f.other_organizer {
                    o.insert(
                        "organizer".into(),
                        serde_json::json!({"email": "other@example.com", "self": false}),
                    );
                }
                match f.marker {
                    Marker::None => {}
                    Marker::Property => {
                        o.insert(
                            "extendedProperties".into(),
                            serde_json::json!({"private": {"calsyncBookingId": OUR_BOOKING}}),
                        );
                    }
                    Marker::Tag => {
                        o.insert("id".into(), serde_json::json!(OUR_TAG));
                    }
                }
            }
            Flags::Graph(f) => {
                set("type", f.kind);
                set("showAs", f.show_as);
                if f.cancelled {
                    o.insert("isCancelled".into(), serde_json::json!(true));
                }
                if f.removed {
                    o.insert("@removed".into(), serde_json::json!({"reason": "deleted"}));
                }
                if let Some(r) = f.response {
                    o.insert("responseStatus".into(), serde_json::json!({"response": r}));
                }
                match f.marker {
                    Marker::None => {}
                    Marker::Property => {
                        o.insert(
                            "singleValueExtendedProperties".into(),
                            serde_json::json!([{
                                "id": "String {6F2B8C1E-3D4A-4E5F-9A6B-7C8D9E0F1A2B} Name calsyncBookingId",
                                "value": OUR_BOOKING}]),
                        );
                    }
                    Marker::Tag => {
                        o.insert("transactionId".into(), serde_json::json!(OUR_TAG));
                    }
                }
            }
        }
        v
    }

    /// The oracle's verdict from the flags alone; `None`: the event blocks
    /// its times (the times oracle decides).
    fn verdict(&self, tentative_blocks: bool) -> Option<BusyDecision> {
        let free = |r| Some(BusyDecision::Free(r));
        let ours = || {
            Some(BusyDecision::Ours {
                booking_id: OUR_BOOKING.into(),
            })
        };
        match self {
            Flags::Plain => None,
            Flags::Google(f) => {
                let response = f.me.map(|(_, r)| r);
                let invited = f.other_organizer || f.me.is_some_and(|(organizer, _)| !organizer);
                if f.status == Some("cancelled") {
                    free(FreeReason::Cancelled)
                } else if f.marker == Marker::Property || (f.marker == Marker::Tag && !invited) {
                    // Our tag as the id of an event we are only invited to
                    // is another provider's booking: it blocks.
                    ours()
                } else if f.transparency == Some("transparent") {
                    free(FreeReason::Transparent)
                } else if f.event_type == Some("workingLocation") {
                    free(FreeReason::WorkingLocation)
                } else if f.event_type == Some("birthday") {
                    free(FreeReason::Birthday)
                } else if response == Some("declined") {
                    free(FreeReason::Declined)
                } else if !tentative_blocks
                    && (f.status == Some("tentative")
                        || matches!(response, Some("tentative" | "needsAction")))
                {
                    free(FreeReason::Tentative)
                } else {
                    None
                }
            }
            Flags::Graph(f) => {
                if f.removed {
                    free(FreeReason::Removed)
                } else if f.cancelled {
                    free(FreeReason::Cancelled)
                } else if f.marker != Marker::None {
                    ours()
                } else if f.kind == Some("seriesMaster") {
                    free(FreeReason::SeriesMaster)
                } else if f.show_as == Some("free") {
                    free(FreeReason::ShowAsFree)
                } else if f.show_as == Some("workingElsewhere") {
                    free(FreeReason::WorkingElsewhere)
                } else if f.response == Some("declined") {
                    free(FreeReason::Declined)
                } else if !tentative_blocks
                    && (f.show_as == Some("tentative")
                        || matches!(f.response, Some("tentativelyAccepted" | "notResponded")))
                {
                    free(FreeReason::Tentative)
                } else {
                    // busy, oof, unknown, a new value or none: blocks.
                    None
                }
            }
        }
    }
}

fn marker() -> impl Strategy<Value = Marker> {
    prop_oneof![4 => Just(Marker::None), 1 => Just(Marker::Property), 1 => Just(Marker::Tag)]
}

fn google_flags() -> impl Strategy<Value = Flags> {
    let some = |values: &'static [&'static str]| prop::option::of(prop::sample::select(values));
    (
        some(&["confirmed", "tentative", "cancelled"]),
        some(&["opaque", "transparent"]),
        some(&[
            "default",
            "outOfOffice",
            "focusTime",
            "workingLocation",
            "birthday",
            "fromGmail",
        ]),
        prop::option::of((
            any::<bool>(),
            prop::sample::select(&["needsAction", "declined", "tentative", "accepted"][..]),
        )),
        any::<bool>(),
        marker(),
    )
        .prop_map(
            |(status, transparency, event_type, me, other_organizer, marker)| {
                Flags::Google(GoogleFlags {
                    status,
                    transparency,
                    event_type,
                    me,
                    other_organizer,
                    marker,
                })
            },
        )
}

fn graph_flags() -> impl Strategy<Value = Flags> {
    let some = |values: &'static [&'static str]| prop::option::of(prop::sample::select(values));
    (
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.15),
        some(&["singleInstance", "occurrence", "exception", "seriesMaster"]),
        some(&[
            "free",
            "tentative",
            "busy",
            "oof",
            "workingElsewhere",
            "unknown",
            "somethingNew",
        ]),
        some(&[
            "none",
            "organizer",
            "tentativelyAccepted",
            "accepted",
            "declined",
            "notResponded",
        ]),
        marker(),
    )
        .prop_map(|(removed, cancelled, kind, show_as, response, marker)| {
            Flags::Graph(GraphFlags {
                removed,
                cancelled,
                kind,
                show_as,
                response,
                marker,
            })
        })
}

/// A generated event with flags of its own provider.
fn flagged() -> impl Strategy<Value = (Generated, Flags)> {
    generated().prop_flat_map(|g| {
        let flags = match g {
            Generated::GoogleAllDay { .. }
            | Generated::GoogleOffset { .. }
            | Generated::GoogleLocal { .. } => google_flags().boxed(),
            Generated::GraphTimed { .. } | Generated::GraphAllDay { .. } => graph_flags().boxed(),
        };
        (Just(g), flags)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Whether and when an event blocks, for every combination of the
    /// fields that decide it, both providers, every zone above (Windows
    /// names for Graph), all-day events on DST days, and either tentative
    /// policy: the rules' verdict is the oracle's.
    #[test]
    fn busy_verdicts_equal_the_oracle((g, flags) in flagged(), tentative_blocks in any::<bool>()) {
        let policy = BusyPolicy { tentative_blocks };
        let (decision, start, end) = run_with(&g, &flags, &policy);
        let want = flags.verdict(tentative_blocks).unwrap_or_else(|| match start.cmp(&end) {
            std::cmp::Ordering::Equal => BusyDecision::Free(FreeReason::ZeroDuration),
            std::cmp::Ordering::Greater => {
                BusyDecision::Invalid(InvalidEvent::EndBeforeStart { start, end })
            }
            std::cmp::Ordering::Less => BusyDecision::Blocks(Interval::new(start, end).unwrap()),
        });
        prop_assert_eq!(decision, want, "{:?} {:?}", g, flags);
    }
}

#[test]
fn the_oracles_tag_is_what_calsync_writes() {
    // The hand-worked tag must be the one calsync puts on its events, or
    // the property above would test a marker nobody writes.
    assert_eq!(parse_booking_tag(OUR_TAG), Some((OUR_BOOKING.into(), 0)));
    assert_eq!(booking_tag(OUR_BOOKING, 0), OUR_TAG);
}
