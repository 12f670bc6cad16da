//! `calsync serve`: the supervisor process.

use crate::actors::runtime::SyncRuntime;
use crate::actors::{ActorSettings, Connections};
use crate::config::{self, FileConfig, FileProviders, GlobalArgs};
use crate::core::outbound::CancelMode;
use crate::database::Database;
use crate::http::{self, AppState};
use crate::providers::ProviderEndpoints;
use clap::Args;
use std::net::SocketAddr;
use std::sync::Arc;
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

    /// Public base URL providers deliver webhooks to (e.g.
    /// https://hooks.example.com). Unset: no push channels, polling only.
    #[arg(long, env = "CALSYNC_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    #[command(flatten)]
    pub keys: super::credentials::KeyArgs,

    /// Provider API base URLs (default: the real services; the demo and the
    /// drills point them at the simulators).
    #[arg(long, env = "CALSYNC_GOOGLE_API_URL", value_name = "URL")]
    pub google_api_url: Option<String>,
    #[arg(long, env = "CALSYNC_GOOGLE_TOKEN_URL", value_name = "URL")]
    pub google_token_url: Option<String>,
    #[arg(long, env = "CALSYNC_GRAPH_API_URL", value_name = "URL")]
    pub graph_api_url: Option<String>,
    #[arg(long, env = "CALSYNC_GRAPH_TOKEN_URL", value_name = "URL")]
    pub graph_token_url: Option<String>,

    /// What a cancelled booking does to its external event: delete it, or
    /// mark it cancelled (free time, "Cancelled: " title) [default: delete].
    #[arg(long, env = "CALSYNC_OUTBOUND_ON_CANCEL", value_name = "MODE")]
    pub on_cancel: Option<CancelMode>,

    /// What a booking's event moved or deleted in the calendar by someone
    /// else leads to: `notify` (report it, stop writing the booking until
    /// a newer version) or `restore` (write it back) [default: notify].
    #[arg(
        long,
        env = "CALSYNC_OUTBOUND_ON_EXTERNAL_CHANGE",
        value_name = "POLICY"
    )]
    pub on_external_change: Option<crate::core::external_change::ExternalChangePolicy>,

    /// Least milliseconds between the starts of two syncs of one
    /// connection [default: 100].
    #[arg(long, env = "CALSYNC_SYNC_MIN_INTERVAL_MS", value_name = "MS")]
    pub sync_min_interval_ms: Option<u64>,

    /// Days before now mirrored into busy time, 0–90 [default: 1].
    #[arg(long, env = "CALSYNC_SYNC_WINDOW_PAST_DAYS", value_name = "DAYS")]
    pub window_past_days: Option<u32>,

    /// Days after now mirrored into busy time, 1–730 [default: 180].
    #[arg(long, env = "CALSYNC_SYNC_WINDOW_FUTURE_DAYS", value_name = "DAYS")]
    pub window_future_days: Option<u32>,

    /// Longest wait for a request's headers, from the moment a connection
    /// waits for one (also bounds a kept-alive connection's wait for its
    /// next request) [default: 10000].
    #[arg(long, env = "CALSYNC_HEADER_READ_TIMEOUT_MS", value_name = "MS")]
    pub header_read_timeout_ms: Option<u64>,

    /// Longest a request may take, body and handling included; 503 after
    /// [default: 30000].
    #[arg(long, env = "CALSYNC_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// A connection with no request for this long is closed [default: 60000].
    #[arg(long, env = "CALSYNC_IDLE_TIMEOUT_MS", value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,

    /// Connections served at once; past it new ones wait to be accepted
    /// [default: 1024].
    #[arg(long, env = "CALSYNC_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Largest API and admin request body in bytes; 413 above
    /// [default: 262144].
    #[arg(long, env = "CALSYNC_API_BODY_LIMIT", value_name = "BYTES")]
    pub api_body_limit: Option<usize>,

    /// How often /metrics' database gauges are read (one query; scrapes
    /// never touch the database) [default: 5000].
    #[arg(long, env = "CALSYNC_METRICS_REFRESH_MS", value_name = "MS")]
    pub metrics_refresh_ms: Option<u64>,

    /// A second listener for /metrics and /admin/* alone (they leave the
    /// main listener) [default: none: everything on --listen].
    #[arg(long, env = "CALSYNC_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// This node's name in the cluster and in every event it writes
    /// [default: hostname:pid].
    #[arg(long, env = "CALSYNC_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Cluster mode: the secret nodes present to each other (16+
    /// characters). Unset: a lone node that runs every connection
    /// (docs/CLUSTER.md).
    #[arg(
        long,
        env = "CALSYNC_CLUSTER_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub cluster_secret: Option<String>,

    /// The URL peers forward to [default: http://<listen address>, the
    /// hostname when listening on all interfaces].
    #[arg(long, env = "CALSYNC_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
}

