//! `calsim`: the provider simulators, standalone. Prints its base URLs, then
//! serves until Ctrl-C. Optionally seeds a scenario and keeps mutating it.

use anyhow::Context;
use calsim::{Scenario, ScenarioConfig, SimConfig, Simulators};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "calsim",
    about = "Google Calendar and Microsoft Graph simulators on loopback"
)]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, env = "CALSIM_PORT", default_value_t = 7878)]
    port: u16,
    /// Seed of every random choice (ids, tokens, error rates, scenario).
    #[arg(long, env = "CALSIM_SEED", default_value_t = 42)]
    seed: u64,
    /// JSON file with a full `SimConfig` (port and seed flags override it).
    #[arg(long, env = "CALSIM_CONFIG")]
    config: Option<PathBuf>,
    /// Scenario: Google accounts to create (user{i}@example.com).
    #[arg(long, default_value_t = 0)]
    google_accounts: usize,
    /// Scenario: Graph mailboxes to create (user{i}@contoso.com).
    #[arg(long, default_value_t = 0)]
    graph_accounts: usize,
    /// Scenario: events per account.
    #[arg(long, default_value_t = 20)]
    events_per_account: usize,
    /// Keep mutating the scenario at this many changes per second.
    #[arg(long)]
    mutations_per_second: Option<f64>,
    /// OAuth app for the authorization-code flow, `CLIENT_ID:SECRET`,
    /// registered with both providers (repeatable).
    #[arg(long = "oauth-app", value_name = "CLIENT_ID:SECRET")]
    oauth_apps: Vec<String>,
    /// The Google account (created if new) that consents on the
    /// simulated consent screen.
    #[arg(long, value_name = "EMAIL")]
    google_consent: Option<String>,
    /// The Graph mailbox (created if new) that consents.
    #[arg(long, value_name = "UPN")]
    graph_consent: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<SimConfig>(&text).context("parsing SimConfig JSON")?
        }
        None => SimConfig::default(),
    };
    config.port = args.port;
    config.seed = args.seed;
    let handle = Simulators::start(config).await?;
    for app in &args.oauth_apps {
        let (id, secret) = app
            .split_once(':')
            .with_context(|| format!("--oauth-app {app:?}: expected CLIENT_ID:SECRET"))?;
        handle.google().register_app(id, secret);
        handle.graph().register_app(id, secret);
    }
    if let Some(email) = &args.google_consent {
        handle.google().create_account(email);
        handle
            .google()
            .set_consent(calsim::code_flow::Consent::Grant(email.clone()));
    }
    if let Some(upn) = &args.graph_consent {
        handle.graph().create_account(upn);
        handle
            .graph()
            .set_consent(calsim::code_flow::Consent::Grant(upn.clone()));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "calsim listening on {}", handle.origin())?;
    writeln!(out, "google_base_url  {}", handle.google_base_url())?;
    writeln!(out, "google_token_url {}", handle.google_token_url())?;
    writeln!(out, "graph_base_url   {}", handle.graph_base_url())?;
    writeln!(
        out,
        "graph_token_url  {}",
        handle.graph_token_url("{tenant}")
    )?;
    writeln!(out, "google_authorize {}", handle.google_authorize_url())?;
    writeln!(out, "control_url      {}", handle.control_url())?;
    out.flush()?;
    drop(out);

    let scenario = Scenario::new(ScenarioConfig {
        seed: args.seed,
        google_accounts: args.google_accounts,
        graph_accounts: args.graph_accounts,
        events_per_account: args.events_per_account,
        mutations_per_second: args.mutations_per_second.unwrap_or(1.0),
        ..ScenarioConfig::default()
    });
    if args.google_accounts + args.graph_accounts > 0 {
        let summary = scenario.populate(&handle.google(), &handle.graph());
        println!("scenario {}", serde_json::to_string(&summary)?);
    }
    let mutator = args.mutations_per_second.map(|_| {
        let h = handle.clone();
        tokio::spawn(async move {
            loop {
                scenario.run(&h.google(), &h.graph(), 100).await;
            }
        })
    });
    tokio::signal::ctrl_c().await?;
    if let Some(m) = mutator {
        m.abort();
    }
    handle.shutdown().await;
    Ok(())
}
