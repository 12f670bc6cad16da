//! `calsync connections connect`: the OAuth connect flow for an operator
//! in a terminal. It asks a running server for the provider's authorize
//! URL (`POST /v1/connect/{provider}`, a token with the `platform` scope)
//! with a return URL on a loopback port it listens on, prints the URL, and
//! waits for the browser to come back with `connection_id` or `error`.

use anyhow::Context;
use axum::extract::{Query, State};
use axum::routing::get;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// google or microsoft
    #[arg(long)]
    pub provider: String,
    /// The platform provider the connection belongs to.
    #[arg(long)]
    pub platform_provider_id: String,
    /// The running calsync server.
    #[arg(long, env = "CALSYNC_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A token with the `platform` scope (the shared admin token works).
    #[arg(long, env = "CALSYNC_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Loopback port to wait on for the return (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Visit the authorize URL from here instead of a browser (for a
    /// simulator whose consent screen answers by itself).
    #[arg(long)]
    pub visit: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

async fn returned(
    State(tx): State<mpsc::Sender<HashMap<String, String>>>,
    Query(q): Query<HashMap<String, String>>,
) -> &'static str {
    let _ = tx.send(q).await;
    "calsync: done, you can close this window and go back to the terminal.\n"
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let return_url = format!("http://{}/connected", listener.local_addr()?);
    let (tx, mut rx) = mpsc::channel(1);
    let app = axum::Router::new()
        .route("/connected", get(returned))
        .with_state(tx);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let response = client
        .post(format!(
            "{}/v1/connect/{}",
            args.server.trim_end_matches('/'),
            args.provider
        ))
        .bearer_auth(&args.token)
        .json(&serde_json::json!({
            "platform_provider_id": args.platform_provider_id,
            "return_url": return_url,
        }))
        .send()
        .await
        .with_context(|| format!("cannot reach calsync at {}", args.server))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "calsync refused to start the flow ({status}): {} {}",
            body["error"].as_str().unwrap_or(""),
            body["message"].as_str().unwrap_or("")
        );
    }
    let authorize = body["authorize_url"]
        .as_str()
        .context("calsync's answer has no authorize_url")?
        .to_string();
    println!("Open this URL and consent:\n\n  {authorize}\n");
    println!("Waiting for the return on {return_url} …");
    if args.visit {
        let visit = client.get(&authorize).send();
        tokio::spawn(async move {
            if let Err(e) = visit.await {
                eprintln!("visiting the authorize URL failed: {}", e.without_url());
            }
        });
    }
    let outcome = tokio::time::timeout(Duration::from_secs(args.timeout_secs), rx.recv()).await;
    server.abort();
    let q = match outcome {
        Ok(Some(q)) => q,
        Ok(None) => anyhow::bail!("the loopback listener stopped"),
        Err(_) => anyhow::bail!("no return within {} s", args.timeout_secs),
    };
    if let Some(id) = q.get("connection_id") {
        println!("connected: {id}");
        return Ok(());
    }
    anyhow::bail!(
        "not connected: {} ({})",
        q.get("error").map(String::as_str).unwrap_or("no result"),
        q.get("error_description").map(String::as_str).unwrap_or("")
    )
}
