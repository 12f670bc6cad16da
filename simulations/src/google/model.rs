//! Google Calendar state: accounts, calendars, events (with tombstones and
//! recurring-series exceptions), OAuth grants and watch channels.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use crate::auth::TokenStore;
use crate::error::{ApiError, ApiResult};
use crate::google::push::Channel;
use crate::rrule::Recurrence;
use crate::timefmt::{
    google_datetime_in, google_instant, local_to_utc, parse_date, parse_rfc3339, parse_wall,
    resolve_zone,
};

#[derive(Default)]
pub struct GoogleState {
    pub accounts: BTreeMap<String, GAccount>,
    pub calendars: BTreeMap<String, GCalendar>,
    pub tokens: TokenStore,
    pub channels: BTreeMap<String, Channel>,
    /// Registered apps, the consent switch and issued codes.
    pub code_flow: crate::code_flow::CodeFlow,
    /// Global change counter: every mutation gets the next value.
    pub seq: u64,
}

#[derive(Clone, Debug)]
pub struct GAccount {
    pub email: String,
    pub client_id: String,
    pub client_secret: String,
    pub calendars: Vec<String>,
}

pub struct GCalendar {
    pub id: String,
    pub owner: String,
    pub summary: String,
    pub time_zone: String,
    pub events: BTreeMap<String, GEvent>,
    /// Bumped to invalidate every sync token of this calendar (→ 410).
    pub token_generation: u64,
    /// Version-independent id of the events collection (`X-Goog-Resource-ID`).
    pub resource_id: String,
    pub updated: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct GEvent {
    pub id: String,
    /// The resource as the client wrote it, minus server-owned fields.
    pub body: Value,
    pub seq: u64,
    pub deleted: bool,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub sequence: i64,
    /// A tombstone made because a series edit removed this instance; it is
    /// dropped again if a later edit brings the instance back.
    pub vanished: bool,
}

/// A start or end: all-day date, or an instant with the zone to render it in.
#[derive(Clone, Debug, PartialEq)]
pub enum GTime {
    Date(NaiveDate),
    At {
        utc: DateTime<Utc>,
        tz: Tz,
        tz_name: Option<String>,
    },
}

impl GTime {
    /// Instant for comparisons; dates are midnight in the calendar's zone.
    pub fn instant(&self, cal_tz: Tz) -> DateTime<Utc> {
        match self {
            GTime::Date(d) => local_to_utc(cal_tz, d.and_hms_opt(0, 0, 0).unwrap_or_default()),
            GTime::At { utc, .. } => *utc,
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            GTime::Date(d) => json!({ "date": d.format("%Y-%m-%d").to_string() }),
            GTime::At { utc, tz, tz_name } => {
                let mut m = Map::new();
                m.insert("dateTime".into(), json!(google_datetime_in(*tz, *utc)));
                if let Some(n) = tz_name {
                    m.insert("timeZone".into(), json!(n));
                }
                Value::Object(m)
            }
        }
    }

    /// Instance-id suffix: `20261002T130000Z` or `20261002`.
    pub fn stamp(&self) -> String {
        match self {
            GTime::Date(d) => d.format("%Y%m%d").to_string(),
            GTime::At { utc, .. } => utc.format("%Y%m%dT%H%M%SZ").to_string(),
        }
    }
}

pub fn parse_gtime(v: &Value, field: &str, cal_tz: Tz) -> ApiResult<GTime> {
    let invalid = |m: &str| ApiError::new(400, "invalid", m.to_string());
    if v.is_null() {
        return Err(ApiError::new(
            400,
            "required",
            format!("Missing {field} time."),
        ));
    }
    if let Some(d) = v["date"].as_str() {
        return parse_date(d)
            .map(GTime::Date)
            .ok_or_else(|| invalid(&format!("Invalid {field} date.")));
    }
    let dt = v["dateTime"]
        .as_str()
        .ok_or_else(|| ApiError::new(400, "required", format!("Missing {field} time.")))?;
    let tz_name = v["timeZone"].as_str().map(str::to_string);
    let tz = match &tz_name {
        Some(n) => resolve_zone(n)
            .ok_or_else(|| invalid(&format!("Invalid time zone definition for {field} time.")))?,
        None => cal_tz,
    };
    if let Some(utc) = parse_rfc3339(dt) {
        return Ok(GTime::At { utc, tz, tz_name });
    }
    match (parse_wall(dt), &tz_name) {
        (Some(n), Some(_)) => Ok(GTime::At {
            utc: local_to_utc(tz, n),
            tz,
            tz_name,
        }),
        (Some(_), None) => Err(ApiError::new(
            400,
            "timeZoneDefinitionMissing",
            format!("Missing time zone definition for {field} time."),
        )),
        _ => Err(invalid(&format!("Invalid {field} time."))),
    }
}

/// Busy-relevant view of one listed item (an event, exception or instance).
#[derive(Clone, Debug)]
pub struct Row {
    pub id: String,
    pub seq: u64,
    pub deleted: bool,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub updated: DateTime<Utc>,
    /// Full rendering (used when not deleted or when a full body is wanted).
    pub item: Value,
    /// Tombstone rendering used in lists.
    pub tombstone: Value,
}

impl GCalendar {
    pub fn tz(&self) -> Tz {
        resolve_zone(&self.time_zone).unwrap_or(Tz::UTC)
    }

