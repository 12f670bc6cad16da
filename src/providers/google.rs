//! Google Calendar API v3 client (`shared/PROVIDERS.md` §1–3, §5–7).
//!
//! - Sync: `events.list` with `singleEvents=true&showDeleted=true`, a full
//!   round bounded by the window (`timeMin`/`timeMax`), pages through
//!   `pageToken` with every other parameter identical, incremental rounds
//!   through `syncToken` alone; `nextSyncToken` is taken from the last page
//!   only. A [`PageNext::More`] value is an opaque JSON string carrying the
//!   page token *and* the parameters of its round, so the next page never
//!   depends on the caller passing the same window again.
//! - Writes: the deterministic event id [`booking_tag`] makes inserts
//!   idempotent (409 `duplicate` → GET and return the event); the booking id
//!   and the ICS UID live in private extended properties (`iCalUID` must not
//!   be sent together with `id`).
//! - Errors: [`classify`] is the one place that maps a refusal to a
//!   [`ProviderError`].

use chrono::{DateTime, TimeZone, Utc};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::oauth::TokenEndpoint;
use super::transport::{parse_retry_after, pct_segment, with_query, Api, Call};
use super::{
    AuthSession, CalendarApi, ChangesPage, Channel, ChannelRequest, ExternalChange, OutboundEvent,
    PageNext, ProviderEndpoints, ProviderError, SyncCursor, SyncPosition, SyncWindow, WrittenEvent,
};
use crate::core::busy::{booking_tag, GOOGLE_BOOKING_PROPERTY};
use crate::core::ids::{CalendarId, CalendarProvider};
use crate::core::interval::Interval;
use crate::core::tz::resolve_zone;
use crate::core::wire::{GoogleEvent, GoogleEventStatus, GoogleEventsPage, Lenient};

/// `maxResults` of every `events.list` call.
pub const PAGE_SIZE: u32 = 250;
/// Longest `freeBusy` range per call (Google's limit is undocumented).
pub const FREE_BUSY_MAX_DAYS: i64 = 60;
/// Most calendars per `freeBusy` call (`calendarExpansionMax`).
pub const FREE_BUSY_MAX_CALENDARS: usize = 50;
/// Private extended property holding the booking's stable ICS UID.
pub const GOOGLE_ICAL_UID_PROPERTY: &str = "calsyncIcalUid";

/// Google Calendar v3 over HTTP.
#[derive(Debug, Clone)]
pub struct GoogleClient {
    http: super::transport::HttpPort,
    api_base: String,
    token: TokenEndpoint,
    page_size: u32,
    /// What time it is for token expiry (the simulation's clock in tests).
    clock: std::sync::Arc<dyn crate::ports::Clock>,
}

/// What a `PageNext::More` carries for Google: the page token and the
/// parameters of the round it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PageState {
    #[serde(rename = "p")]
    page_token: String,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    sync_token: Option<String>,
    #[serde(rename = "min", default, skip_serializing_if = "Option::is_none")]
    time_min: Option<String>,
    #[serde(rename = "max", default, skip_serializing_if = "Option::is_none")]
    time_max: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One entry of Google's `error.errors[]`.
#[derive(Debug, Default, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<ErrorDetail>,
}

/// Maps a Google refusal (status, headers, body) to what the caller must do
/// (`shared/PROVIDERS.md` §6).
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let detail = parsed.error.unwrap_or_default();
    let reasons: Vec<String> = detail
        .errors
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    let has = |r: &str| reasons.iter().any(|x| x.eq_ignore_ascii_case(r));
    let reason = reasons.first().cloned().unwrap_or_default();
    let message = match (&detail.message, reason.is_empty()) {
        (Some(m), false) => format!("{reason}: {m}"),
        (Some(m), true) => m.clone(),
        (None, false) => reason.clone(),
        (None, true) => format!("HTTP {status}"),
    };
    let retry_after = parse_retry_after(headers, Utc::now());
    let rate_limited =
        has("rateLimitExceeded") || has("userRateLimitExceeded") || has("quotaExceeded");
    match status {
        429 => ProviderError::RateLimited { retry_after },
        403 if rate_limited => ProviderError::RateLimited { retry_after },
        401 => {
            ProviderError::Reauthorize(format!("access token rejected after a refresh: {message}"))
        }
        404 => ProviderError::NotFound(message),
        409 if has("duplicate") => ProviderError::Duplicate(message),
        410 if has("fullSyncRequired") || has("updatedMinTooLongAgo") => {
            ProviderError::ResyncRequired(message)
        }
        410 => ProviderError::Gone(message),
        412 => ProviderError::PreconditionFailed(message),
        500..=599 => ProviderError::Unavailable {
            message,
            retry_after,
        },
        _ => ProviderError::Rejected { status, message },
    }
}

