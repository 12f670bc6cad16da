//! Scenario driver: N accounts per provider with M realistic events each,
//! then a stream of user-like mutations — all derived from one seed, so a
//! run can be reproduced (given the same `SimConfig::seed` too).

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Mutex;

use crate::google::{GoogleAccount, GoogleSim};
use crate::graph::{GraphAccount, GraphSim};
use crate::state::lock;
use crate::timefmt::{graph_wall, windows_name};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub google_accounts: usize,
    pub graph_accounts: usize,
    pub events_per_account: usize,
    /// First day of generated events (default: today, UTC midnight).
    pub start: Option<DateTime<Utc>>,
    /// Events are spread over this many days.
    pub days: i64,
    /// Mutation rate used by [`Scenario::run`].
    pub mutations_per_second: f64,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            seed: 7,
            google_accounts: 2,
            graph_accounts: 2,
            events_per_account: 20,
            start: None,
            days: 14,
            mutations_per_second: 20.0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioSummary {
    pub google: Vec<GoogleAccount>,
    pub graph: Vec<GraphAccount>,
    pub events_created: usize,
}

#[derive(Clone, Debug)]
enum Known {
    Google { email: String, id: String },
    Graph { upn: String, id: String },
}

pub struct Scenario {
    cfg: ScenarioConfig,
    rng: Mutex<StdRng>,
    known: Mutex<Vec<Known>>,
    accounts: Mutex<(Vec<String>, Vec<String>)>,
}

const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];

/// Zones of the Graph mailboxes (`mailboxSettings.timeZone`), by account
/// index: the first is far from UTC, so its all-day events are a different
/// UTC span than a UTC reading of their dates would give.
const MAILBOX_ZONES: &[&str] = &[
    "AUS Eastern Standard Time",
    "UTC",
    "Pacific/Auckland",
    "Eastern Standard Time",
];

/// Zones of the Google primary calendars, by account index.
const CALENDAR_ZONES: &[&str] = &["UTC", "Australia/Sydney", "America/New_York"];

fn mailbox_zone(i: usize) -> &'static str {
    MAILBOX_ZONES[i % MAILBOX_ZONES.len()]
}

fn calendar_zone(i: usize) -> &'static str {
    CALENDAR_ZONES[i % CALENDAR_ZONES.len()]
}

/// The kinds of events a real calendar holds, in rough proportion.
#[derive(Clone, Copy, Debug)]
enum Flavour {
    Busy,
    Free,
    AllDay,
    Tentative,
    Declined,
    OutOfOffice,
    WorkingLocation,
    Weekly,
}

const FLAVOURS: &[Flavour] = &[
    Flavour::Busy,
    Flavour::Busy,
    Flavour::Busy,
    Flavour::Busy,
    Flavour::Free,
    Flavour::AllDay,
    Flavour::Tentative,
    Flavour::Declined,
    Flavour::OutOfOffice,
    Flavour::WorkingLocation,
    Flavour::Weekly,
];

