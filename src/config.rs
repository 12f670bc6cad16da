//! Configuration, layered: command-line flags, then `CALSYNC_*` environment
//! variables and `DATABASE_URL`, then an optional TOML file, then defaults.
//!
//! Every setting and its default is listed in `calsync.example.toml` at the
//! top of the repository; a unit test keeps that file and [`Settings`] equal.

use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Defaults, in one place.
pub mod defaults {
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const PG_DIR: &str = ".calsync/pg";
    pub const DB_POOL_SIZE: usize = 16;
    pub const DB_NAME: &str = "calsync";
}

/// Settings that can come from flags or the environment (clap resolves
/// flag-before-environment; the file and defaults fill what is left).
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// TOML configuration file (see calsync.example.toml).
    #[arg(long, global = true, env = "CALSYNC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// PostgreSQL to use. When unset, calsync runs a private cluster.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Directory of the private PostgreSQL cluster (when no DATABASE_URL).
    #[arg(long, global = true, env = "CALSYNC_PG_DIR", value_name = "DIR")]
    pub pg_dir: Option<PathBuf>,

    /// Maximum database connections in the pool.
    #[arg(long, global = true, env = "CALSYNC_DB_POOL_SIZE", value_name = "N")]
    pub db_pool_size: Option<usize>,

    /// Log format: auto (text on a terminal, JSON otherwise), text or json.
    #[arg(long, global = true, env = "CALSYNC_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Auto,
    Text,
    Json,
}

/// The optional TOML file. Unknown keys are an error, so a typo is caught.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// A second listener for /metrics and /admin/* alone.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    #[serde(default)]
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub admin_token: Option<String>,
    #[serde(default)]
    pub drills_enabled: Option<bool>,
    /// Public base URL providers deliver webhooks to.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Base64 32-byte key sealing credentials at rest.
    #[serde(default)]
    pub credentials_key: Option<String>,
    /// Earlier keys: they open rows, never seal.
    #[serde(default)]
    pub credentials_old_keys: Vec<String>,
    /// Largest accepted webhook body in bytes (413 above).
    #[serde(default)]
    pub webhook_body_limit: Option<usize>,
    #[serde(default)]
    pub database: FileDatabase,
    #[serde(default)]
    pub providers: FileProviders,
    #[serde(default)]
    pub outbound: FileOutbound,
    #[serde(default)]
    pub sync: FileSync,
    #[serde(default)]
    pub server: FileServer,
    /// Provider apps for the OAuth connect flow (docs/CONNECT.md).
    #[serde(default)]
    pub connect: FileConnect,
}

/// `[connect.google]` / `[connect.microsoft]`: the provider apps users
/// consent to; the redirect URI is `{public_url}/oauth/{provider}/callback`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConnect {
    #[serde(default)]
    pub google: Option<FileConnectApp>,
    #[serde(default)]
    pub microsoft: Option<FileConnectApp>,
}

/// One provider app (`scopes`, `authorize_url`, `token_url` and `tenant`
/// default to the provider's documented values; see docs/CONNECT.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConnectApp {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub authorize_url: Option<String>,
    #[serde(default)]
    pub token_url: Option<String>,
    /// Microsoft only: `common`, `organizations` or a tenant id.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The HTTP server's limits (defaults: `http::server::defaults`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    #[serde(default)]
    pub header_read_timeout_ms: Option<u64>,
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub api_body_limit: Option<usize>,
    #[serde(default)]
    pub metrics_refresh_ms: Option<u64>,
}

/// Inbound sync tunables.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSync {
    /// Least milliseconds between the starts of two syncs of one
    /// connection (default 100: Google's default per-user quota).
    #[serde(default)]
    pub min_interval_ms: Option<u64>,
    /// Days before now that calendars are mirrored (0–90, default 1).
    #[serde(default)]
    pub window_past_days: Option<u32>,
    /// Days after now that calendars are mirrored (1–730, default 180).
    #[serde(default)]
    pub window_future_days: Option<u32>,
}

/// How bookings are written to the destination calendars.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileOutbound {
    /// What a cancelled booking does to its external event (default:
    /// delete it).
    #[serde(default)]
    pub on_cancel: Option<crate::core::outbound::CancelMode>,
    /// What a booking's event changed in the calendar by someone else
    /// leads to (default: notify).
    #[serde(default)]
    pub on_external_change: Option<crate::core::external_change::ExternalChangePolicy>,
}

/// Provider API locations (defaults: the real services).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileProviders {
    #[serde(default)]
    pub google_api_url: Option<String>,
    #[serde(default)]
    pub google_token_url: Option<String>,
    #[serde(default)]
    pub graph_api_url: Option<String>,
    #[serde(default)]
    pub graph_token_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileDatabase {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub pg_dir: Option<PathBuf>,
    #[serde(default)]
    pub pool_size: Option<usize>,
}

/// Where the database comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum DatabaseSource {
    /// An existing server.
    Url(String),
    /// A private cluster in this directory.
    Private(PathBuf),
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub database: DatabaseSource,
    pub db_pool_size: usize,
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

impl GlobalArgs {
    /// Reads the file named by `--config` (if any).
    pub fn file(&self) -> Result<FileConfig, ConfigError> {
        match &self.config {
            Some(path) => FileConfig::load(path),
            None => Ok(FileConfig::default()),
        }
    }

