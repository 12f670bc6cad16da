//! Fixtures with range: `spawn_app()` builds a [`World`] whose connections
//! look like real ones, not like the one-shape `primary`-only connection:
//!
//! - each connection writes bookings to a calendar of its own that blocks
//!   nothing, and blocks time from others (Google: two; Graph: its default
//!   calendar, the only one Graph's delta sync is confirmed for);
//! - several connections share one platform provider, across providers;
//! - accounts live in Sydney, Berlin and New York, Graph mailboxes under
//!   their Windows zone names ("W. Europe Standard Time", …);
//! - every blocking calendar holds a realistic week: a weekly series across
//!   the zone's next DST change with one cancelled occurrence, an all-day
//!   event on the DST day itself (23 or 25 hours long), a declined and a
//!   tentative invitation, a free event and an out-of-office block.
//!
//! Each fixture also says which UTC intervals must be busy, computed here
//! with plain chrono-tz arithmetic on the wall times it wrote, not by the
//! busy rules under test.

use super::{Options, World};
use calsync::core::ids::{CalendarProvider, ConnectionId};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

/// One zone as each provider names it.
#[derive(Clone, Copy, Debug)]
pub struct Zone {
    pub iana: &'static str,
    /// What a Graph mailbox reports (`mailboxSettings.timeZone`).
    pub windows: &'static str,
}

pub const SYDNEY: Zone = Zone {
    iana: "Australia/Sydney",
    windows: "AUS Eastern Standard Time",
};
pub const BERLIN: Zone = Zone {
    iana: "Europe/Berlin",
    windows: "W. Europe Standard Time",
};
pub const NEW_YORK: Zone = Zone {
    iana: "America/New_York",
    windows: "Eastern Standard Time",
};

impl Zone {
    pub fn tz(&self) -> Tz {
        self.iana.parse().unwrap()
    }

    /// The next day (at least a week away, so a series can start before it)
    /// whose length is not 24 hours: the zone's next DST change.
    pub fn next_dst_day(&self) -> NaiveDate {
        let tz = self.tz();
        let today = Utc::now().date_naive();
        (8..200)
            .map(|d| today + Duration::days(d))
            .find(|day| day_length(tz, *day) != Duration::hours(24))
            .expect("a DST change within 200 days")
    }

    /// The first instant of `day` here (simple rule: midnight, or the first
    /// hour after a gap).
    pub fn midnight(&self, day: NaiveDate) -> DateTime<Utc> {
        local(self.tz(), day.and_hms_opt(0, 0, 0).unwrap())
    }
}

fn local(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(wall + Duration::hours(h)))
                .earliest()
        })
        .unwrap()
        .with_timezone(&Utc)
}

fn day_length(tz: Tz, day: NaiveDate) -> Duration {
    local(tz, (day + Duration::days(1)).and_hms_opt(0, 0, 0).unwrap())
        - local(tz, day.and_hms_opt(0, 0, 0).unwrap())
}

/// A connection to build.
#[derive(Clone, Debug)]
pub struct Spec {
    pub provider: CalendarProvider,
    pub account: String,
    pub zone: Zone,
    pub platform_provider: String,
}

/// A built connection: where it reads and writes, and what must be busy.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub id: ConnectionId,
    pub provider: CalendarProvider,
    pub account: String,
    pub zone: Zone,
    pub platform_provider: String,
    /// The calendars whose busy time blocks, and the one bookings go to.
    pub blocking: Vec<String>,
    pub destination: String,
    /// The DST day the calendars are built around.
    pub dst_day: NaiveDate,
    /// The busy intervals the calendars must yield, sorted.
    pub expected_busy: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

pub struct AppBuilder {
    options: Options,
    specs: Vec<Spec>,
}

/// Starts describing an app: add connections, then [`AppBuilder::start`].
pub fn spawn_app() -> AppBuilder {
    AppBuilder {
        options: Options::default(),
        specs: Vec::new(),
    }
}

