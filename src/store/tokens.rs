//! The `api_tokens` and `admin_audit` tables: scoped API tokens stored as
//! SHA-256 hashes, looked up on every request (so a revocation holds on
//! every node at once), and the audit trail of admin changes.

use super::{PgEventStore, StoreError};
use crate::core::tokens::{self, Scope, TokenError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A token as listed: never the token itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenInfo {
    pub token_id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error(transparent)]
    Invalid(#[from] TokenError),
    #[error("a live token named {0:?} exists: revoke it first or pick another name")]
    NameTaken(String),
    #[error("no live token named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for TokenStoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        TokenStoreError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for TokenStoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        TokenStoreError::Store(e.into())
    }
}

/// Creates a token named `name` with `scopes`; returns the token (shown
/// once: only its hash is kept) and its row.
pub async fn create(
    store: &PgEventStore,
    name: &str,
    scopes: &[Scope],
    created_by: &str,
) -> Result<(String, TokenInfo), TokenStoreError> {
    tokens::validate_name(name)?;
    if scopes.is_empty() {
        return Err(TokenError::NoScope.into());
    }
    let token = tokens::token_from(rand::random());
    let scope_names: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
    let client = store.pool().get().await?;
    let row = client
        .query_opt(
            "INSERT INTO api_tokens (token_id, name, token_hash, scopes, created_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING \
             RETURNING token_id, name, scopes, created_at, created_by, revoked_at",
            &[
                &Uuid::new_v4(),
                &name,
                &tokens::hash(&token),
                &scope_names,
                &created_by,
            ],
        )
        .await?
        .ok_or_else(|| TokenStoreError::NameTaken(name.to_string()))?;
    Ok((token, info(&row)?))
}

fn info(row: &tokio_postgres::Row) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        token_id: row.try_get(0)?,
        name: row.try_get(1)?,
        scopes: row.try_get(2)?,
        created_at: row.try_get(3)?,
        created_by: row.try_get(4)?,
        revoked_at: row.try_get(5)?,
    })
}

/// Every token, live and revoked, newest first.
pub async fn list(store: &PgEventStore) -> Result<Vec<TokenInfo>, TokenStoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT token_id, name, scopes, created_at, created_by, revoked_at \
             FROM api_tokens ORDER BY created_at DESC, name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(info).collect::<Result<_, _>>()?)
}

/// Revokes the live token named `name`: refused from the next request on.
pub async fn revoke(store: &PgEventStore, name: &str) -> Result<TokenInfo, TokenStoreError> {
    let client = store.pool().get().await?;
    let row = client
        .query_opt(
            "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL \
             RETURNING token_id, name, scopes, created_at, created_by, revoked_at",
            &[&name],
        )
        .await?
        .ok_or_else(|| TokenStoreError::NotFound(name.to_string()))?;
    Ok(info(&row)?)
}

/// The live token whose hash is `token_hash`: its name and scopes.
/// Unknown scope names (from a newer build) are ignored, never widened.
pub async fn lookup(
    store: &PgEventStore,
    token_hash: &str,
) -> Result<Option<(String, Vec<Scope>)>, StoreError> {
    let client = store.pool().get().await?;
    let row = client
        .query_opt(
            "SELECT name, scopes, token_hash FROM api_tokens \
             WHERE token_hash = $1 AND revoked_at IS NULL",
            &[&token_hash],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: String = row.try_get(2)?;
    // The index found it; compare again in constant time all the same.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        stored.as_bytes(),
        token_hash.as_bytes(),
    )) {
        return Ok(None);
    }
    let names: Vec<String> = row.try_get(1)?;
    let scopes = names.iter().filter_map(|n| Scope::parse(n).ok()).collect();
    Ok(Some((row.try_get(0)?, scopes)))
}

/// Whether any live token exists (a server without the shared admin token
/// and without tokens has its API closed: 403 instead of 401).
pub async fn any_live(store: &PgEventStore) -> Result<bool, StoreError> {
    let client = store.pool().get().await?;
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM api_tokens WHERE revoked_at IS NULL)",
            &[],
        )
        .await?
        .try_get(0)?)
}

/// Records an admin change made with the token `token_name`.
pub async fn audit(
    store: &PgEventStore,
    token_name: &str,
    method: &str,
    path: &str,
    status: u16,
) -> Result<(), StoreError> {
    let client = store.pool().get().await?;
    client
        .execute(
            "INSERT INTO admin_audit (token_name, method, path, status) VALUES ($1, $2, $3, $4)",
            &[&token_name, &method, &path, &i32::from(status)],
        )
        .await?;
    Ok(())
}

/// One audited change.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub token_name: String,
    pub method: String,
    pub path: String,
    pub status: i32,
}

/// The newest `limit` audited changes, newest first.
pub async fn audit_log(store: &PgEventStore, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT at, token_name, method, path, status FROM admin_audit \
             ORDER BY audit_id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                at: r.try_get(0)?,
                token_name: r.try_get(1)?,
                method: r.try_get(2)?,
                path: r.try_get(3)?,
                status: r.try_get(4)?,
            })
        })
        .collect()
}