    /// Resolves flags/environment over the file over defaults.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let file = self.file()?;
        self.settings_with(&file)
    }

    pub fn settings_with(&self, file: &FileConfig) -> Result<Settings, ConfigError> {
        let url = self
            .database_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .or_else(|| file.database.url.clone());
        let database = match url {
            Some(url) => DatabaseSource::Url(url),
            None => DatabaseSource::Private(
                self.pg_dir
                    .clone()
                    .or_else(|| file.database.pg_dir.clone())
                    .unwrap_or_else(|| PathBuf::from(defaults::PG_DIR)),
            ),
        };
        let db_pool_size = self
            .db_pool_size
            .or(file.database.pool_size)
            .unwrap_or(defaults::DB_POOL_SIZE);
        if db_pool_size == 0 {
            return Err(ConfigError::Invalid {
                name: "db_pool_size",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Settings {
            database,
            db_pool_size,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        })
    }
}

/// Resolves the listen address of `serve`: flag/env, then file, then default.
pub fn listen_addr(flag: Option<SocketAddr>, file: &FileConfig) -> SocketAddr {
    flag.or(file.listen).unwrap_or_else(|| {
        // The default is a literal that always parses.
        defaults::LISTEN
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_and_states_the_defaults() {
        let text = include_str!("../calsync.example.toml");
        let file = FileConfig::parse(text).expect("example config parses");
        let from_file = GlobalArgs::default().settings_with(&file).unwrap();
        let from_defaults = GlobalArgs::default()
            .settings_with(&FileConfig::default())
            .unwrap();
        assert_eq!(from_file, from_defaults);
        assert_eq!(
            listen_addr(None, &file),
            listen_addr(None, &FileConfig::default())
        );
        // The example's provider URLs and limits are the code's defaults.
        let d = crate::providers::ProviderEndpoints::default();
        let p = &file.providers;
        assert_eq!(p.google_api_url.as_deref(), Some(d.google_api.as_str()));
        assert_eq!(p.google_token_url.as_deref(), Some(d.google_token.as_str()));
        assert_eq!(p.graph_api_url.as_deref(), Some(d.graph_api.as_str()));
        assert_eq!(p.graph_token_url.as_deref(), Some(d.graph_token.as_str()));
        assert_eq!(
            file.webhook_body_limit,
            Some(crate::http::webhooks::WebhookConfig::default().body_limit)
        );
        assert_eq!(file.drills_enabled, Some(false));
        assert_eq!(
            file.outbound.on_cancel,
            Some(crate::core::outbound::CancelMode::default())
        );
        assert_eq!(
            file.outbound.on_external_change,
            Some(crate::core::external_change::ExternalChangePolicy::default())
        );
        assert_eq!(
            file.sync
                .min_interval_ms
                .map(std::time::Duration::from_millis),
            Some(crate::actors::sync_task::DEFAULT_MIN_SYNC_INTERVAL)
        );
        let limits = crate::http::ServerLimits::default();
        let ms = |d: std::time::Duration| Some(d.as_millis() as u64);
        assert_eq!(
            file.server.header_read_timeout_ms,
            ms(limits.header_read_timeout)
        );
        assert_eq!(file.server.request_timeout_ms, ms(limits.request_timeout));
        assert_eq!(file.server.idle_timeout_ms, ms(limits.idle_timeout));
        assert_eq!(file.server.max_connections, Some(limits.max_connections));
        assert_eq!(file.server.api_body_limit, Some(limits.api_body_limit));
        assert_eq!(file.server.metrics_refresh_ms, ms(limits.metrics_refresh));
        assert_eq!(file.admin_listen, None);
        assert!(file.credentials_old_keys.is_empty());
        let window = crate::core::window::WindowPolicy::default();
        assert_eq!(file.sync.window_past_days, Some(window.past_days));
        assert_eq!(file.sync.window_future_days, Some(window.future_days));
    }

    #[test]
    fn the_cancel_mode_is_spelled_the_same_in_the_file_and_on_the_command_line() {
        use crate::core::outbound::CancelMode;
        for (word, mode) in [
            ("delete", CancelMode::Delete),
            ("mark_cancelled", CancelMode::MarkCancelled),
        ] {
            let file = FileConfig::parse(&format!("[outbound]\non_cancel = \"{word}\"\n")).unwrap();
            assert_eq!(file.outbound.on_cancel, Some(mode));
            assert_eq!(word.parse::<CancelMode>(), Ok(mode));
        }
        assert!(FileConfig::parse("[outbound]\non_cancel = \"hide\"\n").is_err());
        assert!("hide".parse::<CancelMode>().is_err());
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file = FileConfig::parse(
            "listen = \"127.0.0.1:9000\"\n[database]\npool_size = 4\npg_dir = \"/x\"\n",
        )
        .unwrap();
        let args = GlobalArgs {
            db_pool_size: Some(7),
            ..Default::default()
        };
        let s = args.settings_with(&file).unwrap();
        assert_eq!(s.db_pool_size, 7);
        assert_eq!(s.database, DatabaseSource::Private(PathBuf::from("/x")));
        assert_eq!(listen_addr(None, &file).port(), 9000);
        let url_args = GlobalArgs {
            database_url: Some("host=/tmp user=postgres".into()),
            ..Default::default()
        };
        assert!(matches!(
            url_args.settings_with(&file).unwrap().database,
            DatabaseSource::Url(_)
        ));
    }

    #[test]
    fn unknown_keys_and_zero_pools_are_rejected() {
        assert!(FileConfig::parse("lisen = \"x\"").is_err());
        let args = GlobalArgs {
            db_pool_size: Some(0),
            ..Default::default()
        };
        assert!(args.settings_with(&FileConfig::default()).is_err());
    }
}