pub struct App {
    pub world: World,
    pub fixtures: Vec<Fixture>,
}

impl AppBuilder {
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    pub fn google(mut self, email: &str, zone: Zone, platform_provider: &str) -> Self {
        self.specs.push(Spec {
            provider: CalendarProvider::Google,
            account: email.into(),
            zone,
            platform_provider: platform_provider.into(),
        });
        self
    }

    pub fn graph(mut self, upn: &str, zone: Zone, platform_provider: &str) -> Self {
        self.specs.push(Spec {
            provider: CalendarProvider::Microsoft,
            account: upn.into(),
            zone,
            platform_provider: platform_provider.into(),
        });
        self
    }

    /// The usual range: two platform providers, each with a Google and a
    /// Graph connection (so two connections of each provider in all), in
    /// three zones.
    pub fn with_range(self) -> Self {
        self.google("ana@example.com", SYDNEY, "pp-clinic")
            .graph("bo@contoso.com", BERLIN, "pp-clinic")
            .google("cy@example.com", NEW_YORK, "pp-studio")
            .graph("di@contoso.com", NEW_YORK, "pp-studio")
    }

    pub async fn start(self) -> App {
        let world = World::start(self.options).await;
        let mut fixtures = Vec::new();
        for spec in self.specs {
            fixtures.push(build(&world, spec).await);
        }
        App { world, fixtures }
    }
}

async fn build(w: &World, spec: Spec) -> Fixture {
    let (blocking, destination) = match spec.provider {
        CalendarProvider::Google => {
            let google = w.sim.google();
            google.create_account_in(&spec.account, spec.zone.iana);
            let work = google
                .create_calendar(&spec.account, "Work", spec.zone.iana)
                .unwrap();
            let bookings = google
                .create_calendar(&spec.account, "Bookings", spec.zone.iana)
                .unwrap();
            (vec!["primary".to_string(), work], bookings)
        }
        CalendarProvider::Microsoft => {
            let graph = w.sim.graph();
            graph.create_account_in(&spec.account, spec.zone.windows);
            // Graph blocks from its default calendar only: per-calendar
            // `calendars/{id}/calendarView/delta` is unconfirmed for v1.0
            // (shared/PROVIDERS.md) and the simulator does not serve it.
            let bookings = graph.create_calendar(&spec.account, "Bookings").unwrap();
            (vec!["primary".to_string()], bookings)
        }
    };
    let dst_day = spec.zone.next_dst_day();
    let mut expected = Vec::new();
    for (n, calendar) in blocking.iter().enumerate() {
        expected.extend(fill(w, &spec, calendar, n, dst_day));
    }
    expected.sort();
    let calendars: Vec<&str> = blocking.iter().map(String::as_str).collect();
    let id = w
        .connect_calendars(
            spec.provider,
            &spec.account,
            &spec.platform_provider,
            &calendars,
            Some(&destination),
        )
        .await;
    Fixture {
        id,
        provider: spec.provider,
        account: spec.account,
        zone: spec.zone,
        platform_provider: spec.platform_provider,
        blocking,
        destination,
        dst_day,
        expected_busy: expected,
    }
}