impl ServeArgs {
    /// Flags/environment over the file over the real services.
    fn endpoints(&self, file: &FileProviders) -> ProviderEndpoints {
        let d = ProviderEndpoints::default();
        let pick = |flag: &Option<String>, file: &Option<String>, default: String| {
            flag.clone().or_else(|| file.clone()).unwrap_or(default)
        };
        ProviderEndpoints {
            google_api: pick(&self.google_api_url, &file.google_api_url, d.google_api),
            google_token: pick(
                &self.google_token_url,
                &file.google_token_url,
                d.google_token,
            ),
            graph_api: pick(&self.graph_api_url, &file.graph_api_url, d.graph_api),
            graph_token: pick(&self.graph_token_url, &file.graph_token_url, d.graph_token),
        }
    }
}

pub async fn run(args: ServeArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let file = global.file()?;
    let settings = global.settings_with(&file)?;
    let settings_source = settings.database.clone();
    let listen = config::listen_addr(args.listen, &file);
    let limits = server_limits(&args, &file)?;
    // Before anything is recorded: without a recorder, metrics are dropped.
    crate::metrics::install();
    let (db, report) = Database::open(&settings).await?;
    tracing::info!(
        database = %db.location,
        migrations_applied = report.applied.len(),
        "database ready"
    );
    match db.privileges().await {
        Ok(p) if p.superuser || p.owner => tracing::warn!(
            role = %p.role,
            superuser = p.superuser,
            owner = p.owner,
            "serve runs as a role that can rewrite the event log (superuser or owner); \
             run `calsync migrate --runtime-role NAME` as the owner and connect serve as NAME"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the database role's privileges"),
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "calsync serve listening");
    let operator = match args.admin_listen.or(file.admin_listen) {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (admin): {e}"))?;
            tracing::info!(addr = %l.local_addr()?, "/metrics and /admin/* listening");
            Some(l)
        }
        None => None,
    };
    let settings =
        crate::settings::SettingsHandle::start(db.store(), crate::settings::DEFAULT_REFRESH)
            .await?;
    let mut runtime = SyncRuntime::new(
        args.endpoints(&file.providers),
        args.keys.vault(&file, &settings_source)?,
        db.store(),
        Arc::new(settings.clone()),
    )?;
    runtime.webhook_base = args
        .public_url
        .clone()
        .or(file.public_url.clone())
        .map(|u| u.trim_end_matches('/').to_string());
    let connect = crate::http::connect::ConnectSetup::from_config(
        &file.connect,
        runtime.webhook_base.as_deref(),
        &args.endpoints(&file.providers),
    )?
    .map(Arc::new);
    runtime.policy.sync.on_cancel = args
        .on_cancel
        .or(file.outbound.on_cancel)
        .unwrap_or_default();
    tracing::info!(on_cancel = ?runtime.policy.sync.on_cancel, "outbound cancellations");
    runtime.policy.sync.on_external_change = args
        .on_external_change
        .or(file.outbound.on_external_change)
        .unwrap_or_default();
    if let Some(ms) = args.sync_min_interval_ms.or(file.sync.min_interval_ms) {
        runtime.policy.min_sync_interval = chrono::Duration::milliseconds(ms as i64);
    }
    runtime.policy.window = window_policy(&args, &file)?;
    tracing::info!(
        past_days = runtime.policy.window.past_days,
        future_days = runtime.policy.window.future_days,
        "sync window"
    );
    let mut actor_settings = ActorSettings::default();
    if let Some(name) = args.node_name.clone().filter(|n| !n.trim().is_empty()) {
        actor_settings.node = name;
    }
    let node_name = actor_settings.node.clone();
    let connections =
        Connections::start_with_sync(db.store(), actor_settings, Some(Arc::new(runtime))).await?;
    let cluster = match args.cluster_secret.clone().filter(|s| !s.is_empty()) {
        Some(secret) => {
            let address = advertise_url(args.advertise_url.clone(), listener.local_addr()?);
            let link = crate::cluster::ClusterLink::new(
                node_name.clone(),
                address.clone(),
                secret,
                db.pool.clone(),
            )?;
            let node =
                crate::cluster::ClusterNode::join(Arc::new(link), connections.clone()).await?;
            tracing::info!(node = %node_name, %address, "cluster mode");
            Some(node)
        }
        None => None,
    };
    let push_owns = match &cluster {
        Some(node) => crate::feed::push::in_cluster(node.link().clone()),
        None => crate::feed::push::alone(),
    };
    let state = AppState {
        connect,
        channels: Default::default(),
        store: db.store(),
        connections: connections.clone(),
        admin_token: args
            .admin_token
            .or(file.admin_token.clone())
            .filter(|t| !t.is_empty()),
        drills_enabled: args.enable_drills || file.drills_enabled.unwrap_or(false),
        settings,
        webhooks: crate::http::webhooks::WebhookConfig {
            body_limit: file
                .webhook_body_limit
                .unwrap_or(crate::http::webhooks::WebhookConfig::default().body_limit),
        },
    };
    tracing::info!(?limits, "server limits");
    // The platform feed's push deliveries: tasks of their own, so a slow
    // receiver never holds ingest or sync.
    let push_stop = tokio_util::sync::CancellationToken::new();
    let _push = crate::feed::push::spawn(
        db.store(),
        crate::core::subscription::PushPolicy::default(),
        push_owns,
        push_stop.clone(),
    );
    // On SIGTERM a cluster node hands its slices over while still
    // answering (forwarding or inboxing), then the server drains.
    let shutdown = async move {
        shutdown_signal().await;
        if let Some(node) = cluster {
            node.leave().await;
        }
    };
    http::serve_split(listener, operator, state, limits, shutdown).await?;
    tracing::info!("shutting down");
    push_stop.cancel();
    connections.shutdown();
    if let Some(cluster) = db.cluster.clone() {
        drop(db);
        // Stop the private cluster cleanly (a checkpoint, no recovery next time).
        tokio::task::spawn_blocking(move || cluster.stop(crate::pg::StopMode::Fast)).await??;
    }
    Ok(())
}

