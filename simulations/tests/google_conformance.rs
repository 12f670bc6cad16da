//! Google Calendar v3 conformance: each behaviour calsync relies on,
//! exercised over HTTP. Against the real service, swap the base URL and the
//! OAuth token; the assertions are the same.

mod common;

use calsim::google::instance_id;
use chrono::{Duration, Utc};
use common::{google_access_token, hook, sim, Api};
use serde_json::{json, Value};

async fn setup(email: &str) -> (calsim::SimHandle, Api, calsim::GoogleAccount) {
    let h = sim().await;
    let acct = h.google().create_account(email);
    let token = google_access_token(&h, &acct).await;
    let api = Api::new(h.google_base_url(), token);
    (h, api, acct)
}

fn timed(id: Option<&str>, start: &str, end: &str) -> Value {
    let mut v =
        json!({ "summary": "Busy", "start": { "dateTime": start }, "end": { "dateTime": end } });
    if let Some(id) = id {
        v["id"] = json!(id);
    }
    v
}

fn reason(v: &Value) -> &str {
    v["error"]["errors"][0]["reason"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn token_endpoint_refreshes_and_reports_invalid_grant() {
    let (h, api, acct) = setup("alice@example.com").await;
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 200);
    // Wrong client secret.
    let resp = common::client()
        .post(h.google_token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &acct.refresh_token),
            ("client_id", &acct.client_id),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 401);
    h.google().revoke_grant(&acct.email);
    let resp = common::client()
        .post(h.google_token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &acct.refresh_token),
            ("client_id", &acct.client_id),
            ("client_secret", &acct.client_secret),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(v["error_description"], "Token has been expired or revoked.");
    // Revocation also kills the access token.
    let (s, v) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 401);
    assert_eq!(reason(&v), "authError");
}

#[tokio::test]
async fn api_requires_a_live_bearer_token() {
    let (h, api, acct) = setup("bob@example.com").await;
    let anon = Api::new(h.google_base_url(), "garbage".into());
    let (s, v) = anon.get("/calendars/primary/events").await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], 401);
    assert_eq!(v["error"]["errors"][0]["location"], "Authorization");
    h.google().expire_access_tokens(&acct.email);
    let (s, _) = api.get("/calendars/primary/events").await;
    assert_eq!(s, 401, "expired access token");
    let fresh = Api::new(h.google_base_url(), google_access_token(&h, &acct).await);
    let (s, _) = fresh.get("/calendars/primary/events").await;
    assert_eq!(s, 200, "refresh then retry works");
}

#[tokio::test]
async fn client_chosen_ids_follow_charset_and_reservation_rules() {
    let (_h, api, _) = setup("carol@example.com").await;
    let path = "/calendars/primary/events";
    for bad in ["ABCDEF", "abcw1", "ab_c1", "abc"] {
        let (s, v) = api
            .post(
                path,
                &timed(Some(bad), "2026-10-02T10:00:00Z", "2026-10-02T11:00:00Z"),
            )
            .await;
        assert_eq!((s, reason(&v)), (400, "invalid"), "id {bad}");
    }
    let id = "bk0123456789abcdefv";
    let (s, v) = api
        .post(
            path,
            &timed(Some(id), "2026-10-02T10:00:00Z", "2026-10-02T11:00:00Z"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["id"], id);
    assert_eq!(v["status"], "confirmed");
    let (s, v) = api
        .post(
            path,
            &timed(Some(id), "2026-10-02T10:00:00Z", "2026-10-02T11:00:00Z"),
        )
        .await;
    assert_eq!((s, reason(&v)), (409, "duplicate"));
    let (s, _) = api.delete(&format!("{path}/{id}")).await;
    assert_eq!(s, 204);
    let (s, v) = api.delete(&format!("{path}/{id}")).await;
    assert_eq!((s, reason(&v)), (410, "deleted"), "second delete");
    let (s, v) = api.get(&format!("{path}/{id}")).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (200, Some("cancelled")),
        "deleted events stay readable"
    );
    let (s, v) = api
        .post(
            path,
            &timed(Some(id), "2026-10-02T10:00:00Z", "2026-10-02T11:00:00Z"),
        )
        .await;
    assert_eq!(
        (s, reason(&v)),
        (409, "duplicate"),
        "ids of deleted events stay reserved"
    );
    let (s, v) = api.delete(&format!("{path}/unknown00000")).await;
    assert_eq!((s, reason(&v)), (404, "notFound"));
    let (s, v) = api.post(path, &json!({ "summary": "no times" })).await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test]
