//! `/ui` over plain HTTP: sign-in and its refusals, the CSRF check, each
//! operator action behind its confirmation page and its effect on the
//! connection, the log page's correlation ids, the validation report page.
//! (tests/ui_browser.rs drives the same pages in Chromium.)

mod support;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use std::time::Duration;
use support::{eventually, Options, World};

struct Ui {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Ui {
    async fn get(&self, path: &str) -> (u16, String, Option<String>) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            r = r.header(COOKIE, c);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        (status, resp.text().await.unwrap(), location)
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, Option<String>) {
        let mut r = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            r = r.header(COOKIE, c);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        (status, resp.text().await.unwrap(), location)
    }
}

fn csrf_of(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a csrf value");
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_need_a_session_a_confirmation_and_a_fresh_form() {
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let id = w.google_connection("ui-http@example.com").await;
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let mut ui = Ui {
        http,
        base: w.base.clone().unwrap(),
        cookie: None,
    };

    // Signed out: every page leads to the sign-in form.
    for path in [
        "/ui".to_string(),
        "/ui/connections".to_string(),
        format!("/ui/connections/{id}/log"),
        "/ui/providers/pp-ui-http@example.com/week".to_string(),
        "/ui/validate".to_string(),
    ] {
        let (status, _, location) = ui.get(&path).await;
        assert_eq!(status, 303, "{path}");
        assert_eq!(location.as_deref(), Some("/ui/login"), "{path}");
    }
    let (status, _, location) = ui
        .post(&format!("/ui/connections/{id}/act/pause"), &[("csrf", "x")])
        .await;
    assert_eq!((status, location.as_deref()), (303, Some("/ui/login")));
    assert_eq!(
        w.status(id).await.0,
        "active",
        "nothing happened signed out"
    );

    // A wrong token is refused; the right one gives a session cookie.
    let (status, page, _) = ui.post("/ui/login", &[("token", "wrong")]).await;
    assert_eq!(status, 401);
    assert!(page.contains("That is not the admin token"));
    let resp = ui
        .http
        .post(format!("{}/ui/login", ui.base))
        .form(&[("token", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let set = resp.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("admin"), "the token itself is not the cookie");
    ui.cookie = Some(set.split(';').next().unwrap().to_string());
    // A forged session is not one.
    let forged = Ui {
        http: ui.http.clone(),
        base: ui.base.clone(),
        cookie: Some("calsync_ui=99999999999.00".into()),
    };
    assert_eq!(forged.get("/ui/connections").await.0, 303);

    let (status, page, _) = ui.get("/ui/connections").await;
    assert_eq!(status, 200);
    assert!(page.contains(&id.to_string()), "{page}");
    assert!(page.contains("Channel expiry"));

    // Pause: a confirmation page first, then the action with its form value.
    let (status, confirm, _) = ui.get(&format!("/ui/connections/{id}/confirm/pause")).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("Confirm: Pause"), "{confirm}");
    let csrf = csrf_of(&confirm);
    let (status, _, _) = ui
        .post(
            &format!("/ui/connections/{id}/act/pause"),
            &[("csrf", "stale")],
        )
        .await;
    assert_eq!(status, 403, "a form not from this session is refused");
    assert_eq!(w.status(id).await.0, "active");
    let (status, _, location) = ui
        .post(
            &format!("/ui/connections/{id}/act/pause"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 303);
    assert!(location.unwrap().starts_with("/ui/connections?done="));
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(id).await.0 == "paused"
        })
        .await
    );
    let (_, page, _) = ui.get("/ui/connections").await;
    assert!(
        page.contains("Resume…"),
        "a paused connection offers resume"
    );
    let (status, _, _) = ui
        .post(
            &format!("/ui/connections/{id}/act/resume"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 303);
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.status(id).await.0 != "paused"
        })
        .await
    );

    // The log page shows what happened, with correlation ids.
    let (status, log, _) = ui.get(&format!("/ui/connections/{id}/log")).await;
    assert_eq!(status, 200);
    assert!(
        log.contains("connection_paused") && log.contains("connection_resumed"),
        "{log}"
    );
    assert!(log.contains("Correlation id"));

    // Bad requests.
    assert_eq!(
        ui.get(&format!("/ui/connections/{id}/confirm/explode"))
            .await
            .0,
        404
    );
    assert_eq!(
        ui.post(
            &format!("/ui/connections/{id}/act/explode"),
            &[("csrf", &csrf)]
        )
        .await
        .0,
        404
    );
    assert_eq!(
        ui.get("/ui/connections/not-a-uuid/confirm/pause").await.0,
        400
    );
    assert_eq!(
        ui.post("/ui/bookings/no-such-booking/retry", &[("csrf", &csrf)])
            .await
            .0,
        404
    );
    assert_eq!(
        ui.get("/ui/providers/pp-ui-http@example.com/week?start=yesterday")
            .await
            .0,
        400
    );

    // The validation report, when one is present.
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("validate.md");
    let (_, page, _) = ui.get("/ui/validate").await;
    assert!(page.contains("No report") || page.contains("Last validation report"));
    std::fs::write(&report, "# calsync validation\n\nverdict: GO <b>bold</b>\n").unwrap();
    std::env::set_var("CALSYNC_VALIDATE_REPORT", &report);
    let (status, page, _) = ui.get("/ui/validate").await;
    assert_eq!(status, 200);
    assert!(page.contains("verdict: GO"), "{page}");
    assert!(page.contains("&lt;b&gt;bold"), "escaped: {page}");

    // Signing out ends the session in this browser.
    let (status, _, _) = ui.post("/ui/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
}
