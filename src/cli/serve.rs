//! `calsync serve`: the supervisor process.

use crate::actors::{ActorSettings, Connections};
use crate::config::{self, GlobalArgs};
use crate::database::Database;
use crate::http::{self, AppState};
use clap::Args;
use std::net::SocketAddr;
use tokio::net::TcpListener;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CALSYNC_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Bearer token for the admin API (closed when unset).
    #[arg(
        long,
        env = "CALSYNC_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Turn on drill hooks (killing actors through the admin API).
    #[arg(long, env = "CALSYNC_DRILLS_ENABLED")]
    pub enable_drills: bool,
}

pub async fn run(args: ServeArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let file = global.file()?;
    let settings = global.settings_with(&file)?;
    let listen = config::listen_addr(args.listen, &file);
    let (db, report) = Database::open(&settings).await?;
    tracing::info!(
        database = %db.location,
        migrations_applied = report.applied.len(),
        "database ready"
    );
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "calsync serve listening");
    let connections = Connections::start(db.store(), ActorSettings::default()).await?;
    let settings =
        crate::settings::SettingsHandle::start(db.store(), crate::settings::DEFAULT_REFRESH)
            .await?;
    let state = AppState {
        store: db.store(),
        connections: connections.clone(),
        admin_token: args
            .admin_token
            .or(file.admin_token.clone())
            .filter(|t| !t.is_empty()),
        drills_enabled: args.enable_drills || file.drills_enabled.unwrap_or(false),
        settings,
    };
    http::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("shutting down");
    connections.shutdown();
    if let Some(cluster) = db.cluster.clone() {
        drop(db);
        // Stop the private cluster cleanly (a checkpoint, no recovery next time).
        tokio::task::spawn_blocking(move || cluster.stop(crate::pg::StopMode::Fast)).await??;
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