/// The server's limits: flags/environment over the file over the defaults,
/// validated (a limit of 0 would switch a protection off).
fn server_limits(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<http::ServerLimits> {
    let d = http::ServerLimits::default();
    let f = &file.server;
    let ms = |flag: Option<u64>, file: Option<u64>, default: std::time::Duration| {
        flag.or(file)
            .map(std::time::Duration::from_millis)
            .unwrap_or(default)
    };
    http::ServerLimits {
        header_read_timeout: ms(
            args.header_read_timeout_ms,
            f.header_read_timeout_ms,
            d.header_read_timeout,
        ),
        request_timeout: ms(
            args.request_timeout_ms,
            f.request_timeout_ms,
            d.request_timeout,
        ),
        idle_timeout: ms(args.idle_timeout_ms, f.idle_timeout_ms, d.idle_timeout),
        max_connections: args
            .max_connections
            .or(f.max_connections)
            .unwrap_or(d.max_connections),
        api_body_limit: args
            .api_body_limit
            .or(f.api_body_limit)
            .unwrap_or(d.api_body_limit),
        metrics_refresh: ms(
            args.metrics_refresh_ms,
            f.metrics_refresh_ms,
            d.metrics_refresh,
        ),
    }
    .validate()
    .map_err(|e| anyhow::anyhow!("invalid server limit: {e}"))
}

/// The sync window: flags/environment over the file over the defaults,
/// validated (a bad value stops start-up with the bound it broke).
fn window_policy(
    args: &ServeArgs,
    file: &FileConfig,
) -> anyhow::Result<crate::core::window::WindowPolicy> {
    let defaults = crate::core::window::WindowPolicy::default();
    crate::core::window::WindowPolicy::new(
        args.window_past_days
            .or(file.sync.window_past_days)
            .unwrap_or(defaults.past_days),
        args.window_future_days
            .or(file.sync.window_future_days)
            .unwrap_or(defaults.future_days),
    )
    .map_err(|e| anyhow::anyhow!(e))
}

/// Where peers reach this node: the flag, else the listen address (the
/// hostname in place of an unspecified IP).
fn advertise_url(flag: Option<String>, listen: SocketAddr) -> String {
    if let Some(url) = flag.filter(|u| !u.is_empty()) {
        return url.trim_end_matches('/').to_string();
    }
    if listen.ip().is_unspecified() {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        return format!("http://{host}:{}", listen.port());
    }
    format!("http://{listen}")
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