async fn if_match_mismatch_is_412_and_put_replaces() {
    let (_h, api, _) = setup("dave@example.com").await;
    let (_, ev) = api.post("/calendars/primary/events", &json!({ "id": "evt00001", "summary": "A", "location": "Room 1",
        "start": { "dateTime": "2026-10-02T10:00:00+02:00" }, "end": { "dateTime": "2026-10-02T11:00:00+02:00" } })).await;
    let etag = ev["etag"].as_str().expect("etag").to_string();
    let path = "/calendars/primary/events/evt00001";
    let (s, _, v) = api
        .send(
            reqwest::Method::PATCH,
            path,
            Some(&json!({ "summary": "B" })),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!((s, reason(&v)), (412, "conditionNotMet"));
    assert_eq!(v["error"]["errors"][0]["location"], "If-Match");
    let (s, _, v) = api
        .send(
            reqwest::Method::PATCH,
            path,
            Some(&json!({ "summary": "B" })),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["summary"], "B");
    assert_eq!(v["location"], "Room 1", "PATCH keeps other fields");
    assert_ne!(v["etag"], json!(etag), "etag changes");
    let (s, _, v) = api.send(reqwest::Method::PUT, path, Some(&json!({ "summary": "C",
        "start": { "dateTime": "2026-10-02T12:00:00Z" }, "end": { "dateTime": "2026-10-02T13:00:00Z" } })), &[]).await;
    assert_eq!(s, 200);
    assert!(v.get("location").is_none(), "PUT resets omitted fields");
    assert_eq!(v["sequence"], 1, "time change bumps sequence");
    let (s, _, _) = api
        .send(reqwest::Method::DELETE, path, None, &[("If-Match", &etag)])
        .await;
    assert_eq!(s, 412, "DELETE honours If-Match");
}

#[tokio::test]
async fn paging_sync_tokens_and_tombstones() {
    let (h, api, acct) = setup("erin@example.com").await;
    for i in 0..7 {
        let id = format!("page{i:04}");
        let (s, _) = api
            .post(
                "/calendars/primary/events",
                &timed(Some(&id), "2026-10-05T09:00:00Z", "2026-10-05T10:00:00Z"),
            )
            .await;
        assert_eq!(s, 200);
    }
    let mut ids = Vec::new();
    let mut page_token: Option<String> = None;
    let mut pages = 0;
    let sync_token = loop {
        let mut path = "/calendars/primary/events?maxResults=3".to_string();
        if let Some(t) = &page_token {
            path.push_str(&format!("&pageToken={t}"));
        }
        let (s, v) = api.get(&path).await;
        assert_eq!(s, 200);
        pages += 1;
        ids.extend(
            v["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|i| i["id"].as_str().unwrap_or_default().to_string()),
        );
        assert!(
            !(v.get("nextPageToken").is_some() && v.get("nextSyncToken").is_some()),
            "never both"
        );
        if let Some(t) = v["nextPageToken"].as_str() {
            // A change during paging must not make the listing skip anything.
            if pages == 1 {
                h.google()
                    .delete_event(&acct.email, "primary", "page0000")
                    .expect("delete");
            }
            page_token = Some(t.to_string());
        } else {
            break v["nextSyncToken"]
                .as_str()
                .expect("nextSyncToken on the last page")
                .to_string();
        }
    };
    assert_eq!(pages, 3);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7);

    // User edits after the full sync.
    let g = h.google();
    g.patch_event(
        &acct.email,
        "primary",
        "page0001",
        json!({ "summary": "moved" }),
    )
    .expect("patch");
    g.upsert_event(
        &acct.email,
        "primary",
        timed(
            Some("page0100"),
            "2026-10-06T09:00:00Z",
            "2026-10-06T10:00:00Z",
        ),
    )
    .expect("insert");
    let (s, v) = api
        .get(&format!("/calendars/primary/events?syncToken={sync_token}"))
        .await;
    assert_eq!(s, 200);
    let items = v["items"].as_array().expect("items");
    let by_id = |id: &str| items.iter().find(|i| i["id"] == id).cloned();
    let tomb = by_id("page0000").expect("deletion reported even without showDeleted");
    let keys: Vec<&String> = tomb.as_object().expect("obj").keys().collect();
    assert_eq!(
        keys.len(),
        2,
        "tombstone carries only id and status: {tomb}"
    );
    assert_eq!(tomb["status"], "cancelled");
    assert_eq!(by_id("page0001").expect("patched")["summary"], "moved");
    assert!(by_id("page0100").is_some());
    let next = v["nextSyncToken"].as_str().expect("next token").to_string();
    let (_, v) = api
        .get(&format!("/calendars/primary/events?syncToken={next}"))
        .await;
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0), "nothing new");
}

