//! `calsync serve` as an operator runs it: no configuration, a private
//! PostgreSQL of its own, readiness that follows the database, clean exit.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_status(url: &str, want: u16, within: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(r) = client.get(url).timeout(Duration::from_secs(3)).send().await {
            if r.status().as_u16() == want {
                return true;
            }
        }
        // Poll interval: the status is asked again right after.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_its_own_database_reports_readiness_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("CALSYNC_PG_DIR")
        .env_remove("CALSYNC_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serve = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{port}");

    assert!(
        wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(60)).await,
        "serve never became ready"
    );
    assert!(wait_for_status(&format!("{base}/healthz"), 200, Duration::from_secs(5)).await);

    // The private cluster lives under the default directory, ./.calsync/pg.
    let data = dir.path().join(".calsync/pg/data");
    let pid_file = data.join("postmaster.pid");
    assert!(
        pid_file.exists(),
        "the private cluster is not in ./.calsync/pg"
    );

    // Crash the database: readiness must drop to 503, health stays 200.
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let pg_pid: i32 = text.lines().next().unwrap().trim().parse().unwrap();
    kill(Pid::from_raw(pg_pid), Signal::SIGQUIT).unwrap();
    assert!(
        wait_for_status(&format!("{base}/readyz"), 503, Duration::from_secs(20)).await,
        "readyz stayed 200 with the database down"
    );
    assert!(wait_for_status(&format!("{base}/healthz"), 200, Duration::from_secs(5)).await);

    kill(Pid::from_raw(serve.0.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        // Poll interval: the exit status is checked again right after.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "serve exited with {status}");
    // Nothing is left running on that data directory.
    let deadline = Instant::now() + Duration::from_secs(10);
    while data.join("postmaster.pid").exists() && Instant::now() < deadline {
        // Poll interval: the pid file is checked again right after.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !data.join("postmaster.pid").exists(),
        "postgres still running"
    );
}
