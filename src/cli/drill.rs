//! `calsync drill …`: failure drills against a running `calsync serve`
//! (which must run with `--enable-drills` and an admin token).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
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