#[tokio::test]
async fn forbidden_combinations_and_token_invalidation() {
    let (h, api, acct) = setup("frank@example.com").await;
    let (_, v) = api.get("/calendars/primary/events").await;
    let token = v["nextSyncToken"].as_str().expect("token").to_string();
    for extra in [
        "timeMin=2026-10-01T00:00:00Z",
        "q=x",
        "orderBy=updated",
        "updatedMin=2026-10-01T00:00:00Z",
        "privateExtendedProperty=a%3Db",
        "iCalUID=x",
        "showDeleted=false",
    ] {
        let (s, v) = api
            .get(&format!(
                "/calendars/primary/events?syncToken={token}&{extra}"
            ))
            .await;
        assert_eq!(s, 400, "{extra}: {v}");
    }
    let (s, _) = api.get("/calendars/primary/events?orderBy=startTime").await;
    assert_eq!(s, 400, "orderBy=startTime needs singleEvents");
    let (s, v) = api
        .get("/calendars/primary/events?timeMin=2026-10-02T00:00:00Z&timeMax=2026-10-01T00:00:00Z")
        .await;
    assert_eq!((s, reason(&v)), (400, "timeRangeEmpty"));
    h.google().invalidate_sync_tokens(&acct.email);
    let (s, v) = api
        .get(&format!("/calendars/primary/events?syncToken={token}"))
        .await;
    assert_eq!((s, reason(&v)), (410, "fullSyncRequired"));
    assert_eq!(v["error"]["errors"][0]["domain"], "calendar");
}

