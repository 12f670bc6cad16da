//! `calsync drill …`: `kill` acts on a running `calsync serve` (which must
//! run with `--enable-drills` and an admin token); `run` runs one
//! self-contained failure drill (`src/drills/`, `ops/drills/`).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// Run one drill in its own PostgreSQL, simulators and serve process;
    /// exits non-zero on any breach.
    Run {
        /// One of: allowlist, inbound, outbound, idempotency, provider-outage,
        /// database-outage, malformed-webhooks, replay-storm,
        /// graceful-degradation, actor-kill.
        name: String,
        /// The short version (CI sizes).
        #[arg(long)]
        quick: bool,
        /// Also write the drill's report as JSON here.
        #[arg(long, value_name = "PATH")]
        json: Option<std::path::PathBuf>,
    },
    /// Kill connection actors; the supervisor restarts them.
    Kill {
        /// Kill this connection's actor.
        #[arg(long, conflicts_with = "random")]
        connection: Option<String>,
        /// Kill this many active actors chosen at random.
        #[arg(long)]
        random: Option<usize>,
        /// Panic inside the handler instead of ractor's kill.
        #[arg(long)]
        panic: bool,
        /// Base URL of the running server.
        #[arg(long, env = "CALSYNC_SERVER", default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long, env = "CALSYNC_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
}

pub async fn run(cmd: DrillCommand) -> anyhow::Result<()> {
    match cmd {
        DrillCommand::Run { name, quick, json } => {
            let report = crate::drills::run(&name, crate::drills::Sizes { quick }).await;
            crate::drills::harness::remove_exe_copy();
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            }
            if let Some(e) = &report.error {
                anyhow::bail!("drill {name} stopped early: {e}");
            }
            if !report.passed() {
                anyhow::bail!("drill {name} FAILED");
            }
            println!("drill {name} PASSED in {:.1} s", report.duration_seconds);
            Ok(())
        }
        DrillCommand::Kill {
            connection,
            random,
            panic,
            server,
            admin_token,
        } => {
            if connection.is_none() && random.is_none() {
                anyhow::bail!("give --connection ID or --random N");
            }
            let body = serde_json::json!({
                "connection": connection,
                "random": random,
                "mode": if panic { "panic" } else { "kill" },
            });
            let response = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?
                .post(format!("{}/admin/drill/kill", server.trim_end_matches('/')))
                .bearer_auth(admin_token)
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            let text = response.text().await?;
            if !status.is_success() {
                anyhow::bail!("server answered {status}: {text}");
            }
            println!("{text}");
            Ok(())
        }
    }
}
