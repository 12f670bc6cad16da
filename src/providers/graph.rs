//! Microsoft Graph (Outlook calendar) client (`shared/PROVIDERS.md` §1–3,
//! §5–7).
//!
//! - Sync: `calendarView/delta` over the window; `@odata.nextLink` is
//!   followed as-is ([`PageNext::More`] holds the whole URL) and the whole
//!   `@odata.deltaLink` is the cursor; parameters are never re-sent with a
//!   link. Every call carries `Prefer: outlook.timezone="UTC"` and
//!   `Prefer: IdType="ImmutableId"`.
//! - The mailbox's zone: Graph renders all-day events as floating midnights
//!   labelled with the requested zone (UTC), so the busy rules read their
//!   dates in `originalStartTimeZone`, or, when that is a legacy custom
//!   zone or missing, in the mailbox's zone. Every [`ChangesPage`] carries
//!   that zone in `calendar_zone`. It is read with `GET /me/mailboxSettings`
//!   on the first page of every full round (from the window: first sync,
//!   resync, the daily re-base), and on an incremental round's first page
//!   only when the account's last read is older than
//!   [`MAILBOX_ZONE_MAX_AGE`] (`MailboxZones`, per account, on the client's
//!   clock); the round's later pages get it through the `@odata.nextLink`
//!   they are fetched with (`RoundZones`). So an idle mailbox polled every
//!   15 minutes costs one settings read an hour, not one per poll (which
//!   doubled Graph's calls), and a zone changed in Outlook is seen within
//!   the hour. Later pages whose link the client no longer knows (another
//!   process, an evicted entry) read it again. A mailbox whose settings cannot be read (403 without the
//!   `MailboxSettings.Read` permission, 404, any other refusal) has no zone
//!   (all-day events without their own then fall back to UTC, and a
//!   warning is logged); a transient failure fails the page like the delta
//!   call itself would, so an outage never turns into a UTC reading.
//!   Events already synced keep the zone they were read with: a mailbox
//!   zone changed later re-places their days only when they change or at
//!   the next full round.
//! - Writes: before creating, the event is searched by its extended
//!   property; the create itself carries `transactionId =`
//!   [`booking_tag`]`(booking, generation)`, which is also how inbound sync
//!   recognises the event (delta cannot return extended properties). The
//!   extended property [`GRAPH_BOOKING_PROPERTY_ID`] holds the plain booking
//!   id, as `core::busy::graph_busy` reads it.
//! - Subscriptions: `clientState` is `"{channel_id}:{secret}"`
//!   ([`client_state`], [`split_client_state`]).
//! - Errors: [`classify`] is the one place mapping a refusal to a
//!   [`ProviderError`]; codes compare case-insensitively.

use chrono::{DateTime, NaiveDateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::google::{assemble_free_busy, chunks};
use super::oauth::TokenEndpoint;
use super::transport::{parse_retry_after, pct, pct_segment, with_query, Api, Call};
use super::{
    AuthSession, CalendarApi, ChangesPage, Channel, ChannelRequest, ExternalChange, OutboundEvent,
    PageNext, ProviderEndpoints, ProviderError, SyncCursor, SyncPosition, SyncWindow, WrittenEvent,
};
use crate::core::busy::{booking_tag, GRAPH_BOOKING_PROPERTY_ID};
use crate::core::ids::{CalendarId, CalendarProvider};
use crate::core::interval::Interval;
use crate::core::tz::{local_to_utc, resolve_zone};
use crate::core::wire::{GraphDeltaPage, GraphEvent, Lenient};

/// Default `Prefer: odata.maxpagesize` of delta rounds.
pub const PAGE_SIZE: u32 = 100;
/// Longest `getSchedule` range per call (Graph: must be < 62 days).
pub const FREE_BUSY_MAX_DAYS: i64 = 60;
/// Most schedules per `getSchedule` call.
pub const FREE_BUSY_MAX_SCHEDULES: usize = 20;
/// The calendar id that means "the mailbox's default calendar".
pub const PRIMARY: &str = "primary";

const PREFER_UTC: &str = "outlook.timezone=\"UTC\"";
const PREFER_IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";

/// `clientState` of a subscription: our channel id and the channel secret.
pub fn client_state(channel_id: &str, secret: &str) -> String {
    format!("{channel_id}:{secret}")
}

/// The (channel id, secret) of a [`client_state`] value.
pub fn split_client_state(value: &str) -> Option<(&str, &str)> {
    value.split_once(':')
}

/// Microsoft Graph v1.0 over HTTP.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: super::transport::HttpPort,
    api_base: String,
    token: TokenEndpoint,
    page_size: u32,
    /// What time it is for token expiry (the simulation's clock in tests).
    clock: std::sync::Arc<dyn crate::ports::Clock>,
    round_zones: Arc<RoundZones>,
    mailbox_zones: Arc<MailboxZones>,
}

