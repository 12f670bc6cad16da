//! `/metrics` is served from memory: a fresh, idle `calsync serve` exposes
//! every family of ops/METRICS.md, and scrapes never wait on the database
//! (here: while the tables the state gauges read are locked).

use calsync::testkit::TestDb;
use std::time::{Duration, Instant};

mod support;
use support::wait_for;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every family ops/METRICS.md documents (its tables' first column),
/// except `up`, which Prometheus writes itself.
fn documented_families() -> Vec<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ops/METRICS.md")).unwrap();
    let families: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `calsync_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("calsync_{name}"))
        .collect();
    assert!(families.len() >= 30, "{families:?}");
    families
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_idle_server_exposes_every_family_and_scrapes_never_wait_on_the_database() {
    let db = TestDb::new().await;
    let (public, operator) = (free_port(), free_port());
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{public}"),
            "--admin-listen",
            &format!("127.0.0.1:{operator}"),
            "--metrics-refresh-ms",
            "200",
        ])
        .env("DATABASE_URL", db.url())
        .env("CALSYNC_ADMIN_TOKEN", "t")
        .env(
            "CALSYNC_CREDENTIALS_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .env_remove("CALSYNC_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _serve = KillOnDrop(child);
    let metrics = format!("http://127.0.0.1:{operator}/metrics");
    let scrape = wait_for("serve answers /metrics", support::DEADLINE, || async {
        get(&metrics).await.filter(|(s, _)| *s == 200).map(|r| r.1)
    })
    .await;

    // Every documented family, before anything happened — except the
    // cluster's, which ops/METRICS.md documents as present only in cluster
    // mode (this node runs alone, without a cluster secret).
    let missing: Vec<String> = documented_families()
        .into_iter()
        .filter(|f| !f.starts_with("calsync_cluster_"))
        .filter(|f| !scrape.contains(&format!("# TYPE {f} ")))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in\n{scrape}");

    // The operator routes are on the operator listener only; the public
    // one keeps health (both do).
    let public_base = format!("http://127.0.0.1:{public}");
    assert_eq!(get(&format!("{public_base}/metrics")).await.unwrap().0, 404);
    assert_eq!(
        get(&format!("{public_base}/admin/status")).await.unwrap().0,
        404
    );
    assert_eq!(get(&format!("{public_base}/healthz")).await.unwrap().0, 200);
    assert_eq!(
        get(&format!("http://127.0.0.1:{operator}/healthz"))
            .await
            .unwrap()
            .0,
        200
    );

    // Lock every table the state gauges read: a scrape that queried them
    // would wait for the lock.
    let mut locker = db.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute(
        "LOCK TABLE connections, connection_calendars, booking_events, channels \
         IN ACCESS EXCLUSIVE MODE",
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    let flood = 200;
    for _ in 0..flood {
        let started = Instant::now();
        let r = http.get(&metrics).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("calsync_connections"));
        slowest = slowest.max(started.elapsed());
    }
    // Backends waiting for the lock: at most the one background refresher.
    let observer = db.client().await;
    let waiting: i64 = observer
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.rollback().await.unwrap();
    assert!(
        slowest < Duration::from_millis(500),
        "a scrape took {slowest:?} while the tables were locked"
    );
    assert!(
        waiting <= 1,
        "{waiting} backends waited on the lock after {flood} scrapes"
    );
}