#[tokio::test]
async fn recurring_series_expand_with_exceptions_across_dst() {
    let (h, api, acct) = setup("gina@example.com").await;
    let master = json!({ "id": "series0001", "summary": "Standup",
        "start": { "dateTime": "2026-10-19T09:00:00", "timeZone": "Europe/Berlin" },
        "end": { "dateTime": "2026-10-19T09:30:00", "timeZone": "Europe/Berlin" },
        "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4", "EXDATE;TZID=Europe/Berlin:20261026T090000"] });
    let (s, v) = api.post("/calendars/primary/events", &master).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["start"]["dateTime"], "2026-10-19T09:00:00+02:00",
        "answered with the zone's offset"
    );
    assert_eq!(v["start"]["timeZone"], "Europe/Berlin");
    let (_, full) = api
        .get("/calendars/primary/events?singleEvents=true&orderBy=startTime")
        .await;
    let items = full["items"].as_array().expect("items").clone();
    let ids: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "series0001_20261019T070000Z",
            "series0001_20261102T080000Z",
            "series0001_20261109T080000Z"
        ]
    );
    assert_eq!(items[0]["start"]["dateTime"], "2026-10-19T09:00:00+02:00");
    assert_eq!(
        items[1]["start"]["dateTime"], "2026-11-02T09:00:00+01:00",
        "wall time kept across DST"
    );
    assert_eq!(items[1]["recurringEventId"], "series0001");
    assert_eq!(
        items[1]["originalStartTime"]["dateTime"],
        "2026-11-02T09:00:00+01:00"
    );
    let (_, masters) = api.get("/calendars/primary/events").await;
    assert_eq!(
        masters["items"].as_array().map(Vec::len),
        Some(1),
        "without singleEvents the master is listed"
    );
    assert!(
        full.get("nextSyncToken").is_none(),
        "orderBy cannot be combined with sync tokens"
    );
    let (_, plain) = api.get("/calendars/primary/events?singleEvents=true").await;
    let token = plain["nextSyncToken"].as_str().expect("token").to_string();

    let start = chrono::DateTime::parse_from_rfc3339("2026-11-02T08:00:00Z")
        .expect("t")
        .with_timezone(&Utc);
    assert_eq!(
        instance_id("series0001", start),
        "series0001_20261102T080000Z"
    );
    h.google()
        .cancel_instance(&acct.email, "primary", "series0001", start)
        .expect("cancel");
    let (_, inc) = api
        .get(&format!(
            "/calendars/primary/events?singleEvents=true&syncToken={token}"
        ))
        .await;
    let cancelled = &inc["items"][0];
    assert_eq!(cancelled["id"], "series0001_20261102T080000Z");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        cancelled["recurringEventId"], "series0001",
        "cancelled instance keeps its series link"
    );
    let (_, after) = api.get("/calendars/primary/events?singleEvents=true").await;
    assert_eq!(after["items"].as_array().map(Vec::len), Some(2));

    // Moving one instance makes an exception; the others are untouched.
    let (s, moved) = api.patch("/calendars/primary/events/series0001_20261109T080000Z",
        &json!({ "start": { "dateTime": "2026-11-09T10:00:00+01:00" }, "end": { "dateTime": "2026-11-09T10:30:00+01:00" } })).await;
    assert_eq!(s, 200, "{moved}");
    assert_eq!(moved["recurringEventId"], "series0001");
    let (_, tokyo) = api
        .get("/calendars/primary/events?singleEvents=true&timeZone=Asia/Tokyo")
        .await;
    assert_eq!(tokyo["timeZone"], "Asia/Tokyo");
    assert_eq!(
        tokyo["items"][0]["start"]["dateTime"], "2026-10-19T16:00:00+09:00",
        "timeZone shapes the answer"
    );
    let (s, inst) = api
        .get("/calendars/primary/events/series0001/instances")
        .await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = inst["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        vec!["series0001_20261019T070000Z", "series0001_20261109T080000Z"],
        "instances: the moved exception included, the cancelled one gone"
    );
    assert_eq!(
        inst["items"][1]["start"]["dateTime"],
        "2026-11-09T10:00:00+01:00"
    );
    assert!(inst.get("nextSyncToken").is_none());
    let (s, _) = api
        .get("/calendars/primary/events/nosuchseries/instances")
        .await;
    assert_eq!(s, 404);
    let (_, all_day) = api
        .post(
            "/calendars/primary/events",
            &json!({ "summary": "Holiday",
        "start": { "date": "2026-12-24" }, "end": { "date": "2026-12-25" } }),
        )
        .await;
    assert_eq!(
        all_day["end"]["date"], "2026-12-25",
        "all-day end date is exclusive"
    );
}

