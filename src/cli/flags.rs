//! `calsync flags …`: feature flags and production mode, straight against
//! the database. A running server picks a change up by polling the
//! `settings` stream (within a second); nothing has to be restarted.

use crate::config::GlobalArgs;
use crate::core::settings::{Actor, Flag, SettingsCommand};
use crate::database::Database;
use crate::http::settings::flags_json;
use crate::settings::{Applied, SettingsHandle, DEFAULT_REFRESH};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Show every flag and production mode, with their last change.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Turn a flag on or off: sync_enabled, jobs_enabled, webhooks_enabled.
    Set {
        #[arg(value_parser = parse_flag)]
        flag: Flag,
        state: OnOff,
        #[command(flatten)]
        who: Who,
    },
    /// Turn production mode (allowlist enforcement) on or off.
    Production {
        state: OnOff,
        #[command(flatten)]
        who: Who,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn enabled(self) -> bool {
        self == OnOff::On
    }
}

/// Who makes a change and why: recorded in the event (the audit trail).
#[derive(Debug, Args)]
pub struct Who {
    /// Why the change is made (kept in the settings stream).
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Who makes it [default: cli:$USER@host].
    #[arg(long, env = "CALSYNC_ACTOR")]
    pub actor: Option<String>,
}

impl Who {
    pub fn actor(&self) -> anyhow::Result<Actor> {
        let name = match &self.actor {
            Some(a) => a.clone(),
            None => {
                let user = std::env::var("USER")
                    .or_else(|_| std::env::var("LOGNAME"))
                    .unwrap_or_else(|_| "unknown".into());
                let host = nix::unistd::gethostname()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| "localhost".into());
                format!("cli:{user}@{host}")
            }
        };
        Ok(Actor::parse(name)?)
    }
}

fn parse_flag(s: &str) -> Result<Flag, String> {
    Flag::parse(s).map_err(|e| e.to_string())
}

/// The settings as stored: opens the database and folds the stream.
pub async fn open(global: &GlobalArgs) -> anyhow::Result<SettingsHandle> {
    let (db, _) = Database::open(&global.settings()?).await?;
    Ok(SettingsHandle::start(db.store(), DEFAULT_REFRESH).await?)
}

/// One line saying what a change did.
pub fn report(what: &str, applied: &Applied) {
    if applied.appended == 0 {
        println!(
            "{what}: already so, nothing changed (settings version {})",
            applied.version
        );
    } else {
        println!("{what}: done (settings version {})", applied.version);
    }
}

pub async fn run(cmd: FlagsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let settings = open(global).await?;
    match cmd {
        FlagsCommand::List { json } => {
            let state = settings.current();
            if json {
                println!("{}", serde_json::to_string_pretty(&flags_json(&state))?);
                return Ok(());
            }
            println!(
                "{:<18}  {:<5}  {:<25}  {:<24}  REASON",
                "FLAG", "STATE", "CHANGED AT", "BY"
            );
            let rows = Flag::ALL
                .iter()
                .map(|f| (f.as_str(), state.flag(*f)))
                .chain([("production_mode", state.production_mode.clone())]);
            for (name, toggle) in rows {
                let (at, by, reason) = match &toggle.last_change {
                    Some(c) => (c.at.to_rfc3339(), c.by.to_string(), c.reason.clone()),
                    None => ("-".into(), "(default)".into(), String::new()),
                };
                let on = if toggle.enabled { "on" } else { "off" };
                println!("{name:<18}  {on:<5}  {at:<25}  {by:<24}  {reason}");
            }
            println!("settings version {}", state.version);
        }
        FlagsCommand::Set { flag, state, who } => {
            let command = SettingsCommand::SetFlag {
                flag,
                enabled: state.enabled(),
                reason: who.reason.clone(),
            };
            let applied = settings.apply(command, who.actor()?).await?;
            report(
                &format!("{flag} {}", if state.enabled() { "on" } else { "off" }),
                &applied,
            );
        }
        FlagsCommand::Production { state, who } => {
            let command = SettingsCommand::SetProductionMode {
                enabled: state.enabled(),
                reason: who.reason.clone(),
            };
            let applied = settings.apply(command, who.actor()?).await?;
            report(
                &format!(
                    "production mode {}",
                    if state.enabled() { "on" } else { "off" }
                ),
                &applied,
            );
        }
    }
    Ok(())
}
