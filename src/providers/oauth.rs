//! OAuth refresh-token grant against Google's and Microsoft's token
//! endpoints (`shared/PROVIDERS.md` §7).
//!
//! - The access token is refreshed when it is missing, has no known expiry,
//!   or expires within [`REFRESH_MARGIN`]; API calls also refresh once on a
//!   401 (see `transport::Api::send`).
//! - Microsoft issues a new refresh token on every refresh; any refresh
//!   token that differs from the stored one replaces it and sets
//!   `refresh_token_rotated`, so the shell persists it.
//! - `invalid_grant` (any AADSTS code), `interaction_required` and
//!   `consent_required` mean the grant is gone: [`ProviderError::Reauthorize`].
//!
//! Tokens and secrets are never logged and never put in error messages.

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::transport::parse_retry_after;
use super::{AuthSession, ProviderError};

/// Refresh this long before the access token expires.
pub const REFRESH_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// Scopes asked for on a Microsoft refresh (space-separated; `offline_access`
/// keeps refresh tokens coming).
pub const GRAPH_SCOPES: &str = "offline_access Calendars.ReadWrite User.Read";

/// Lifetime assumed when a token response carries no usable `expires_in`.
const DEFAULT_LIFETIME_SECS: i64 = 3600;

/// Which identity platform a token endpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFlavor {
    Google,
    Microsoft,
}

/// A token endpoint and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    pub url: String,
    pub flavor: TokenFlavor,
}

impl TokenEndpoint {
    pub fn google(url: impl Into<String>) -> Self {
        TokenEndpoint {
            url: url.into(),
            flavor: TokenFlavor::Google,
        }
    }

    pub fn microsoft(url: impl Into<String>) -> Self {
        TokenEndpoint {
            url: url.into(),
            flavor: TokenFlavor::Microsoft,
        }
    }
}

/// True when the session has no usable access token at `now`.
pub fn needs_refresh(session: &AuthSession, now: DateTime<Utc>) -> bool {
    match (&session.access_token, session.access_expires_at) {
        (Some(token), Some(expires_at)) => token.is_empty() || expires_at - now <= REFRESH_MARGIN,
        _ => true,
    }
}

/// Refreshes the access token if [`needs_refresh`] says so.
pub async fn ensure_fresh(
    http: &super::transport::HttpPort,
    endpoint: &TokenEndpoint,
    session: &mut AuthSession,
    now: DateTime<Utc>,
) -> Result<(), ProviderError> {
    if needs_refresh(session, now) {
        refresh(http, endpoint, session, now).await
    } else {
        Ok(())
    }
}

#[derive(Deserialize)]
struct TokenGranted {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct TokenRefused {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// Runs the refresh-token grant and stores the result in `session`.
pub async fn refresh(
    http: &super::transport::HttpPort,
    endpoint: &TokenEndpoint,
    session: &mut AuthSession,
    now: DateTime<Utc>,
) -> Result<(), ProviderError> {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", session.refresh_token.as_str()),
        ("client_id", session.client_id.as_str()),
        ("client_secret", session.client_secret.as_str()),
    ];
    if endpoint.flavor == TokenFlavor::Microsoft {
        form.push(("scope", GRAPH_SCOPES));
    }
    let answer = http
        .exchange(
            reqwest::Method::POST,
            endpoint.url.as_str(),
            &[],
            None,
            super::transport::Body::Form(&form),
        )
        .await?;
    let (status, headers, body) = (answer.status, answer.headers, answer.body);
    if !(200..300).contains(&status) {
        let error = classify_token_error(status, &headers, &body, now);
        tracing::warn!(status, kind = error.kind(), "token refresh failed");
        return Err(error);
    }
    let granted: TokenGranted =
        serde_json::from_slice(&body).map_err(|e| ProviderError::Unavailable {
            message: format!("unreadable token response: {e}"),
            retry_after: None,
        })?;
    let lifetime = granted
        .expires_in
        .as_ref()
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.trim().parse().ok()))
        .filter(|secs| *secs > 0)
        .unwrap_or(DEFAULT_LIFETIME_SECS);
    session.access_token = Some(granted.access_token);
    session.access_expires_at = Some(now + chrono::Duration::seconds(lifetime));
    session.access_token_refreshed = true;
    if let Some(new_refresh) = granted.refresh_token.filter(|t| !t.is_empty()) {
        if new_refresh != session.refresh_token {
            session.refresh_token = new_refresh;
            session.refresh_token_rotated = true;
        }
    }
    tracing::debug!(
        lifetime_secs = lifetime,
        rotated = session.refresh_token_rotated,
        "access token refreshed"
    );
    Ok(())
}

