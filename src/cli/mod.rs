//! The `calsync` command line. Command names are fixed by DESIGN.md's
//! interface table so scripts, drills and runbooks can rely on them.

mod allowlist;
mod bench;
mod bookings;
mod cluster;
mod connect;
mod connections;
mod credentials;
mod demo;
mod drill;
mod flags;
mod log;
mod replay;
mod serve;
mod simulate;
mod status;
mod subscriptions;
mod tokens;
mod validate;

use crate::config::{GlobalArgs, LogFormat};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "calsync",
    version,
    about = "Event-sourced calendar sync for booking platforms"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending schema migrations and exit (as the schema's owner);
    /// `--runtime-role` also creates and grants the role serve should run as.
    Migrate(MigrateArgs),
    /// Run the supervisor process: HTTP ingress, connection actors, timers.
    Serve(Box<serve::ServeArgs>),
    /// The whole system on this machine: private PostgreSQL, provider
    /// simulators, traffic with faults, then a summary and a consistency check.
    Demo(demo::DemoArgs),
    /// Inspect the event log.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Manage connections.
    #[command(subcommand)]
    Connections(connections::ConnectionsCommand),
    /// Credentials at rest: key rotation.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Look a booking's external events up.
    #[command(subcommand)]
    Bookings(bookings::BookingsCommand),
    /// Failure drills against a running server.
    #[command(subcommand)]
    Drill(drill::DrillCommand),
    /// Feature flags and production mode.
    #[command(subcommand)]
    Flags(flags::FlagsCommand),
    /// Provider and connection allowlists (enforced in production mode).
    #[command(subcommand)]
    Allowlist(allowlist::AllowlistCommand),
    /// Several serve nodes on one database: who holds which slices.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// The platform feed's push subscriptions (docs/PLATFORM_EVENTS.md).
    #[command(subcommand)]
    Subscriptions(subscriptions::SubscriptionsCommand),
    /// Per-connection health: status, errors, backoff, last sync per
    /// calendar, channel expiry (`--json` for machines).
    Status(status::StatusArgs),
    /// Rebuild projections from the log; verify them or swap them in.
    Replay(replay::ReplayArgs),
    /// Run the failure drills and write the go/no-go report (Markdown, JSON).
    Validate(validate::ValidateArgs),
    /// Benchmarks against raw PostgreSQL on a private cluster (BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// The deterministic simulation: whole nodes over virtual days, one
    /// seed a run, invariants checked throughout.
    Simulate(simulate::SimulateArgs),
    /// Scoped API tokens: create, list, revoke; the admin audit trail.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Print the OpenAPI 3.1 document of the HTTP API (or write it to a file).
    Openapi {
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
}

/// Runs the parsed command line; the error is printed by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Migrate(args) => migrate(args, &cli.global).await,
        Command::Serve(args) => serve::run(*args, &cli.global).await,
        Command::Demo(args) => demo::run(args, &cli.global).await,
        Command::Log(cmd) => log::run(cmd, &cli.global).await,
        Command::Connections(cmd) => connections::run(cmd, &cli.global).await,
        Command::Credentials(cmd) => credentials::run(cmd, &cli.global).await,
        Command::Bookings(cmd) => bookings::run(cmd, &cli.global).await,
        Command::Drill(cmd) => drill::run(cmd).await,
        Command::Flags(cmd) => flags::run(cmd, &cli.global).await,
        Command::Allowlist(cmd) => allowlist::run(cmd, &cli.global).await,
        Command::Cluster(cmd) => cluster::run(cmd, &cli.global).await,
        Command::Subscriptions(cmd) => subscriptions::run(cmd, &cli.global).await,
        Command::Replay(args) => replay::run(args, &cli.global).await,
        Command::Status(args) => status::run(args, &cli.global).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Validate(args) => validate::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Tokens(cmd) => tokens::run(cmd, &cli.global).await,
        Command::Openapi { output } => {
            let doc = crate::http::openapi::document_json();
            match output {
                Some(path) => std::fs::write(&path, doc + "\n")?,
                None => println!("{doc}"),
            }
            Ok(())
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Create (if missing) and grant the least-privilege role `serve`
    /// should connect as: it appends to `events` but cannot update or
    /// delete it, changes no schema and owns nothing.
    #[arg(long, env = "CALSYNC_RUNTIME_ROLE", value_name = "ROLE")]
    pub runtime_role: Option<crate::store::migrate::RuntimeRole>,
}

async fn migrate(args: MigrateArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = global.settings()?;
    let (db, report) = crate::database::Database::open(&settings).await?;
    if let Some(role) = &args.runtime_role {
        let client = db.store().pool().get().await?;
        crate::store::migrate::grant_runtime_role(&client, role).await?;
        println!(
            "runtime role {} granted: SELECT and INSERT on events (no UPDATE, DELETE or DDL), \
             reads and writes of the read models; connect serve as it",
            role.as_str()
        );
    }
    if report.applied.is_empty() {
        println!(
            "schema is up to date ({} migrations applied earlier) on {}",
            report.already_applied, db.location
        );
    } else {
        println!("applied {} on {}", report.applied.join(", "), db.location);
    }
    db.shutdown().await
}

impl Command {
    /// The log filter when `RUST_LOG` is not set: `info` for the
    /// long-running and reporting commands; `warn` for the operator
    /// commands that print one answer (`status`, `log`, `connections`, …),
    /// so their output is the answer and nothing else; `off` for
    /// `simulate`, whose injected faults would log thousands of warnings a
    /// virtual day; it prints its own report (`RUST_LOG=warn` shows them).
    /// Library noise (the PostgreSQL driver's INFO notices, hyper) stays
    /// below the default level everywhere.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Simulate(_) => "off",
            Command::Serve(_)
            | Command::Demo(_)
            | Command::Validate(_)
            | Command::Bench(_)
            | Command::Drill(_) => "info,tokio_postgres=warn",
            _ => "warn",
        }
    }
}

/// Installs the tracing subscriber: readable text on a terminal, JSON lines
/// otherwise (or as configured). `RUST_LOG` filters, default
/// `default_filter`.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