/// How long an incremental round may use the mailbox zone read earlier
/// for the same account (a full round always reads it again).
pub const MAILBOX_ZONE_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The mailbox zone last read per account, keyed by a digest of the grant
/// (client id and refresh token: the client knows no account id, and a
/// rotated refresh token only costs one read more). Bounded: when full,
/// entries older than [`MAILBOX_ZONE_MAX_AGE`] go first, then all.
#[derive(Debug, Default)]
struct MailboxZones {
    by_grant: Mutex<HashMap<GrantDigest, ZoneRead>>,
}

/// SHA-256 of a grant's client id and refresh token.
type GrantDigest = [u8; 32];
/// A mailbox zone (`None`: unreadable) and when it was read.
type ZoneRead = (Option<String>, DateTime<Utc>);

impl MailboxZones {
    const CAPACITY: usize = 100_000;

    fn key(session: &AuthSession) -> GrantDigest {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(session.client_id.as_bytes());
        hash.update([0]);
        hash.update(session.refresh_token.as_bytes());
        hash.finalize().into()
    }

    fn fresh(&self, session: &AuthSession, now: DateTime<Utc>) -> Option<Option<String>> {
        let map = self.by_grant.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&Self::key(session))
            .filter(|(_, at)| now - *at < MAILBOX_ZONE_MAX_AGE && *at <= now)
            .map(|(zone, _)| zone.clone())
    }

    fn keep(&self, session: &AuthSession, zone: Option<String>, now: DateTime<Utc>) {
        let mut map = self.by_grant.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::CAPACITY {
            map.retain(|_, (_, at)| now - *at < MAILBOX_ZONE_MAX_AGE);
            if map.len() >= Self::CAPACITY {
                map.clear();
            }
        }
        map.insert(Self::key(session), (zone, now));
    }
}