#[tokio::test]
async fn freebusy_applies_busy_rules_and_limits() {
    let (h, api, acct) = setup("hank@example.com").await;
    let g = h.google();
    let e = &acct.email;
    g.upsert_event(
        e,
        "primary",
        timed(None, "2026-10-02T09:00:00Z", "2026-10-02T10:00:00Z"),
    )
    .expect("a");
    g.upsert_event(
        e,
        "primary",
        timed(None, "2026-10-02T09:30:00Z", "2026-10-02T11:00:00Z"),
    )
    .expect("overlap");
    let mut free = timed(None, "2026-10-02T13:00:00Z", "2026-10-02T14:00:00Z");
    free["transparency"] = json!("transparent");
    g.upsert_event(e, "primary", free).expect("free");
    let mut declined = timed(None, "2026-10-02T15:00:00Z", "2026-10-02T16:00:00Z");
    declined["attendees"] = json!([{ "email": e, "self": true, "responseStatus": "declined" }]);
    g.upsert_event(e, "primary", declined).expect("declined");
    let (s, v) = api
        .post(
            "/freeBusy",
            &json!({ "timeMin": "2026-10-02T00:00:00Z", "timeMax": "2026-10-03T00:00:00Z",
        "items": [{ "id": "primary" }, { "id": "nobody@example.com" }] }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["calendars"]["primary"]["busy"],
        json!([{ "start": "2026-10-02T09:00:00Z", "end": "2026-10-02T11:00:00Z" }])
    );
    assert_eq!(
        v["calendars"]["nobody@example.com"]["errors"][0]["reason"],
        "notFound"
    );
    let (s, v) = api.post("/freeBusy", &json!({ "timeMin": "2026-10-01T00:00:00Z", "timeMax": "2027-01-15T00:00:00Z", "items": [{ "id": "primary" }] })).await;
    assert_eq!((s, reason(&v)), (400, "timeRangeTooLong"));
    let (s, v) = api.post("/freeBusy", &json!({ "timeMin": "2026-10-02T00:00:00Z", "timeMax": "2026-10-02T00:00:00Z", "items": [] })).await;
    assert_eq!((s, reason(&v)), (400, "timeRangeEmpty"));
}

#[tokio::test]
async fn watch_sends_sync_then_exists_with_gaps_until_stopped() {
    let (h, api, acct) = setup("ivy@example.com").await;
    let hook = hook(200).await;
    let (s, ch) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "chan-1", "type": "web_hook",
        "address": hook.url, "token": "acct=42" }),
        )
        .await;
    assert_eq!(s, 200, "{ch}");
    assert_eq!(ch["kind"], "api#channel");
    let exp: i64 = ch["expiration"]
        .as_str()
        .expect("ms string")
        .parse()
        .expect("ms");
    let week = (Utc::now() + Duration::days(7)).timestamp_millis();
    assert!((week - exp).abs() < 60_000, "default ttl is 7 days");
    let got = hook.wait_for(1, 3000).await;
    assert_eq!(got[0].header("x-goog-resource-state"), Some("sync"));
    assert_eq!(got[0].header("x-goog-message-number"), Some("1"));
    assert_eq!(got[0].header("x-goog-channel-id"), Some("chan-1"));
    assert_eq!(got[0].header("x-goog-channel-token"), Some("acct=42"));
    assert_eq!(
        got[0].header("x-goog-resource-id"),
        ch["resourceId"].as_str()
    );
    assert!(got[0]
        .header("x-goog-channel-expiration")
        .is_some_and(|e| e.ends_with("GMT")));
    assert!(got[0].body.is_empty(), "calendar push has no body");

    let g = h.google();
    g.upsert_event(
        &acct.email,
        "primary",
        timed(
            Some("push0001"),
            "2026-10-02T09:00:00Z",
            "2026-10-02T10:00:00Z",
        ),
    )
    .expect("insert");
    g.delete_event(&acct.email, "primary", "push0001")
        .expect("delete");
    let got = hook.wait_for(3, 3000).await;
    assert_eq!(got.len(), 3);
    let numbers: Vec<u64> = got
        .iter()
        .map(|r| {
            r.header("x-goog-message-number")
                .unwrap_or("0")
                .parse()
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(got[1].header("x-goog-resource-state"), Some("exists"));
    assert!(
        numbers[1] > numbers[0] + 1 && numbers[2] > numbers[1] + 1,
        "increasing, not consecutive: {numbers:?}"
    );

    let (s, v) = api
        .post(
            "/channels/stop",
            &json!({ "id": "chan-1", "resourceId": "wrong" }),
        )
        .await;
    assert_eq!((s, reason(&v)), (404, "notFound"));
    let (s, _) = api
        .post(
            "/channels/stop",
            &json!({ "id": "chan-1", "resourceId": ch["resourceId"] }),
        )
        .await;
    assert_eq!(s, 204);
    g.upsert_event(
        &acct.email,
        "primary",
        timed(None, "2026-10-03T09:00:00Z", "2026-10-03T10:00:00Z"),
    )
    .expect("insert");
    // Absence after stop: nothing is delivered, so nothing marks the end;
    // a bounded pause is all there is.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(hook.notifications().len(), 3, "nothing after stop");
}

#[tokio::test]
async fn watch_validates_channel_parameters() {
    let (_h, api, _) = setup("jay@example.com").await;
    let hook = hook(200).await;
    let path = "/calendars/primary/events/watch";
    let long_id = "x".repeat(65);
    let long_token = "t".repeat(257);
    let cases = [
        json!({ "id": long_id, "type": "web_hook", "address": hook.url }),
        json!({ "id": "ok-1", "type": "carrier_pigeon", "address": hook.url }),
        json!({ "id": "ok-2", "type": "web_hook", "address": "http://hooks.example.com/x" }),
        json!({ "id": "ok-3", "type": "web_hook", "address": hook.url, "token": long_token }),
    ];
    for c in &cases {
        let (s, v) = api.post(path, c).await;
        assert_eq!(s, 400, "{c}: {v}");
    }
    let expiration = (Utc::now() + Duration::hours(1)).timestamp_millis();
    let (s, v) = api.post(path, &json!({ "id": "ok-4", "type": "webhook", "address": hook.url, "expiration": expiration })).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["expiration"],
        json!(expiration.to_string()),
        "shorter requested expiration is honoured"
    );
    let (s, _) = api
        .post(
            path,
            &json!({ "id": "ok-4", "type": "webhook", "address": hook.url }),
        )
        .await;
    assert_eq!(s, 400, "channel ids must be new");
}