    pub fn etag(&self, seq: u64, updated: DateTime<Utc>) -> String {
        format!("\"{}{:03}\"", updated.timestamp_millis(), seq % 1000)
    }

    /// Full rendering of a stored event, as `events.get` returns it.
    pub fn render(&self, ev: &GEvent) -> Value {
        let mut m = match &ev.body {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        m.insert("kind".into(), json!("calendar#event"));
        m.insert("etag".into(), json!(self.etag(ev.seq, ev.updated)));
        m.insert("id".into(), json!(ev.id));
        let status = if ev.deleted {
            "cancelled".to_string()
        } else {
            m.get("status")
                .and_then(Value::as_str)
                .unwrap_or("confirmed")
                .to_string()
        };
        m.insert("status".into(), json!(status));
        m.insert(
            "htmlLink".into(),
            json!(format!(
                "https://calendar.google.com/calendar/event?eid={}",
                ev.id
            )),
        );
        m.insert("created".into(), json!(google_instant(ev.created)));
        m.insert("updated".into(), json!(google_instant(ev.updated)));
        m.entry("summary").or_insert(json!(""));
        let me = json!({ "email": self.owner, "self": true });
        m.entry("creator").or_insert(me.clone());
        m.entry("organizer").or_insert(me);
        let base_id = m
            .get("recurringEventId")
            .and_then(Value::as_str)
            .unwrap_or(&ev.id)
            .to_string();
        m.entry("iCalUID")
            .or_insert(json!(format!("{base_id}@google.com")));
        m.insert("sequence".into(), json!(ev.sequence));
        // Google answers date-times as RFC 3339 with the offset of the event's
        // zone (or the calendar's), whatever form the client wrote them in.
        for key in ["start", "end", "originalStartTime"] {
            if let Some(v) = m.get(key) {
                if let Ok(t @ GTime::At { .. }) = parse_gtime(v, key, self.tz()) {
                    m.insert(key.into(), t.to_json());
                }
            }
        }
        m.entry("reminders")
            .or_insert(json!({ "useDefault": true }));
        m.entry("eventType").or_insert(json!("default"));
        Value::Object(m)
    }

    /// List rendering of a deleted event: only `id` and `status`, except
    /// cancelled instances of a live series, which keep their series link.
    pub fn tombstone(&self, ev: &GEvent) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(ev.id));
        m.insert("status".into(), json!("cancelled"));
        for k in ["recurringEventId", "originalStartTime"] {
            if let Some(v) = ev.body.get(k) {
                m.insert(k.into(), v.clone());
            }
        }
        Value::Object(m)
    }

