//! `calsync credentials rotate`: re-seal every stored OAuth grant under the
//! current key, so an old key can be retired.

use crate::config::{DatabaseSource, FileConfig, GlobalArgs};
use crate::store::credentials::{self, CredentialVault};
use clap::{Args, Subcommand};

/// The keys sealing credentials at rest (shared by `serve` and
/// `credentials rotate`).
#[derive(Debug, Clone, Default, Args)]
pub struct KeyArgs {
    /// Base64 32-byte key sealing credentials at rest. Unset with a private
    /// cluster: a key file beside the cluster is created and used.
    #[arg(
        long,
        env = "CALSYNC_CREDENTIALS_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub credentials_key: Option<String>,

    /// Earlier keys (comma-separated base64): rows sealed under them still
    /// open, nothing is sealed with them. Retire one once `calsync
    /// credentials rotate` has re-sealed every row.
    #[arg(
        long,
        env = "CALSYNC_CREDENTIALS_OLD_KEYS",
        value_name = "KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub credentials_old_keys: Vec<String>,
}

impl KeyArgs {
    /// The vault: the configured key (or, private cluster only, a key file
    /// beside the cluster) and the old keys, flags/environment over the file.
    pub fn vault(
        &self,
        file: &FileConfig,
        source: &DatabaseSource,
    ) -> anyhow::Result<CredentialVault> {
        let current = match (
            self.credentials_key
                .as_ref()
                .or(file.credentials_key.as_ref()),
            source,
        ) {
            (Some(key), _) => CredentialVault::from_configured(key)?,
            (None, DatabaseSource::Private(dir)) => {
                CredentialVault::load_or_create(&dir.join("credentials.key"))?
            }
            (None, DatabaseSource::Url(_)) => anyhow::bail!(
                "set CALSYNC_CREDENTIALS_KEY (base64 of 32 random bytes) to seal credentials at rest"
            ),
        };
        let old = if self.credentials_old_keys.is_empty() {
            &file.credentials_old_keys
        } else {
            &self.credentials_old_keys
        };
        Ok(current.with_old_keys(old)?)
    }
}

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Re-seal every stored grant under the current key (batches, with
    /// progress); rows no key opens are listed and left alone (exit 1).
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Rows re-sealed per transaction.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

pub async fn run(cmd: CredentialsCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let CredentialsCommand::Rotate(args) = cmd;
    let file = global.file()?;
    let settings = global.settings_with(&file)?;
    let vault = args.keys.vault(&file, &settings.database)?;
    let (db, _) = crate::database::Database::open(&settings).await?;
    println!("re-sealing credentials under key {}", vault.key_id());
    let report = credentials::rotate(&db.store(), &vault, args.batch, |so_far, todo| {
        println!(
            "  {} of {} re-sealed, {} could not be opened",
            so_far.resealed + so_far.raced,
            todo,
            so_far.unopenable.len()
        );
    })
    .await?;
    println!(
        "done: {} re-sealed, {} already under the current key, {} changed meanwhile by a node (already current), {} could not be opened",
        report.resealed,
        report.current,
        report.raced,
        report.unopenable.len()
    );
    if !report.unopenable.is_empty() {
        for (id, key_id) in &report.unopenable {
            println!("  cannot open {id} (sealed under {key_id})");
        }
        anyhow::bail!(
            "{} rows could not be opened with the current key or any old key: add the key that sealed them to credentials_old_keys and run again",
            report.unopenable.len()
        );
    }
    Ok(())
}