#[tokio::test]
async fn push_retries_only_on_500_502_503_504() {
    let (h, api, _) = setup("kim@example.com").await;
    let flaky = hook(200).await;
    flaky.set(|b| b.statuses = [503, 500].into_iter().collect());
    let (s, _) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "flaky", "type": "web_hook", "address": flaky.url }),
        )
        .await;
    assert_eq!(s, 200);
    let got = flaky.wait_for(3, 3000).await;
    assert_eq!(got.len(), 3, "503 and 500 are retried");
    assert!(
        got.iter()
            .all(|r| r.header("x-goog-message-number") == Some("1")),
        "same message retried"
    );

    let rejecting = hook(404).await;
    let (s, _) = api
        .post(
            "/calendars/primary/events/watch",
            &json!({ "id": "rejecting", "type": "web_hook", "address": rejecting.url }),
        )
        .await;
    assert_eq!(s, 200);
    // Evidence: the 404 answer is in the delivery log.
    h.wait_for_deliveries(std::time::Duration::from_secs(3), |log| {
        log.iter()
            .any(|d| d.subject == "rejecting" && d.status == Some(404))
    })
    .await;
    assert_eq!(
        rejecting.notifications().len(),
        1,
        "404 is a failure, not retried"
    );
    h.wait_for_deliveries(std::time::Duration::from_secs(3), |log| {
        log.iter().any(|d| d.subject == "rejecting")
    })
    .await;
    let attempts: Vec<Option<u16>> = h
        .deliveries()
        .iter()
        .filter(|d| d.subject == "flaky")
        .map(|d| d.status)
        .collect();
    assert_eq!(
        attempts,
        vec![Some(503), Some(500), Some(200)],
        "every attempt recorded"
    );
}