/// Writes one realistic week into `calendar`; returns what must be busy.
/// `n` shifts the hours so the two calendars of a connection differ.
fn fill(
    w: &World,
    spec: &Spec,
    calendar: &str,
    n: usize,
    dst_day: NaiveDate,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let tz = spec.zone.tz();
    let h = 2 * n as u32;
    let at = |day: NaiveDate, hour: u32| local(tz, day.and_hms_opt(hour, 0, 0).unwrap());
    let mut busy = Vec::new();
    // Each event is written for its provider below; `put` records the
    // expectation from the same wall times.
    let series_day = dst_day - Duration::days(7);
    let mut series = Vec::new();
    for k in 0..4 {
        let day = series_day + Duration::days(7 * k);
        let (s, e) = (at(day, 9 + h), at(day, 9 + h) + Duration::minutes(60));
        series.push((s, e));
    }
    // Occurrence 2 is cancelled; the others block at 9:00 local, whatever
    // the offset that week.
    for (k, interval) in series.iter().enumerate() {
        if k != 2 {
            busy.push(*interval);
        }
    }
    let all_day = (
        spec.zone.midnight(dst_day),
        spec.zone.midnight(dst_day + Duration::days(1)),
    );
    busy.push(all_day);
    let mut put = |kind: Kind, day: NaiveDate, hour: u32, minutes: i64| {
        let start = at(day, hour);
        let end = start + Duration::minutes(minutes);
        if kind.blocks() {
            busy.push((start, end));
        }
        (start, end)
    };
    let declined = put(Kind::Declined, dst_day + Duration::days(1), 10 + h, 30);
    let tentative = put(Kind::Tentative, dst_day + Duration::days(1), 11 + h, 45);
    let free = put(Kind::Free, dst_day + Duration::days(2), 9 + h, 60);
    let away = put(Kind::OutOfOffice, dst_day + Duration::days(2), 13 + h, 120);
    match spec.provider {
        CalendarProvider::Google => {
            let google = w.sim.google();
            let g = |s: DateTime<Utc>| json!({"dateTime": s.with_timezone(&tz).to_rfc3339(), "timeZone": spec.zone.iana});
            let master = format!("series{n}{}", series_day.format("%Y%m%d"));
            google
                .upsert_event(
                    &spec.account,
                    calendar,
                    json!({"id": master, "summary": "Weekly 1:1",
                    "start": g(series[0].0), "end": g(series[0].1),
                    "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"]}),
                )
                .unwrap();
            google
                .cancel_instance(&spec.account, calendar, &master, series[2].0)
                .unwrap();
            let next = dst_day + Duration::days(1);
            for body in [
                json!({"summary": "Public holiday", "start": {"date": dst_day.to_string()},
                    "end": {"date": next.to_string()}}),
                json!({"summary": "Declined", "start": g(declined.0), "end": g(declined.1),
                    "attendees": [{"email": spec.account, "self": true, "responseStatus": "declined"}]}),
                json!({"summary": "Maybe", "start": g(tentative.0), "end": g(tentative.1),
                    "attendees": [{"email": spec.account, "self": true, "responseStatus": "tentative"}]}),
                json!({"summary": "Focus (free)", "start": g(free.0), "end": g(free.1),
                    "transparency": "transparent"}),
                json!({"summary": "Away", "start": g(away.0), "end": g(away.1),
                    "eventType": "outOfOffice"}),
            ] {
                google.upsert_event(&spec.account, calendar, body).unwrap();
            }
        }
        CalendarProvider::Microsoft => {
            let graph = w.sim.graph();
            let zone = spec.zone.windows;
            let m = |s: DateTime<Utc>| json!({"dateTime": s.with_timezone(&tz).naive_local().format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": zone});
            let target = (calendar != "primary").then_some(calendar);
            let master = graph
                .create_event_in(
                    &spec.account,
                    target,
                    json!({"subject": "Weekly 1:1", "showAs": "busy",
                    "start": m(series[0].0), "end": m(series[0].1),
                    "recurrence": {"pattern": {"type": "weekly", "interval": 1,
                        "daysOfWeek": [weekday(series_day)]},
                        "range": {"type": "numbered", "numberOfOccurrences": 4,
                            "startDate": series_day.to_string()}}}),
                )
                .unwrap();
            graph
                .cancel_occurrence(&spec.account, master["id"].as_str().unwrap(), series[2].0)
                .unwrap();
            let next = dst_day + Duration::days(1);
            for body in [
                json!({"subject": "Public holiday", "isAllDay": true, "showAs": "busy",
                    "start": {"dateTime": format!("{dst_day}T00:00:00"), "timeZone": zone},
                    "end": {"dateTime": format!("{next}T00:00:00"), "timeZone": zone}}),
                json!({"subject": "Declined", "showAs": "busy", "start": m(declined.0), "end": m(declined.1),
                    "responseStatus": {"response": "declined", "time": "2026-01-01T00:00:00Z"}}),
                json!({"subject": "Maybe", "showAs": "tentative", "start": m(tentative.0), "end": m(tentative.1)}),
                json!({"subject": "Focus (free)", "showAs": "free", "start": m(free.0), "end": m(free.1)}),
                json!({"subject": "Away", "showAs": "oof", "start": m(away.0), "end": m(away.1)}),
            ] {
                graph.create_event_in(&spec.account, target, body).unwrap();
            }
        }
    }
    busy
}

#[derive(Clone, Copy)]
enum Kind {
    Declined,
    Tentative,
    Free,
    OutOfOffice,
}

impl Kind {
    /// The plain rule, written out: declined and free time does not block.
    fn blocks(self) -> bool {
        matches!(self, Kind::Tentative | Kind::OutOfOffice)
    }
}

fn weekday(day: NaiveDate) -> &'static str {
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ][day.weekday().num_days_from_monday() as usize]
}

