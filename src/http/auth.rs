//! Bearer-token authentication of `/v1/*` and `/admin/*`.
//!
//! A request's token is hashed (SHA-256) and compared with the shared
//! `CALSYNC_ADMIN_TOKEN`'s hash in constant time (equal lengths: nothing
//! about the token's length leaks), then looked up by hash in `api_tokens`
//! — on every request, so a revoked token is refused by every node from
//! the next request on. The scope the path needs is decided by
//! [`crate::core::tokens::required_scope`]. Changes made through `/admin/*`
//! are written to `admin_audit` with the token's name. Tokens are never
//! logged: only their names are.

use super::errors::ApiError;
use super::AppState;
use crate::core::tokens::{self, Scope};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

/// Who made a request: the token's name and scopes (a request extension
/// for handlers that record who acted).
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The shared `CALSYNC_ADMIN_TOKEN` (names no person).
    pub shared: bool,
}

const ACTOR_HEADER: &str = "x-calsync-actor";

/// The name the shared admin token is audited under.
pub const SHARED_TOKEN_NAME: &str = "CALSYNC_ADMIN_TOKEN";

fn bearer(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
}

/// Finds the caller of `request`, if its token is the shared one or a live
/// scoped token.
async fn caller(state: &AppState, given: &str) -> Result<Option<Caller>, ApiError> {
    let given_hash = tokens::hash(given);
    if let Some(shared) = state.admin_token.as_deref() {
        if bool::from(given_hash.as_bytes().ct_eq(tokens::hash(shared).as_bytes())) {
            return Ok(Some(Caller {
                name: SHARED_TOKEN_NAME.into(),
                scopes: Scope::ALL.to_vec(),
                shared: true,
            }));
        }
    }
    Ok(crate::store::tokens::lookup(&state.store, &given_hash)
        .await?
        .map(|(name, scopes)| Caller {
            name,
            scopes,
            shared: false,
        }))
}

/// The middleware in front of `/v1/*` and `/admin/*`: 401 without a known
/// token, 403 when the token lacks the path's scope (or when no token at
/// all can open the API: no shared token configured and none created).
pub async fn require_scope(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path().to_string();
    let found = match bearer(&request) {
        Some(given) => caller(&state, given).await?,
        None => None,
    };
    let Some(found) = found else {
        if state.admin_token.is_none() && !crate::store::tokens::any_live(&state.store).await? {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "the API is closed: set CALSYNC_ADMIN_TOKEN or create a token with `calsync tokens create`",
            ));
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing, unknown or revoked token",
        ));
    };
    if !tokens::admits(&found.scopes, &path) {
        let needed = tokens::required_scope(&path).map_or("", Scope::as_str);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("the token {:?} lacks the {needed} scope", found.name),
        ));
    }
    let method = request.method().clone();
    let audited = path.starts_with("/admin/") && !matches!(method, Method::GET | Method::HEAD);
    let name = found.name.clone();
    // Settings changes record `admin-api:<X-Calsync-Actor>`. A named token
    // names its holder, so the header is the token's name, whatever the
    // caller sent; only the shared token (which names no one) keeps the
    // caller's header as before.
    if !found.shared {
        let headers = request.headers_mut();
        headers.remove(ACTOR_HEADER);
        if let Ok(v) = HeaderValue::from_str(&name) {
            headers.insert(ACTOR_HEADER, v);
        }
    }
    request.extensions_mut().insert(found);
    let response = next.run(request).await;
    if audited {
        let status = response.status().as_u16();
        tracing::info!(token = %name, %method, %path, status, "admin change");
        if let Err(e) =
            crate::store::tokens::audit(&state.store, &name, method.as_str(), &path, status).await
        {
            tracing::warn!(error = %e, token = %name, %path, "could not write the admin audit row");
        }
    }
    Ok(response)
}
