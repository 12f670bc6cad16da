//! One drill's world, as separate processes so kills and restarts are real:
//!
//! - a private PostgreSQL cluster (fsync on) owned by this drill process;
//! - the provider simulators, in-process in the drill runner (a different
//!   process from `serve`; they reach `serve` over loopback HTTP);
//! - `calsync serve` as a child process (this very binary), pointed at the
//!   cluster and the simulators, with drills enabled and a random admin token.
//!
//! The cluster is started and restarted on the calling thread, never on a
//! blocking-pool thread: the postmaster gets a parent-death signal tied to the
//! thread that spawned it, and blocking-pool threads exit when idle.

use crate::pg::{Cluster, Durability, StopMode};
use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use calsim::{SimConfig, SimHandle, Simulators};
use rand::RngCore;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct Harness {
    pub cluster: Cluster,
    /// libpq connection string of the drill's database (serve's `DATABASE_URL`).
    pub db_url: String,
    pub sim: SimHandle,
    pub admin_token: String,
    credentials_key: String,
    pub port: u16,
    /// `http://127.0.0.1:<port>`: serve's address and its public URL.
    pub base: String,
    serve: Option<Child>,
    /// How many times serve was started (1 + restarts).
    pub serve_starts: u32,
    pub serve_log: PathBuf,
    pub http: reqwest::Client,
    work_dir: PathBuf,
    /// The binary serve runs from, when not this process's own (tests,
    /// whose own binary is the test harness).
    pub exe: Option<PathBuf>,
}

