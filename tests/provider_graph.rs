//! `GraphClient` over real HTTP against the calsim Microsoft Graph
//! simulator: rotating refresh tokens and AADSTS `invalid_grant`, 401 →
//! refresh → retry, delta rounds, error classification, idempotent writes
//! with `transactionId` + extended-property search, getSchedule chunking,
//! subscriptions, and the mailbox zone every delta page carries.

use axum::extract::Query;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use calsim::{FaultKind, FaultRule, Provider, SimConfig, SimHandle, Simulators};
use calsync::core::busy::{booking_tag, GRAPH_BOOKING_PROPERTY_ID};
use calsync::core::ids::CalendarId;
use calsync::core::wire::GraphEvent;
use calsync::providers::graph::{split_client_state, GraphClient};
use calsync::providers::{
    http_client, AuthSession, CalendarApi, ChannelRequest, ExternalChange, OutboundEvent, PageNext,
    ProviderEndpoints, ProviderError, SyncCursor, SyncPosition, SyncWindow,
};
use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};

const UPN: &str = "alice@contoso.com";

fn endpoints(h: &SimHandle) -> ProviderEndpoints {
    ProviderEndpoints {
        google_api: h.google_base_url(),
        google_token: h.google_token_url(),
        graph_api: h.graph_base_url(),
        graph_token: h.graph_token_url("common"),
    }
}

async fn setup() -> (SimHandle, GraphClient, AuthSession) {
    let h = Simulators::start(SimConfig::default()).await.unwrap();
    let account = h.graph().create_account(UPN);
    let session = AuthSession {
        client_id: account.client_id,
        client_secret: account.client_secret,
        refresh_token: account.refresh_token,
        access_token: None,
        access_expires_at: None,
        refresh_token_rotated: false,
        access_token_refreshed: false,
    };
    let client = GraphClient::new(http_client().unwrap(), endpoints(&h));
    (h, client, session)
}

fn primary() -> CalendarId {
    CalendarId::parse("primary").unwrap()
}

fn now() -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::minutes(1)).unwrap()
}

fn window() -> SyncWindow {
    calsync::core::window::WindowPolicy::default()
        .base(now())
        .into()
}

