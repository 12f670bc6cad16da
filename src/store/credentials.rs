//! Credentials at rest: OAuth tokens sealed with AES-256-GCM under a key
//! from configuration, in the `credentials` table — never in the log.
//!
//! The connection id is the AEAD's associated data, so a sealed blob copied
//! to another connection's row fails to open instead of lending it a grant.

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
        })
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

    fn open(&self, id: ConnectionId, nonce: &[u8], sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        if nonce.len() != 12 {
            return Err(VaultError::CannotOpen(id, self.key_id.clone()));
        }
        let aad = id.as_uuid();
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| VaultError::CannotOpen(id, self.key_id.clone()))
    }

    /// Stores (or replaces) a connection's credentials.
    pub async fn save(
        &self,
        store: &impl SealedCredentials,
        id: ConnectionId,
        session: &AuthSession,
    ) -> Result<(), VaultError> {
        let mut session = session.clone();
        session.refresh_token_rotated = false;
        // AuthSession is plain strings and timestamps: it always serialises.
        let plaintext = serde_json::to_vec(&session).unwrap_or_default();
        let (nonce, sealed) = self.seal(id, &plaintext);
        let row = SealedRow {
            key_id: self.key_id.clone(),
            nonce,
            sealed,
        };
        store.put_sealed(id, row).await?;
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
        let plaintext = self.open(id, &row.nonce, &row.sealed)?;
        serde_json::from_slice(&plaintext)
            .map(Some)
            .map_err(|_| VaultError::CannotOpen(id, self.key_id.clone()))
    }
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
