//! The OAuth connect flow end to end, for Google and Microsoft, against the
//! simulators over real HTTP: `POST /v1/connect/{provider}`, the
//! provider's consent screen, calsync's callback, the redirect to the
//! platform — a working connection (its first sync reaches the provider),
//! or an error on the return URL with nothing created: denied consent, a
//! bad, replayed or expired state, a code used twice, a failed token
//! exchange. Then the calendar picker.

mod support;

use calsim::code_flow::Consent;
use calsim::{FaultKind, FaultRule, Provider};
use calsync::core::ids::ConnectionId;
use serde_json::{json, Value};
use std::collections::HashMap;
use support::evidence::{is_sync_read, request_head, wait_for_request};
use support::{Options, World};

const RETURN: &str = "https://platform.example/connected?tenant=7";

#[derive(Clone, Copy, Debug)]
enum P {
    Google,
    Microsoft,
}

impl P {
    fn name(self) -> &'static str {
        match self {
            P::Google => "google",
            P::Microsoft => "microsoft",
        }
    }
    fn sim(self) -> Provider {
        match self {
            P::Google => Provider::Google,
            P::Microsoft => Provider::Graph,
        }
    }
    fn account(self) -> &'static str {
        match self {
            P::Google => "ana@example.com",
            P::Microsoft => "bo@contoso.example",
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn world() -> World {
    World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await
}

/// An account in the simulator with a second calendar; the consent screen
/// grants it.
fn account(w: &World, p: P) -> String {
    let a = p.account();
    let second = match p {
        P::Google => {
            w.sim.google().create_account(a);
            w.sim.google().create_calendar(a, "Team", "UTC").unwrap()
        }
        P::Microsoft => {
            w.sim.graph().create_account(a);
            w.sim.graph().create_calendar(a, "Team").unwrap()
        }
    };
    consent(w, p, Consent::Grant(a.into()));
    second
}

fn consent(w: &World, p: P, c: Consent) {
    match p {
        P::Google => w.sim.google().set_consent(c),
        P::Microsoft => w.sim.graph().set_consent(c),
    }
}

/// `POST /v1/connect/{provider}`: the authorize URL.
async fn start(w: &World, p: P) -> String {
    let (status, body) = w
        .api(
            "POST",
            &format!("/v1/connect/{}", p.name()),
            Some(&json!({"platform_provider_id": "stylist-7", "return_url": RETURN})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["expires_at"].is_string(), "{body}");
    body["authorize_url"].as_str().unwrap().to_string()
}

fn location(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), 302, "{r:?}");
    r.headers()["location"].to_str().unwrap().to_string()
}

fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// The consent screen: where it sends the user back to (calsync's callback).
async fn consent_screen(authorize_url: &str) -> String {
    location(&client().get(authorize_url).send().await.unwrap())
}

/// calsync's callback: where it sends the user (the return URL).
async fn callback(url: &str) -> String {
    let to = location(&client().get(url).send().await.unwrap());
    assert!(to.starts_with(RETURN), "{to}");
    to
}

/// What exists: connections' sealed grants, offered calendars, events.
async fn footprint(w: &World) -> (i64, i64, i64) {
    let c = w.db.client().await;
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    (
        count("SELECT count(*) FROM credentials").await,
        count("SELECT count(*) FROM connection_offered_calendars").await,
        count("SELECT count(*) FROM events").await,
    )
}

fn error_of(url: &str) -> String {
    let q = query(url);
    assert!(!q.contains_key("connection_id"), "{url}");
    assert_eq!(q["tenant"], "7", "the return URL keeps its query: {url}");
    q.get("error").cloned().unwrap_or_default()
}