fn wall(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn timed(subject: &str, start: DateTime<Utc>, minutes: i64) -> Value {
    json!({ "subject": subject, "showAs": "busy",
            "start": { "dateTime": wall(start), "timeZone": "UTC" },
            "end": { "dateTime": wall(start + Duration::minutes(minutes)), "timeZone": "UTC" } })
}

fn fault(endpoint: &str, kind: FaultKind) -> FaultRule {
    FaultRule {
        provider: Provider::Graph,
        endpoint: Some(endpoint.into()),
        account: None,
        path: None,
        body_contains: None,
        kind,
        remaining: Some(1),
    }
}

fn status(code: u16, retry_after: Option<f64>, reason: Option<&str>) -> FaultKind {
    FaultKind::Status {
        code,
        retry_after,
        reason: reason.map(str::to_owned),
    }
}

fn endpoint_log(h: &SimHandle, endpoint: &str) -> Vec<calsim::RequestRecord> {
    h.requests()
        .into_iter()
        .filter(|r| r.endpoint == endpoint)
        .collect()
}

async fn round(
    client: &GraphClient,
    session: &mut AuthSession,
    from: SyncPosition,
) -> (Vec<Vec<ExternalChange>>, SyncCursor) {
    let mut position = from;
    let mut pages = Vec::new();
    for _ in 0..50 {
        let page = client
            .list_changes(session, &primary(), &position, window())
            .await
            .unwrap();
        pages.push(page.changes);
        match page.next {
            PageNext::More(next) => position = SyncPosition::Page(next),
            PageNext::Complete(cursor) => return (pages, cursor),
        }
    }
    panic!("delta round did not complete in 50 pages");
}

fn graph_events(changes: &[ExternalChange]) -> Vec<GraphEvent> {
    changes
        .iter()
        .map(|c| match c {
            ExternalChange::Graph(e) => e.clone(),
            other => panic!("not a Graph change: {other:?}"),
        })
        .collect()
}

fn booking(start: DateTime<Utc>) -> OutboundEvent {
    OutboundEvent {
        booking_id: "bk_42".into(),
        generation: 0,
        title: "Haircut".into(),
        start,
        end: start + Duration::minutes(45),
        time_zone: "Europe/Berlin".into(),
        attendees: vec!["guest@example.org".into()],
        ical_uid: "bk_42@platform.example".into(),
        marked_cancelled: false,
    }
}

/// Start of a Graph event as an instant (responses are UTC here).
fn start_of(event: &Value) -> DateTime<Utc> {
    let raw = event["start"]["dateTime"].as_str().unwrap();
    assert_eq!(event["start"]["timeZone"], "UTC");
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap()
        .and_utc()
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_revoked_grant_means_reauthorize() {
    let (h, client, mut session) = setup().await;
    let original = session.refresh_token.clone();
    client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    assert!(session.access_token.is_some());
    assert!(session.access_expires_at.unwrap() > Utc::now() + Duration::minutes(55));
    assert!(
        session.refresh_token_rotated,
        "Microsoft rotates every time"
    );
    assert_ne!(session.refresh_token, original);
    assert_eq!(endpoint_log(&h, "token").len(), 1);

    h.graph().revoke_grant(UPN);
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    match err {
        ProviderError::Reauthorize(description) => {
            assert!(description.starts_with("AADSTS50173"), "{description}");
        }
        other => panic!("expected Reauthorize, got {other:?}"),
    }

    // Expired by inactivity (another AADSTS code) is the same class.
    let (h2, client2, mut session2) = setup().await;
    h2.graph().expire_refresh_tokens(UPN);
    let err = client2
        .list_changes(&mut session2, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Reauthorize(d) if d.starts_with("AADSTS700082")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_401_with_an_expired_access_token_refreshes_once_and_retries_once() {
    let (h, client, mut session) = setup().await;
    client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    let first = session.access_token.clone();
    let first_refresh = session.refresh_token.clone();
    h.graph().expire_access_tokens(UPN);
    h.clear_log();
    client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    let calls: Vec<(String, u16)> = h
        .requests()
        .iter()
        .map(|r| (r.endpoint.clone(), r.status))
        .collect();
    assert_eq!(
        calls,
        [
            ("delta".to_string(), 401),
            ("token".to_string(), 200),
            ("delta".to_string(), 200),
            // The round's one read of the mailbox's zone, with the new token.
            ("mailboxSettings".to_string(), 200)
        ]
    );
    assert_ne!(session.access_token, first);
    assert_ne!(session.refresh_token, first_refresh, "rotated again");
}

#[tokio::test]
async fn delta_over_three_pages_then_incremental_sees_an_update_and_a_removal() {
    let (h, client, mut session) = setup().await;
    let client = client.with_page_size(10);
    let base = now() + Duration::days(1);
    let mut ids = Vec::new();
    for i in 0..25 {
        let created = h
            .graph()
            .create_event(UPN, timed(&format!("e{i}"), base + Duration::hours(i), 30))
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    let (pages, cursor) = round(&client, &mut session, SyncPosition::Start).await;
    assert!(pages.len() >= 3, "{} pages", pages.len());
    let seen: BTreeSet<String> = pages
        .iter()
        .flat_map(|p| graph_events(p))
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, ids.iter().cloned().collect::<BTreeSet<_>>());
    assert!(cursor.0.contains("$deltatoken="), "{}", cursor.0);

    // Links were followed as-is: only the first call carried the window.
    let calls = endpoint_log(&h, "delta");
    assert_eq!(calls.len(), pages.len());
    for (i, r) in calls.iter().enumerate() {
        let q = r.query.clone().unwrap_or_default();
        assert_eq!(q.contains("startDateTime="), i == 0, "call {i}: {q}");
        assert_eq!(q.contains("$skiptoken="), i > 0, "call {i}: {q}");
    }

    let moved = base + Duration::days(3);
    h.graph()
        .update_event(UPN, &ids[2], timed("moved", moved, 30))
        .unwrap();
    h.graph().delete_event(UPN, &ids[5]).unwrap();
    let (pages, next) = round(&client, &mut session, SyncPosition::Cursor(cursor)).await;
    assert!(next.0.contains("$deltatoken="));
    let changed = graph_events(&pages.concat());
    let updated = changed.iter().find(|e| e.id == ids[2]).expect("update");
    assert!(updated.removed.is_none());
    assert_eq!(
        updated.start.as_ref().unwrap().wall_time().unwrap(),
        moved.naive_utc()
    );
    let removed = changed.iter().find(|e| e.id == ids[5]).expect("removal");
    assert_eq!(
        removed.removed.as_ref().and_then(|r| r.reason.as_deref()),
        Some("deleted")
    );
    assert_eq!(changed.len(), 2, "{changed:?}");
}

#[tokio::test]
async fn an_expired_delta_token_requires_a_full_resync() {
    let (h, client, mut session) = setup().await;
    let (_, cursor) = round(&client, &mut session, SyncPosition::Start).await;
    h.graph().invalidate_delta_tokens(UPN);
    let err = client
        .list_changes(
            &mut session,
            &primary(),
            &SyncPosition::Cursor(cursor),
            window(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::ResyncRequired(m) if m.contains("SyncStateNotFound")),
        "{err:?}"
    );
    round(&client, &mut session, SyncPosition::Start).await;
}

#[tokio::test]
async fn throttling_carries_a_fractional_retry_after() {
    let (h, client, mut session) = setup().await;
    h.add_fault(fault("delta", status(429, Some(2.128), None)));
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(std::time::Duration::from_millis(2128))
        }
    );
    h.add_fault(fault(
        "delta",
        status(429, Some(1.0), Some("ApplicationThrottled")),
    ));
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(std::time::Duration::from_secs(1))
        }
    );
}

