//! Credentials at rest: OAuth tokens sealed with AES-256-GCM under a key
//! from configuration, in the `credentials` table — never in the log.
//!
//! The connection id is the AEAD's associated data, so a sealed blob copied
//! to another connection's row fails to open instead of lending it a grant.
//!
//! Keys rotate: a vault seals under its current key only and opens rows
//! sealed under any of its old keys (`credentials_old_keys`);
//! [`rotate`] re-seals every row under the current key. A row names the
//! key that sealed it (`key_id`, a fingerprint of the key for configured
//! keys); rows from before fingerprints (`configured`, `local`) are opened
//! by trying each key, which AES-GCM's authentication makes safe.

use super::memory::SealedRow;
use super::{SealedCredentials, StoreError};
use crate::core::ids::ConnectionId;
use crate::providers::AuthSession;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the credentials key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("sealed credentials of {0} cannot be opened with key {1}")]
    CannotOpen(ConnectionId, String),
    #[error("credentials key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Seals and opens credentials. The key never leaves this type (no Debug
/// output of it, no serialisation).
#[derive(Clone)]
pub struct CredentialVault {
    key_id: String,
    cipher: Aes256Gcm,
    /// Keys that opened rows once and may still: never used to seal.
    old: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for CredentialVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialVault")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CredentialVault {
    /// A vault over a base64-encoded 32-byte key. `key_id` names the key in
    /// stored rows so keys can be rotated.
    pub fn from_base64(key_id: impl Into<String>, key: &str) -> Result<Self, VaultError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .map_err(|_| VaultError::BadKey)?;
        if bytes.len() != 32 {
            return Err(VaultError::BadKey);
        }
        Ok(CredentialVault {
            key_id: key_id.into(),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&bytes)),
            old: Vec::new(),
        })
    }

    /// A vault over a configured key, named by its fingerprint (the first 8
    /// bytes of its SHA-256, hex): rows then say which key sealed them.
    pub fn from_configured(key: &str) -> Result<Self, VaultError> {
        Self::from_base64(fingerprint(key)?, key)
    }

    /// Adds keys that rows may still be sealed under (base64, 32 bytes
    /// each). They open; they never seal.
    pub fn with_old_keys(mut self, keys: &[String]) -> Result<Self, VaultError> {
        for key in keys.iter().filter(|k| !k.trim().is_empty()) {
            let old = Self::from_configured(key)?;
            if old.key_id != self.key_id {
                self.old.push((old.key_id, old.cipher));
            }
        }
        Ok(self)
    }

    /// For the private-cluster mode (demo, local runs): the key lives in a
    /// file beside the cluster, created on first use with mode 0600.
    pub fn load_or_create(path: &Path) -> Result<Self, VaultError> {
        let io = |source| VaultError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        if let Ok(text) = std::fs::read_to_string(path) {
            return Self::from_base64("local", &text);
        }
        let key = Aes256Gcm::generate_key(OsRng);
        let text = base64::engine::general_purpose::STANDARD.encode(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
        }
        Self::from_base64("local", &text)
    }

    /// A fresh random key (tests).
    pub fn random() -> Self {
        CredentialVault {
            key_id: "random".into(),
            cipher: Aes256Gcm::new(&Aes256Gcm::generate_key(OsRng)),
            old: Vec::new(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    fn seal(&self, id: ConnectionId, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = id.as_uuid();
        // Encryption only fails for inputs beyond ~64 GiB.
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        (nonce.to_vec(), sealed)
    }

    /// Opens a row sealed under the current key or an old one: the key the
    /// row names first, then every other (rows from before fingerprints).
    fn open_row(&self, id: ConnectionId, row: &SealedRow) -> Result<Vec<u8>, VaultError> {
        let keys = std::iter::once((&self.key_id, &self.cipher))
            .chain(self.old.iter().map(|(k, c)| (k, c)));
        let (named, others): (Vec<_>, Vec<_>) = keys.partition(|(k, _)| **k == row.key_id);
        named
            .into_iter()
            .chain(others)
            .find_map(|(_, cipher)| decrypt(cipher, id, &row.nonce, &row.sealed))
            .ok_or_else(|| VaultError::CannotOpen(id, row.key_id.clone()))
    }

    #[cfg(test)]
    fn open(&self, id: ConnectionId, nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        decrypt(&self.cipher, id, nonce, sealed)
            .ok_or_else(|| VaultError::CannotOpen(id, self.key_id.clone()))
    }

    /// Seals `session` for `id` under the current key.
    fn seal_session(&self, id: ConnectionId, session: &AuthSession) -> SealedRow {
        let mut session = session.clone();
        session.refresh_token_rotated = false;
        // AuthSession is plain strings and timestamps: it always serialises.
        let plaintext = serde_json::to_vec(&session).unwrap_or_default();
        let (nonce, sealed) = self.seal(id, &plaintext);
        SealedRow {
            key_id: self.key_id.clone(),
            nonce,
            sealed,
        }
    }

    fn open_session(&self, id: ConnectionId, row: &SealedRow) -> Result<AuthSession, VaultError> {
        let plaintext = self.open_row(id, row)?;
        serde_json::from_slice(&plaintext)
            .map_err(|_| VaultError::CannotOpen(id, row.key_id.clone()))
    }

    /// Stores (or replaces) a connection's credentials.
    pub async fn save(
        &self,
        store: &impl SealedCredentials,
        id: ConnectionId,
        session: &AuthSession,
    ) -> Result<(), VaultError> {
        store.put_sealed(id, self.seal_session(id, session)).await?;
        Ok(())
    }

    /// A connection's credentials, if stored.
    pub async fn load(
        &self,
        store: &impl SealedCredentials,
        id: ConnectionId,
    ) -> Result<Option<AuthSession>, VaultError> {
        let Some(row) = store.get_sealed(id).await? else {
            return Ok(None);
        };
        self.open_session(id, &row).map(Some)
    }
}

fn decrypt(cipher: &Aes256Gcm, id: ConnectionId, nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if nonce.len() != 12 {
        return None;
    }
    let aad = id.as_uuid();
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: aad.as_bytes(),
            },
        )
        .ok()
}