async fn the_whole_flow(p: P) {
    let w = world().await;
    let second = account(&w, p);
    let nothing = footprint(&w).await;
    assert_eq!(nothing.0, 0);

    // Success: the return URL gets the connection id …
    let authorize = start(&w, p).await;
    let q = query(&authorize);
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(!q.contains_key("code_verifier"));
    let back = consent_screen(&authorize).await;
    assert!(
        back.contains(&format!("/oauth/{}/callback", p.name())),
        "{back}"
    );
    let head = request_head(&w.sim);
    let done = callback(&back).await;
    let id = ConnectionId::parse(query(&done).get("connection_id").expect(&done).as_str()).unwrap();
    // … the connection exists for the consenting account …
    let (status, row) = w
        .api("GET", &format!("/admin/connections/{id}"), None)
        .await;
    assert_eq!(status, 200, "{row}");
    assert!(row.to_string().contains(p.account()), "{row}");
    assert!(row.to_string().contains("stylist-7"), "{row}");
    // … and its first sync reads the provider with the new grant.
    let read = wait_for_request(&w.sim, "the first sync read", head, |r| {
        is_sync_read(r) && r.provider == p.sim() && r.account.as_deref() == Some(p.account())
    })
    .await;
    assert_eq!(read.account.as_deref(), Some(p.account()));
    let after_success = footprint(&w).await;
    assert_eq!(after_success.0, 1);
    assert_eq!(after_success.1, 2, "both calendars are offered");

    // The picker lists what the account offered: primary in use.
    let path = format!("/v1/connections/{id}/calendars");
    let (status, picker) = w.api("GET", &path, None).await;
    assert_eq!(status, 200, "{picker}");
    let cals = picker["calendars"].as_array().unwrap();
    assert_eq!(cals.len(), 2, "{picker}");
    assert_eq!(cals[0]["calendar_id"], "primary");
    assert_eq!(cals[0]["blocking"], true);
    assert_eq!(cals[0]["booking_target"], true);
    assert_eq!(cals[1]["calendar_id"], second.as_str());
    assert_eq!(cals[1]["blocking"], false);

    // A replayed callback (same state, same code) ends in an error and
    // creates nothing more.
    let settled = footprint(&w).await;
    assert_eq!(error_of(&callback(&back).await), "replayed_state");
    assert_eq!(footprint(&w).await.0, settled.0);

    // Denied consent.
    consent(&w, p, Consent::Deny);
    let back_denied = consent_screen(&start(&w, p).await).await;
    assert_eq!(error_of(&callback(&back_denied).await), "access_denied");
    consent(&w, p, Consent::Grant(p.account().into()));

    // An unknown state has no return URL: a 400 with the code.
    let base = w.base.clone().unwrap();
    for bad in ["state=forged&code=x", "code=x", ""] {
        let r = client()
            .get(format!("{base}/oauth/{}/callback?{bad}", p.name()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "bad_state");
    }
    // A state issued for the other provider is unknown to this callback.
    let other = match p {
        P::Google => P::Microsoft,
        P::Microsoft => P::Google,
    };
    let theirs = query(&start(&w, other).await)["state"].clone();
    let r = client()
        .get(format!("{base}/oauth/{}/callback", p.name()))
        .query(&[("state", theirs.as_str()), ("code", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // An expired state.
    let back_late = consent_screen(&start(&w, p).await).await;
    w.db.client()
        .await
        .execute(
            "UPDATE oauth_states SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(error_of(&callback(&back_late).await), "expired_state");

    // A code used twice: the first flow's code under a fresh state.
    let fresh = query(&consent_screen(&start(&w, p).await).await);
    let spent = query(&back)["code"].clone();
    let mut twice = reqwest::Url::parse(&back).unwrap();
    twice
        .query_pairs_mut()
        .clear()
        .append_pair("code", &spent)
        .append_pair("state", &fresh["state"]);
    assert_eq!(
        error_of(&callback(twice.as_str()).await),
        "token_exchange_failed"
    );

    // The token endpoint fails.
    w.sim.add_fault(FaultRule {
        provider: p.sim(),
        endpoint: Some("token".into()),
        account: None,
        path: None,
        body_contains: None,
        kind: FaultKind::Status {
            code: 500,
            retry_after: None,
            reason: None,
        },
        remaining: None,
    });
    let back_fault = consent_screen(&start(&w, p).await).await;
    assert_eq!(
        error_of(&callback(&back_fault).await),
        "token_exchange_failed"
    );
    w.sim.clear_faults();

    // Another account than the one the platform asked for.
    let (status, body) = w
        .api(
            "POST",
            &format!("/v1/connect/{}", p.name()),
            Some(
                &json!({"platform_provider_id": "stylist-7", "return_url": RETURN,
                         "account": "someone-else@example.com"}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let authorize = body["authorize_url"].as_str().unwrap();
    assert_eq!(query(authorize)["login_hint"], "someone-else@example.com");
    let back_wrong = consent_screen(authorize).await;
    assert_eq!(error_of(&callback(&back_wrong).await), "wrong_account");

    // None of the failures left a grant, an offered calendar or an event
    // of a new connection behind.
    let after = footprint(&w).await;
    assert_eq!((after.0, after.1), (settled.0, settled.1));
    let (_, list) = w.api("GET", "/admin/connections", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_accounts_connect_through_the_consent_screen() {
    the_whole_flow(P::Google).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_accounts_connect_through_the_consent_screen() {
    the_whole_flow(P::Microsoft).await;
}

/// Connects `p`'s account through the flow; its id and second calendar.
async fn connected(w: &World, p: P) -> (ConnectionId, String) {
    let second = account(w, p);
    let back = consent_screen(&start(w, p).await).await;
    let done = callback(&back).await;
    let id = query(&done).get("connection_id").expect(&done).clone();
    (ConnectionId::parse(id.as_str()).unwrap(), second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_picks_which_calendars_block_and_which_receives_bookings() {
    let w = world().await;
    for p in [P::Google, P::Microsoft] {
        let (id, second) = connected(&w, p).await;
        let path = format!("/v1/connections/{id}/calendars");
        let head = request_head(&w.sim);
        let (status, picker) = w
            .api(
                "PUT",
                &path,
                Some(&json!({"calendars": [
                    {"calendar_id": "primary", "blocking": true},
                    {"calendar_id": second, "blocking": true, "booking_target": true}
                ]})),
            )
            .await;
        assert_eq!(status, 200, "{picker}");
        let flags: Vec<(bool, bool)> = picker["calendars"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["blocking"].as_bool().unwrap(),
                    c["booking_target"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(flags, [(true, false), (true, true)], "{picker}");
        let (_, again) = w.api("GET", &path, None).await;
        assert_eq!(again, picker);
        // The newly blocking calendar is read from the provider.
        wait_for_request(&w.sim, "a read of the picked calendar", head, |r| {
            // (calsim does not route Graph's per-calendar delta,
            // `/me/calendars/{id}/calendarView/delta`: matched by path;
            // docs/CONNECT.md.)
            r.provider == p.sim()
                && r.method == "GET"
                && r.path.contains(&second)
                && (is_sync_read(r) || r.path.ends_with("/calendarView/delta"))
        })
        .await;

        // Bad picks are refused with a reason and change nothing.
        for bad in [
            json!({"calendars": [{"calendar_id": "not-offered", "blocking": true}]}),
            json!({"calendars": [
                {"calendar_id": "primary", "booking_target": true},
                {"calendar_id": second, "booking_target": true}]}),
            json!({"calendars": []}),
            json!({"calendars": [{"calendar_id": "primary", "blocking": "yes"}]}),
        ] {
            let (status, body) = w.api("PUT", &path, Some(&bad)).await;
            assert_eq!(status, 400, "{bad} → {body}");
        }
        assert_eq!(w.api("GET", &path, None).await.1, picker);
    }

    // An unknown connection is a 404; the picker needs a platform token.
    let unknown = format!("/v1/connections/{}/calendars", ConnectionId::new_random());
    assert_eq!(w.api("GET", &unknown, None).await.0, 404);
    let r = client()
        .get(format!("{}{unknown}", w.base.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(format!("{}/v1/connect/google", w.base.clone().unwrap()))
        .json(&json!({"platform_provider_id": "x", "return_url": RETURN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bad starts: unknown provider, a return URL with a fragment.
    for (provider, body) in [
        (
            "yahoo",
            json!({"platform_provider_id": "x", "return_url": RETURN}),
        ),
        (
            "google",
            json!({"platform_provider_id": "x", "return_url": "https://a.example/#x"}),
        ),
        (
            "google",
            json!({"platform_provider_id": "x", "return_url": "/relative"}),
        ),
    ] {
        let (status, body) = w
            .api("POST", &format!("/v1/connect/{provider}"), Some(&body))
            .await;
        assert_eq!(status, 400, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_connects_from_the_terminal() {
    let w = world().await;
    account(&w, P::Google);
    let run = |token: &str| {
        let base = w.base.clone().unwrap();
        let token = token.to_string();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
                .args(["connections", "connect", "--provider", "google"])
                .args(["--platform-provider-id", "stylist-9", "--visit"])
                .args(["--timeout-secs", "60", "--server", &base, "--token", &token])
                .env_remove("CALSYNC_TOKEN")
                .output()
                .unwrap()
        })
    };
    let out = run("admin").await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("/google/authorize?"), "{stdout}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("connected: "))
        .expect("a connection id");
    let (status, row) = w
        .api("GET", &format!("/admin/connections/{}", id.trim()), None)
        .await;
    assert_eq!(status, 200, "{row}");
    assert!(row.to_string().contains("stylist-9"), "{row}");

    // Denied consent: a failure with the reason, nothing created.
    consent(&w, P::Google, Consent::Deny);
    let out = run("admin").await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("access_denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong token: refused before any URL is printed.
    let out = run("wrong").await.unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("authorize"));
    assert_eq!(footprint(&w).await.0, 1);
}

/// A connection the log refuses to create (a trigger stands in for a
/// database failure at that moment): the user lands on
/// `error=create_failed` and the sealed grant and offered calendars are
/// gone again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_leaves_nothing_behind() {
    let w = world().await;
    account(&w, P::Google);
    w.db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_connect() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.payload::text LIKE '%stylist-refused%' THEN \
                 RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_connect BEFORE INSERT ON events \
               FOR EACH ROW EXECUTE FUNCTION refuse_connect();",
        )
        .await
        .unwrap();
    let before = footprint(&w).await;
    let (status, body) = w
        .api(
            "POST",
            "/v1/connect/google",
            Some(&json!({"platform_provider_id": "stylist-refused", "return_url": RETURN})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let back = consent_screen(body["authorize_url"].as_str().unwrap()).await;
    assert_eq!(error_of(&callback(&back).await), "create_failed");
    assert_eq!(footprint(&w).await, before);

    // The same account connects once the log takes it again.
    let (_, body) = w
        .api(
            "POST",
            "/v1/connect/google",
            Some(&json!({"platform_provider_id": "stylist-7", "return_url": RETURN})),
        )
        .await;
    let back = consent_screen(body["authorize_url"].as_str().unwrap()).await;
    assert!(query(&callback(&back).await).contains_key("connection_id"));
    assert_eq!(footprint(&w).await.0, 1);
}