impl GoogleClient {
    pub fn new(http: impl Into<super::transport::HttpPort>, endpoints: ProviderEndpoints) -> Self {
        GoogleClient {
            http: http.into(),
            api_base: endpoints.google_api.trim_end_matches('/').to_owned(),
            token: TokenEndpoint::google(endpoints.google_token),
            page_size: PAGE_SIZE,
            clock: std::sync::Arc::new(crate::ports::SystemClock),
        }
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

    fn events_url(&self, calendar: &CalendarId) -> String {
        format!(
            "{}/calendars/{}/events",
            self.api_base,
            pct_segment(calendar.as_str())
        )
    }

    fn event_url(&self, calendar: &CalendarId, event_id: &str) -> String {
        format!("{}/{}", self.events_url(calendar), pct_segment(event_id))
    }

    fn list_params(&self, state: &PageState) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("singleEvents", "true".to_owned()),
            ("showDeleted", "true".to_owned()),
            ("maxResults", self.page_size.to_string()),
        ];
        if let Some(token) = &state.sync_token {
            params.push(("syncToken", token.clone()));
        } else {
            if let Some(min) = &state.time_min {
                params.push(("timeMin", min.clone()));
            }
            if let Some(max) = &state.time_max {
                params.push(("timeMax", max.clone()));
            }
        }
        if !state.page_token.is_empty() {
            params.push(("pageToken", state.page_token.clone()));
        }
        params
    }

    /// The event body calsync writes for a booking (without `id`).
    fn event_body(event: &OutboundEvent) -> Value {
        let (zone_name, start, end) = match resolve_zone(&event.time_zone) {
            Ok(tz) => {
                let local = |t: DateTime<Utc>| {
                    t.with_timezone(&tz)
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
                };
                (tz.name().to_owned(), local(event.start), local(event.end))
            }
            Err(_) => ("UTC".to_owned(), rfc3339(event.start), rfc3339(event.end)),
        };
        let mut private = BTreeMap::new();
        private.insert(GOOGLE_BOOKING_PROPERTY, event.booking_id.clone());
        private.insert(GOOGLE_ICAL_UID_PROPERTY, event.ical_uid.clone());
        let attendees: Vec<Value> = event
            .attendees
            .iter()
            .map(|email| json!({ "email": email }))
            .collect();
        json!({
            "summary": event.display_title(),
            "start": { "dateTime": start, "timeZone": zone_name },
            "end": { "dateTime": end, "timeZone": zone_name },
            "attendees": attendees,
            // Sent on every write, so a re-activation makes it busy again.
            "transparency": if event.marked_cancelled { "transparent" } else { "opaque" },
            "extendedProperties": { "private": private },
        })
    }

    async fn get_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        event_id: &str,
    ) -> Result<GoogleEvent, ProviderError> {
        let call = Call::new(Method::GET, self.event_url(calendar, event_id));
        self.api().send(session, &call).await?.json()
    }
}

