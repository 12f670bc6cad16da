//! What the sync, channel and outbound tasks share: reporting back to their
//! actor, keeping a rotated refresh token and reusing refreshed access
//! tokens.
//!
//! Tasks know their actor only as a [`Recorder`]: they report every provider
//! result as an input and say when they are done; they never import the
//! actor, so the shell's imports run one way (actor → tasks).

use super::runtime::SyncRuntime;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::ConnectionId;
use crate::core::inflight::Task;
use crate::providers::AuthSession;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// How a task reports to the actor that started it.
pub trait Recorder: Send + Sync + 'static {
    /// Sends `command` as an input and waits until it is committed (or
    /// refused): results go through the actor like any other input.
    fn record(&self, command: ConnectionCommand) -> BoxFuture<'_, Result<(), String>>;

    /// The task ended after `calls` provider calls.
    fn finished(&self, task: Task, calls: u32);
}

/// After a provider call: Microsoft rotates refresh tokens on every
/// refresh, so save the newest right away, before anything else can fail
/// and lose it; and remember a freshly refreshed access token for the next
/// task of this connection.
pub async fn keep_rotated_token(
    runtime: &SyncRuntime,
    id: ConnectionId,
    session: &mut AuthSession,
) {
    if session.refresh_token_rotated {
        if let Err(e) = runtime.vault.save(&runtime.store, id, session).await {
            tracing::warn!(connection_id = %id, error = %e, "rotated refresh token not saved");
        }
        session.refresh_token_rotated = false;
    }
    if session.access_token_refreshed {
        runtime
            .access_tokens
            .remember(id, session, runtime.clock.now());
        session.access_token_refreshed = false;
    }
}

/// A connection's stored credentials, with the access token a previous task
/// of this node refreshed (the vault keeps only what the operator stored and
/// rotated refresh tokens): without it every sync would first ask the token
/// endpoint for a new access token.
pub async fn load_session(
    runtime: &SyncRuntime,
    id: ConnectionId,
) -> Result<Option<AuthSession>, crate::store::credentials::VaultError> {
    let mut session = runtime.vault.load(&runtime.store, id).await?;
    if let Some(session) = session.as_mut() {
        runtime.access_tokens.apply(id, session);
    }
    Ok(session)
}

/// Access tokens refreshed on this node, per connection, in memory only
/// (they live an hour; a restart costs one refresh per connection). An
/// entry is used only with the refresh token it was granted for, so a grant
/// replaced by the operator is never paired with the old grant's token.
#[derive(Default)]
pub struct AccessTokens {
    tokens: std::sync::Mutex<HashMap<ConnectionId, CachedToken>>,
}

struct CachedToken {
    /// SHA-256 of the refresh token the access token was granted for.
    grant: [u8; 32],
    access_token: String,
    expires_at: DateTime<Utc>,
}

fn grant_digest(session: &AuthSession) -> [u8; 32] {
    Sha256::digest(session.refresh_token.as_bytes()).into()
}

impl AccessTokens {
    fn remember(&self, id: ConnectionId, session: &AuthSession, now: DateTime<Utc>) {
        let (Some(token), Some(expires_at)) = (&session.access_token, session.access_expires_at)
        else {
            return;
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Expired entries go when the map would grow past what it held.
        if tokens.len() >= tokens.capacity() {
            tokens.retain(|_, t| t.expires_at > now);
        }
        tokens.insert(
            id,
            CachedToken {
                grant: grant_digest(session),
                access_token: token.clone(),
                expires_at,
            },
        );
    }

    /// Puts the remembered token into `session` if it is newer than the
    /// session's own and was granted for the same refresh token.
    pub fn apply(&self, id: ConnectionId, session: &mut AuthSession) {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let Some(cached) = tokens.get(&id) else {
            return;
        };
        let newer = session
            .access_expires_at
            .is_none_or(|own| cached.expires_at > own);
        if newer && cached.grant == grant_digest(session) {
            session.access_token = Some(cached.access_token.clone());
            session.access_expires_at = Some(cached.expires_at);
        }
    }

    /// Forgets a connection's token (its grant was replaced or revoked).
    pub fn forget(&self, id: ConnectionId) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