    pub fn is_master(ev: &GEvent) -> bool {
        ev.body["recurrence"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    }

    /// Instances of a recurring master: (instance id, original start, start, end).
    pub fn instances(
        &self,
        ev: &GEvent,
        horizon: DateTime<Utc>,
    ) -> ApiResult<Vec<(String, GTime, GTime, GTime)>> {
        let cal_tz = self.tz();
        let start = parse_gtime(&ev.body["start"], "start", cal_tz)?;
        let end = parse_gtime(&ev.body["end"], "end", cal_tz)?;
        let lines: Vec<String> = ev.body["recurrence"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        match (&start, &end) {
            (GTime::Date(sd), GTime::Date(ed)) => {
                let rule = Recurrence::parse_google(&lines, Tz::UTC)
                    .map_err(|m| ApiError::new(400, "invalid", m))?;
                let len = *ed - *sd;
                for n in rule.expand(
                    sd.and_hms_opt(0, 0, 0).unwrap_or_default(),
                    Tz::UTC,
                    horizon,
                    5000,
                ) {
                    let s = GTime::Date(n.date());
                    out.push((
                        format!("{}_{}", ev.id, s.stamp()),
                        s.clone(),
                        s,
                        GTime::Date(n.date() + len),
                    ));
                }
            }
            (GTime::At { utc, tz, tz_name }, e) => {
                let rule = Recurrence::parse_google(&lines, *tz)
                    .map_err(|m| ApiError::new(400, "invalid", m))?;
                let len = e.instant(cal_tz) - *utc;
                let local = utc.with_timezone(tz).naive_local();
                for n in rule.expand(local, *tz, horizon, 5000) {
                    let at = local_to_utc(*tz, n);
                    let s = GTime::At {
                        utc: at,
                        tz: *tz,
                        tz_name: tz_name.clone(),
                    };
                    let e = GTime::At {
                        utc: at + len,
                        tz: *tz,
                        tz_name: tz_name.clone(),
                    };
                    out.push((format!("{}_{}", ev.id, s.stamp()), s.clone(), s, e));
                }
            }
            _ => {
                return Err(ApiError::new(
                    400,
                    "invalid",
                    "Start and end must both be dates or both be date-times.",
                ))
            }
        }
        Ok(out)
    }

    /// Synthesised instance of a master (not stored until modified).
    pub fn instance_event(
        &self,
        master: &GEvent,
        id: &str,
        orig: &GTime,
        start: &GTime,
        end: &GTime,
    ) -> GEvent {
        let mut body = master.body.clone();
        if let Value::Object(m) = &mut body {
            m.remove("recurrence");
            m.insert("recurringEventId".into(), json!(master.id));
            m.insert("originalStartTime".into(), orig.to_json());
            m.insert("start".into(), start.to_json());
            m.insert("end".into(), end.to_json());
        }
        GEvent {
            id: id.to_string(),
            body,
            seq: master.seq,
            deleted: master.deleted,
            created: master.created,
            updated: master.updated,
            sequence: master.sequence,
            vanished: false,
        }
    }

    /// Look up a synthesised instance by `<masterId>_<stamp>`.
    pub fn find_instance(&self, id: &str, horizon: DateTime<Utc>) -> Option<GEvent> {
        let (master_id, _) = id.rsplit_once('_')?;
        let master = self.events.get(master_id)?;
        if !Self::is_master(master) {
            return None;
        }
        let insts = self.instances(master, horizon).ok()?;
        insts
            .iter()
            .find(|(iid, ..)| iid == id)
            .map(|(iid, o, s, e)| self.instance_event(master, iid, o, s, e))
    }

    fn row(&self, ev: &GEvent) -> Row {
        let tz = self.tz();
        let start = parse_gtime(&ev.body["start"], "start", tz)
            .ok()
            .map(|t| t.instant(tz));
        let end = parse_gtime(&ev.body["end"], "end", tz)
            .ok()
            .map(|t| t.instant(tz));
        Row {
            id: ev.id.clone(),
            seq: ev.seq,
            deleted: ev.deleted || ev.body["status"] == "cancelled",
            start,
            end: if Self::is_master(ev) { None } else { end },
            updated: ev.updated,
            item: self.render(ev),
            tombstone: self.tombstone(ev),
        }
    }

    /// Everything `events.list` could return, before filtering. With
    /// `single_events`, masters are replaced by their instances, except
    /// instances overridden by a stored exception.
    pub fn rows(&self, single_events: bool, horizon: DateTime<Utc>) -> Vec<Row> {
        self.rows_changed_after(single_events, horizon, None)
    }

    /// [`rows`](Self::rows) of the events changed after `since` only (an
    /// instance carries its master's `seq`), so an incremental listing
    /// renders what changed instead of the whole calendar.
    pub fn rows_changed_after(
        &self,
        single_events: bool,
        horizon: DateTime<Utc>,
        since: Option<u64>,
    ) -> Vec<Row> {
        let mut rows = Vec::new();
        for ev in self.events.values() {
            if since.is_some_and(|s| ev.seq <= s) {
                continue;
            }
            if single_events && Self::is_master(ev) {
                let Ok(insts) = self.instances(ev, horizon) else {
                    continue;
                };
                for (iid, o, s, e) in insts {
                    if self.events.contains_key(&iid) {
                        continue;
                    }
                    let inst = self.instance_event(ev, &iid, &o, &s, &e);
                    rows.push(self.row(&inst));
                }
            } else {
                rows.push(self.row(ev));
            }
        }
        rows
    }
}

impl GoogleState {
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Resolve `primary` / a calendar id the account may use.
    pub fn calendar_id(&self, account: &str, cal: &str) -> ApiResult<String> {
        let id = if cal == "primary" {
            account.to_lowercase()
        } else {
            cal.to_string()
        };
        match self.calendars.get(&id) {
            Some(c) if c.owner.eq_ignore_ascii_case(account) => Ok(id),
            _ => Err(ApiError::new(404, "notFound", "Not Found")),
        }
    }

    pub fn calendar(&self, id: &str) -> ApiResult<&GCalendar> {
        self.calendars
            .get(id)
            .ok_or_else(|| ApiError::new(404, "notFound", "Not Found"))
    }

    pub fn calendar_mut(&mut self, id: &str) -> ApiResult<&mut GCalendar> {
        self.calendars
            .get_mut(id)
            .ok_or_else(|| ApiError::new(404, "notFound", "Not Found"))
    }
}

pub fn horizon(now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    now + Duration::days(days)
}