/// Rounds of delta in progress with more pages to come: the mailbox zone
/// read on their first page, keyed by the `@odata.nextLink` of the page to
/// fetch next. A link is unique to its round and used once, so an entry is
/// taken when its page is fetched; rounds abandoned midway (an error, a
/// crash) leave entries that age out.
#[derive(Debug, Default)]
struct RoundZones {
    by_next_link: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl RoundZones {
    /// Entries kept at most; beyond, abandoned ones are dropped first.
    const CAPACITY: usize = 10_000;
    /// A round's next page is fetched within seconds; older entries belong
    /// to abandoned rounds.
    const ABANDONED_AFTER: Duration = Duration::from_secs(600);

    fn take(&self, next_link: &str) -> Option<Option<String>> {
        let mut map = self.by_next_link.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(next_link).map(|(zone, _)| zone)
    }

    fn keep(&self, next_link: &str, zone: Option<String>) {
        let mut map = self.by_next_link.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::CAPACITY {
            map.retain(|_, (_, at)| at.elapsed() < Self::ABANDONED_AFTER);
            if map.len() >= Self::CAPACITY {
                // Only costs the rounds in flight one more settings read.
                map.clear();
            }
        }
        map.insert(next_link.to_owned(), (zone, Instant::now()));
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MailboxSettings {
    #[serde(default)]
    time_zone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct InnerError {
    #[serde(default)]
    code: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorDetail {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, alias = "innererror")]
    inner_error: Option<InnerError>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorDetail>,
}

/// Maps a Graph refusal (status, headers, body) to what the caller must do
/// (`shared/PROVIDERS.md` §2, §6). Codes (`error.code`, then
/// `innerError.code`) are compared case-insensitively.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let detail = parsed.error.unwrap_or_default();
    let code = detail.code.clone().unwrap_or_default();
    let inner = detail.inner_error.and_then(|i| i.code).unwrap_or_default();
    let is = |c: &str| code.eq_ignore_ascii_case(c) || inner.eq_ignore_ascii_case(c);
    let message = match (&detail.message, code.is_empty()) {
        (Some(m), false) => format!("{code}: {m}"),
        (Some(m), true) => m.clone(),
        (None, false) => code.clone(),
        (None, true) => format!("HTTP {status}"),
    };
    let retry_after = parse_retry_after(headers, Utc::now());
    if status == 410 || is("syncStateNotFound") || is("resyncRequired") {
        return ProviderError::ResyncRequired(message);
    }
    if status == 429
        || is("TooManyRequests")
        || is("ApplicationThrottled")
        || is("activityLimitReached")
    {
        return ProviderError::RateLimited { retry_after };
    }
    match status {
        401 => {
            ProviderError::Reauthorize(format!("access token rejected after a refresh: {message}"))
        }
        404 => ProviderError::NotFound(message),
        412 => ProviderError::PreconditionFailed(message),
        409 if is("ErrorIrresolvableConflict") || is("resourceModified") => {
            ProviderError::PreconditionFailed(message)
        }
        500..=599 => ProviderError::Unavailable {
            message,
            retry_after,
        },
        _ => ProviderError::Rejected { status, message },
    }
}

/// OData string literal: single quotes doubled.
fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn is_primary(calendar: &CalendarId) -> bool {
    calendar.as_str().eq_ignore_ascii_case(PRIMARY)
}

/// `2026-10-01T09:00:00` (Graph wants offset-less wall times).
fn wall(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn graph_instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Graph instants come as RFC 3339, or as UTC wall times with 7 digits.
fn parse_instant(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(raw.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|n| n.and_utc())
        })
}

fn written(event: &GraphEvent) -> WrittenEvent {
    WrittenEvent {
        external_event_id: event.id.clone(),
        etag: event
            .odata_etag
            .clone()
            .or_else(|| event.change_key.clone()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct EventList {
    #[serde(default)]
    value: Vec<Lenient<GraphEvent>>,
    #[serde(default, rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionReply {
    id: String,
    #[serde(default)]
    expiration_date_time: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ScheduleReply {
    #[serde(default)]
    value: Vec<Lenient<ScheduleInformation>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleInformation {
    #[serde(default)]
    schedule_id: String,
    #[serde(default)]
    schedule_items: Vec<Lenient<ScheduleItem>>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct ScheduleItem {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    start: Option<crate::core::wire::GraphDateTimeTimeZone>,
    #[serde(default)]
    end: Option<crate::core::wire::GraphDateTimeTimeZone>,
}

/// `scheduleItems[].status` that blocks time: busy, oof, tentative, unknown
/// (and anything new, conservatively); free and workingElsewhere do not.
fn status_blocks(status: Option<&str>) -> bool {
    match status {
        Some(s) => !(s.eq_ignore_ascii_case("free") || s.eq_ignore_ascii_case("workingElsewhere")),
        None => true,
    }
}

fn schedule_instant(
    value: Option<&crate::core::wire::GraphDateTimeTimeZone>,
) -> Option<DateTime<Utc>> {
    let value = value?;
    let wall = value.wall_time().ok()?;
    if value.has_offset() {
        return Some(wall.and_utc());
    }
    let zone = match value.time_zone.as_deref() {
        Some(name) if !name.trim().is_empty() => resolve_zone(name).ok()?,
        _ => chrono_tz::UTC,
    };
    Some(local_to_utc(wall, zone))
}

impl GraphClient {
    pub fn new(http: impl Into<super::transport::HttpPort>, endpoints: ProviderEndpoints) -> Self {
        GraphClient {
            http: http.into(),
            api_base: endpoints.graph_api.trim_end_matches('/').to_owned(),
            token: TokenEndpoint::microsoft(endpoints.graph_token),
            page_size: PAGE_SIZE,
            clock: std::sync::Arc::new(crate::ports::SystemClock),
            round_zones: Arc::default(),
            mailbox_zones: Arc::default(),
        }
    }

    /// The mailbox's zone (`mailboxSettings.timeZone`, a Windows or IANA
    /// name), `None` when the mailbox's settings cannot be read (see the
    /// module doc).
    pub async fn mailbox_zone(
        &self,
        session: &mut AuthSession,
    ) -> Result<Option<String>, ProviderError> {
        let url = format!("{}/me/mailboxSettings", self.api_base);
        match self.api().send(session, &self.call(Method::GET, url)).await {
            Ok(response) => {
                let settings: MailboxSettings = response.json()?;
                Ok(settings.time_zone.filter(|z| !z.trim().is_empty()))
            }
            Err(e @ (ProviderError::Rejected { .. } | ProviderError::NotFound(_))) => {
                tracing::warn!(error = %e, "mailbox settings unreadable: all-day events without a zone of their own are read in UTC");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The zone for a page fetched from `position`: read at the start of a
    /// full round, at the start of an incremental one when the account's
    /// last read is older than [`MAILBOX_ZONE_MAX_AGE`], handed on to later
    /// pages.
    async fn round_zone(
        &self,
        session: &mut AuthSession,
        position: &SyncPosition,
    ) -> Result<Option<String>, ProviderError> {
        let now = self.clock.now();
        match position {
            SyncPosition::Page(link) => {
                if let Some(zone) = self.round_zones.take(link) {
                    return Ok(zone);
                }
            }
            SyncPosition::Cursor(_) => {
                if let Some(zone) = self.mailbox_zones.fresh(session, now) {
                    return Ok(zone);
                }
            }
            SyncPosition::Start => {}
        }
        let zone = self.mailbox_zone(session).await?;
        // Keyed by the grant as it stands after the read (a refresh during
        // the read may have rotated the refresh token).
        self.mailbox_zones.keep(session, zone.clone(), now);
        Ok(zone)
    }

    /// Delta page size (`Prefer: odata.maxpagesize`), at least 1.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The same client, reading time (token expiry) from `clock`.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::ports::Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn api(&self) -> Api<'_> {
        Api {
            http: &self.http,
            token: &self.token,
            classify,
            clock: &*self.clock,
        }
    }

    /// `{api}/me` or `{api}/me/calendars/{id}`.
    fn calendar_base(&self, calendar: &CalendarId) -> String {
        if is_primary(calendar) {
            format!("{}/me", self.api_base)
        } else {
            format!(
                "{}/me/calendars/{}",
                self.api_base,
                pct_segment(calendar.as_str())
            )
        }
    }

    fn event_url(&self, event_id: &str) -> String {
        format!("{}/me/events/{}", self.api_base, pct(event_id))
    }

    fn call(&self, method: Method, url: impl Into<String>) -> Call {
        Call::new(method, url)
            .header("Prefer", PREFER_UTC)
            .header("Prefer", PREFER_IMMUTABLE_IDS)
    }

    fn event_body(event: &OutboundEvent) -> Value {
        let (zone_name, start, end) = match resolve_zone(&event.time_zone) {
            Ok(tz) => (
                tz.name().to_owned(),
                wall(event.start.with_timezone(&tz).naive_local()),
                wall(event.end.with_timezone(&tz).naive_local()),
            ),
            Err(_) => (
                "UTC".to_owned(),
                wall(event.start.naive_utc()),
                wall(event.end.naive_utc()),
            ),
        };
        let attendees: Vec<Value> = event
            .attendees
            .iter()
            .map(|a| json!({ "emailAddress": { "address": a }, "type": "required" }))
            .collect();
        json!({
            "subject": event.display_title(),
            // Sent on every write, so a re-activation makes it busy again.
            "showAs": if event.marked_cancelled { "free" } else { "busy" },
            "start": { "dateTime": start, "timeZone": zone_name },
            "end": { "dateTime": end, "timeZone": zone_name },
            "attendees": attendees,
        })
    }
}

impl CalendarApi for GraphClient {
    async fn ensure_token(&self, session: &mut AuthSession) -> Result<(), ProviderError> {
        super::oauth::ensure_fresh(&self.http, &self.token, session, self.clock.now()).await
    }

    fn provider(&self) -> CalendarProvider {
        CalendarProvider::Microsoft
    }

    async fn list_changes(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        position: &SyncPosition,
        window: SyncWindow,
    ) -> Result<ChangesPage, ProviderError> {
        let url = match position {
            SyncPosition::Start => with_query(
                &format!("{}/calendarView/delta", self.calendar_base(calendar)),
                &[
                    ("startDateTime", graph_instant(window.start)),
                    ("endDateTime", graph_instant(window.end)),
                ],
            ),
            SyncPosition::Page(link) | SyncPosition::Cursor(SyncCursor(link)) => link.clone(),
        };
        let call = self
            .call(Method::GET, url)
            .header("Prefer", format!("odata.maxpagesize={}", self.page_size));
        let page: GraphDeltaPage = self.api().send(session, &call).await?.json()?;
        let calendar_zone = self.round_zone(session, position).await?;
        let mut changes = Vec::with_capacity(page.value.len());
        for item in page.value {
            match item {
                Lenient::Parsed(event) => changes.push(ExternalChange::Graph(event)),
                Lenient::Malformed { raw, error } => {
                    let id = raw.get("id").and_then(Value::as_str).unwrap_or("?");
                    tracing::warn!(calendar = %calendar, event_id = id, %error, "skipping malformed Graph event");
                }
            }
        }
        let next = match (page.next_link, page.delta_link) {
            (Some(next), _) => {
                self.round_zones.keep(&next, calendar_zone.clone());
                PageNext::More(next)
            }
            (None, Some(delta)) => PageNext::Complete(SyncCursor(delta)),
            (None, None) => {
                return Err(ProviderError::Unavailable {
                    message: "delta page has neither @odata.nextLink nor @odata.deltaLink".into(),
                    retry_after: None,
                })
            }
        };
        Ok(ChangesPage {
            changes,
            calendar_zone,
            next,
        })
    }

    async fn free_busy(
        &self,
        session: &mut AuthSession,
        calendars: &[CalendarId],
        window: SyncWindow,
    ) -> Result<Vec<(CalendarId, Vec<Interval>)>, ProviderError> {
        let mut busy: BTreeMap<CalendarId, Vec<Interval>> = BTreeMap::new();
        let mut failed: Vec<(CalendarId, ProviderError)> = Vec::new();
        let url = format!("{}/me/calendar/getSchedule", self.api_base);
        for (from, to) in chunks(window, FREE_BUSY_MAX_DAYS) {
            for group in calendars.chunks(FREE_BUSY_MAX_SCHEDULES) {
                let schedules: Vec<&str> = group.iter().map(CalendarId::as_str).collect();
                let body = json!({
                    "schedules": schedules,
                    "startTime": { "dateTime": wall(from.naive_utc()), "timeZone": "UTC" },
                    "endTime": { "dateTime": wall(to.naive_utc()), "timeZone": "UTC" },
                    "availabilityViewInterval": 60,
                });
                let call = self.call(Method::POST, url.as_str()).json(body);
                let reply: ScheduleReply = self.api().send(session, &call).await?.json()?;
                let infos: Vec<ScheduleInformation> = reply
                    .value
                    .into_iter()
                    .filter_map(|v| match v {
                        Lenient::Parsed(info) => Some(info),
                        Lenient::Malformed { .. } => None,
                    })
                    .collect();
                for calendar in group {
                    let Some(info) = infos
                        .iter()
                        .find(|i| i.schedule_id.eq_ignore_ascii_case(calendar.as_str()))
                    else {
                        failed.push((
                            calendar.clone(),
                            ProviderError::Unavailable {
                                message: format!("getSchedule answer lacks {calendar}"),
                                retry_after: None,
                            },
                        ));
                        continue;
                    };
                    if let Some(error) = &info.error {
                        let code = error
                            .get("responseCode")
                            .and_then(Value::as_str)
                            .unwrap_or("error");
                        let message = format!("getSchedule {code} for {calendar}");
                        let err = if code.to_ascii_lowercase().contains("notfound") {
                            ProviderError::NotFound(message)
                        } else {
                            ProviderError::Rejected {
                                status: 200,
                                message,
                            }
                        };
                        failed.push((calendar.clone(), err));
                        continue;
                    }
                    let spans = busy.entry(calendar.clone()).or_default();
                    for item in &info.schedule_items {
                        let Lenient::Parsed(item) = item else {
                            continue;
                        };
                        if !status_blocks(item.status.as_deref()) {
                            continue;
                        }
                        let (Some(s), Some(e)) = (
                            schedule_instant(item.start.as_ref()),
                            schedule_instant(item.end.as_ref()),
                        ) else {
                            continue;
                        };
                        if let Ok(i) = Interval::new(s.max(window.start), e.min(window.end)) {
                            spans.push(i);
                        }
                    }
                }
            }
        }
        assemble_free_busy(calendars, busy, failed)
    }

    async fn open_channel(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        request: &ChannelRequest,
    ) -> Result<Channel, ProviderError> {
        let state = client_state(&request.channel_id, &request.secret);
        if state.len() > 128 {
            return Err(ProviderError::Rejected {
                status: 400,
                message: "channel id and secret exceed the 128 characters of clientState".into(),
            });
        }
        let resource = if is_primary(calendar) {
            "me/events".to_owned()
        } else {
            format!("me/calendars/{}/events", calendar.as_str())
        };
        let mut body = json!({
            "changeType": "created,updated,deleted",
            "notificationUrl": request.address,
            "resource": resource,
            "expirationDateTime": graph_instant(request.expires_at),
            "clientState": state,
        });
        if let Some(lifecycle) = &request.lifecycle_address {
            body["lifecycleNotificationUrl"] = json!(lifecycle);
        }
        let url = format!("{}/subscriptions", self.api_base);
        let call = self.call(Method::POST, url).json(body);
        let reply: SubscriptionReply = self.api().send(session, &call).await?.json()?;
        Ok(Channel {
            channel_id: request.channel_id.clone(),
            expires_at: reply
                .expiration_date_time
                .as_deref()
                .and_then(parse_instant)
                .unwrap_or(request.expires_at),
            resource_id: reply.id,
        })
    }

    async fn renew_channel(
        &self,
        session: &mut AuthSession,
        channel: &Channel,
        expires_at: DateTime<Utc>,
    ) -> Result<Channel, ProviderError> {
        let url = format!(
            "{}/subscriptions/{}",
            self.api_base,
            pct(&channel.resource_id)
        );
        let body = json!({ "expirationDateTime": graph_instant(expires_at) });
        let call = self.call(Method::PATCH, url).json(body);
        let reply: SubscriptionReply = self.api().send(session, &call).await?.json()?;
        Ok(Channel {
            channel_id: channel.channel_id.clone(),
            resource_id: channel.resource_id.clone(),
            expires_at: reply
                .expiration_date_time
                .as_deref()
                .and_then(parse_instant)
                .unwrap_or(expires_at),
        })
    }

    /// `DELETE /subscriptions/{id}`; 404 counts as closed.
    async fn close_channel(
        &self,
        session: &mut AuthSession,
        channel: &Channel,
    ) -> Result<(), ProviderError> {
        let url = format!(
            "{}/subscriptions/{}",
            self.api_base,
            pct(&channel.resource_id)
        );
        match self
            .api()
            .send(session, &self.call(Method::DELETE, url))
            .await
        {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError> {
        // A retry after "created but the response was lost" finds the event.
        if let Some(existing) = self
            .find_booking_event(session, calendar, &event.booking_id, event.generation)
            .await?
        {
            return Ok(existing);
        }
        let mut body = Self::event_body(event);
        body["transactionId"] = json!(booking_tag(&event.booking_id, event.generation));
        body["singleValueExtendedProperties"] =
            json!([{ "id": GRAPH_BOOKING_PROPERTY_ID, "value": event.booking_id }]);
        let url = format!("{}/events", self.calendar_base(calendar));
        let call = self.call(Method::POST, url).json(body);
        let created: GraphEvent = self.api().send(session, &call).await?.json()?;
        Ok(written(&created))
    }

    async fn update_event(
        &self,
        session: &mut AuthSession,
        _calendar: &CalendarId,
        external_event_id: &str,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError> {
        let call = self
            .call(Method::PATCH, self.event_url(external_event_id))
            .json(Self::event_body(event));
        let updated: GraphEvent = self.api().send(session, &call).await?.json()?;
        Ok(written(&updated))
    }

    async fn delete_event(
        &self,
        session: &mut AuthSession,
        _calendar: &CalendarId,
        external_event_id: &str,
    ) -> Result<(), ProviderError> {
        let call = self.call(Method::DELETE, self.event_url(external_event_id));
        match self.api().send(session, &call).await {
            Ok(_) | Err(ProviderError::NotFound(_)) | Err(ProviderError::Gone(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Searches the calendar's events by the booking-id extended property
    /// and picks the one whose `transactionId` is this generation's tag.
    async fn find_booking_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        booking_id: &str,
        generation: u32,
    ) -> Result<Option<WrittenEvent>, ProviderError> {
        let tag = booking_tag(booking_id, generation);
        let filter = format!(
            "singleValueExtendedProperties/any(ep: ep/id eq {} and ep/value eq {})",
            odata_string(GRAPH_BOOKING_PROPERTY_ID),
            odata_string(booking_id)
        );
        let mut url = with_query(
            &format!("{}/events", self.calendar_base(calendar)),
            &[
                ("$filter", filter),
                ("$select", "id,transactionId,subject,start,end".into()),
            ],
        );
        // Bounded: a booking has a handful of events at most.
        for _ in 0..20 {
            let list: EventList = self
                .api()
                .send(session, &self.call(Method::GET, url.as_str()))
                .await?
                .json()?;
            let found = list.value.into_iter().find_map(|item| match item {
                Lenient::Parsed(e) if e.transaction_id.as_deref() == Some(tag.as_str()) => Some(e),
                _ => None,
            });
            if let Some(event) = found {
                return Ok(Some(written(&event)));
            }
            match list.next_link {
                Some(next) => url = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};
    use std::time::Duration;

    fn body(code: &str) -> Vec<u8> {
        json!({ "error": { "code": code, "message": "m", "innerError": { "date": "x" } } })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn graph_errors_are_classified_by_status_and_code() {
        let h = HeaderMap::new();
        let c = |s: u16, code: &str| classify(s, &h, &body(code)).kind();
        assert_eq!(c(410, "SyncStateNotFound"), "resync_required");
        assert_eq!(c(400, "syncStateNotFound"), "resync_required");
        assert_eq!(c(400, "RESYNCREQUIRED"), "resync_required");
        assert_eq!(c(410, "whatever"), "resync_required");
        assert_eq!(c(429, "TooManyRequests"), "rate_limited");
        assert_eq!(c(429, "applicationthrottled"), "rate_limited");
        assert_eq!(c(404, "ErrorItemNotFound"), "not_found");
        assert_eq!(c(412, "ErrorIrresolvableConflict"), "precondition_failed");
        assert_eq!(c(409, "ErrorIrresolvableConflict"), "precondition_failed");
        assert_eq!(c(503, "serviceNotAvailable"), "unavailable");
        assert_eq!(c(504, "GatewayTimeout"), "unavailable");
        assert_eq!(c(400, "ErrorTimeIntervalTooBig"), "rejected");
        assert_eq!(c(401, "InvalidAuthenticationToken"), "reauthorize");
    }

    #[test]
    fn fractional_retry_after_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2.128"));
        assert_eq!(
            classify(429, &h, &body("TooManyRequests")),
            ProviderError::RateLimited {
                retry_after: Some(Duration::from_millis(2128))
            }
        );
    }

    #[test]
    fn schedule_statuses_block_case_insensitively() {
        for s in [
            "busy",
            "Busy",
            "OOF",
            "tentative",
            "unknown",
            "somethingNew",
        ] {
            assert!(status_blocks(Some(s)), "{s}");
        }
        for s in ["free", "Free", "workingElsewhere", "WORKINGELSEWHERE"] {
            assert!(!status_blocks(Some(s)), "{s}");
        }
    }

    #[test]
    fn client_state_round_trips() {
        let s = client_state("chan-1", "se:cret");
        assert_eq!(split_client_state(&s), Some(("chan-1", "se:cret")));
    }

    #[test]
    fn odata_literals_double_quotes() {
        assert_eq!(odata_string("o'hara"), "'o''hara'");
    }
}