/// The calsync binary serve and replay run from: a private copy of this
/// process's own executable, taken once. `cargo build` replaces the binary
/// in place, and a rebuild during a validation run would otherwise leave
/// nothing to spawn; `/proc/self/exe` still reads the running image. The
/// copy lives in a fresh directory only this user can enter, with an
/// unpredictable name (`mkdtemp`): a binary that is run must not sit at a
/// path someone else could create first.
pub fn calsync_exe() -> anyhow::Result<PathBuf> {
    static EXE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        private_temp_dir("calsync-drills-bin-")
            .and_then(|dir| {
                let copy = dir.join("calsync");
                std::fs::copy("/proc/self/exe", &copy)?;
                let _ = EXE_DIR.set(dir);
                Ok(copy)
            })
            .or_else(|_| std::env::current_exe())
            .map_err(|e| format!("cannot find the calsync binary: {e}"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// The private directory holding the binary's copy, once made.
static EXE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A fresh directory under the temp dir, mode 0700, named `prefix` and six
/// random characters (`mkdtemp`: created atomically, never reused).
pub fn private_temp_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let template = std::env::temp_dir().join(format!("{prefix}XXXXXX"));
    nix::unistd::mkdtemp(&template).map_err(std::io::Error::from)
}

/// Removes the private copy of the binary (after the last drill).
pub fn remove_exe_copy() {
    if let Some(dir) = EXE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Harness {
    /// Starts the cluster, the simulators and serve; turns the flags on.
    pub async fn start(name: &str) -> anyhow::Result<Harness> {
        let mut harness = Self::prepare(name).await?;
        harness.start_serve().await?;
        for flag in ["sync_enabled", "jobs_enabled", "webhooks_enabled"] {
            harness.set_flag(flag, true).await?;
        }
        Ok(harness)
    }

    /// The cluster and the simulators, no serve yet (several-node drills
    /// spawn their own with [`Harness::serve_command`]).
    pub async fn prepare(name: &str) -> anyhow::Result<Harness> {
        let cluster = Cluster::start_temporary(Durability::Full)
            .map_err(|e| anyhow!("cannot start the drill's PostgreSQL: {e}"))?;
        let db_url = cluster.connection_string("postgres");
        let sim = Simulators::start(SimConfig::for_tests()).await?;
        let port = free_port()?;
        let work_dir = private_temp_dir(&format!("calsync-drill-{name}-"))?;
        Ok(Harness {
            cluster,
            db_url,
            sim,
            admin_token: hex::encode(random_bytes(16)),
            credentials_key: base64::engine::general_purpose::STANDARD.encode(random_bytes(32)),
            port,
            base: format!("http://127.0.0.1:{port}"),
            serve: None,
            serve_starts: 0,
            serve_log: work_dir.join("serve.log"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build()?,
            work_dir,
            exe: None,
        })
    }

    /// Spawns `calsync serve` and waits for `/readyz`.
    pub async fn start_serve(&mut self) -> anyhow::Result<()> {
        let child = self
            .serve_command(self.port, &self.serve_log)?
            .spawn()
            .context("cannot spawn calsync serve")?;
        self.serve = Some(child);
        self.serve_starts += 1;
        if !self.wait_ready(Duration::from_secs(30)).await {
            bail!(
                "calsync serve did not become ready within 30 s (log: {})",
                self.serve_log.display()
            );
        }
        Ok(())
    }

    /// The directory the drill's files live in.
    pub fn work_dir(&self) -> &std::path::Path {
        &self.work_dir
    }

    /// `calsync serve` on `port`, pointed at this drill's database and
    /// simulators, logging to `log` (public URL: `self.base`).
    pub fn serve_command(&self, port: u16, log: &std::path::Path) -> anyhow::Result<Command> {
        let exe = match &self.exe {
            Some(exe) => exe.clone(),
            None => calsync_exe()?,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(exe);
        command
            .arg("serve")
            .current_dir(&self.work_dir)
            .env_remove("CALSYNC_CONFIG")
            .env("DATABASE_URL", &self.db_url)
            .env("CALSYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("CALSYNC_ADMIN_TOKEN", &self.admin_token)
            .env("CALSYNC_DRILLS_ENABLED", "true")
            .env("CALSYNC_PUBLIC_URL", &self.base)
            .env("CALSYNC_CREDENTIALS_KEY", &self.credentials_key)
            .env("CALSYNC_GOOGLE_API_URL", self.sim.google_base_url())
            .env("CALSYNC_GOOGLE_TOKEN_URL", self.sim.google_token_url())
            .env("CALSYNC_GRAPH_API_URL", self.sim.graph_base_url())
            .env(
                "CALSYNC_GRAPH_TOKEN_URL",
                self.sim.graph_token_url("common"),
            )
            .env("CALSYNC_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        Ok(command)
    }

    /// serve's process id, for SIGKILL and /proc sampling.
    pub fn serve_pid(&self) -> Option<u32> {
        self.serve.as_ref().and_then(Child::id)
    }

    /// SIGKILL: no shutdown hooks, nothing flushed — a hard crash.
    pub async fn kill_serve(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.serve.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Graceful stop at the end of a drill.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.serve.take() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        self.sim.shutdown().await;
        let _ = self.cluster.stop(StopMode::Fast);
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }

    pub async fn status_of(&self, path: &str) -> Option<u16> {
        self.http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn wait_ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.status_of("/readyz").await == Some(200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// An admin call: (status, JSON body or Null).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token)
            .header("x-calsync-actor", "calsync-drill");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub async fn set_flag(&self, flag: &str, enabled: bool) -> anyhow::Result<()> {
        let (status, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/admin/flags/{flag}"),
                Some(json!({"enabled": enabled, "reason": "drill"})),
            )
            .await?;
        if status != 200 {
            bail!("setting {flag}={enabled} answered {status}: {body}");
        }
        Ok(())
    }

    /// A Google account in the simulator, its connection in calsync (for
    /// platform provider `pp`, calendar and destination `primary`) and its grant.
    pub async fn google_connection(&self, email: &str, pp: &str) -> anyhow::Result<String> {
        let account = self.sim.google().create_account(email);
        self.connect(
            "google",
            email,
            pp,
            (
                account.client_id,
                account.client_secret,
                account.refresh_token,
            ),
        )
        .await
    }

    pub async fn graph_connection(&self, upn: &str, pp: &str) -> anyhow::Result<String> {
        let account = self.sim.graph().create_account(upn);
        self.connect(
            "microsoft",
            upn,
            pp,
            (
                account.client_id,
                account.client_secret,
                account.refresh_token,
            ),
        )
        .await
    }

    async fn connect(
        &self,
        provider: &str,
        account: &str,
        pp: &str,
        grant: (String, String, String),
    ) -> anyhow::Result<String> {
        self.connect_with(provider, account, pp, &["primary"], Some("primary"), grant)
            .await
    }

    /// A Google connection blocking time from `calendars`, writing bookings
    /// to `destination` (the account is created in the simulator if new).
    pub async fn google_calendars(
        &self,
        email: &str,
        pp: &str,
        calendars: &[&str],
        destination: Option<&str>,
    ) -> anyhow::Result<String> {
        let account = self.sim.google().create_account(email);
        self.connect_with(
            "google",
            email,
            pp,
            calendars,
            destination,
            (
                account.client_id,
                account.client_secret,
                account.refresh_token,
            ),
        )
        .await
    }

    async fn connect_with(
        &self,
        provider: &str,
        account: &str,
        pp: &str,
        calendars: &[&str],
        destination: Option<&str>,
        (client_id, client_secret, refresh_token): (String, String, String),
    ) -> anyhow::Result<String> {
        let request = json!({
            "platform_provider_id": pp,
            "provider": provider,
            "account": account,
            "calendars": calendars,
            "destination_calendar": destination,
        });
        // A 503 means nothing was written (in a cluster that has just
        // formed, the new connection's slice may still be moving between
        // nodes): a client retries it, and so does the drill.
        let mut attempt = 0;
        let (status, body) = loop {
            let (status, body) = self
                .admin(
                    reqwest::Method::POST,
                    "/admin/connections",
                    Some(request.clone()),
                )
                .await?;
            attempt += 1;
            if status != 503 || attempt == 20 {
                break (status, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        if status != 201 {
            bail!("creating the connection for {account} answered {status}: {body}");
        }
        let id = body["connection_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no connection_id in {body}"))?
            .to_string();
        let (status, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/admin/connections/{id}/credentials"),
                Some(json!({
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "refresh_token": refresh_token,
                })),
            )
            .await?;
        if status != 200 {
            bail!("storing the grant for {account} answered {status}: {body}");
        }
        Ok(id)
    }

    /// Waits until the connection has an open push channel and is active.
    pub async fn wait_connected(&self, id: &str, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let channels = self
                .count(&format!(
                    "SELECT count(*) FROM channels WHERE connection_id = '{id}' AND closed_at IS NULL"
                ))
                .await
                .unwrap_or(0);
            let (_, row) = self
                .admin(
                    reqwest::Method::GET,
                    &format!("/admin/connections/{id}"),
                    None,
                )
                .await?;
            if channels >= 1 && row["status"] == "active" {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("connection {id} not connected within {within:?}: {row}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A fresh connection per query: the database may have been restarted.
    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.db_url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// `SELECT count(*) …` (the drills' SQL is fixed text with ids they made).
    pub async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(self.db().await?.query_one(sql, &[]).await?.get(0))
    }

    pub async fn events_of_type(&self, event_type: &str) -> anyhow::Result<i64> {
        self.count(&format!(
            "SELECT count(*) FROM events WHERE event_type = '{event_type}'"
        ))
        .await
    }

    pub async fn total_events(&self) -> anyhow::Result<i64> {
        self.count("SELECT count(*) FROM events").await
    }

    /// `calsync replay --verify --json` as a child process on the same
    /// database: (clean, differences, events read).
    pub async fn replay_verify(&self) -> anyhow::Result<(bool, u64, u64)> {
        let exe = match &self.exe {
            Some(exe) => exe.clone(),
            None => calsync_exe()?,
        };
        let out = Command::new(exe)
            .args(["replay", "--verify", "--json", "--no-bar"])
            .current_dir(&self.work_dir)
            .env_remove("CALSYNC_CONFIG")
            .env("DATABASE_URL", &self.db_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .await?;
        let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            anyhow!(
                "replay --verify printed no JSON ({e}); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let differences = report["differences"].as_u64().unwrap_or(u64::MAX);
        let events = report["events_read"].as_u64().unwrap_or(0);
        Ok((
            out.status.success() && differences == 0,
            differences,
            events,
        ))
    }

    /// Sum of a Prometheus metric's samples (all label sets).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// serve's (CPU seconds, RSS kB) from /proc.
    pub fn serve_load(&self) -> Option<(f64, u64)> {
        let pid = self.serve_pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields overall.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Some((ticks / hz, rss))
    }

    /// Sends one Google push notification as the simulator would.
    pub async fn google_push(
        &self,
        channel: &(String, String, String),
        number: u64,
    ) -> anyhow::Result<u16> {
        Ok(google_request(&self.http, &self.base, channel, number)
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// A Google connection with its push channel open and its first sync
    /// done: (connection id, channel).
    pub async fn google_ready(
        &self,
        email: &str,
        pp: &str,
    ) -> anyhow::Result<(String, (String, String, String))> {
        let id = self.google_connection(email, pp).await?;
        self.wait_connected(&id, Duration::from_secs(20)).await?;
        // The channel calsync recorded (storing the grant opens it at once).
        let row = self
            .db()
            .await?
            .query_one(
                "SELECT channel_id FROM channels WHERE connection_id::text = $1 \
                 AND closed_at IS NULL ORDER BY expires_at DESC LIMIT 1",
                &[&id],
            )
            .await?;
        let channel_id: String = row.get(0);
        let channel = self
            .sim
            .google()
            .channels()
            .into_iter()
            .find(|c| c.id == channel_id && !c.stopped)
            .map(|c| (c.id, c.token.unwrap_or_default(), c.resource_id))
            .ok_or_else(|| anyhow!("the simulator holds no live channel {channel_id}"))?;
        // Let the start-up sync settle so only the drill's traffic is counted.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok((id, channel))
    }

    /// A Graph connection with its subscription open and its first round
    /// recorded: (connection id, (subscription id, clientState)).
    pub async fn graph_ready(
        &self,
        upn: &str,
        pp: &str,
    ) -> anyhow::Result<(String, (String, String))> {
        let id = self.graph_connection(upn, pp).await?;
        self.wait_connected(&id, Duration::from_secs(20)).await?;
        let rounds = format!(
            "SELECT count(*) FROM events WHERE stream = 'connection-{id}' \
             AND event_type = 'sync_round_completed'"
        );
        let synced = eventually(Duration::from_secs(20), || async {
            self.count(&rounds).await.unwrap_or(0) >= 1
        })
        .await;
        if synced.is_none() {
            bail!("connection {id} recorded no sync round within 20 s");
        }
        let subscription = self
            .sim
            .graph()
            .subscriptions()
            .into_iter()
            .find(|s| s.mailbox.eq_ignore_ascii_case(upn))
            .and_then(|s| Some((s.id, s.client_state?)))
            .ok_or_else(|| anyhow!("the simulator holds no subscription for {upn}"))?;
        Ok((id, subscription))
    }

    /// Calls of `account` to any of `endpoints` answered since `since`.
    pub fn calls_since(
        &self,
        provider: calsim::Provider,
        account: &str,
        endpoints: &[&str],
        since: chrono::DateTime<chrono::Utc>,
    ) -> usize {
        self.sim
            .requests_for(provider, Some(account))
            .iter()
            .filter(|r| r.at >= since && endpoints.contains(&r.endpoint.as_str()))
            .count()
    }

    /// Posts one confirmed booking (version 1) for platform provider `pp`.
    pub async fn book(&self, id: &str, pp: &str, hour: i64) -> anyhow::Result<(u16, Value)> {
        let (start, end) = tomorrow(hour);
        self.admin(
            reqwest::Method::POST,
            "/v1/bookings",
            Some(json!({
                "booking_id": id,
                "version": 1,
                "platform_provider_id": pp,
                "status": "confirmed",
                "start": start,
                "end": end,
                "time_zone": "UTC",
                "title": format!("booking {id}"),
            })),
        )
        .await
    }

    /// Calls the simulator answered for `endpoint` so far.
    pub fn provider_calls(&self, endpoint: &str) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// Sends one Google notification per entry of `numbers`, `concurrency`
    /// at a time; a 503 (load shed) is retried after a pause, as Google does.
    pub async fn push_many(
        &self,
        channel: &(String, String, String),
        numbers: Vec<u64>,
        concurrency: usize,
    ) -> PushOutcome {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut calls = tokio::task::JoinSet::new();
        for number in numbers {
            let (http, base, channel, gate) = (
                self.http.clone(),
                self.base.clone(),
                channel.clone(),
                gate.clone(),
            );
            calls.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let mut shed = 0;
                for attempt in 0..40u64 {
                    let answer = google_request(&http, &base, &channel, number).send().await;
                    let (status, body) = match answer {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            (status, r.text().await.unwrap_or_default())
                        }
                        Err(_) => (0, String::new()),
                    };
                    if status != 503 {
                        return (status, body.contains("\"duplicate\""), shed);
                    }
                    shed += 1;
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1).min(10))).await;
                }
                (503, false, shed)
            });
        }
        let mut outcome = PushOutcome::default();
        while let Some(joined) = calls.join_next().await {
            let (status, duplicate, shed) = joined.unwrap_or((0, false, 0));
            outcome.shed += shed;
            if (200..300).contains(&status) {
                outcome.ok += 1;
                if duplicate {
                    outcome.duplicates += 1;
                }
            } else {
                outcome.failed.push(status);
            }
        }
        outcome
    }

    /// PostgreSQL's version string.
    pub async fn postgres_version(&self) -> Option<String> {
        let client = self.db().await.ok()?;
        let row = client.query_one("SHOW server_version", &[]).await.ok()?;
        Some(row.get(0))
    }
}

/// What a batch of notifications got back.
#[derive(Debug, Default)]
pub struct PushOutcome {
    /// Answered 2xx (eventually, after retries of 503s).
    pub ok: usize,
    /// …of which answered `duplicate`.
    pub duplicates: usize,
    /// 503 answers (load shed) that were retried.
    pub shed: usize,
    /// Final non-2xx statuses (0: no answer).
    pub failed: Vec<u16>,
}

/// A Google push request (headers only, like the real thing).
pub fn google_request(
    http: &reqwest::Client,
    base: &str,
    channel: &(String, String, String),
    number: u64,
) -> reqwest::RequestBuilder {
    http.post(format!("{base}/webhooks/google"))
        .header("X-Goog-Channel-ID", channel.0.as_str())
        .header("X-Goog-Channel-Token", channel.1.as_str())
        .header("X-Goog-Resource-ID", channel.2.as_str())
        .header("X-Goog-Resource-State", "exists")
        .header("X-Goog-Message-Number", number.to_string())
}

/// An event for tomorrow at `hour` UTC lasting an hour, and its window.
pub fn tomorrow(hour: i64) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let midnight = chrono::Utc::now()
        .date_naive()
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let start = midnight + chrono::TimeDelta::days(1) + chrono::TimeDelta::hours(hour);
    (start, start + chrono::TimeDelta::hours(1))
}

/// Polls `check` every 50 ms until it holds or `within` passes; the
/// elapsed time when it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drill_directories_are_fresh_private_and_unpredictable() {
        use std::os::unix::fs::MetadataExt;
        let a = private_temp_dir("calsync-test-").unwrap();
        let b = private_temp_dir("calsync-test-").unwrap();
        assert_ne!(a, b, "never reused");
        for dir in [&a, &b] {
            let meta = std::fs::symlink_metadata(dir).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o777, 0o700);
            assert_eq!(meta.uid(), nix::unistd::Uid::effective().as_raw());
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.contains(&std::process::id().to_string()), "{name}");
            std::fs::remove_dir(dir).unwrap();
        }
    }
}