/// A configured key's name in stored rows: `sha256:` and the first 8 bytes
/// of the key's SHA-256, hex. Names the key without revealing it.
pub fn fingerprint(key: &str) -> Result<String, VaultError> {
    use sha2::Digest;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| VaultError::BadKey)?;
    if bytes.len() != 32 {
        return Err(VaultError::BadKey);
    }
    Ok(format!(
        "sha256:{}",
        hex::encode(&sha2::Sha256::digest(&bytes)[..8])
    ))
}

/// What a rotation did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Rows re-sealed under the current key.
    pub resealed: u64,
    /// Rows already under the current key.
    pub current: u64,
    /// Rows changed by someone else between the read and the write (they
    /// were sealed by a running node, so under the current key).
    pub raced: u64,
    /// Rows no configured key opens: they stay as they are.
    pub unopenable: Vec<(ConnectionId, String)>,
}

/// Re-seals every credentials row not under the current key, `batch` rows
/// per transaction, calling `progress` after each batch with the report so
/// far and the number of rows that were to do. A row is replaced only if
/// it is still the one read (a node saving fresh credentials meanwhile
/// wins); a row no key opens is reported and left alone.
pub async fn rotate(
    store: &super::PgEventStore,
    vault: &CredentialVault,
    batch: usize,
    mut progress: impl FnMut(&RotationReport, u64),
) -> Result<RotationReport, VaultError> {
    let batch = batch.max(1) as i64;
    let mut client = store.pool().get().await.map_err(StoreError::from)?;
    let count = |sql: &'static str| {
        let client = &client;
        let key = vault.key_id.clone();
        async move {
            let n: i64 = client.query_one(sql, &[&key]).await?.try_get(0)?;
            Ok::<u64, tokio_postgres::Error>(n.max(0) as u64)
        }
    };
    let todo = count("SELECT count(*) FROM credentials WHERE key_id <> $1")
        .await
        .map_err(StoreError::from)?;
    let mut report = RotationReport {
        current: count("SELECT count(*) FROM credentials WHERE key_id = $1")
            .await
            .map_err(StoreError::from)?,
        ..Default::default()
    };
    let mut after = uuid::Uuid::nil();
    loop {
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let rows = tx
            .query(
                "SELECT connection_id, key_id, nonce, sealed FROM credentials \
                 WHERE key_id <> $1 AND connection_id > $2 ORDER BY connection_id LIMIT $3",
                &[&vault.key_id, &after, &batch],
            )
            .await
            .map_err(StoreError::from)?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get(0).map_err(StoreError::from)?;
        for r in &rows {
            let uuid: uuid::Uuid = r.try_get(0).map_err(StoreError::from)?;
            let id = ConnectionId::from_uuid(uuid);
            let row = SealedRow {
                key_id: r.try_get(1).map_err(StoreError::from)?,
                nonce: r.try_get(2).map_err(StoreError::from)?,
                sealed: r.try_get(3).map_err(StoreError::from)?,
            };
            let session = match vault.open_session(id, &row) {
                Ok(session) => session,
                Err(_) => {
                    report.unopenable.push((id, row.key_id));
                    continue;
                }
            };
            let fresh = vault.seal_session(id, &session);
            let changed = tx
                .execute(
                    "UPDATE credentials SET key_id = $2, nonce = $3, sealed = $4, updated_at = now() \
                     WHERE connection_id = $1 AND key_id = $5 AND nonce = $6",
                    &[&uuid, &fresh.key_id, &fresh.nonce, &fresh.sealed, &row.key_id, &row.nonce],
                )
                .await
                .map_err(StoreError::from)?;
            if changed == 1 {
                report.resealed += 1;
            } else {
                report.raced += 1;
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        progress(&report, todo);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_for_their_connection_and_key() {
        let vault = CredentialVault::random();
        let a = ConnectionId::new_random();
        let b = ConnectionId::new_random();
        let (nonce, sealed) = vault.seal(a, b"refresh-token-xyz");
        assert!(
            !sealed.windows(5).any(|w| w == b"token"),
            "plaintext leaked"
        );
        assert_eq!(
            vault.open(a, &nonce, &sealed).unwrap(),
            b"refresh-token-xyz"
        );
        assert!(
            vault.open(b, &nonce, &sealed).is_err(),
            "bound to the connection"
        );
        assert!(CredentialVault::random().open(a, &nonce, &sealed).is_err());
    }

    #[test]
    fn old_keys_open_rows_and_never_seal() {
        let key = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
        let old = CredentialVault::from_configured(&key(1)).unwrap();
        let new = CredentialVault::from_configured(&key(2))
            .unwrap()
            .with_old_keys(&[key(1), key(2)])
            .unwrap();
        assert_ne!(old.key_id(), new.key_id());
        assert_eq!(new.old.len(), 1, "the current key is not its own old key");
        let id = ConnectionId::new_random();
        let (nonce, sealed) = old.seal(id, b"grant");
        let row = |key_id: &str| SealedRow {
            key_id: key_id.into(),
            nonce: nonce.clone(),
            sealed: sealed.clone(),
        };
        assert_eq!(new.open_row(id, &row(old.key_id())).unwrap(), b"grant");
        // Rows from before fingerprints name no key: every key is tried.
        assert_eq!(new.open_row(id, &row("configured")).unwrap(), b"grant");
        let sealed_now = new.seal_session(
            id,
            &crate::providers::AuthSession {
                client_id: "c".into(),
                client_secret: "s".into(),
                refresh_token: "r".into(),
                access_token: None,
                access_expires_at: None,
                refresh_token_rotated: false,
                access_token_refreshed: false,
            },
        );
        assert_eq!(sealed_now.key_id, new.key_id());
        assert!(old.open_row(id, &sealed_now).is_err());
        let without_old = CredentialVault::from_configured(&key(2)).unwrap();
        assert!(without_old.open_row(id, &row(old.key_id())).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64_and_debug_hides_them() {
        assert!(CredentialVault::from_base64("k", "c2hvcnQ=").is_err());
        assert!(CredentialVault::from_base64("k", "not base64!").is_err());
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        let vault = CredentialVault::from_base64("k1", &key).unwrap();
        assert!(!format!("{vault:?}").contains(&key));
    }

    #[test]
    fn a_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/credentials.key");
        let v1 = CredentialVault::load_or_create(&path).unwrap();
        let v2 = CredentialVault::load_or_create(&path).unwrap();
        let id = ConnectionId::new_random();
        let (n, s) = v1.seal(id, b"x");
        assert_eq!(v2.open(id, &n, &s).unwrap(), b"x");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
