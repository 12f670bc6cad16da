//! The troubleshooter (`/ui`) in a real browser: headless Chromium from
//! Debian's packages, driven through chromedriver (WebDriver) from Rust,
//! against a served calsync whose connection syncs from the Google
//! simulator. It signs in with the keyboard, finds a seeded busy block and
//! its explanation, triggers a resync through the confirmation page, checks
//! a phone-sized screen and basic accessibility, and saves screenshots as
//! CI artefacts (`$CALSYNC_ARTIFACTS`, default `/tmp/calsync-artifacts`).
//!
//! Chromium is installed when missing (`apt-get install chromium
//! chromium-driver`, as `.ci/run` does), like PostgreSQL for every test.

mod support;

use chrono::{DateTime, Duration as TimeDelta, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{eventually, Options, World};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn ensure_chromium() {
    if std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists() {
        return;
    }
    let status = Command::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq chromium chromium-driver >/dev/null",
        ])
        .status()
        .expect("run apt-get");
    assert!(
        status.success(),
        "installing chromium and chromium-driver failed"
    );
}

/// chromedriver on a free loopback port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        use std::os::unix::process::CommandExt;
        // A process group of its own: a failing test still ends the
        // browser chromedriver started (see `Drop`).
        let child = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            // --no-sandbox: CI runs as root, where Chromium's sandbox refuses.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1400"],
        }),
    );
    let mut last = String::new();
    // chromedriver takes a moment to listen.
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(c) => return c,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer: {last}");
}

