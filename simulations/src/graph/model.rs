//! Graph (Outlook) state: mailboxes, calendars, events (series masters,
//! exceptions, tombstones), OAuth grants and subscriptions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use crate::auth::TokenStore;
use crate::error::{ApiError, ApiResult};
use crate::graph::subscriptions::Subscription;
use crate::rrule::Recurrence;
use crate::timefmt::{
    graph_instant, graph_wall, local_to_utc, parse_rfc3339, parse_wall, resolve_zone,
};

#[derive(Default)]
pub struct GraphState {
    pub accounts: BTreeMap<String, MAccount>,
    pub tokens: TokenStore,
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Registered apps, the consent switch and issued codes.
    pub code_flow: crate::code_flow::CodeFlow,
    /// Global change counter.
    pub seq: u64,
}

pub struct MAccount {
    pub upn: String,
    pub user_id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub calendars: Vec<MCalendar>,
    pub events: BTreeMap<String, MEvent>,
    /// Bumped to invalidate delta tokens (→ 410 `SyncStateNotFound`).
    pub delta_generation: u64,
    /// The mailbox's zone as `mailboxSettings.timeZone` reports it (Windows
    /// or IANA name, stored as given; default `UTC`).
    pub time_zone: String,
}

#[derive(Clone, Debug)]
pub struct MCalendar {
    pub id: String,
    pub name: String,
    pub is_default: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SingleInstance,
    SeriesMaster,
    Occurrence,
    Exception,
}

impl Kind {
    pub fn wire(self) -> &'static str {
        match self {
            Kind::SingleInstance => "singleInstance",
            Kind::SeriesMaster => "seriesMaster",
            Kind::Occurrence => "occurrence",
            Kind::Exception => "exception",
        }
    }
}

#[derive(Clone, Debug)]
pub struct MEvent {
    pub id: String,
    pub calendar_id: String,
    /// Client-written fields (subject, showAs, recurrence, ...).
    pub body: Value,
    pub kind: Kind,
    pub series_master_id: Option<String>,
    pub start_wall: NaiveDateTime,
    pub end_wall: NaiveDateTime,
    pub zone: Tz,
    /// Zone name the client used (`originalStartTimeZone`).
    pub zone_name: String,
    /// What `originalStartTimeZone` / `originalEndTimeZone` show instead of
    /// `zone_name`: a legacy custom zone (`tzone://Microsoft/Custom`) or
    /// `null`, as desktop Outlook leaves behind. Only the control API sets
    /// it; a later change of the event's times clears it.
    pub legacy_zone: Option<Value>,
    pub all_day: bool,
    pub seq: u64,
    pub deleted: bool,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub change_key: String,
    pub ical_uid: String,
    /// A deleted occurrence made because a series edit removed it; dropped
    /// again if a later edit brings the occurrence back.
    pub vanished: bool,
}

/// Zone the response renders times in (`Prefer: outlook.timezone`).
#[derive(Clone, Debug)]
pub struct OutZone {
    pub name: String,
    pub tz: Tz,
}

impl OutZone {
    pub fn utc() -> Self {
        OutZone {
            name: "UTC".into(),
            tz: Tz::UTC,
        }
    }

    /// From the `Prefer` headers; unknown zones fall back to UTC.
    pub fn from_prefer(prefer: &[String]) -> Self {
        for p in prefer {
            for part in p.split(',') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("outlook.timezone=") {
                    let name = v.trim_matches('"').to_string();
                    if let Some(tz) = resolve_zone(&name) {
                        return OutZone { name, tz };
                    }
                }
            }
        }
        OutZone::utc()
    }
}

pub fn prefer_value(prefer: &[String], key: &str) -> Option<String> {
    prefer.iter().flat_map(|p| p.split(',')).find_map(|part| {
        part.trim()
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
    })
}

impl MEvent {
    pub fn start_utc(&self) -> DateTime<Utc> {
        local_to_utc(self.zone, self.start_wall)
    }

