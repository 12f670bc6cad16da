//! `GoogleClient` over real HTTP against the calsim Google simulator:
//! OAuth refresh and revocation, 401 → refresh → retry, full and incremental
//! sync, error classification, idempotent writes, free/busy chunking and
//! watch channels.

use calsim::{FaultKind, FaultRule, Provider, SimConfig, SimHandle, Simulators};
use calsync::core::busy::{booking_tag, GOOGLE_BOOKING_PROPERTY};
use calsync::core::ids::{CalendarId, CalendarProvider};
use calsync::providers::google::GoogleClient;
use calsync::providers::{
    http_client, AuthSession, CalendarApi, ChannelRequest, ExternalChange, OutboundEvent, PageNext,
    ProviderClient, ProviderEndpoints, ProviderError, SyncCursor, SyncPosition, SyncWindow,
};
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const EMAIL: &str = "alice@example.com";

fn endpoints(h: &SimHandle) -> ProviderEndpoints {
    ProviderEndpoints {
        google_api: h.google_base_url(),
        google_token: h.google_token_url(),
        graph_api: h.graph_base_url(),
        graph_token: h.graph_token_url("common"),
    }
}

/// A simulator with one account (primary calendar in `zone`), a client and
/// a session that has never been refreshed.
async fn setup_in(zone: &str) -> (SimHandle, GoogleClient, AuthSession) {
    let h = Simulators::start(SimConfig::default()).await.unwrap();
    let account = h.google().create_account_in(EMAIL, zone);
    let session = AuthSession {
        client_id: account.client_id,
        client_secret: account.client_secret,
        refresh_token: account.refresh_token,
        access_token: None,
        access_expires_at: None,
        refresh_token_rotated: false,
        access_token_refreshed: false,
    };
    let client = GoogleClient::new(http_client().unwrap(), endpoints(&h));
    (h, client, session)
}