#[tokio::test]
async fn service_unavailable_is_unavailable_with_its_retry_after() {
    let (h, client, mut session) = setup().await;
    h.add_fault(fault("delta", status(503, Some(4.0), None)));
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(4)));
    h.add_fault(fault("delta", status(504, None, None)));
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn create_after_a_lost_response_yields_exactly_one_event() {
    let (h, client, mut session) = setup().await;
    let event = booking(now() + Duration::days(2));
    h.add_fault(fault(
        "events.create",
        FaultKind::CreatedButResponseLost { status: None },
    ));
    let err = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
    assert_eq!(h.graph().event_count(UPN), 1, "created despite the error");

    let written = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap();
    assert_eq!(h.graph().event_count(UPN), 1, "no duplicate");
    // The retry found the event by its tag instead of posting again.
    assert_eq!(endpoint_log(&h, "events.create").len(), 1);
    let lists = endpoint_log(&h, "events.list");
    assert_eq!(lists.len(), 2);
    assert!(lists[0]
        .query
        .as_deref()
        .unwrap_or_default()
        .contains("singleValueExtendedProperties%2Fany"));

    let stored = h
        .graph()
        .get_event(UPN, &written.external_event_id)
        .unwrap();
    assert_eq!(stored["transactionId"], booking_tag("bk_42", 0).as_str());
    assert_eq!(stored["originalStartTimeZone"], "Europe/Berlin");
    assert_eq!(start_of(&stored), event.start);
    assert!(written.etag.is_some());

    let found = client
        .find_booking_event(&mut session, &primary(), "bk_42", 0)
        .await
        .unwrap();
    assert_eq!(
        found.map(|w| w.external_event_id),
        Some(written.external_event_id.clone())
    );
    // Another generation of the same booking is a different event.
    assert_eq!(
        client
            .find_booking_event(&mut session, &primary(), "bk_42", 1)
            .await
            .unwrap(),
        None
    );
    // Inbound sync recognises it as ours by transactionId.
    let (pages, _) = round(&client, &mut session, SyncPosition::Start).await;
    let ours = graph_events(&pages.concat());
    assert_eq!(ours.len(), 1);
    assert!(matches!(
        calsync::core::busy::graph_busy(&ours[0], chrono_tz::UTC, &Default::default()),
        calsync::core::busy::BusyDecision::Ours { booking_id } if booking_id == "bk_42"
    ));
    // The extended property holds the plain booking id (what graph_busy reads).
    let expanded = client_get_with_property(&h, &mut session, &written.external_event_id).await;
    assert_eq!(expanded, Some("bk_42".to_string()));
}