    pub fn end_utc(&self) -> DateTime<Utc> {
        local_to_utc(self.zone, self.end_wall)
    }

    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.change_key)
    }

    fn wall_in(&self, wall: NaiveDateTime, out: &OutZone) -> Value {
        // All-day events are floating dates: midnight in whatever zone the
        // request asked for, labelled with that zone, never converted (the
        // event's zone stays in `originalStartTimeZone`). Microsoft Q&A
        // threads observe this of the real service; see README.md.
        let shown = if self.all_day {
            wall
        } else {
            local_to_utc(self.zone, wall)
                .with_timezone(&out.tz)
                .naive_local()
        };
        json!({ "dateTime": graph_wall(shown), "timeZone": out.name })
    }

    /// The event as Graph returns it (`$select` is not applied).
    pub fn render(&self, owner: &str, out: &OutZone) -> Value {
        let mut m = Map::new();
        m.insert("@odata.etag".into(), json!(self.etag()));
        m.insert("id".into(), json!(self.id));
        m.insert("createdDateTime".into(), json!(graph_instant(self.created)));
        m.insert(
            "lastModifiedDateTime".into(),
            json!(graph_instant(self.modified)),
        );
        m.insert("changeKey".into(), json!(self.change_key));
        m.insert("categories".into(), json!([]));
        m.insert(
            "transactionId".into(),
            self.body
                .get("transactionId")
                .cloned()
                .unwrap_or(Value::Null),
        );
        let original = self
            .legacy_zone
            .clone()
            .unwrap_or_else(|| json!(self.zone_name));
        m.insert("originalStartTimeZone".into(), original.clone());
        m.insert("originalEndTimeZone".into(), original);
        m.insert("iCalUId".into(), json!(self.ical_uid));
        m.insert("reminderMinutesBeforeStart".into(), json!(15));
        m.insert("isReminderOn".into(), json!(true));
        m.insert("hasAttachments".into(), json!(false));
        m.insert("subject".into(), json!(""));
        m.insert("bodyPreview".into(), json!(""));
        m.insert("importance".into(), json!("normal"));
        m.insert("sensitivity".into(), json!("normal"));
        m.insert("isCancelled".into(), json!(false));
        m.insert("isOrganizer".into(), json!(true));
        m.insert("responseRequested".into(), json!(true));
        m.insert("showAs".into(), json!("busy"));
        m.insert(
            "webLink".into(),
            json!(format!(
                "https://outlook.office365.com/owa/?itemid={}&exvsurl=1&path=/calendar/item",
                self.id
            )),
        );
        m.insert("onlineMeetingUrl".into(), Value::Null);
        m.insert("isOnlineMeeting".into(), json!(false));
        m.insert("isDraft".into(), json!(false));
        m.insert(
            "responseStatus".into(),
            json!({ "response": "organizer", "time": "0001-01-01T00:00:00Z" }),
        );
        m.insert(
            "body".into(),
            json!({ "contentType": "html", "content": "" }),
        );
        m.insert(
            "location".into(),
            json!({ "displayName": "", "locationType": "default" }),
        );
        m.insert("locations".into(), json!([]));
        m.insert("recurrence".into(), Value::Null);
        m.insert("attendees".into(), json!([]));
        m.insert(
            "organizer".into(),
            json!({ "emailAddress": { "name": owner, "address": owner } }),
        );
        if let Value::Object(b) = &self.body {
            for (k, v) in b {
                if !matches!(
                    k.as_str(),
                    "start"
                        | "end"
                        | "singleValueExtendedProperties"
                        | "id"
                        | "@odata.etag"
                        | "changeKey"
                ) {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        m.insert("isAllDay".into(), json!(self.all_day));
        m.insert("type".into(), json!(self.kind.wire()));
        m.insert("seriesMasterId".into(), json!(self.series_master_id));
        m.insert("start".into(), self.wall_in(self.start_wall, out));
        m.insert("end".into(), self.wall_in(self.end_wall, out));
        if self.kind != Kind::SeriesMaster {
            m.insert("recurrence".into(), Value::Null);
        }
        if let Some(Value::String(preview)) = self.body.get("body").and_then(|b| b.get("content")) {
            m.insert(
                "bodyPreview".into(),
                json!(preview.chars().take(255).collect::<String>()),
            );
        }
        Value::Object(m)
    }

    /// Extended properties to show for `$expand=singleValueExtendedProperties($filter=id eq '...')`.
    pub fn extended_properties(&self, id_filter: Option<&str>) -> Vec<Value> {
        self.body["singleValueExtendedProperties"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| {
                        id_filter.is_none_or(|f| {
                            p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(f))
                        })
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn has_extended_property(&self, id: &str, value: &str) -> bool {
        self.extended_properties(Some(id))
            .iter()
            .any(|p| p["value"] == value)
    }

    pub fn recurrence(&self) -> Option<Recurrence> {
        let r = self.body.get("recurrence")?;
        if r.is_null() {
            return None;
        }
        Recurrence::from_graph(r).ok()
    }
}

/// Parse a Graph `dateTimeTimeZone` input.
pub fn parse_dttz(v: &Value, field: &str) -> ApiResult<(NaiveDateTime, Tz, String)> {
    let raw = v["dateTime"].as_str().ok_or_else(|| {
        ApiError::new(
            400,
            "ErrorInvalidRequest",
            format!("The {field} property is required."),
        )
    })?;
    let zone_name = v["timeZone"].as_str().unwrap_or("UTC").to_string();
    let tz = resolve_zone(&zone_name).ok_or_else(|| {
        ApiError::new(400, "TimeZoneNotSupportedException", format!("A valid TimeZone value must be specified. The following TimeZone value is not supported: '{zone_name}'."))
    })?;
    if let Some(instant) = parse_rfc3339(raw).filter(|_| raw.contains('+') || raw.ends_with('Z')) {
        return Ok((instant.with_timezone(&tz).naive_local(), tz, zone_name));
    }
    let wall = parse_wall(raw).ok_or_else(|| {
        ApiError::new(
            400,
            "ErrorInvalidRequest",
            format!("Cannot convert the literal '{raw}' to the expected type 'Edm.DateTime'."),
        )
    })?;
    Ok((wall, tz, zone_name))
}

/// Occurrence ids are opaque: prefix + base64url(master id | start stamp).
pub fn occurrence_id(master_id: &str, start: DateTime<Utc>) -> String {
    let raw = format!("{master_id}|{}", start.format("%Y%m%dT%H%M%SZ"));
    format!("AAMkOC{}", URL_SAFE_NO_PAD.encode(raw))
}

pub fn parse_occurrence_id(id: &str) -> Option<(String, DateTime<Utc>)> {
    let rest = id.strip_prefix("AAMkOC")?;
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(rest).ok()?).ok()?;
    let (master, stamp) = raw.split_once('|')?;
    let t = NaiveDateTime::parse_from_str(stamp.trim_end_matches('Z'), "%Y%m%dT%H%M%S").ok()?;
    Some((master.to_string(), t.and_utc()))
}

impl MAccount {
    pub fn default_calendar(&self) -> String {
        self.calendars
            .iter()
            .find(|c| c.is_default)
            .map(|c| c.id.clone())
            .unwrap_or_default()
    }

    /// Occurrences of a master up to `horizon`, as synthesised events.
    pub fn occurrences(&self, master: &MEvent, horizon: DateTime<Utc>) -> Vec<MEvent> {
        let Some(rule) = master.recurrence() else {
            return Vec::new();
        };
        let len = master.end_wall - master.start_wall;
        let tz = if master.all_day { Tz::UTC } else { master.zone };
        rule.expand(master.start_wall, tz, horizon, 5000)
            .into_iter()
            .map(|wall| {
                let start = local_to_utc(master.zone, wall);
                let mut body = master.body.clone();
                if let Value::Object(m) = &mut body {
                    m.remove("recurrence");
                }
                MEvent {
                    id: occurrence_id(&master.id, start),
                    kind: Kind::Occurrence,
                    series_master_id: Some(master.id.clone()),
                    start_wall: wall,
                    end_wall: wall + len,
                    body,
                    ical_uid: format!("{}{}", master.ical_uid, start.format("%Y%m%d")),
                    ..master.clone()
                }
            })
            .collect()
    }

    /// Items `calendarView` / delta can show: singles, occurrences and
    /// exceptions (never masters), including removed ones.
    pub fn view_items(&self, calendar: Option<&str>, horizon: DateTime<Utc>) -> Vec<MEvent> {
        self.view_items_changed_after(calendar, horizon, None)
    }

    /// [`view_items`](Self::view_items) changed after `since` only (an
    /// occurrence carries its master's `seq`), so a delta round copies
    /// what changed instead of the whole mailbox.
    pub fn view_items_changed_after(
        &self,
        calendar: Option<&str>,
        horizon: DateTime<Utc>,
        since: Option<u64>,
    ) -> Vec<MEvent> {
        let mut out = Vec::new();
        for ev in self.events.values() {
            if calendar.is_some_and(|c| c != ev.calendar_id) || since.is_some_and(|s| ev.seq <= s) {
                continue;
            }
            match ev.kind {
                Kind::SeriesMaster => {
                    for occ in self.occurrences(ev, horizon) {
                        if !self.events.contains_key(&occ.id) {
                            out.push(occ);
                        }
                    }
                }
                _ => out.push(ev.clone()),
            }
        }
        out
    }

    /// Find a stored event or a synthesised occurrence.
    pub fn find(&self, id: &str, horizon: DateTime<Utc>) -> Option<MEvent> {
        if let Some(ev) = self.events.get(id) {
            return Some(ev.clone());
        }
        let (master_id, _) = parse_occurrence_id(id)?;
        let master = self.events.get(&master_id)?;
        self.occurrences(master, horizon)
            .into_iter()
            .find(|o| o.id == id)
    }
}

pub fn not_found() -> ApiError {
    ApiError::new(
        404,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}