async fn setup() -> (SimHandle, GoogleClient, AuthSession) {
    setup_in("UTC").await
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

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn timed(summary: &str, start: DateTime<Utc>, minutes: i64) -> Value {
    json!({ "summary": summary,
            "start": { "dateTime": rfc(start) },
            "end": { "dateTime": rfc(start + Duration::minutes(minutes)) } })
}

fn fault(endpoint: &str, kind: FaultKind) -> FaultRule {
    FaultRule {
        provider: Provider::Google,
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

/// Query parameters of a logged request, still percent-encoded.
fn params(query: &Option<String>) -> Vec<(String, String)> {
    query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn param(query: &Option<String>, key: &str) -> Option<String> {
    params(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn endpoint_log(h: &SimHandle, endpoint: &str) -> Vec<calsim::RequestRecord> {
    h.requests()
        .into_iter()
        .filter(|r| r.endpoint == endpoint)
        .collect()
}

/// Runs a whole sync round; returns the pages' changes and the cursor.
async fn round(
    client: &GoogleClient,
    session: &mut AuthSession,
    from: SyncPosition,
) -> (Vec<Vec<ExternalChange>>, SyncCursor, Option<String>) {
    let mut position = from;
    let mut pages = Vec::new();
    for _ in 0..20 {
        let page = client
            .list_changes(session, &primary(), &position, window())
            .await
            .unwrap();
        pages.push(page.changes);
        match page.next {
            PageNext::More(next) => position = SyncPosition::Page(next),
            PageNext::Complete(cursor) => return (pages, cursor, page.calendar_zone),
        }
    }
    panic!("sync round did not complete in 20 pages");
}

fn google_events(changes: &[ExternalChange]) -> Vec<calsync::core::wire::GoogleEvent> {
    changes
        .iter()
        .map(|c| match c {
            ExternalChange::Google(e) => e.clone(),
            other => panic!("not a Google change: {other:?}"),
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

#[tokio::test]
async fn token_refresh_then_invalid_grant_after_revocation_means_reauthorize() {
    let (h, client, mut session) = setup().await;
    let original_refresh = session.refresh_token.clone();
    client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    let expires = session.access_expires_at.expect("expiry recorded");
    assert!(session.access_token.is_some());
    assert!(
        expires > Utc::now() + Duration::minutes(55),
        "uses expires_in"
    );
    assert!(!session.refresh_token_rotated, "Google does not rotate");
    assert_eq!(session.refresh_token, original_refresh);
    assert_eq!(endpoint_log(&h, "token").len(), 1);

    // A valid token is reused, not refreshed again.
    client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    assert_eq!(endpoint_log(&h, "token").len(), 1);

    // Revocation kills the access token (401) and the grant (invalid_grant).
    h.google().revoke_grant(EMAIL);
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    match err {
        ProviderError::Reauthorize(description) => {
            assert!(description.contains("revoked"), "{description}");
            assert!(!description.contains(&original_refresh));
        }
        other => panic!("expected Reauthorize, got {other:?}"),
    }
    let statuses: Vec<(String, u16)> = h
        .requests()
        .iter()
        .map(|r| (r.endpoint.clone(), r.status))
        .collect();
    assert_eq!(
        statuses[statuses.len() - 2..],
        [("events.list".into(), 401), ("token".into(), 400)]
    );
}

#[tokio::test]
async fn a_401_with_an_expired_access_token_refreshes_once_and_retries_once() {
    let (h, client, mut session) = setup().await;
    client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap();
    let first_token = session.access_token.clone();
    // The server expires the token although the session still trusts it.
    h.google().expire_access_tokens(EMAIL);
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
            ("events.list".to_string(), 401),
            ("token".to_string(), 200),
            ("events.list".to_string(), 200)
        ]
    );
    assert_ne!(session.access_token, first_token);
}

#[tokio::test]
async fn full_sync_over_three_pages_then_incremental_sees_an_upsert_and_a_deletion() {
    let (h, client, mut session) = setup_in("Europe/Berlin").await;
    let base = now() + Duration::days(1);
    let mut ids = Vec::new();
    for i in 0..600 {
        let created = h
            .google()
            .upsert_event(
                EMAIL,
                "primary",
                timed(&format!("e{i}"), base + Duration::minutes(30 * i), 30),
            )
            .unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    // Outside the window: not part of the full round.
    h.google()
        .upsert_event(
            EMAIL,
            "primary",
            timed("far", now() + Duration::days(400), 30),
        )
        .unwrap();

    let (pages, cursor, zone) = round(&client, &mut session, SyncPosition::Start).await;
    assert!(pages.len() >= 3, "{} pages", pages.len());
    assert_eq!(zone.as_deref(), Some("Europe/Berlin"));
    let seen: BTreeSet<String> = pages
        .iter()
        .flat_map(|p| google_events(p))
        .map(|e| e.id)
        .collect();
    assert_eq!(seen, ids.iter().cloned().collect::<BTreeSet<_>>());

    // Paging kept every other parameter identical and never mixed in a syncToken.
    let lists = endpoint_log(&h, "events.list");
    let first = &lists[0].query;
    for (i, r) in lists.iter().enumerate() {
        for key in [
            "singleEvents",
            "showDeleted",
            "maxResults",
            "timeMin",
            "timeMax",
        ] {
            assert_eq!(param(&r.query, key), param(first, key), "page {i}: {key}");
        }
        assert_eq!(param(&r.query, "syncToken"), None);
        assert_eq!(param(&r.query, "pageToken").is_some(), i > 0);
    }
    assert_eq!(param(first, "singleEvents").as_deref(), Some("true"));
    assert_eq!(param(first, "showDeleted").as_deref(), Some("true"));
    assert_eq!(param(first, "maxResults").as_deref(), Some("250"));

    // An upsert and a deletion show up in the incremental round.
    h.google()
        .patch_event(EMAIL, "primary", &ids[3], json!({ "summary": "moved" }))
        .unwrap();
    h.google().delete_event(EMAIL, "primary", &ids[7]).unwrap();
    h.clear_log();
    let (pages, next_cursor, _) =
        round(&client, &mut session, SyncPosition::Cursor(cursor.clone())).await;
    assert_ne!(next_cursor, cursor);
    let changed = google_events(&pages.concat());
    assert_eq!(changed.len(), 2, "{changed:?}");
    let upserted = changed.iter().find(|e| e.id == ids[3]).expect("upsert");
    assert_eq!(
        upserted.status(),
        calsync::core::wire::GoogleEventStatus::Confirmed
    );
    let deleted = changed.iter().find(|e| e.id == ids[7]).expect("deletion");
    assert_eq!(
        deleted.status(),
        calsync::core::wire::GoogleEventStatus::Cancelled
    );
    for r in endpoint_log(&h, "events.list") {
        assert!(param(&r.query, "syncToken").is_some());
        for forbidden in ["timeMin", "timeMax", "orderBy", "q", "updatedMin"] {
            assert_eq!(param(&r.query, forbidden), None, "{forbidden}");
        }
    }
}

#[tokio::test]
async fn an_invalidated_sync_token_requires_a_full_resync() {
    let (h, client, mut session) = setup().await;
    let (_, cursor, _) = round(&client, &mut session, SyncPosition::Start).await;
    h.google().invalidate_sync_tokens(EMAIL);
    let err = client
        .list_changes(
            &mut session,
            &primary(),
            &SyncPosition::Cursor(cursor),
            window(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::ResyncRequired(_)), "{err:?}");
    // The full resync works.
    round(&client, &mut session, SyncPosition::Start).await;
}

#[tokio::test]
async fn throttling_carries_a_fractional_retry_after() {
    let (h, client, mut session) = setup().await;
    h.add_fault(fault("events.list", status(429, Some(2.128), None)));
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
        "events.list",
        status(403, None, Some("userRateLimitExceeded")),
    ));
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::RateLimited { retry_after: None });
}

#[tokio::test]
async fn outages_timeouts_and_refused_connections_are_unavailable() {
    let (h, client, mut session) = setup().await;
    h.add_fault(fault("events.list", status(503, None, None)));
    let err = client
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");

    // A slow answer beyond the client's timeout.
    h.add_fault(fault("events.list", FaultKind::Latency { ms: 1500 }));
    let impatient = GoogleClient::new(
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(300))
            .build()
            .unwrap(),
        endpoints(&h),
    );
    let err = impatient
        .list_changes(&mut session, &primary(), &SyncPosition::Start, window())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unavailable { message, .. } if message.contains("timed out")),
        "{err:?}"
    );

    // Nobody listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut dead = endpoints(&h);
    dead.google_api = format!("http://127.0.0.1:{closed}/calendar/v3");
    let nowhere = GoogleClient::new(http_client().unwrap(), dead);
    let err = nowhere
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
        "events.insert",
        FaultKind::CreatedButResponseLost { status: None },
    ));
    let err = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err:?}");

    let written = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap();
    let tag = booking_tag("bk_42", 0);
    assert_eq!(written.external_event_id, tag);
    assert!(written.etag.is_some());
    let stored = h.google().stored_events(EMAIL, "primary").unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let ours = &stored[0];
    assert_eq!(ours["id"], tag.as_str());
    assert_eq!(
        ours["extendedProperties"]["private"][GOOGLE_BOOKING_PROPERTY],
        "bk_42"
    );
    assert_eq!(
        ours["extendedProperties"]["private"]["calsyncIcalUid"],
        "bk_42@platform.example"
    );
    assert_eq!(ours["start"]["timeZone"], "Europe/Berlin");
    // Both inserts asked for no guest e-mails.
    let inserts = endpoint_log(&h, "events.insert");
    assert_eq!(inserts.len(), 2);
    assert!(inserts
        .iter()
        .all(|r| param(&r.query, "sendUpdates").as_deref() == Some("none")));

    let found = client
        .find_booking_event(&mut session, &primary(), "bk_42", 0)
        .await
        .unwrap();
    assert_eq!(found.map(|w| w.external_event_id), Some(tag));
    assert_eq!(
        client
            .find_booking_event(&mut session, &primary(), "bk_42", 1)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn update_moves_the_same_event_and_delete_twice_is_ok() {
    let (h, client, mut session) = setup().await;
    let mut event = booking(now() + Duration::days(2));
    let created = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap();
    event.start += Duration::hours(3);
    event.end += Duration::hours(3);
    event.title = "Haircut (moved)".into();
    let updated = client
        .update_event(&mut session, &primary(), &created.external_event_id, &event)
        .await
        .unwrap();
    assert_eq!(updated.external_event_id, created.external_event_id);
    assert_ne!(updated.etag, created.etag);
    let stored = h.google().stored_events(EMAIL, "primary").unwrap();
    assert_eq!(stored.len(), 1);
    let start = DateTime::parse_from_rfc3339(stored[0]["start"]["dateTime"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert_eq!(start, event.start);
    assert_eq!(stored[0]["summary"], "Haircut (moved)");
    assert_eq!(endpoint_log(&h, "events.patch").len(), 1);
    assert!(endpoint_log(&h, "events.delete").is_empty());

    client
        .delete_event(&mut session, &primary(), &created.external_event_id)
        .await
        .unwrap();
    client
        .delete_event(&mut session, &primary(), &created.external_event_id)
        .await
        .unwrap();
    client
        .delete_event(&mut session, &primary(), "neverexisted1")
        .await
        .unwrap();
    let deletes: Vec<u16> = endpoint_log(&h, "events.delete")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(deletes, [204, 410, 404]);
    assert_eq!(
        client
            .find_booking_event(&mut session, &primary(), "bk_42", 0)
            .await
            .unwrap(),
        None
    );

    // The deleted id stays reserved: the same generation is refused, the next works.
    let err = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::IdRetired(_)), "{err:?}");
    event.generation = 1;
    let again = client
        .create_event(&mut session, &primary(), &event)
        .await
        .unwrap();
    assert_eq!(again.external_event_id, booking_tag("bk_42", 1));
}

#[tokio::test]
async fn free_busy_over_more_than_sixty_days_is_chunked_and_merged() {
    let (h, client, mut session) = setup().await;
    let start = now();
    let w = SyncWindow {
        start,
        end: start + Duration::days(150),
    };
    let g = h.google();
    g.upsert_event(EMAIL, "primary", timed("a", start + Duration::days(10), 60))
        .unwrap();
    // Overlapping pair: merged into one interval.
    g.upsert_event(
        EMAIL,
        "primary",
        timed("b", start + Duration::days(100), 60),
    )
    .unwrap();
    g.upsert_event(
        EMAIL,
        "primary",
        timed("c", start + Duration::days(100) + Duration::minutes(30), 60),
    )
    .unwrap();
    let mut free = timed("free", start + Duration::days(20), 60);
    free["transparency"] = json!("transparent");
    g.upsert_event(EMAIL, "primary", free).unwrap();

    let missing = CalendarId::parse("nobody@example.com").unwrap();
    let result = client
        .free_busy(&mut session, &[primary(), missing], w)
        .await
        .unwrap();
    assert_eq!(
        result.len(),
        1,
        "unknown calendars are left out: {result:?}"
    );
    let (calendar, busy) = &result[0];
    assert_eq!(calendar, &primary());
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        busy.iter().map(|i| (i.start(), i.end())).collect();
    assert_eq!(
        spans,
        [
            (
                start + Duration::days(10),
                start + Duration::days(10) + Duration::minutes(60)
            ),
            (
                start + Duration::days(100),
                start + Duration::days(100) + Duration::minutes(90)
            ),
        ]
    );
    let calls = endpoint_log(&h, "freeBusy");
    assert_eq!(calls.len(), 3, "150 days in ≤ 60-day chunks");
    assert!(calls.iter().all(|r| r.status == 200));

    // Only unknown calendars: the error comes back.
    let err = client
        .free_busy(
            &mut session,
            &[CalendarId::parse("ghost@example.com").unwrap()],
            w,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn channels_open_cannot_renew_in_place_and_close_idempotently() {
    let (h, client, mut session) = setup().await;
    let requested = (Utc::now() + Duration::hours(2))
        .duration_trunc(Duration::milliseconds(1))
        .unwrap();
    let request = ChannelRequest {
        channel_id: "6f1c2a4e-1b9d-4c55-9f0e-2f3a8d7c1e11".into(),
        address: "http://127.0.0.1:9/google".into(),
        lifecycle_address: None,
        secret: "conn=42&sig=abc".into(),
        expires_at: requested,
    };
    let channel = client
        .open_channel(&mut session, &primary(), &request)
        .await
        .unwrap();
    assert_eq!(channel.channel_id, request.channel_id);
    assert_eq!(channel.expires_at, requested);
    assert!(!channel.resource_id.is_empty());
    let live = h.google().channels();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].token.as_deref(), Some("conn=42&sig=abc"));
    assert_eq!(live[0].resource_id, channel.resource_id);

    // The provider shortens a too-long request; the effective expiry is read back.
    let long = ChannelRequest {
        channel_id: "second-channel".into(),
        expires_at: Utc::now() + Duration::days(30),
        ..request.clone()
    };
    let clamped = client
        .open_channel(&mut session, &primary(), &long)
        .await
        .unwrap();
    assert!(clamped.expires_at < Utc::now() + Duration::days(8));
    assert!(clamped.expires_at > Utc::now() + Duration::days(6));

    let err = client
        .renew_channel(&mut session, &channel, Utc::now() + Duration::days(1))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");

    client.close_channel(&mut session, &channel).await.unwrap();
    assert!(h
        .google()
        .channels()
        .iter()
        .any(|c| c.id == channel.channel_id && c.stopped));
    // Already stopped: counts as closed.
    client.close_channel(&mut session, &channel).await.unwrap();
    let stops: Vec<u16> = endpoint_log(&h, "channels.stop")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(stops[0], 204);
    assert_eq!(stops[1], 404);
}

#[tokio::test]
async fn a_garbled_event_does_not_fail_its_page() {
    let (h, client, mut session) = setup().await;
    let base = now() + Duration::days(1);
    let good = h
        .google()
        .upsert_event(EMAIL, "primary", timed("good", base, 30))
        .unwrap();
    let mut garbled = timed("garbled", base + Duration::hours(1), 30);
    garbled["attendees"] = json!("not a list");
    let garbled = h.google().upsert_event(EMAIL, "primary", garbled).unwrap();
    let (pages, _, _) = round(&client, &mut session, SyncPosition::Start).await;
    let ids: Vec<String> = google_events(&pages.concat())
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, [good["id"].as_str().unwrap().to_owned()]);
    assert_ne!(garbled["id"], good["id"]);
}