impl Fixture {
    /// The busy intervals the projection holds for this connection, sorted.
    pub async fn busy(&self, w: &World) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        let mut busy: Vec<_> = w
            .busy(self.id)
            .await
            .into_iter()
            .map(|(_, s, e)| (s, e))
            .collect();
        busy.sort();
        busy
    }

    /// Waits until the projection holds exactly the expected busy time.
    pub async fn wait_for_expected_busy(&self, w: &World) {
        let what = format!(
            "{} ({:?}, {}) busy as expected: {:?}",
            self.account, self.provider, self.zone.iana, self.expected_busy
        );
        let last = std::sync::Mutex::new(Vec::new());
        let found = super::eventually(super::DEADLINE, || async {
            let busy = self.busy(w).await;
            let ok = busy == self.expected_busy;
            *last.lock().unwrap() = busy;
            ok
        })
        .await;
        assert!(found, "{what}; projection holds {:?}", last.lock().unwrap());
    }

    pub fn is_google(&self) -> bool {
        self.provider == CalendarProvider::Google
    }

    /// Inserts a plain busy event into blocking calendar `k` at `start`.
    pub fn add_busy(&self, w: &World, k: usize, start: DateTime<Utc>, minutes: i64) -> Value {
        let end = start + Duration::minutes(minutes);
        let calendar = &self.blocking[k];
        match self.provider {
            CalendarProvider::Google => w
                .sim
                .google()
                .upsert_event(&self.account, calendar, json!({"summary": "added",
                    "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": end.to_rfc3339()}}))
                .unwrap(),
            CalendarProvider::Microsoft => {
                let f = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
                let target = (calendar != "primary").then_some(calendar.as_str());
                w.sim
                    .graph()
                    .create_event_in(&self.account, target, json!({"subject": "added", "showAs": "busy",
                        "start": {"dateTime": f(start), "timeZone": "UTC"},
                        "end": {"dateTime": f(end), "timeZone": "UTC"}}))
                    .unwrap()
            }
        }
    }

    /// Live events in a calendar of this account.
    pub fn live_events(&self, w: &World, calendar: &str) -> Vec<Value> {
        match self.provider {
            CalendarProvider::Google => w
                .sim
                .google()
                .stored_events(&self.account, calendar)
                .unwrap()
                .into_iter()
                .filter(|e| e["status"] != "cancelled")
                .collect(),
            CalendarProvider::Microsoft => w
                .sim
                .graph()
                .stored_events_in(&self.account, Some(calendar))
                .into_iter()
                .filter(|e| e["isCancelled"] != true)
                .collect(),
        }
    }
}