fn written(event: &GoogleEvent) -> WrittenEvent {
    WrittenEvent {
        external_event_id: event.id.clone(),
        etag: event.etag.clone(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct FreeBusyReply {
    #[serde(default)]
    calendars: BTreeMap<String, FreeBusyCalendar>,
}

#[derive(Debug, Default, Deserialize)]
struct FreeBusyCalendar {
    #[serde(default)]
    busy: Vec<Lenient<FreeBusySpan>>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct FreeBusySpan {
    start: String,
    end: String,
}

#[derive(Debug, Deserialize)]
struct WatchReply {
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(default)]
    expiration: Option<Value>,
}

/// `expiration` in Unix milliseconds, as a number or a string.
fn parse_millis(value: &Value) -> Option<DateTime<Utc>> {
    let ms = value
        .as_i64()
        .or_else(|| value.as_str()?.trim().parse().ok())?;
    Utc.timestamp_millis_opt(ms).single()
}

/// Splits `[start, end)` into pieces of at most `days` days.
pub(crate) fn chunks(window: SyncWindow, days: i64) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let step = chrono::Duration::days(days);
    let mut out = Vec::new();
    let mut from = window.start;
    while from < window.end {
        let to = (from + step).min(window.end);
        out.push((from, to));
        from = to;
    }
    out
}

/// Per-calendar outcome of a chunked free/busy query: calendars with any
/// error are left out (their busy time is unknown, not free); if every
/// calendar failed, the first error is returned.
pub(crate) fn assemble_free_busy(
    calendars: &[CalendarId],
    mut busy: BTreeMap<CalendarId, Vec<Interval>>,
    failed: Vec<(CalendarId, ProviderError)>,
) -> Result<Vec<(CalendarId, Vec<Interval>)>, ProviderError> {
    for (calendar, error) in &failed {
        tracing::warn!(calendar = %calendar, kind = error.kind(), "free/busy failed for one calendar");
    }
    let failed_ids: Vec<&CalendarId> = failed.iter().map(|(c, _)| c).collect();
    let mut out = Vec::new();
    for calendar in calendars {
        if failed_ids.contains(&calendar) || out.iter().any(|(c, _)| c == calendar) {
            continue;
        }
        let spans = busy.remove(calendar).unwrap_or_default();
        out.push((calendar.clone(), crate::core::interval::merge(spans)));
    }
    if out.is_empty() {
        if let Some((_, error)) = failed.into_iter().next() {
            return Err(error);
        }
    }
    Ok(out)
}

impl CalendarApi for GoogleClient {
    async fn ensure_token(&self, session: &mut AuthSession) -> Result<(), ProviderError> {
        super::oauth::ensure_fresh(&self.http, &self.token, session, self.clock.now()).await
    }

    fn provider(&self) -> CalendarProvider {
        CalendarProvider::Google
    }

    async fn list_changes(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        position: &SyncPosition,
        window: SyncWindow,
    ) -> Result<ChangesPage, ProviderError> {
        let full_round = || PageState {
            page_token: String::new(),
            sync_token: None,
            time_min: Some(rfc3339(window.start)),
            time_max: Some(rfc3339(window.end)),
        };
        let state = match position {
            SyncPosition::Start => full_round(),
            SyncPosition::Cursor(SyncCursor(token)) => PageState {
                page_token: String::new(),
                sync_token: Some(token.clone()),
                time_min: None,
                time_max: None,
            },
            // A bare page token (not ours) continues a full round.
            SyncPosition::Page(raw) => {
                serde_json::from_str::<PageState>(raw).unwrap_or_else(|_| PageState {
                    page_token: raw.clone(),
                    ..full_round()
                })
            }
        };
        let url = with_query(&self.events_url(calendar), &self.list_params(&state));
        let reply = self
            .api()
            .send(session, &Call::new(Method::GET, url))
            .await
            .map_err(|e| match e {
                // Any 410 on a listing means the round cannot continue.
                ProviderError::Gone(m) => ProviderError::ResyncRequired(m),
                other => other,
            })?;
        let page: GoogleEventsPage = reply.json()?;
        let mut changes = Vec::with_capacity(page.items.len());
        for item in page.items {
            match item {
                Lenient::Parsed(event) => changes.push(ExternalChange::Google(event)),
                Lenient::Malformed { raw, error } => {
                    let id = raw.get("id").and_then(Value::as_str).unwrap_or("?");
                    tracing::warn!(calendar = %calendar, event_id = id, %error, "skipping malformed Google event");
                }
            }
        }
        let next = match (page.next_page_token, page.next_sync_token) {
            (Some(token), _) => {
                let next = PageState {
                    page_token: token,
                    ..state
                };
                let encoded =
                    serde_json::to_string(&next).map_err(|e| ProviderError::Unavailable {
                        message: format!("cannot encode page state: {e}"),
                        retry_after: None,
                    })?;
                PageNext::More(encoded)
            }
            (None, Some(sync)) => PageNext::Complete(SyncCursor(sync)),
            (None, None) => {
                return Err(ProviderError::Unavailable {
                    message: "events.list page has neither nextPageToken nor nextSyncToken".into(),
                    retry_after: None,
                })
            }
        };
        Ok(ChangesPage {
            changes,
            calendar_zone: page.time_zone,
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
        let url = format!("{}/freeBusy", self.api_base);
        for (from, to) in chunks(window, FREE_BUSY_MAX_DAYS) {
            for group in calendars.chunks(FREE_BUSY_MAX_CALENDARS) {
                let items: Vec<Value> = group.iter().map(|c| json!({ "id": c.as_str() })).collect();
                let body = json!({
                    "timeMin": rfc3339(from),
                    "timeMax": rfc3339(to),
                    "timeZone": "UTC",
                    "calendarExpansionMax": FREE_BUSY_MAX_CALENDARS,
                    "items": items,
                });
                let call = Call::new(Method::POST, url.as_str()).json(body);
                let reply: FreeBusyReply = self.api().send(session, &call).await?.json()?;
                for calendar in group {
                    let Some(entry) = reply.calendars.get(calendar.as_str()) else {
                        failed.push((
                            calendar.clone(),
                            ProviderError::Unavailable {
                                message: format!("freeBusy answer lacks calendar {calendar}"),
                                retry_after: None,
                            },
                        ));
                        continue;
                    };
                    if let Some(error) = entry.errors.first() {
                        let reason = error.reason.clone().unwrap_or_default();
                        let err = match reason.as_str() {
                            "notFound" => ProviderError::NotFound(format!("calendar {calendar}")),
                            "internalError" | "backendError" => ProviderError::Unavailable {
                                message: format!("freeBusy {reason} for {calendar}"),
                                retry_after: None,
                            },
                            _ => ProviderError::Rejected {
                                status: 200,
                                message: format!("freeBusy {reason} for {calendar}"),
                            },
                        };
                        failed.push((calendar.clone(), err));
                        continue;
                    }
                    let spans = busy.entry(calendar.clone()).or_default();
                    for span in &entry.busy {
                        let Lenient::Parsed(span) = span else {
                            continue;
                        };
                        let parse = |s: &str| {
                            DateTime::parse_from_rfc3339(s.trim())
                                .ok()
                                .map(|t| t.with_timezone(&Utc))
                        };
                        if let (Some(s), Some(e)) = (parse(&span.start), parse(&span.end)) {
                            if let Ok(i) = Interval::new(s.max(window.start), e.min(window.end)) {
                                spans.push(i);
                            }
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
        let body = json!({
            "id": request.channel_id,
            "type": "web_hook",
            "address": request.address,
            "token": request.secret,
            "expiration": request.expires_at.timestamp_millis(),
        });
        let url = format!("{}/watch", self.events_url(calendar));
        let call = Call::new(Method::POST, url).json(body);
        let reply: WatchReply = self.api().send(session, &call).await?.json()?;
        let expires_at = reply
            .expiration
            .as_ref()
            .and_then(parse_millis)
            .unwrap_or(request.expires_at);
        Ok(Channel {
            channel_id: request.channel_id.clone(),
            resource_id: reply.resource_id,
            expires_at,
        })
    }

    /// Google channels cannot be renewed: always
    /// [`ProviderError::NotFound`], exactly what a vanished channel gives,
    /// so the caller does what it does then — open a new channel (with a
    /// new id), let both overlap, then close this one. No request is made.
    async fn renew_channel(
        &self,
        _session: &mut AuthSession,
        channel: &Channel,
        _expires_at: DateTime<Utc>,
    ) -> Result<Channel, ProviderError> {
        Err(ProviderError::NotFound(format!(
            "Google channel {} cannot be renewed in place; open a new channel, then close this one",
            channel.channel_id
        )))
    }

    /// `channels.stop`; a channel the provider no longer knows counts as closed.
    async fn close_channel(
        &self,
        session: &mut AuthSession,
        channel: &Channel,
    ) -> Result<(), ProviderError> {
        let body = json!({ "id": channel.channel_id, "resourceId": channel.resource_id });
        let call = Call::new(Method::POST, format!("{}/channels/stop", self.api_base)).json(body);
        match self.api().send(session, &call).await {
            Ok(_) | Err(ProviderError::NotFound(_)) | Err(ProviderError::Gone(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError> {
        let id = booking_tag(&event.booking_id, event.generation);
        let mut body = Self::event_body(event);
        body["id"] = json!(id);
        let url = with_query(
            &self.events_url(calendar),
            &[("sendUpdates", "none".into())],
        );
        let call = Call::new(Method::POST, url).json(body);
        match self.api().send(session, &call).await {
            Ok(reply) => Ok(written(&reply.json::<GoogleEvent>()?)),
            Err(ProviderError::Duplicate(message)) => {
                // Our deterministic id exists: an earlier attempt went through.
                let existing = self.get_event(session, calendar, &id).await?;
                let owner = existing.private_property(GOOGLE_BOOKING_PROPERTY);
                if owner.is_some_and(|b| b != event.booking_id) {
                    return Err(ProviderError::Duplicate(format!(
                        "event id {id} belongs to another booking ({message})"
                    )));
                }
                if existing.status() == GoogleEventStatus::Cancelled {
                    // Deleted ids stay reserved: a new generation is needed.
                    return Err(ProviderError::IdRetired(format!(
                        "event id {id} belongs to a deleted event; write a new generation ({message})"
                    )));
                }
                Ok(written(&existing))
            }
            Err(e) => Err(e),
        }
    }

    async fn update_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        external_event_id: &str,
        event: &OutboundEvent,
    ) -> Result<WrittenEvent, ProviderError> {
        let url = with_query(
            &self.event_url(calendar, external_event_id),
            &[("sendUpdates", "none".into())],
        );
        let call = Call::new(Method::PATCH, url).json(Self::event_body(event));
        let updated: GoogleEvent = self.api().send(session, &call).await?.json()?;
        Ok(written(&updated))
    }

    async fn delete_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        external_event_id: &str,
    ) -> Result<(), ProviderError> {
        let url = with_query(
            &self.event_url(calendar, external_event_id),
            &[("sendUpdates", "none".into())],
        );
        match self
            .api()
            .send(session, &Call::new(Method::DELETE, url))
            .await
        {
            Ok(_) | Err(ProviderError::NotFound(_)) | Err(ProviderError::Gone(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn find_booking_event(
        &self,
        session: &mut AuthSession,
        calendar: &CalendarId,
        booking_id: &str,
        generation: u32,
    ) -> Result<Option<WrittenEvent>, ProviderError> {
        let id = booking_tag(booking_id, generation);
        match self.get_event(session, calendar, &id).await {
            Ok(event) if event.status() == GoogleEventStatus::Cancelled => Ok(None),
            Ok(event) => Ok(Some(written(&event))),
            Err(ProviderError::NotFound(_)) | Err(ProviderError::Gone(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};
    use std::time::Duration;

    fn body(status: u16, reason: &str) -> Vec<u8> {
        json!({ "error": { "code": status, "message": "m",
                 "errors": [ { "domain": "d", "reason": reason, "message": "m" } ] } })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn google_errors_are_classified_by_status_and_reason() {
        let h = HeaderMap::new();
        let c = |s: u16, r: &str| classify(s, &h, &body(s, r)).kind();
        assert_eq!(c(403, "rateLimitExceeded"), "rate_limited");
        assert_eq!(c(403, "userRateLimitExceeded"), "rate_limited");
        assert_eq!(c(403, "quotaExceeded"), "rate_limited");
        assert_eq!(c(429, "rateLimitExceeded"), "rate_limited");
        assert_eq!(c(403, "forbiddenForNonOrganizer"), "rejected");
        for s in [500, 502, 503, 504] {
            assert_eq!(c(s, "backendError"), "unavailable");
        }
        assert_eq!(c(410, "fullSyncRequired"), "resync_required");
        assert_eq!(c(410, "updatedMinTooLongAgo"), "resync_required");
        assert_eq!(c(410, "deleted"), "gone");
        assert_eq!(c(409, "duplicate"), "duplicate");
        assert_eq!(c(409, "conflict"), "rejected");
        assert_eq!(c(412, "conditionNotMet"), "precondition_failed");
        assert_eq!(c(404, "notFound"), "not_found");
        assert_eq!(c(400, "timeRangeEmpty"), "rejected");
        assert_eq!(classify(502, &h, b"<html>").kind(), "unavailable");
    }

    #[test]
    fn retry_after_is_carried() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(
            classify(429, &h, &body(429, "rateLimitExceeded")).retry_after(),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn windows_are_chunked_to_at_most_sixty_days() {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let window = SyncWindow {
            start,
            end: start + chrono::Duration::days(181),
        };
        let pieces = chunks(window, 60);
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[0].0, window.start);
        assert_eq!(pieces[3].1, window.end);
        assert!(pieces.windows(2).all(|w| w[0].1 == w[1].0));
        assert!(pieces
            .iter()
            .all(|(a, b)| *b - *a <= chrono::Duration::days(60)));
    }

    #[test]
    fn expiration_reads_numbers_and_strings() {
        assert_eq!(
            parse_millis(&json!("1760000000000")),
            Utc.timestamp_millis_opt(1_760_000_000_000).single()
        );
        assert_eq!(
            parse_millis(&json!(1_760_000_000_000_i64)),
            Utc.timestamp_millis_opt(1_760_000_000_000).single()
        );
        assert_eq!(parse_millis(&json!(null)), None);
    }
}