#[tokio::test]
async fn provider_client_delegates_to_the_provider_of_the_connection() {
    let (h, _, mut google_session) = setup().await;
    let graph_account = h.graph().create_account("bob@contoso.com");
    let mut graph_session = AuthSession {
        client_id: graph_account.client_id,
        client_secret: graph_account.client_secret,
        refresh_token: graph_account.refresh_token,
        access_token: None,
        access_expires_at: None,
        refresh_token_rotated: false,
        access_token_refreshed: false,
    };
    let google = ProviderClient::for_provider(
        CalendarProvider::Google,
        http_client().unwrap(),
        endpoints(&h),
    );
    let graph = ProviderClient::for_provider(
        CalendarProvider::Microsoft,
        http_client().unwrap(),
        endpoints(&h),
    );
    assert_eq!(google.provider(), CalendarProvider::Google);
    assert_eq!(graph.provider(), CalendarProvider::Microsoft);
    let page = google
        .list_changes(
            &mut google_session,
            &primary(),
            &SyncPosition::Start,
            window(),
        )
        .await
        .unwrap();
    assert!(matches!(page.next, PageNext::Complete(_)));
    let page = graph
        .list_changes(
            &mut graph_session,
            &primary(),
            &SyncPosition::Start,
            window(),
        )
        .await
        .unwrap();
    assert!(matches!(&page.next, PageNext::Complete(c) if c.0.contains("$deltatoken")));
    let endpoints: Vec<(Provider, String)> = h
        .requests()
        .into_iter()
        .filter(|r| r.endpoint != "token")
        .map(|r| (r.provider, r.endpoint))
        .collect();
    assert_eq!(
        endpoints,
        [
            (Provider::Google, "events.list".to_string()),
            (Provider::Graph, "delta".to_string()),
            (Provider::Graph, "mailboxSettings".to_string())
        ]
    );
}

#[tokio::test]
async fn a_secondary_calendar_is_synced_and_written_by_its_id() {
    let (h, client, mut session) = setup().await;
    let id = h
        .google()
        .create_calendar(EMAIL, "Work", "America/New_York")
        .unwrap();
    assert!(id.contains('@'));
    let calendar = CalendarId::parse(id.clone()).unwrap();
    h.google()
        .upsert_event(EMAIL, &id, timed("standup", now() + Duration::days(1), 15))
        .unwrap();
    let page = client
        .list_changes(&mut session, &calendar, &SyncPosition::Start, window())
        .await
        .unwrap();
    assert_eq!(page.calendar_zone.as_deref(), Some("America/New_York"));
    assert_eq!(google_events(&page.changes).len(), 1);
    let written = client
        .create_event(&mut session, &calendar, &booking(now() + Duration::days(3)))
        .await
        .unwrap();
    assert_eq!(h.google().stored_events(EMAIL, &id).unwrap().len(), 2);
    assert!(h
        .google()
        .stored_events(EMAIL, "primary")
        .unwrap()
        .is_empty());
    client
        .delete_event(&mut session, &calendar, &written.external_event_id)
        .await
        .unwrap();
}