fn artifacts() -> std::path::PathBuf {
    let dir =
        std::env::var("CALSYNC_ARTIFACTS").unwrap_or_else(|_| "/tmp/calsync-artifacts".into());
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The page's text; a page being replaced by a navigation is read again.
async fn text(c: &Client) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match c.find(Locator::Css("body")).await {
            Ok(body) => match body.text().await {
                Ok(t) => return t,
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page has no readable text: {last}");
}

/// The page's text once it contains `needle` (a click's navigation
/// completes on its own time).
async fn text_with(c: &Client, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = text(c).await;
        if last.contains(needle) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed {needle:?}; it shows:\n{last}");
}

async fn script(c: &Client, js: &str) -> Value {
    c.execute(js, vec![]).await.unwrap()
}

/// Basic accessibility of the page: a language, every visible input
/// labelled, every button and link named, no text below the stylesheet's
/// contrast (checked by the stylesheet's colours, not computed here).
async fn assert_accessible(c: &Client, page: &str) {
    let problems = script(
        c,
        r#"
        const out = [];
        if (!document.documentElement.lang) out.push('no lang');
        for (const i of document.querySelectorAll('input:not([type=hidden])'))
          if (!i.labels || i.labels.length === 0) out.push('unlabelled input ' + (i.id || i.name));
        for (const b of document.querySelectorAll('button, a'))
          if (!b.textContent.trim() && !b.getAttribute('aria-label')) out.push('unnamed ' + b.outerHTML);
        if (!document.querySelector('main')) out.push('no main landmark');
        return out;
        "#,
    )
    .await;
    assert_eq!(problems, json!([]), "{page}: {problems}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_troubleshooter_explains_a_busy_block_and_resyncs_in_a_browser() {
    ensure_chromium();
    let w = World::start(Options {
        serve: true,
        ..Default::default()
    })
    .await;
    let email = "ui-browser@example.com";
    let day = support::midnight_in_days(2);
    let at = |h: i64| day + TimeDelta::hours(h);
    let g = w.sim.google();
    g.create_account(email);
    g.upsert_event(
        email,
        "primary",
        json!({"id": "meeting01", "start": {"dateTime": at(10).to_rfc3339()},
               "end": {"dateTime": at(12).to_rfc3339()}}),
    )
    .unwrap();
    g.upsert_event(
        email,
        "primary",
        json!({"id": "freeevt1", "transparency": "transparent",
               "start": {"dateTime": at(14).to_rfc3339()},
               "end": {"dateTime": at(15).to_rfc3339()}}),
    )
    .unwrap();
    let id = w.google_connection(email).await;
    w.notify(id, "seed").await;
    let pp = format!("pp-{email}");
    let q = |t: DateTime<Utc>| t.to_rfc3339().replace('+', "%2B");
    let explain = format!(
        "/v1/providers/{pp}/explain?from={}&to={}",
        q(day),
        q(day + TimeDelta::days(1))
    );
    assert!(
        eventually(Duration::from_secs(20), || async {
            let (_, body) = w.api("GET", &explain, None).await;
            body["busy"].as_array().is_some_and(|b| b.len() == 1)
                && body["ignored"].as_array().is_some_and(|i| i.len() == 1)
        })
        .await,
        "the seeded events never synced"
    );

    let driver = Driver::start();
    let c = browser(&driver).await;
    let base = w.base.clone().unwrap();
    let out = artifacts();

    // Signed out: /ui leads to the sign-in form; a wrong token is refused.
    c.goto(&format!("{base}/ui")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    assert_accessible(&c, "login").await;
    let active = script(&c, "return document.activeElement.id").await;
    assert_eq!(active, json!("token"), "the token field has the focus");
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("wrong\u{E007}")
        .await
        .unwrap();
    text_with(&c, "That is not the admin token").await;

    // Signed in with the keyboard alone: type the token, press Enter.
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("admin\u{E007}")
        .await
        .unwrap();
    let page = text_with(&c, "Channel expiry").await;
    assert!(page.contains("Connections"), "{page}");
    assert!(page.contains(&id.to_string()), "{page}");
    assert!(page.contains(&pp), "{page}");
    assert!(page.contains("primary"), "calendar health listed: {page}");
    assert!(
        !c.current_url().await.unwrap().as_str().contains("admin"),
        "no token in the URL"
    );
    assert_accessible(&c, "connections").await;

    // The week: the seeded busy block and its explanation.
    let week = format!(
        "{base}/ui/providers/{pp}/week?start={}",
        day.format("%Y-%m-%d")
    );
    c.goto(&week).await.unwrap();
    let block = c
        .find(Locator::Css(r#".week .block[data-event-id="meeting01"]"#))
        .await
        .expect("a busy block for the seeded event");
    let label = block.text().await.unwrap();
    assert!(
        label.contains("10:00–12:00") && label.contains("opaque"),
        "{label}"
    );
    let why = block.attr("title").await.unwrap().unwrap_or_default();
    assert!(why.contains("busy: opaque"), "{why}");
    assert!(
        why.contains("calendar primary") && why.contains(&id.to_string()),
        "{why}"
    );
    let faint = c
        .find(Locator::Css(
            r#".week .block.ignored[data-event-id="freeevt1"]"#,
        ))
        .await
        .expect("the ignored event, faint");
    assert!(faint.text().await.unwrap().contains("ignored: transparent"));
    let row = c
        .find(Locator::Css(r#"#busy-table tr[data-event-id="meeting01"]"#))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(row.contains("opaque") && row.contains("primary"), "{row}");
    assert_accessible(&c, "week").await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(out.join("ui.png"), &png).unwrap();

    // Resync, behind a confirmation; the connection syncs again.
    let before = w.log_head().await;
    c.goto(&format!("{base}/ui/connections")).await.unwrap();
    c.find(Locator::Id(&format!("resync-{id}")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let confirm = text_with(&c, "Confirm:").await;
    assert!(confirm.contains("Confirm: Resync"), "{confirm}");
    c.find(Locator::Id("confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = text_with(&c, "Done:").await;
    assert!(
        done.contains(&format!("Done: Resync of {id}")) && done.contains("correlation id"),
        "{done}"
    );
    w.wait_for_round(id, before).await;

    // The connection's log shows the round with its correlation ids.
    c.goto(&format!("{base}/ui/connections/{id}/log"))
        .await
        .unwrap();
    let log = text(&c).await;
    assert!(log.contains("sync_round_completed"), "{log}");
    assert!(log.contains("external_event_seen"), "{log}");

    // A phone-sized screen: the page fits its width (the week scrolls in
    // its own box), and the busy time is still listed with its rule.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&week).await.unwrap();
    let overflow = script(
        &c,
        "return document.documentElement.scrollWidth - window.innerWidth",
    )
    .await;
    assert!(
        overflow.as_i64().unwrap() <= 1,
        "page wider than the phone: {overflow}"
    );
    assert!(text(&c).await.contains("opaque"));
    std::fs::write(out.join("ui-phone.png"), c.screenshot().await.unwrap()).unwrap();

    // Signed out, the pages lead back to the sign-in form.
    c.delete_all_cookies().await.unwrap();
    c.goto(&week).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    c.close().await.unwrap();
}
