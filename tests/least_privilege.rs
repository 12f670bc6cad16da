//! Least privilege: the role `calsync migrate --runtime-role` creates runs
//! the whole webhook → sync → busy and booking → outbound path, yet cannot
//! rewrite the log or the schema; serve warns when it runs as a superuser
//! or the owner.

mod support;

use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::BookingId;
use calsync::core::outbound::{Booking, BookingStatus};
use chrono::{Duration as TimeDelta, Utc};
use serde_json::json;
use std::time::Duration;
use support::{eventually, wait_for, Options, World, DEADLINE};
use tokio_postgres::error::SqlState;

fn tomorrow(h: i64) -> chrono::DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + TimeDelta::days(1)
        + TimeDelta::hours(h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_role_runs_webhooks_sync_and_outbound_but_cannot_rewrite_the_log() {
    let role = format!("calsync_rt_{}", std::process::id());
    let w = World::start(Options {
        serve: true,
        flag_gates: true,
        runtime_role: Some(role.clone()),
        ..Default::default()
    })
    .await;
    let email = "least@example.com";
    let id = w.google_connection(email).await;
    // Push channel opened and recorded by the role.
    let head = 0;
    w.wait_for_event(id, "channel_opened", head).await;
    // A calendar change: the simulator pushes to calsync's edge, the role
    // commits the notification, syncs and writes the busy row.
    let (s, e) = (tomorrow(9), tomorrow(10));
    w.sim
        .google()
        .upsert_event(
            email,
            "primary",
            json!({"id": "lpevent01", "start": {"dateTime": s.to_rfc3339()},
                   "end": {"dateTime": e.to_rfc3339()}}),
        )
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            w.busy(id).await.len() == 1
        })
        .await,
        "the pushed change never became busy time"
    );
    assert!(w.count_events(id, "notification_accepted").await >= 1);
    // A booking: written to the external calendar by the role.
    let booking = Booking {
        booking_id: BookingId::parse("lp-bk").unwrap(),
        version: 1,
        status: BookingStatus::Confirmed,
        start: tomorrow(14),
        end: tomorrow(15),
        time_zone: "UTC".into(),
        title: "Least privilege".into(),
        attendees: vec![],
    };
    w.connections
        .command(
            id,
            ConnectionCommand::ApplyBooking(booking),
            uuid::Uuid::new_v4(),
        )
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            w.sim
                .google()
                .stored_events(email, "primary")
                .unwrap()
                .iter()
                .any(|e| e["summary"] == "Least privilege")
        })
        .await,
        "the booking never reached the calendar"
    );

    // And the role cannot rewrite the log, drop its guard or change the
    // schema: refused for lack of privilege, not by the trigger.
    let (client, connection) = tokio_postgres::connect(&w.db.url_as(&role), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for sql in [
        "UPDATE events SET event_type = event_type",
        "DELETE FROM events",
        "TRUNCATE events",
        "ALTER TABLE events DISABLE TRIGGER events_no_update",
        "DROP TRIGGER events_no_update ON events",
        "CREATE TABLE sneaky (x int)",
        "INSERT INTO calsync_migrations (version, name, checksum) VALUES (999, 'x', 'x')",
    ] {
        let err = client.batch_execute(sql).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err:?}"
        );
    }
    let appended: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert!(appended > 0, "the role can read the log it appended to");
}

/// Runs `calsync` with `database_url`; its stderr goes to `log`.
fn calsync(args: &[&str], database_url: &str, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env(
            "CALSYNC_CREDENTIALS_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env("CALSYNC_LOG_FORMAT", "text")
        .env_remove("CALSYNC_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const WARNING: &str = "can rewrite the event log";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_role_and_serve_warns_only_when_it_could_rewrite_the_log() {
    let db = calsync::testkit::TestDb::new().await;
    let role = format!("calsync_rt2_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let migrate_log = dir.path().join("migrate.log");
    let status = calsync(
        &["migrate", "--runtime-role", &role],
        &db.url(),
        &migrate_log,
    )
    .wait()
    .unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&migrate_log).unwrap()
    );

    for (url, warns) in [(db.url(), true), (db.url_as(&role), false)] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join(format!("serve-{warns}.log"));
        let _serve = KillOnDrop(calsync(
            &["serve", "--listen", &format!("127.0.0.1:{port}")],
            &url,
            &log,
        ));
        // Ready: the database answers this role, and start-up (which
        // checks the migrations without any DDL) is behind it.
        wait_for("serve ready", DEADLINE, || async {
            let r = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.contains(WARNING), warns, "{url}:\n{text}");
    }
}
