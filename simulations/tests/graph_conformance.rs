//! Microsoft Graph calendar conformance: each behaviour calsync relies on,
//! exercised over HTTP. Against the real service, swap the base URL and the
//! OAuth token; the assertions are the same.

mod common;

use calsim::{FaultKind, FaultRule, LifecycleEvent, Provider, SimConfig};
use chrono::{Duration, Utc};
use common::{graph_access_token, graph_tokens, hook, sim_with, Api};
use serde_json::{json, Value};

async fn setup_with(
    config: SimConfig,
    upn: &str,
) -> (calsim::SimHandle, Api, calsim::GraphAccount) {
    let h = sim_with(config).await;
    let acct = h.graph().create_account(upn);
    let token = graph_access_token(&h, &acct).await;
    (h.clone(), Api::new(h.graph_base_url(), token), acct)
}

async fn setup(upn: &str) -> (calsim::SimHandle, Api, calsim::GraphAccount) {
    setup_with(
        SimConfig {
            push_retry_delay_ms: 20,
            ..SimConfig::default()
        },
        upn,
    )
    .await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn event(subject: &str, start: &str, end: &str) -> Value {
    json!({ "subject": subject, "showAs": "busy",
        "start": { "dateTime": start, "timeZone": "UTC" }, "end": { "dateTime": end, "timeZone": "UTC" } })
}

const PROP: &str = "String {2f8c1e0a-7d3b-4c9e-9a51-6b0e4d2c8f17} Name bookingId";

#[tokio::test]
async fn refresh_tokens_rotate_and_failures_carry_aadsts_codes() {
    let (h, _api, acct) = setup("alice@contoso.com").await;
    let (s, first) = graph_tokens(&h, &acct, &acct.refresh_token).await;
    assert_eq!(s, 200);
    let rotated = first["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert_ne!(
        rotated, acct.refresh_token,
        "a new refresh token every time"
    );
    assert!(first["expires_in"].is_number() && first["ext_expires_in"].is_number());
    let (s, _) = graph_tokens(&h, &acct, &acct.refresh_token).await;
    assert_eq!(s, 200, "old refresh tokens keep working until revoked");
    let (s, v) = graph_tokens(&h, &acct, "not-a-token").await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    h.graph().expire_refresh_tokens(&acct.upn);
    let (s, v) = graph_tokens(&h, &acct, &rotated).await;
    assert_eq!(s, 400);
    assert_eq!(v["error_codes"], json!([700082]));
    assert!(v["error_description"]
        .as_str()
        .unwrap_or_default()
        .starts_with("AADSTS700082"));
    let other = h.graph().create_account("bob@contoso.com");
    h.graph().revoke_grant(&other.upn);
    let (s, v) = graph_tokens(&h, &other, &other.refresh_token).await;
    assert_eq!((s, v["error_codes"].clone()), (400, json!([50173])));
    let resp = common::client()
        .post(h.graph_token_url("common"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", acct.refresh_token.as_str()),
            ("client_id", &acct.client_id),
            ("client_secret", &acct.client_secret),
            ("scope", "offline_access,Calendars.Read"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400, "comma-separated scopes fail");
}

#[tokio::test]
async fn bearer_tokens_and_mailbox_access_are_enforced() {
    let (h, api, acct) = setup("carol@contoso.com").await;
    let anon = Api::new(h.graph_base_url(), "x".into());
    let (s, v) = anon.get("/me/events").await;
    assert_eq!((s, code(&v)), (401, "InvalidAuthenticationToken"));
    assert!(v["error"]["innerError"]["request-id"].is_string());
    let (s, _) = api.get(&format!("/users/{}/events", acct.upn)).await;
    assert_eq!(s, 200);
    h.graph().create_account("dave@contoso.com");
    let (s, v) = api.get("/users/dave@contoso.com/events").await;
    assert_eq!((s, code(&v)), (403, "ErrorAccessDenied"));
    h.graph().expire_access_tokens(&acct.upn);
    let (s, _) = api.get("/me/events").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn transaction_id_dedupes_and_extended_property_filter_finds_the_event() {
    let (h, api, acct) = setup("erin@contoso.com").await;
    let mut body = event(
        "Booking: Haircut",
        "2026-10-02T15:00:00",
        "2026-10-02T16:00:00",
    );
    body["transactionId"] = json!("bk_123-v1");
    body["singleValueExtendedProperties"] = json!([{ "id": PROP, "value": "bk_123" }]);
    let (s, first) = api.post("/me/events", &body).await;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["transactionId"], "bk_123-v1");
    assert!(
        first.get("singleValueExtendedProperties").is_none(),
        "only with $expand"
    );
    let (s, again) = api.post("/me/events", &body).await;
    assert_eq!(s, 201);
    assert_eq!(
        again["id"], first["id"],
        "retried POST with the same transactionId is dropped"
    );
    assert_eq!(h.graph().event_count(&acct.upn), 1);

    let filter = format!(
        "singleValueExtendedProperties/any(ep: ep/id eq '{PROP}' and ep/value eq 'bk_123')"
    );
    let expand = format!("singleValueExtendedProperties($filter=id eq '{PROP}')");
    let url = reqwest::Url::parse_with_params(
        &format!("{}/me/events", h.graph_base_url()),
        &[("$filter", filter.as_str()), ("$expand", expand.as_str())],
    )
    .expect("url");
    let (s, found) = api.get(url.as_str()).await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found["value"][0]["id"], first["id"]);
    assert_eq!(
        found["value"][0]["singleValueExtendedProperties"][0]["value"],
        "bk_123"
    );
    let other = filter.replace("bk_123", "bk_999");
    let url = reqwest::Url::parse_with_params(
        &format!("{}/me/events", h.graph_base_url()),
        &[("$filter", other.as_str())],
    )
    .expect("url");
    let (_, none) = api.get(url.as_str()).await;
    assert_eq!(none["value"].as_array().map(Vec::len), Some(0));

    // "Created but the response was lost": the retry must not duplicate.
    h.add_fault(FaultRule {
        provider: Provider::Graph,
        endpoint: Some("events.create".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::CreatedButResponseLost { status: None },
        remaining: Some(1),
    });
    let mut b2 = event("Booking 2", "2026-10-03T15:00:00", "2026-10-03T16:00:00");
    b2["transactionId"] = json!("bk_124-v1");
    let (s, _) = api.post("/me/events", &b2).await;
    assert_eq!(s, 503);
    assert_eq!(
        h.graph().event_count(&acct.upn),
        2,
        "the event was created anyway"
    );
    let (s, _) = api.post("/me/events", &b2).await;
    assert_eq!(s, 201);
    assert_eq!(
        h.graph().event_count(&acct.upn),
        2,
        "retry with the same transactionId did not duplicate"
    );
}

#[tokio::test]
async fn if_match_mismatch_is_412_and_second_delete_is_404() {
    let (_h, api, _) = setup("frank@contoso.com").await;
    let (_, ev) = api
        .post(
            "/me/events",
            &event("A", "2026-10-02T09:00:00", "2026-10-02T10:00:00"),
        )
        .await;
    let id = ev["id"].as_str().expect("id").to_string();
    let etag = ev["@odata.etag"].as_str().expect("etag").to_string();
    assert!(etag.starts_with("W/\""));
    let path = format!("/me/events/{id}");
    let (s, _, v) = api
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({ "subject": "B" })),
            &[("If-Match", "W/\"stale\"")],
        )
        .await;
    assert_eq!((s, code(&v)), (412, "ErrorIrresolvableConflict"));
    let (s, _, v) = api
        .send(
            reqwest::Method::PATCH,
            &path,
            Some(&json!({ "subject": "B" })),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["subject"], "B");
    assert_ne!(v["changeKey"], ev["changeKey"]);
    assert_eq!(
        v["start"]["dateTime"], "2026-10-02T09:00:00.0000000",
        "times kept"
    );
    let (s, _) = api.delete(&path).await;
    assert_eq!(s, 204);
    let (s, v) = api.delete(&path).await;
    assert_eq!((s, code(&v)), (404, "ErrorItemNotFound"));
    let (s, _) = api.get(&path).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn times_are_offsetless_with_seven_digits_and_honour_prefer_timezone() {
    let (_h, api, _) = setup("gina@contoso.com").await;
    let (s, ev) = api
        .post(
            "/me/events",
            &json!({ "subject": "PST",
        "start": { "dateTime": "2026-10-02T09:00:00", "timeZone": "Pacific Standard Time" },
        "end": { "dateTime": "2026-10-02T10:00:00", "timeZone": "Pacific Standard Time" } }),
        )
        .await;
    assert_eq!(s, 201, "{ev}");
    assert_eq!(
        ev["start"],
        json!({ "dateTime": "2026-10-02T16:00:00.0000000", "timeZone": "UTC" })
    );
    assert_eq!(ev["originalStartTimeZone"], "Pacific Standard Time");
    let id = ev["id"].as_str().expect("id");
    let (_, _, v) = api
        .send(
            reqwest::Method::GET,
            &format!("/me/events/{id}"),
            None,
            &[("Prefer", "outlook.timezone=\"Pacific Standard Time\"")],
        )
        .await;
    assert_eq!(
        v["start"],
        json!({ "dateTime": "2026-10-02T09:00:00.0000000", "timeZone": "Pacific Standard Time" })
    );
    let (_, _, v) = api
        .send(
            reqwest::Method::GET,
            &format!("/me/events/{id}"),
            None,
            &[("Prefer", "outlook.timezone=\"Europe/Berlin\"")],
        )
        .await;
    assert_eq!(v["start"]["dateTime"], "2026-10-02T18:00:00.0000000");
    let (s, v) = api.post("/me/events", &json!({ "subject": "bad all-day", "isAllDay": true,
        "start": { "dateTime": "2026-10-02T09:00:00", "timeZone": "UTC" }, "end": { "dateTime": "2026-10-03T00:00:00", "timeZone": "UTC" } })).await;
    assert_eq!((s, code(&v)), (400, "ErrorInvalidRequest"));
    let (s, v) = api.post("/me/events", &json!({ "subject": "day off", "isAllDay": true, "showAs": "oof",
        "start": { "dateTime": "2026-10-05T00:00:00", "timeZone": "W. Europe Standard Time" }, "end": { "dateTime": "2026-10-06T00:00:00", "timeZone": "W. Europe Standard Time" } })).await;
    assert_eq!(s, 201);
    assert_eq!(
        v["start"]["dateTime"], "2026-10-05T00:00:00.0000000",
        "all-day events are floating midnights"
    );
    let (s, v) = api.post("/me/events", &json!({ "subject": "x", "start": { "dateTime": "2026-10-02T09:00:00", "timeZone": "Mars/Olympus" },
        "end": { "dateTime": "2026-10-02T10:00:00", "timeZone": "UTC" } })).await;
    assert_eq!((s, code(&v)), (400, "TimeZoneNotSupportedException"));
}

/// PROVIDERS.md §4: an all-day event is midnight to midnight in one zone,
/// and the event keeps its zone in `originalStartTimeZone`. [obs] Microsoft
/// Q&A threads show the real service rendering all-day `start`/`end` as
/// floating midnights labelled with the zone the request asked for (UTC by
/// default), not as converted instants. The mailbox's own zone is in
/// `mailboxSettings.timeZone`.
#[tokio::test]
async fn all_day_events_are_floating_midnights_and_mailboxes_have_a_zone() {
    let h = sim_with(SimConfig::default()).await;
    let upn = "syd@contoso.com";
    let acct = h
        .graph()
        .create_account_in(upn, "AUS Eastern Standard Time");
    let api = Api::new(h.graph_base_url(), graph_access_token(&h, &acct).await);
    h.clear_log();
    // The mailbox's zone, as the administrator's format has it.
    let (s, v) = api.get("/me/mailboxSettings").await;
    assert_eq!(
        (s, v["timeZone"].as_str()),
        (200, Some("AUS Eastern Standard Time"))
    );
    assert_eq!(
        v["workingHours"]["timeZone"]["name"],
        "AUS Eastern Standard Time"
    );
    let (s, v) = api.get(&format!("/users/{upn}/mailboxSettings")).await;
    assert_eq!(
        (s, v["timeZone"].as_str()),
        (200, Some("AUS Eastern Standard Time"))
    );
    let (s, v) = api.get("/me/mailboxSettings/timeZone").await;
    assert_eq!(
        (s, v["value"].as_str()),
        (200, Some("AUS Eastern Standard Time"))
    );
    let (s, v) = api.get("/users/someone@contoso.com/mailboxSettings").await;
    assert_eq!((s, code(&v)), (403, "ErrorAccessDenied"));
    let logged = h
        .requests()
        .iter()
        .filter(|r| r.endpoint == "mailboxSettings")
        .count();
    assert_eq!(
        logged, 4,
        "every settings read is logged as mailboxSettings"
    );
    let other = h.graph().create_account("plain@contoso.com");
    let plain = Api::new(h.graph_base_url(), graph_access_token(&h, &other).await);
    assert_eq!(plain.get("/me/mailboxSettings").await.1["timeZone"], "UTC");
    h.graph()
        .set_mailbox_zone(&other.upn, "Europe/Berlin")
        .expect("set zone");
    assert_eq!(
        plain.get("/me/mailboxSettings").await.1["timeZone"],
        "Europe/Berlin"
    );

    // A Sydney day off on 12 December 2026.
    let (s, ev) = api
        .post(
            "/me/events",
            &json!({ "subject": "day off", "isAllDay": true, "showAs": "oof",
        "start": { "dateTime": "2026-12-12T00:00:00", "timeZone": "AUS Eastern Standard Time" },
        "end": { "dateTime": "2026-12-13T00:00:00", "timeZone": "AUS Eastern Standard Time" },
        "originalStartTimeZone": "Mars Standard Time" }),
        )
        .await;
    assert_eq!(s, 201, "{ev}");
    let floating = |d: &str, zone: &str| json!({ "dateTime": format!("{d}T00:00:00.0000000"), "timeZone": zone });
    assert_eq!(
        ev["start"],
        floating("2026-12-12", "UTC"),
        "not 2026-12-11T13:00 UTC"
    );
    assert_eq!(ev["end"], floating("2026-12-13", "UTC"));
    assert_eq!(
        ev["originalStartTimeZone"], "AUS Eastern Standard Time",
        "read-only over HTTP"
    );
    assert_eq!(ev["originalEndTimeZone"], "AUS Eastern Standard Time");
    let id = ev["id"].as_str().expect("id").to_string();
    let (_, _, v) = api
        .send(
            reqwest::Method::GET,
            &format!("/me/events/{id}"),
            None,
            &[("Prefer", "outlook.timezone=\"Pacific Standard Time\"")],
        )
        .await;
    assert_eq!(v["start"], floating("2026-12-12", "Pacific Standard Time"));
    // Windows of calendarView are instants: the day is Sydney's.
    let view = |from: &'static str, to: &'static str| {
        let api = &api;
        async move {
            let (s, v) = api
                .get(&format!(
                    "/me/calendarView?startDateTime={from}&endDateTime={to}"
                ))
                .await;
            assert_eq!(s, 200, "{v}");
            v["value"].as_array().expect("value").len()
        }
    };
    assert_eq!(
        view("2026-12-11T12:00:00Z", "2026-12-11T13:30:00Z").await,
        1
    );
    assert_eq!(
        view("2026-12-12T13:00:00Z", "2026-12-12T20:00:00Z").await,
        0
    );
    // Delta renders it the same way.
    let (items, _, _) = delta_round(&api,
        "/me/calendarView/delta?startDateTime=2026-12-01T00:00:00Z&endDateTime=2027-01-01T00:00:00Z").await;
    let item = items
        .iter()
        .find(|i| i["id"] == id.as_str())
        .expect("listed");
    assert_eq!(
        (item["start"].clone(), item["isAllDay"].clone()),
        (floating("2026-12-12", "UTC"), json!(true))
    );

    // What desktop Outlook can leave behind (control API only): a legacy
    // custom zone, or none at all.
    for legacy in [json!("tzone://Microsoft/Custom"), Value::Null] {
        let ev = h
            .graph()
            .create_event(
                upn,
                json!({ "subject": "legacy", "isAllDay": true,
            "start": { "dateTime": "2026-12-14T00:00:00", "timeZone": "AUS Eastern Standard Time" },
            "end": { "dateTime": "2026-12-15T00:00:00", "timeZone": "AUS Eastern Standard Time" },
            "originalStartTimeZone": legacy }),
            )
            .expect("created");
        let id = ev["id"].as_str().expect("id");
        let (_, v) = api.get(&format!("/me/events/{id}")).await;
        assert_eq!(v["originalStartTimeZone"], legacy);
        assert_eq!(v["originalEndTimeZone"], legacy);
        assert_eq!(v["start"], floating("2026-12-14", "UTC"));
        // Saving new times writes a real zone again.
        let (s, v) = api
            .patch(
                &format!("/me/events/{id}"),
                &json!({
            "start": { "dateTime": "2026-12-16T00:00:00", "timeZone": "Tokyo Standard Time" },
            "end": { "dateTime": "2026-12-17T00:00:00", "timeZone": "Tokyo Standard Time" } }),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["originalStartTimeZone"], "Tokyo Standard Time");
    }
}

async fn weekly_series(api: &Api) -> Value {
    let (s, master) = api.post("/me/events", &json!({ "subject": "Weekly 1:1", "showAs": "busy",
        "start": { "dateTime": "2026-10-06T10:00:00", "timeZone": "UTC" }, "end": { "dateTime": "2026-10-06T10:30:00", "timeZone": "UTC" },
        "recurrence": { "pattern": { "type": "weekly", "interval": 1, "daysOfWeek": ["tuesday"] },
                        "range": { "type": "numbered", "numberOfOccurrences": 4, "startDate": "2026-10-06" } } })).await;
    assert_eq!(s, 201, "{master}");
    assert_eq!(master["type"], "seriesMaster");
    master
}

#[tokio::test]
async fn calendar_view_lists_occurrences_never_masters_with_paging() {
    let (h, api, acct) = setup("hank@contoso.com").await;
    let master = weekly_series(&api).await;
    let master_id = master["id"].as_str().expect("id");
    api.post(
        "/me/events",
        &event("single", "2026-10-07T08:00:00", "2026-10-07T09:00:00"),
    )
    .await;
    let start = chrono::DateTime::parse_from_rfc3339("2026-10-13T10:00:00Z")
        .expect("t")
        .with_timezone(&Utc);
    h.graph()
        .cancel_occurrence(&acct.upn, master_id, start)
        .expect("cancel one occurrence");
    let mut url =
        "/me/calendarView?startDateTime=2026-10-01T00:00:00Z&endDateTime=2026-11-01T00:00:00Z"
            .to_string();
    let mut seen = Vec::new();
    loop {
        let (s, _, v) = api
            .send(
                reqwest::Method::GET,
                &url,
                None,
                &[("Prefer", "odata.maxpagesize=2")],
            )
            .await;
        assert_eq!(s, 200, "{v}");
        seen.extend(v["value"].as_array().expect("value").clone());
        match v["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    let types: Vec<&str> = seen.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        vec!["occurrence", "singleInstance", "occurrence", "occurrence"]
    );
    assert!(seen
        .iter()
        .filter(|e| e["type"] == "occurrence")
        .all(|e| e["seriesMasterId"] == master_id));
    let (s, v) = api.get("/me/calendarView").await;
    assert_eq!((s, code(&v)), (400, "ErrorInvalidParameter"));
    let (s, _) = api
        .get("/me/calendarView?startDateTime=2020-01-01T00:00:00Z&endDateTime=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(s, 400, "window over 1825 days");
}

async fn delta_round(api: &Api, first: &str) -> (Vec<Value>, String, usize) {
    let mut url = first.to_string();
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let (s, _, v) = api
            .send(
                reqwest::Method::GET,
                &url,
                None,
                &[("Prefer", "odata.maxpagesize=2")],
            )
            .await;
        assert_eq!(s, 200, "{v}");
        pages += 1;
        items.extend(v["value"].as_array().expect("value").clone());
        if let Some(next) = v["@odata.nextLink"].as_str() {
            assert!(v.get("@odata.deltaLink").is_none());
            url = next.to_string();
        } else {
            return (
                items,
                v["@odata.deltaLink"]
                    .as_str()
                    .expect("deltaLink ends the round")
                    .to_string(),
                pages,
            );
        }
    }
}

#[tokio::test]
async fn delta_rounds_report_changes_removals_and_expire_with_410() {
    let (h, api, acct) = setup("ivy@contoso.com").await;
    let mut ids = Vec::new();
    for d in 1..=5 {
        let (_, e) = api
            .post(
                "/me/events",
                &event(
                    &format!("e{d}"),
                    &format!("2026-10-0{d}T09:00:00"),
                    &format!("2026-10-0{d}T10:00:00"),
                ),
            )
            .await;
        ids.push(e["id"].as_str().expect("id").to_string());
    }
    api.post(
        "/me/events",
        &event("outside", "2026-12-01T09:00:00", "2026-12-01T10:00:00"),
    )
    .await;
    let first = "/me/calendarView/delta?startDateTime=2026-10-01T00:00:00Z&endDateTime=2026-11-01T00:00:00Z";
    let (items, delta_link, pages) = delta_round(&api, first).await;
    assert_eq!(items.len(), 5, "initial round: what is in the window");
    assert_eq!(pages, 3);
    assert!(delta_link.contains("$deltatoken="));

    let g = h.graph();
    g.update_event(&acct.upn, &ids[0], json!({ "subject": "renamed" }))
        .expect("update");
    g.delete_event(&acct.upn, &ids[1]).expect("delete");
    g.update_event(
        &acct.upn,
        &ids[2],
        json!({ "start": { "dateTime": "2026-12-05T09:00:00", "timeZone": "UTC" },
        "end": { "dateTime": "2026-12-05T10:00:00", "timeZone": "UTC" } }),
    )
    .expect("moved out of window");
    let (items, next_link, _) = delta_round(&api, &delta_link).await;
    let find = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .expect("reported")
    };
    assert_eq!(find(&ids[0])["subject"], "renamed");
    assert_eq!(find(&ids[1])["@removed"]["reason"], "deleted");
    assert_eq!(
        find(&ids[2])["@removed"]["reason"],
        "deleted",
        "moved outside the window = removed"
    );
    assert_eq!(items.len(), 3);
    let (items, _, _) = delta_round(&api, &next_link).await;
    assert!(items.is_empty(), "quiet round");

    g.invalidate_delta_tokens(&acct.upn);
    let (s, headers, v) = api.send(reqwest::Method::GET, &next_link, None, &[]).await;
    assert_eq!((s, code(&v)), (410, "SyncStateNotFound"));
    let restart = headers
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("Location")
        .to_string();
    let (items, _, _) = delta_round(&api, &restart).await;
    assert_eq!(items.len(), 3, "full resync of the same window: e1, e4, e5");
}

#[tokio::test]
async fn expired_subscriptions_get_no_notifications() {
    let (h, api, acct) = setup("quinn@contoso.com").await;
    let hook = hook(202).await;
    let exp = (Utc::now() + Duration::milliseconds(400)).to_rfc3339();
    let (s, sub) = api.post("/subscriptions", &json!({ "changeType": "created", "notificationUrl": hook.url, "resource": "me/events", "expirationDateTime": exp })).await;
    assert_eq!(s, 201);
    // Expiry is simulator time: move its clock past it.
    h.advance_clock(Duration::milliseconds(500));
    h.graph()
        .create_event(
            &acct.upn,
            event("late", "2026-10-02T09:00:00", "2026-10-02T10:00:00"),
        )
        .expect("create");
    // Absence: an expired subscription gets no delivery at all, so nothing
    // marks the end; a bounded pause is all there is.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(hook.notifications().is_empty());
    let (s, v) = api
        .patch(
            &format!("/subscriptions/{}", sub["id"].as_str().unwrap_or_default()),
            &json!({ "expirationDateTime": (Utc::now() + Duration::hours(1)).to_rfc3339() }),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (404, "ResourceNotFound"),
        "an expired subscription cannot be renewed"
    );
}

#[tokio::test]
async fn delta_can_repeat_items_within_a_round() {
    let config = SimConfig {
        graph_delta_repeat_rate: 1.0,
        ..SimConfig::default()
    };
    let (_h, api, _) = setup_with(config, "jay@contoso.com").await;
    api.post(
        "/me/events",
        &event("e", "2026-10-02T09:00:00", "2026-10-02T10:00:00"),
    )
    .await;
    let (items, _, _) = delta_round(&api, "/me/calendarView/delta?startDateTime=2026-10-01T00:00:00Z&endDateTime=2026-11-01T00:00:00Z").await;
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["id"], items[1]["id"],
        "same item twice: clients must apply idempotently"
    );
}

#[tokio::test]
async fn get_schedule_builds_availability_view_and_enforces_limits() {
    let (h, api, acct) = setup("kim@contoso.com").await;
    let g = h.graph();
    let mut tentative = event("maybe", "2026-10-01T09:30:00", "2026-10-01T10:00:00");
    tentative["showAs"] = json!("tentative");
    g.create_event(
        &acct.upn,
        event("1:1", "2026-10-01T09:00:00", "2026-10-01T09:30:00"),
    )
    .expect("busy");
    g.create_event(&acct.upn, tentative).expect("tentative");
    let mut free = event("free", "2026-10-01T10:00:00", "2026-10-01T10:30:00");
    free["showAs"] = json!("free");
    g.create_event(&acct.upn, free).expect("free");
    let mut oof = event("away", "2026-10-01T11:00:00", "2026-10-01T11:30:00");
    oof["showAs"] = json!("oof");
    g.create_event(&acct.upn, oof).expect("oof");
    let body = |n: usize, end: &str| {
        json!({ "schedules": (0..n).map(|i| if i == 0 { acct.upn.clone() } else { format!("ghost{i}@contoso.com") }).collect::<Vec<_>>(),
        "startTime": { "dateTime": "2026-10-01T09:00:00", "timeZone": "UTC" }, "endTime": { "dateTime": end, "timeZone": "UTC" },
        "availabilityViewInterval": 30 })
    };
    let (s, v) = api
        .post("/me/calendar/getSchedule", &body(2, "2026-10-01T12:00:00"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"][0]["availabilityView"], "210030");
    assert_eq!(
        v["value"][0]["scheduleItems"].as_array().map(Vec::len),
        Some(3),
        "free items are not listed"
    );
    assert!(v["value"][1]["error"]["responseCode"].is_string());
    let (s, _) = api
        .post("/me/calendar/getSchedule", &body(21, "2026-10-01T12:00:00"))
        .await;
    assert_eq!(s, 400, "at most 20 schedules");
    let (s, v) = api
        .post("/me/calendar/getSchedule", &body(1, "2026-12-02T09:00:00"))
        .await;
    assert_eq!((s, code(&v)), (400, "ErrorTimeIntervalTooBig"));
}

#[tokio::test]
async fn subscriptions_handshake_clamp_notify_renew_delete() {
    let (h, api, acct) = setup("lee@contoso.com").await;
    let hook = hook(202).await;
    let far = (Utc::now() + Duration::days(10)).to_rfc3339();
    let (s, sub) = api
        .post(
            "/subscriptions",
            &json!({ "changeType": "created,updated,deleted", "notificationUrl": hook.url,
        "resource": "me/events", "expirationDateTime": far, "clientState": "c2VjcmV0LTEyMw" }),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    let validation = &hook.all()[0];
    assert!(
        validation.path_and_query.contains("validationToken="),
        "handshake first"
    );
    assert_eq!(
        validation.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let exp =
        chrono::DateTime::parse_from_rfc3339(sub["expirationDateTime"].as_str().expect("exp"))
            .expect("t")
            .with_timezone(&Utc);
    assert!(
        exp <= Utc::now() + Duration::minutes(4230),
        "lifetime clamped to 4230 minutes"
    );
    let sub_id = sub["id"].as_str().expect("id").to_string();

    let created = h
        .graph()
        .create_event(
            &acct.upn,
            event("new", "2026-10-02T09:00:00", "2026-10-02T10:00:00"),
        )
        .expect("create");
    let got = hook.wait_for(1, 3000).await;
    let n = &got[0].json()["value"][0];
    assert_eq!(n["subscriptionId"], sub_id.as_str());
    assert_eq!(n["clientState"], "c2VjcmV0LTEyMw");
    assert_eq!(n["changeType"], "created");
    assert_eq!(n["resourceData"]["id"], created["id"]);
    assert!(n["resource"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Users/"));

    let soon = (Utc::now() + Duration::hours(2)).to_rfc3339();
    let (s, renewed) = api
        .patch(
            &format!("/subscriptions/{sub_id}"),
            &json!({ "expirationDateTime": soon }),
        )
        .await;
    assert_eq!(s, 200);
    assert_ne!(renewed["expirationDateTime"], sub["expirationDateTime"]);
    let (s, _) = api
        .post(&format!("/subscriptions/{sub_id}/reauthorize"), &json!({}))
        .await;
    assert!(s == 200 || s == 204);
    let (s, _) = api.delete(&format!("/subscriptions/{sub_id}")).await;
    assert_eq!(s, 204);
    let (s, _) = api.get(&format!("/subscriptions/{sub_id}")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn subscription_handshake_failures_reject_creation() {
    let config = SimConfig {
        graph_validation_timeout_ms: 200,
        ..SimConfig::default()
    };
    let (h, api, _) = setup_with(config, "max@contoso.com").await;
    let exp = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let wrong = hook(202).await;
    wrong.set(|b| b.echo_validation = false);
    let (s, v) = api.post("/subscriptions", &json!({ "changeType": "created", "notificationUrl": wrong.url, "resource": "me/events", "expirationDateTime": exp })).await;
    assert_eq!((s, code(&v)), (400, "ValidationError"));
    let slow = hook(202).await;
    slow.set(|b| b.validation_delay_ms = 600);
    let (s, v) = api.post("/subscriptions", &json!({ "changeType": "created", "notificationUrl": slow.url, "resource": "me/events", "expirationDateTime": exp })).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["error"]["message"],
        "Subscription validation request timed out."
    );
    let (s, _) = api.post("/subscriptions", &json!({ "changeType": "created", "notificationUrl": "http://example.com/hook", "resource": "me/events", "expirationDateTime": exp })).await;
    assert_eq!(s, 400, "https required off loopback");
    let (s, _) = api
        .post(
            "/subscriptions",
            &json!({ "changeType": "created", "notificationUrl": slow.url, "resource": "me/events",
        "expirationDateTime": exp, "clientState": "x".repeat(129) }),
        )
        .await;
    assert_eq!(s, 400, "clientState at most 128 chars");
    assert!(h.graph().subscriptions().is_empty());
}

#[tokio::test]
async fn change_notifications_retry_until_2xx_within_deadline() {
    let config = SimConfig {
        push_retry_delay_ms: 20,
        graph_notification_timeout_ms: 150,
        ..SimConfig::default()
    };
    let (h, api, acct) = setup_with(config, "ned@contoso.com").await;
    let hook = hook(202).await;
    let exp = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let (s, _) = api.post("/subscriptions", &json!({ "changeType": "created", "notificationUrl": hook.url, "resource": "me/events", "expirationDateTime": exp })).await;
    assert_eq!(s, 201);
    hook.set(|b| b.statuses = [500, 400].into_iter().collect());
    h.graph()
        .create_event(
            &acct.upn,
            event("x", "2026-10-02T09:00:00", "2026-10-02T10:00:00"),
        )
        .expect("create");
    let got = hook.wait_for(3, 3000).await;
    assert_eq!(got.len(), 3, "any non-2xx is retried");
    hook.set(|b| b.delay_ms = 400);
    h.graph()
        .create_event(
            &acct.upn,
            event("y", "2026-10-03T09:00:00", "2026-10-03T10:00:00"),
        )
        .expect("create");
    // Evidence: a delivery attempt recorded without a status (timed out).
    h.wait_for_deliveries(std::time::Duration::from_secs(5), |log| {
        log.iter().any(|d| d.kind == "change" && d.status.is_none())
    })
    .await;
    let timeouts = h
        .deliveries()
        .iter()
        .filter(|d| d.kind == "change" && d.status.is_none())
        .count();
    assert!(
        timeouts >= 1,
        "a slow answer counts as a failure and is retried"
    );
}

#[tokio::test]
async fn lifecycle_notifications_pause_and_remove() {
    let (h, api, acct) = setup("olga@contoso.com").await;
    let changes = hook(202).await;
    let lifecycle = hook(202).await;
    let exp = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let (s, sub) = api.post("/subscriptions", &json!({ "changeType": "created,updated,deleted", "notificationUrl": changes.url,
        "lifecycleNotificationUrl": lifecycle.url, "resource": format!("users/{}/events", acct.upn), "expirationDateTime": exp, "clientState": "cs" })).await;
    assert_eq!(s, 201, "{sub}");
    let id = sub["id"].as_str().expect("id").to_string();
    let g = h.graph();
    g.send_lifecycle(&id, LifecycleEvent::ReauthorizationRequired)
        .expect("send");
    let got = lifecycle.wait_for(1, 3000).await;
    assert_eq!(
        got[0].json()["value"][0]["lifecycleEvent"],
        "reauthorizationRequired"
    );
    assert_eq!(got[0].json()["value"][0]["clientState"], "cs");
    g.create_event(
        &acct.upn,
        event("lost", "2026-10-02T09:00:00", "2026-10-02T10:00:00"),
    )
    .expect("create");
    // Absence while paused: nothing is delivered, so nothing marks the
    // end; a bounded pause is all there is.
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert!(
        changes.notifications().is_empty(),
        "delivery paused until reauthorized"
    );
    let (s, _) = api
        .post(&format!("/subscriptions/{id}/reauthorize"), &json!({}))
        .await;
    assert!(s == 200 || s == 204);
    g.create_event(
        &acct.upn,
        event("seen", "2026-10-03T09:00:00", "2026-10-03T10:00:00"),
    )
    .expect("create");
    assert_eq!(changes.wait_for(1, 3000).await.len(), 1);
    g.send_lifecycle(&id, LifecycleEvent::Missed)
        .expect("missed");
    g.send_lifecycle(&id, LifecycleEvent::SubscriptionRemoved)
        .expect("removed");
    let got = lifecycle.wait_for(3, 3000).await;
    let events: Vec<Value> = got
        .iter()
        .map(|r| r.json()["value"][0]["lifecycleEvent"].clone())
        .collect();
    assert_eq!(
        events,
        vec![
            json!("reauthorizationRequired"),
            json!("missed"),
            json!("subscriptionRemoved")
        ]
    );
    let (s, _) = api.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn mailbox_concurrency_limit_and_fractional_retry_after() {
    let (h, api, acct) = setup("pat@contoso.com").await;
    h.add_fault(FaultRule {
        provider: Provider::Graph,
        endpoint: Some("events.list".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::Latency { ms: 600 },
        remaining: None,
    });
    let calls = (0..6)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                api.send(reqwest::Method::GET, "/me/events", None, &[])
                    .await
            })
        })
        .collect::<Vec<_>>();
    let mut statuses = Vec::new();
    for c in calls {
        let (s, headers, v) = c.await.expect("join");
        if s == 429 {
            assert_eq!(code(&v), "ApplicationThrottled");
            assert!(headers.get("retry-after").is_some());
        }
        statuses.push(s);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 429, 429],
        "4 concurrent requests per mailbox"
    );
    assert_eq!(h.graph().in_flight(&acct.upn), 0);
    h.clear_faults();
    h.add_fault(FaultRule {
        provider: Provider::Graph,
        endpoint: None,
        account: Some(acct.upn.clone()),
        path: None,
        body_contains: None,
        kind: FaultKind::Status {
            code: 429,
            retry_after: Some(2.128),
            reason: None,
        },
        remaining: Some(1),
    });
    let (s, headers, v) = api
        .send(reqwest::Method::GET, "/me/events", None, &[])
        .await;
    assert_eq!((s, code(&v)), (429, "TooManyRequests"));
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2.128")
    );
    let (s, _) = api.get("/me/events").await;
    assert_eq!(s, 200, "fault consumed");
}

#[tokio::test]
async fn piled_up_notifications_are_batched_and_give_up_sends_missed() {
    let config = SimConfig {
        push_retry_delay_ms: 20,
        push_max_attempts: 2,
        ..SimConfig::default()
    };
    let (h, api, acct) = setup_with(config, "rita@contoso.com").await;
    let changes = hook(202).await;
    let lifecycle = hook(202).await;
    let exp = (Utc::now() + Duration::hours(1)).to_rfc3339();
    let (s, _) = api.post("/subscriptions", &json!({ "changeType": "created", "notificationUrl": changes.url,
        "lifecycleNotificationUrl": lifecycle.url, "resource": "me/events", "expirationDateTime": exp })).await;
    assert_eq!(s, 201);
    changes.set(|b| b.delay_ms = 300);
    let g = h.graph();
    for d in 1..=3 {
        g.create_event(
            &acct.upn,
            event(
                "x",
                &format!("2026-10-0{d}T09:00:00"),
                &format!("2026-10-0{d}T10:00:00"),
            ),
        )
        .expect("create");
        if d == 1 {
            // The first POST is now in flight (the hook answers slowly).
            changes.wait_for(1, 3000).await;
        }
    }
    let got = changes.wait_for(2, 3000).await;
    let sizes: Vec<usize> = got
        .iter()
        .map(|r| r.json()["value"].as_array().map(Vec::len).unwrap_or(0))
        .collect();
    assert_eq!(
        sizes,
        vec![1, 2],
        "the two that piled up went out in one POST"
    );

    changes.set(|b| {
        b.delay_ms = 0;
        b.default_status = 500;
    });
    g.create_event(
        &acct.upn,
        event("y", "2026-10-05T09:00:00", "2026-10-05T10:00:00"),
    )
    .expect("create");
    let got = lifecycle.wait_for(1, 3000).await;
    assert_eq!(
        got[0].json()["value"][0]["lifecycleEvent"],
        "missed",
        "dropped after retries → missed"
    );
}

#[tokio::test]
async fn delta_clients_must_follow_empty_pages() {
    let config = SimConfig {
        graph_delta_empty_page_rate: 0.5,
        ..SimConfig::default()
    };
    let (_h, api, _) = setup_with(config, "sam@contoso.com").await;
    for d in 1..=6 {
        api.post(
            "/me/events",
            &event(
                "e",
                &format!("2026-10-0{d}T09:00:00"),
                &format!("2026-10-0{d}T10:00:00"),
            ),
        )
        .await;
    }
    let mut url = "/me/calendarView/delta?startDateTime=2026-10-01T00:00:00Z&endDateTime=2026-11-01T00:00:00Z".to_string();
    let (mut seen, mut empty_with_next) = (Vec::new(), 0);
    loop {
        let (s, _, v) = api
            .send(
                reqwest::Method::GET,
                &url,
                None,
                &[("Prefer", "odata.maxpagesize=2")],
            )
            .await;
        assert_eq!(s, 200);
        let items = v["value"].as_array().expect("value").clone();
        match v["@odata.nextLink"].as_str() {
            Some(next) => {
                if items.is_empty() {
                    empty_with_next += 1;
                }
                url = next.to_string();
            }
            None => {
                seen.extend(items);
                break;
            }
        }
        seen.extend(items);
    }
    assert!(empty_with_next >= 1, "an empty page that is not the end");
    assert_eq!(seen.len(), 6);
}

#[tokio::test]
async fn moving_a_series_removes_the_old_occurrences_in_delta() {
    let (h, api, acct) = setup("nora@contoso.com").await;
    let master = weekly_series(&api).await;
    let id = master["id"].as_str().expect("id").to_string();
    let first = "/me/calendarView/delta?startDateTime=2026-10-01T00:00:00Z&endDateTime=2026-11-01T00:00:00Z";
    let (items, link, _) = delta_round(&api, first).await;
    assert_eq!(items.len(), 4);
    let old_ids: Vec<Value> = items.iter().map(|i| i["id"].clone()).collect();
    let at = |hh: u32| {
        json!({ "start": { "dateTime": format!("2026-10-06T{hh:02}:00:00"), "timeZone": "UTC" },
        "end": { "dateTime": format!("2026-10-06T{hh:02}:30:00"), "timeZone": "UTC" } })
    };
    h.graph()
        .update_event(&acct.upn, &id, at(11))
        .expect("move");
    let (items, link, _) = delta_round(&api, &link).await;
    let removed: Vec<Value> = items
        .iter()
        .filter(|i| i.get("@removed").is_some())
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(removed.len(), 4);
    assert!(
        old_ids.iter().all(|o| removed.contains(o)),
        "every old occurrence removed"
    );
    assert_eq!(
        items.iter().filter(|i| i["type"] == "occurrence").count(),
        4,
        "and the new ones listed"
    );
    h.graph()
        .update_event(&acct.upn, &id, at(10))
        .expect("move back");
    let (items, _, _) = delta_round(&api, &link).await;
    let live: Vec<Value> = items
        .iter()
        .filter(|i| i["type"] == "occurrence")
        .map(|i| i["id"].clone())
        .collect();
    assert!(
        old_ids.iter().all(|o| live.contains(o)),
        "moved back: the original occurrences are live again"
    );
    let (_, view) = api
        .get("/me/calendarView?startDateTime=2026-10-01T00:00:00Z&endDateTime=2026-11-01T00:00:00Z")
        .await;
    assert_eq!(view["value"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn calendars_scope_event_lists() {
    let (h, api, acct) = setup("otto@contoso.com").await;
    let cal = h
        .graph()
        .create_calendar(&acct.upn, "Bookings")
        .expect("calendar");
    let (s, _) = api
        .post(
            &format!("/me/calendars/{cal}/events"),
            &event("booked", "2026-10-02T09:00:00", "2026-10-02T10:00:00"),
        )
        .await;
    assert_eq!(s, 201);
    api.post(
        "/me/events",
        &event("mine", "2026-10-03T09:00:00", "2026-10-03T10:00:00"),
    )
    .await;
    let count = |v: &Value| v["value"].as_array().map(Vec::len).unwrap_or(0);
    let (_, all) = api.get("/me/events").await;
    let (_, default) = api.get("/me/calendar/events").await;
    let (_, bookings) = api.get(&format!("/me/calendars/{cal}/events")).await;
    assert_eq!((count(&all), count(&default), count(&bookings)), (2, 1, 1));
    assert_eq!(bookings["value"][0]["subject"], "booked");
    let (_, cals) = api.get("/me/calendars").await;
    assert_eq!(count(&cals), 2);
}