impl Scenario {
    pub fn new(cfg: ScenarioConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Scenario {
            cfg,
            rng: Mutex::new(rng),
            known: Mutex::new(Vec::new()),
            accounts: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    fn start(&self) -> DateTime<Utc> {
        self.cfg.start.unwrap_or_else(|| {
            let now = Utc::now();
            Utc.with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
                .single()
                .unwrap_or(now)
        })
    }

    fn pick<T: Copy>(&self, items: &[T]) -> T {
        let i = lock(&self.rng).random_range(0..items.len());
        items[i]
    }

    fn slot(&self) -> (DateTime<Utc>, i64) {
        let mut rng = lock(&self.rng);
        let day = rng.random_range(0..self.cfg.days.max(1));
        let hour = rng.random_range(7..19);
        let minutes = [30, 45, 60, 90][rng.random_range(0..4)];
        (
            self.start() + Duration::days(day) + Duration::hours(hour),
            minutes,
        )
    }

    fn google_event(&self, n: usize) -> Value {
        let flavour = self.pick(FLAVOURS);
        let zone = self.pick(ZONES);
        let (start, minutes) = self.slot();
        let tz = crate::timefmt::resolve_zone(zone).unwrap_or(chrono_tz::UTC);
        let at = |t: DateTime<Utc>| json!({ "dateTime": crate::timefmt::google_datetime_in(tz, t), "timeZone": zone });
        let id = format!(
            "scn{}{:05}",
            lock(&self.rng).random_range(10_000u32..99_999),
            n
        );
        let mut ev = json!({ "id": id, "summary": format!("Event {n}"), "start": at(start), "end": at(start + Duration::minutes(minutes)) });
        match flavour {
            Flavour::Busy => {}
            Flavour::Free => ev["transparency"] = json!("transparent"),
            Flavour::AllDay => {
                let d = start.date_naive();
                ev["start"] = json!({ "date": d.to_string() });
                ev["end"] = json!({ "date": (d + Duration::days(1)).to_string() });
            }
            Flavour::Tentative => ev["status"] = json!("tentative"),
            Flavour::Declined => {
                ev["attendees"] = json!([{ "email": "me@example.com", "self": true, "responseStatus": "declined" }])
            }
            Flavour::OutOfOffice => ev["eventType"] = json!("outOfOffice"),
            Flavour::WorkingLocation => {
                ev["eventType"] = json!("workingLocation");
                ev["transparency"] = json!("transparent");
            }
            Flavour::Weekly => ev["recurrence"] = json!(["RRULE:FREQ=WEEKLY;COUNT=6"]),
        }
        ev
    }

    /// `mailbox_zone`: the mailbox's zone, which Outlook gives all-day
    /// events.
    fn graph_event(&self, n: usize, mailbox_zone: &str) -> Value {
        let flavour = self.pick(FLAVOURS);
        self.graph_event_as(n, mailbox_zone, flavour, false)
    }

    /// `legacy`: an all-day event always gets the legacy custom zone.
    fn graph_event_as(
        &self,
        n: usize,
        mailbox_zone: &str,
        flavour: Flavour,
        legacy: bool,
    ) -> Value {
        let zone = self.pick(ZONES);
        let (start, minutes) = self.slot();
        let tz = crate::timefmt::resolve_zone(zone).unwrap_or(chrono_tz::UTC);
        // Graph clients often send Windows zone names.
        let name = windows_name(zone).unwrap_or(zone);
        let at = |t: DateTime<Utc>| json!({ "dateTime": graph_wall(t.with_timezone(&tz).naive_local()), "timeZone": name });
        let mut ev = json!({ "subject": format!("Meeting {n}"), "start": at(start), "end": at(start + Duration::minutes(minutes)), "showAs": "busy" });
        match flavour {
            Flavour::Busy => {}
            Flavour::Free => ev["showAs"] = json!("free"),
            Flavour::AllDay => {
                // A day off is a date in the owner's zone. Some were made in
                // old desktop Outlook and show a legacy custom zone: clients
                // must read those in the mailbox's zone too.
                let home = crate::timefmt::resolve_zone(mailbox_zone).unwrap_or(chrono_tz::UTC);
                let d = start.with_timezone(&home).date_naive();
                let days = lock(&self.rng).random_range(1..3);
                ev["isAllDay"] = json!(true);
                ev["start"] =
                    json!({ "dateTime": format!("{d}T00:00:00"), "timeZone": mailbox_zone });
                ev["end"] = json!({ "dateTime": format!("{}T00:00:00", d + Duration::days(days)), "timeZone": mailbox_zone });
                if legacy || lock(&self.rng).random_range(0..3) == 0 {
                    ev["originalStartTimeZone"] = json!("tzone://Microsoft/Custom");
                }
            }
            Flavour::Tentative => ev["showAs"] = json!("tentative"),
            Flavour::Declined => {
                ev["responseStatus"] =
                    json!({ "response": "declined", "time": "2026-01-01T00:00:00Z" })
            }
            Flavour::OutOfOffice => ev["showAs"] = json!("oof"),
            Flavour::WorkingLocation => ev["showAs"] = json!("workingElsewhere"),
            Flavour::Weekly => {
                ev["recurrence"] = json!({ "pattern": { "type": "weekly", "interval": 1,
                    "daysOfWeek": [full_day(start.with_timezone(&tz).weekday())] },
                    "range": { "type": "numbered", "numberOfOccurrences": 6, "startDate": start.date_naive().to_string() } });
            }
        }
        ev
    }

    /// Create the accounts and their events.
    pub fn populate(&self, google: &GoogleSim, graph: &GraphSim) -> ScenarioSummary {
        let mut summary = ScenarioSummary {
            google: Vec::new(),
            graph: Vec::new(),
            events_created: 0,
        };
        let mut n = 0;
        for i in 0..self.cfg.google_accounts {
            let email = format!("user{i}@example.com");
            summary
                .google
                .push(google.create_account_in(&email, calendar_zone(i)));
            lock(&self.accounts).0.push(email.clone());
            for _ in 0..self.cfg.events_per_account {
                n += 1;
                if let Ok(ev) = google.upsert_event(&email, "primary", self.google_event(n)) {
                    let id = ev["id"].as_str().unwrap_or_default().to_string();
                    lock(&self.known).push(Known::Google {
                        email: email.clone(),
                        id,
                    });
                    summary.events_created += 1;
                }
            }
        }
        for i in 0..self.cfg.graph_accounts {
            let upn = format!("user{i}@contoso.com");
            summary
                .graph
                .push(graph.create_account_in(&upn, mailbox_zone(i)));
            lock(&self.accounts).1.push(upn.clone());
            for j in 0..self.cfg.events_per_account {
                n += 1;
                // Every mailbox has a day off that only its zone places (a
                // legacy custom `originalStartTimeZone`), which the
                // mutations leave alone so every run has one.
                let standing = j == 0;
                let body = match standing {
                    true => self.graph_event_as(n, mailbox_zone(i), Flavour::AllDay, true),
                    false => self.graph_event(n, mailbox_zone(i)),
                };
                if let Ok(ev) = graph.create_event(&upn, body) {
                    let id = ev["id"].as_str().unwrap_or_default().to_string();
                    if !standing {
                        lock(&self.known).push(Known::Graph {
                            upn: upn.clone(),
                            id,
                        });
                    }
                    summary.events_created += 1;
                }
            }
        }
        summary
    }

    /// One user-like change: create, move or delete an event. Returns a label.
    pub fn mutate_once(&self, google: &GoogleSim, graph: &GraphSim) -> String {
        let (op, pick) = {
            let mut rng = lock(&self.rng);
            (rng.random_range(0..3u8), rng.random_range(0..usize::MAX))
        };
        let known = lock(&self.known).clone();
        if op == 0 || known.is_empty() {
            let accounts = lock(&self.accounts).clone();
            let total = accounts.0.len() + accounts.1.len();
            if total == 0 {
                return "noop".into();
            }
            let k = pick % total;
            let n = 100_000 + known.len();
            if k < accounts.0.len() {
                let email = accounts.0[k].clone();
                if let Ok(ev) = google.upsert_event(&email, "primary", self.google_event(n)) {
                    let id = ev["id"].as_str().unwrap_or_default().to_string();
                    lock(&self.known).push(Known::Google { email, id });
                }
            } else {
                let i = k - accounts.0.len();
                let upn = accounts.1[i].clone();
                if let Ok(ev) = graph.create_event(&upn, self.graph_event(n, mailbox_zone(i))) {
                    let id = ev["id"].as_str().unwrap_or_default().to_string();
                    lock(&self.known).push(Known::Graph { upn, id });
                }
            }
            return "create".into();
        }
        let target = known[pick % known.len()].clone();
        let (start, minutes) = self.slot();
        match (op, target) {
            (1, Known::Google { email, id }) => {
                let t = |d: DateTime<Utc>| json!({ "dateTime": d.to_rfc3339() });
                let _ = google.patch_event(
                    &email,
                    "primary",
                    &id,
                    json!({ "start": t(start), "end": t(start + Duration::minutes(minutes)) }),
                );
                "move".into()
            }
            (1, Known::Graph { upn, id }) => {
                let t = |d: DateTime<Utc>| json!({ "dateTime": graph_wall(d.naive_utc()), "timeZone": "UTC" });
                let _ = graph.update_event(&upn, &id, json!({ "start": t(start), "end": t(start + Duration::minutes(minutes)), "isAllDay": false }));
                "move".into()
            }
            (_, Known::Google { email, id }) => {
                let _ = google.delete_event(&email, "primary", &id);
                "delete".into()
            }
            (_, Known::Graph { upn, id }) => {
                let _ = graph.delete_event(&upn, &id);
                "delete".into()
            }
        }
    }

    /// Apply `count` mutations at `mutations_per_second`.
    pub async fn run(&self, google: &GoogleSim, graph: &GraphSim, count: usize) -> Vec<String> {
        let pause =
            std::time::Duration::from_secs_f64(1.0 / self.cfg.mutations_per_second.max(0.001));
        let mut labels = Vec::with_capacity(count);
        for _ in 0..count {
            labels.push(self.mutate_once(google, graph));
            tokio::time::sleep(pause).await;
        }
        labels
    }
}

fn full_day(d: chrono::Weekday) -> &'static str {
    match d {
        chrono::Weekday::Mon => "monday",
        chrono::Weekday::Tue => "tuesday",
        chrono::Weekday::Wed => "wednesday",
        chrono::Weekday::Thu => "thursday",
        chrono::Weekday::Fri => "friday",
        chrono::Weekday::Sat => "saturday",
        chrono::Weekday::Sun => "sunday",
    }
}