#[tokio::test]
async fn channels_expire_and_conditional_get_and_unknown_paths() {
    let (h, api, acct) = setup("lou@example.com").await;
    let hook = hook(200).await;
    let expiration = (Utc::now() + Duration::milliseconds(300)).timestamp_millis();
    let (s, _) = api.post("/calendars/primary/events/watch", &json!({ "id": "short", "type": "web_hook", "address": hook.url, "expiration": expiration })).await;
    assert_eq!(s, 200);
    assert_eq!(hook.wait_for(1, 3000).await.len(), 1, "sync message");
    // Expiry is simulator time: move its clock past it.
    h.advance_clock(Duration::milliseconds(400));
    h.google()
        .upsert_event(
            &acct.email,
            "primary",
            timed(None, "2026-10-02T09:00:00Z", "2026-10-02T10:00:00Z"),
        )
        .expect("insert");
    // Absence: an expired channel gets no delivery, so nothing marks the
    // end; a bounded pause is all there is.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        hook.notifications().len(),
        1,
        "expired channels get nothing"
    );

    let (_, ev) = api
        .post(
            "/calendars/primary/events",
            &timed(
                Some("cond00001"),
                "2026-10-02T09:00:00Z",
                "2026-10-02T10:00:00Z",
            ),
        )
        .await;
    let etag = ev["etag"].as_str().expect("etag").to_string();
    let (s, _, _) = api
        .send(
            reqwest::Method::GET,
            "/calendars/primary/events/cond00001",
            None,
            &[("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(s, 304);
    let (s, v) = api.get("/calendars/primary/bogus").await;
    assert_eq!((s, reason(&v)), (404, "notFound"));
    assert!(
        h.requests()
            .iter()
            .any(|r| r.endpoint == "unknown" && r.status == 404),
        "unknown paths are logged too"
    );
}

#[tokio::test]
async fn short_and_empty_pages_do_not_end_a_listing() {
    let h = common::sim_with(calsim::SimConfig {
        google_short_page_rate: 0.6,
        ..calsim::SimConfig::default()
    })
    .await;
    let acct = h.google().create_account("short@example.com");
    let api = Api::new(h.google_base_url(), google_access_token(&h, &acct).await);
    for i in 0..10 {
        h.google()
            .upsert_event(
                &acct.email,
                "primary",
                timed(
                    Some(&format!("short{i:04}")),
                    "2026-10-02T09:00:00Z",
                    "2026-10-02T10:00:00Z",
                ),
            )
            .expect("insert");
    }
    let (mut ids, mut short_pages, mut token) = (Vec::new(), 0, None::<String>);
    loop {
        let path = match &token {
            Some(t) => format!("/calendars/primary/events?maxResults=3&pageToken={t}"),
            None => "/calendars/primary/events?maxResults=3".to_string(),
        };
        let (s, v) = api.get(&path).await;
        assert_eq!(s, 200);
        let items = v["items"].as_array().expect("items");
        ids.extend(
            items
                .iter()
                .filter_map(|i| i["id"].as_str().map(str::to_string)),
        );
        match v["nextPageToken"].as_str() {
            Some(t) => {
                short_pages += usize::from(items.len() < 3);
                token = Some(t.to_string());
            }
            None => {
                assert!(v["nextSyncToken"].is_string());
                break;
            }
        }
    }
    assert!(short_pages >= 1, "some pages were short");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
}

#[tokio::test]
async fn moving_a_series_cancels_the_old_instances_and_moving_back_restores_them() {
    let (h, api, acct) = setup("moe@example.com").await;
    let series = json!({ "id": "moving0001", "summary": "Weekly",
        "start": { "dateTime": "2026-10-05T09:00:00Z" }, "end": { "dateTime": "2026-10-05T09:30:00Z" },
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=3"] });
    h.google()
        .upsert_event(&acct.email, "primary", series)
        .expect("series");
    let (_, full) = api.get("/calendars/primary/events?singleEvents=true").await;
    let token = full["nextSyncToken"].as_str().expect("token").to_string();
    let at = |hh: u32| json!({ "start": { "dateTime": format!("2026-10-05T{hh:02}:00:00Z") }, "end": { "dateTime": format!("2026-10-05T{hh:02}:30:00Z") } });
    h.google()
        .patch_event(&acct.email, "primary", "moving0001", at(10))
        .expect("move");
    let (_, inc) = api
        .get(&format!(
            "/calendars/primary/events?singleEvents=true&syncToken={token}"
        ))
        .await;
    let items = inc["items"].as_array().expect("items");
    let cancelled: Vec<&str> = items
        .iter()
        .filter(|i| i["status"] == "cancelled")
        .filter_map(|i| i["id"].as_str())
        .collect();
    let live: Vec<&str> = items
        .iter()
        .filter(|i| i["status"] == "confirmed")
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(
        cancelled,
        vec![
            "moving0001_20261005T090000Z",
            "moving0001_20261012T090000Z",
            "moving0001_20261019T090000Z"
        ]
    );
    assert_eq!(
        live,
        vec![
            "moving0001_20261005T100000Z",
            "moving0001_20261012T100000Z",
            "moving0001_20261019T100000Z"
        ]
    );
    let token = inc["nextSyncToken"].as_str().expect("token").to_string();
    h.google()
        .patch_event(&acct.email, "primary", "moving0001", at(9))
        .expect("move back");
    let (_, inc) = api
        .get(&format!(
            "/calendars/primary/events?singleEvents=true&syncToken={token}"
        ))
        .await;
    let live: Vec<&str> = inc["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["status"] == "confirmed")
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(
        live,
        vec![
            "moving0001_20261005T090000Z",
            "moving0001_20261012T090000Z",
            "moving0001_20261019T090000Z"
        ],
        "restored"
    );
    let (_, now_full) = api.get("/calendars/primary/events?singleEvents=true").await;
    assert_eq!(now_full["items"].as_array().map(Vec::len), Some(3));
}