#[tokio::test]
async fn update_moves_the_same_event_and_delete_twice_is_ok() {
    let (h, client, mut session) = setup().await;
    let mut event = booking(now() + Duration::days(2));
    let created = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap();
    event.start += Duration::hours(5);
    event.end += Duration::hours(5);
    event.title = "Haircut (moved)".into();
    let updated = client
        .update_event(&mut session, &primary(), &created.external_event_id, &event)
        .await
        .unwrap();
    assert_eq!(updated.external_event_id, created.external_event_id);
    assert_ne!(updated.etag, created.etag);
    assert_eq!(h.graph().event_count(UPN), 1);
    let stored = h
        .graph()
        .get_event(UPN, &created.external_event_id)
        .unwrap();
    assert_eq!(start_of(&stored), event.start);
    assert_eq!(stored["subject"], "Haircut (moved)");
    assert!(endpoint_log(&h, "events.delete").is_empty());

    for _ in 0..2 {
        client
            .delete_event(&mut session, &primary(), &created.external_event_id)
            .await
            .unwrap();
    }
    let deletes: Vec<u16> = endpoint_log(&h, "events.delete")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(deletes, [204, 404]);
    assert_eq!(h.graph().event_count(UPN), 0);
    let err = client
        .update_event(&mut session, &primary(), &created.external_event_id, &event)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn free_busy_over_more_than_sixty_days_is_chunked() {
    let (h, client, mut session) = setup().await;
    let start = now();
    let w = SyncWindow {
        start,
        end: start + Duration::days(100),
    };
    let g = h.graph();
    g.create_event(UPN, timed("a", start + Duration::days(5), 60))
        .unwrap();
    g.create_event(UPN, timed("b", start + Duration::days(80), 60))
        .unwrap();
    let mut tentative = timed("t", start + Duration::days(80) + Duration::minutes(30), 60);
    tentative["showAs"] = json!("tentative");
    g.create_event(UPN, tentative).unwrap();
    let mut free = timed("free", start + Duration::days(10), 60);
    free["showAs"] = json!("free");
    g.create_event(UPN, free).unwrap();
    let mut elsewhere = timed("wfh", start + Duration::days(11), 60);
    elsewhere["showAs"] = json!("workingElsewhere");
    g.create_event(UPN, elsewhere).unwrap();

    let me = CalendarId::parse(UPN).unwrap();
    let ghost = CalendarId::parse("ghost@contoso.com").unwrap();
    let result = client
        .free_busy(&mut session, &[me.clone(), ghost], w)
        .await
        .unwrap();
    assert_eq!(result.len(), 1, "{result:?}");
    assert_eq!(result[0].0, me);
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        result[0].1.iter().map(|i| (i.start(), i.end())).collect();
    assert_eq!(
        spans,
        [
            (
                start + Duration::days(5),
                start + Duration::days(5) + Duration::minutes(60)
            ),
            (
                start + Duration::days(80),
                start + Duration::days(80) + Duration::minutes(90)
            ),
        ]
    );
    let calls = endpoint_log(&h, "getSchedule");
    assert_eq!(calls.len(), 2, "100 days in < 62-day chunks");
    assert!(calls.iter().all(|r| r.status == 200));
}

/// The booking extended property of an event, read with `$expand`.
async fn client_get_with_property(
    h: &SimHandle,
    session: &mut AuthSession,
    id: &str,
) -> Option<String> {
    let url = format!(
        "{}/me/events/{id}?$expand=singleValueExtendedProperties($filter=id%20eq%20'{}')",
        h.graph_base_url(),
        GRAPH_BOOKING_PROPERTY_ID.replace(' ', "%20")
    );
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(session.access_token.clone().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event: GraphEvent = serde_json::from_value(body).unwrap();
    event
        .extended_property(GRAPH_BOOKING_PROPERTY_ID)
        .map(str::to_owned)
}

/// A webhook endpoint that answers Graph's validation handshake.
async fn validating_hook() -> String {
    async fn handle(Query(q): Query<HashMap<String, String>>) -> Response {
        match q.get("validationToken") {
            Some(token) => (
                StatusCode::OK,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                token.clone(),
            )
                .into_response(),
            None => StatusCode::ACCEPTED.into_response(),
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().fallback(handle)).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn subscriptions_open_renew_and_close() {
    let (h, client, mut session) = setup().await;
    let hook = validating_hook().await;
    let requested = (Utc::now() + Duration::hours(12))
        .duration_trunc(Duration::seconds(1))
        .unwrap();
    let request = ChannelRequest {
        channel_id: "chan-1".into(),
        address: format!("{hook}/graph"),
        lifecycle_address: Some(format!("{hook}/graph-lifecycle")),
        secret: "c2VjcmV0LTEyMw".into(),
        expires_at: requested,
    };
    let channel = client
        .open_channel(&mut session, &primary(), &request)
        .await
        .unwrap();
    assert_eq!(channel.channel_id, "chan-1");
    assert_eq!(channel.expires_at, requested);
    let subs = h.graph().subscriptions();
    assert_eq!(subs.len(), 1);
    let sub = &subs[0];
    assert_eq!(sub.id, channel.resource_id);
    assert_eq!(sub.resource, "me/events");
    assert_eq!(sub.change_types, ["created", "updated", "deleted"]);
    assert_eq!(
        sub.lifecycle_url.as_deref(),
        Some(format!("{hook}/graph-lifecycle").as_str())
    );
    assert_eq!(
        sub.client_state.as_deref().and_then(split_client_state),
        Some(("chan-1", "c2VjcmV0LTEyMw"))
    );

    // Renewal asks for 10 days; the provider grants at most 4,230 minutes.
    let renewed = client
        .renew_channel(&mut session, &channel, Utc::now() + Duration::days(10))
        .await
        .unwrap();
    assert_eq!(renewed.resource_id, channel.resource_id);
    let max = Utc::now() + Duration::minutes(4230);
    assert!(renewed.expires_at <= max && renewed.expires_at > max - Duration::minutes(5));
    // Graph renders 7 fractional digits (100 ns).
    let stored = h.graph().subscriptions()[0].expiration;
    assert!((stored - renewed.expires_at).abs() < Duration::microseconds(1));

    client.close_channel(&mut session, &channel).await.unwrap();
    assert!(h.graph().subscriptions().is_empty());
    client.close_channel(&mut session, &channel).await.unwrap();
    let deletes: Vec<u16> = endpoint_log(&h, "subscriptions.delete")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(deletes, [204, 404]);
    let err = client
        .renew_channel(&mut session, &channel, Utc::now() + Duration::days(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_garbled_event_does_not_fail_its_page() {
    let (h, client, mut session) = setup().await;
    let base = now() + Duration::days(1);
    let good = h
        .graph()
        .create_event(UPN, timed("good", base, 30))
        .unwrap();
    let mut garbled = timed("garbled", base + Duration::hours(1), 30);
    garbled["isCancelled"] = json!("maybe");
    let garbled = h.graph().create_event(UPN, garbled).unwrap();
    let (pages, _) = round(&client, &mut session, SyncPosition::Start).await;
    let ids: Vec<String> = graph_events(&pages.concat())
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [good["id"].as_str().unwrap().to_owned()]);
    assert_ne!(garbled["id"], good["id"]);
}

#[tokio::test]
async fn writes_to_a_secondary_calendar_stay_there_and_are_found_there() {
    let (h, client, mut session) = setup().await;
    let id = h.graph().create_calendar(UPN, "Bookings").unwrap();
    let calendar = CalendarId::parse(id.clone()).unwrap();
    let event = booking(now() + Duration::days(2));
    let written = client
        .create_event(&mut session, &calendar, &event)
        .await
        .unwrap();
    let again = client
        .create_event(&mut session, &calendar, &event)
        .await
        .unwrap();
    assert_eq!(again.external_event_id, written.external_event_id);
    assert_eq!(h.graph().event_count(UPN), 1);
    assert_eq!(endpoint_log(&h, "events.create").len(), 1);
    let creates: Vec<String> = h
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == "events.create")
        .map(|r| r.path)
        .collect();
    assert!(
        creates[0].ends_with(&format!("/me/calendars/{id}/events")),
        "{creates:?}"
    );
    let found = client
        .find_booking_event(&mut session, &calendar, "bk_42", 0)
        .await
        .unwrap();
    assert_eq!(
        found.map(|w| w.external_event_id),
        Some(written.external_event_id)
    );
    let searches: Vec<String> = h
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == "events.list")
        .map(|r| r.path)
        .collect();
    assert!(searches
        .iter()
        .all(|p| p.ends_with(&format!("/me/calendars/{id}/events"))));
}

/// Every page of a round carries the mailbox's zone (what all-day events
/// without a real `originalStartTimeZone` are read in), fetched on a full
/// round's first page, never once per page, and by incremental rounds
/// (the 15-minute poll) at most once an hour per account.
#[tokio::test]
async fn every_delta_page_carries_the_mailbox_zone_read_once_per_round_and_hourly_when_polled() {
    let (h, client, mut session) = setup().await;
    let clock = calsync::ports::OffsetClock::new();
    let client = client.with_page_size(2).with_clock(clock.clone());
    h.graph()
        .set_mailbox_zone(UPN, "AUS Eastern Standard Time")
        .unwrap();
    for i in 0..5 {
        h.graph()
            .create_event(
                UPN,
                timed(&format!("e{i}"), now() + Duration::hours(i + 1), 30),
            )
            .unwrap();
    }
    let mut pages = 0;
    let mut position = SyncPosition::Start;
    let cursor = loop {
        let page = client
            .list_changes(&mut session, &primary(), &position, window())
            .await
            .unwrap();
        pages += 1;
        assert_eq!(
            page.calendar_zone.as_deref(),
            Some("AUS Eastern Standard Time"),
            "page {pages}"
        );
        match page.next {
            PageNext::More(next) => position = SyncPosition::Page(next),
            PageNext::Complete(cursor) => break cursor,
        }
    };
    assert!(pages >= 3, "only {pages} pages");
    assert_eq!(
        endpoint_log(&h, "mailboxSettings").len(),
        1,
        "one read per round"
    );
    // Incremental rounds within the hour use the zone already read: an
    // idle mailbox polled every 15 minutes is not read at every poll.
    h.graph().set_mailbox_zone(UPN, "Europe/Berlin").unwrap();
    let mut cursor = cursor;
    for _ in 0..3 {
        clock.advance(Duration::minutes(15));
        let page = client
            .list_changes(
                &mut session,
                &primary(),
                &SyncPosition::Cursor(cursor.clone()),
                window(),
            )
            .await
            .unwrap();
        assert_eq!(
            page.calendar_zone.as_deref(),
            Some("AUS Eastern Standard Time")
        );
        let PageNext::Complete(next) = page.next else {
            panic!("an idle incremental round is one page");
        };
        cursor = next;
    }
    assert_eq!(
        endpoint_log(&h, "mailboxSettings").len(),
        1,
        "no read within the hour"
    );
    // Past the hour an incremental round reads it again: a zone changed in
    // Outlook is seen within the hour.
    clock.advance(Duration::minutes(16));
    let page = client
        .list_changes(
            &mut session,
            &primary(),
            &SyncPosition::Cursor(cursor),
            window(),
        )
        .await
        .unwrap();
    assert_eq!(page.calendar_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(endpoint_log(&h, "mailboxSettings").len(), 2);
    // A full round always reads it.
    h.graph().set_mailbox_zone(UPN, "Pacific/Honolulu").unwrap();
    let page = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    assert_eq!(page.calendar_zone.as_deref(), Some("Pacific/Honolulu"));
    assert_eq!(endpoint_log(&h, "mailboxSettings").len(), 3);
    h.graph().set_mailbox_zone(UPN, "Europe/Berlin").unwrap();
    // A page link this client never handed out still gets the zone.
    let fresh = GraphClient::new(http_client().unwrap(), endpoints(&h)).with_page_size(2);
    let first = fresh
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    let PageNext::More(next) = first.next else {
        panic!("expected more pages");
    };
    let other = GraphClient::new(http_client().unwrap(), endpoints(&h)).with_page_size(2);
    let page = other
        .list_changes(
            &mut session,
            &primary(),
            &SyncPosition::Page(next),
            window(),
        )
        .await
        .unwrap();
    assert_eq!(page.calendar_zone.as_deref(), Some("Europe/Berlin"));
}

#[tokio::test]
async fn unreadable_mailbox_settings_mean_no_zone_but_outages_fail_the_page() {
    let (h, client, mut session) = setup().await;
    // Without MailboxSettings.Read consent: the round goes on, zone unknown.
    h.add_fault(fault(
        "mailboxSettings",
        status(403, None, Some("ErrorAccessDenied")),
    ));
    let page = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    assert_eq!(page.calendar_zone, None);
    // An outage is an outage: back off, as for the delta call itself.
    h.add_fault(fault("mailboxSettings", status(503, Some(1.0), None)));
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");
    let page = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    assert_eq!(page.calendar_zone.as_deref(), Some("UTC"));
}