/// A refused token request, by what the caller must do next.
pub fn classify_token_error(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> ProviderError {
    let refused: TokenRefused = serde_json::from_slice(body).unwrap_or(TokenRefused {
        error: None,
        error_description: None,
    });
    let error = refused.error.unwrap_or_default();
    let description = refused
        .error_description
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| error.clone());
    let retry_after = parse_retry_after(headers, now);
    match error.to_ascii_lowercase().as_str() {
        "invalid_grant" | "interaction_required" | "consent_required" => {
            return ProviderError::Reauthorize(description)
        }
        "temporarily_unavailable" => {
            return ProviderError::Unavailable {
                message: description,
                retry_after,
            }
        }
        _ => {}
    }
    match status {
        429 => ProviderError::RateLimited { retry_after },
        500..=599 => ProviderError::Unavailable {
            message: format!("token endpoint answered {status}"),
            retry_after,
        },
        _ => ProviderError::Rejected {
            status,
            message: if error.is_empty() {
                format!("token endpoint answered {status}")
            } else {
                format!("{error}: {description}")
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(token: Option<&str>, expires_in_secs: Option<i64>) -> AuthSession {
        let now: DateTime<Utc> = "2026-10-01T10:00:00Z".parse().unwrap();
        AuthSession {
            client_id: "c".into(),
            client_secret: "s".into(),
            refresh_token: "r".into(),
            access_token: token.map(str::to_owned),
            access_expires_at: expires_in_secs.map(|s| now + chrono::Duration::seconds(s)),
            refresh_token_rotated: false,
            access_token_refreshed: false,
        }
    }

    #[test]
    fn refresh_is_needed_when_missing_unknown_or_expiring_within_a_minute() {
        let now: DateTime<Utc> = "2026-10-01T10:00:00Z".parse().unwrap();
        assert!(needs_refresh(&session(None, Some(3600)), now));
        assert!(needs_refresh(&session(Some("a"), None), now));
        assert!(needs_refresh(&session(Some("a"), Some(60)), now));
        assert!(needs_refresh(&session(Some("a"), Some(-5)), now));
        assert!(!needs_refresh(&session(Some("a"), Some(61)), now));
    }

    #[test]
    fn token_errors_are_classified() {
        let now = Utc::now();
        let h = HeaderMap::new();
        let aad = br#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.","error_codes":[700082]}"#;
        assert!(matches!(
            classify_token_error(400, &h, aad, now),
            ProviderError::Reauthorize(d) if d.starts_with("AADSTS700082")
        ));
        let google = br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#;
        assert!(matches!(
            classify_token_error(400, &h, google, now),
            ProviderError::Reauthorize(_)
        ));
        assert!(matches!(
            classify_token_error(401, &h, br#"{"error":"invalid_client"}"#, now),
            ProviderError::Rejected { status: 401, .. }
        ));
        assert!(matches!(
            classify_token_error(503, &h, b"oops", now),
            ProviderError::Unavailable { .. }
        ));
        assert!(matches!(
            classify_token_error(429, &h, b"", now),
            ProviderError::RateLimited { .. }
        ));
    }
}
