//! The decisions of the OAuth authorization-code flow with PKCE (RFC 7636)
//! for Google and Microsoft, pure: the verifier and challenge, the
//! authorize URL with each provider's documented parameters
//! (`/work/shared/PROVIDERS.md`), the return-URL check, and what a
//! callback means given the stored state. The shell (HTTP handlers, the
//! state table, the token exchange) is a follow-up; see docs/CONNECT.md.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The two providers a user can connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectProvider {
    Google,
    Microsoft,
}

impl ConnectProvider {
    pub fn parse(s: &str) -> Result<Self, ConnectError> {
        match s {
            "google" => Ok(ConnectProvider::Google),
            "microsoft" => Ok(ConnectProvider::Microsoft),
            other => Err(ConnectError::UnknownProvider(other.to_string())),
        }
    }
}

/// A provider app, configured once per provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderApp {
    pub client_id: String,
    /// Where the provider's authorize endpoint lives (the real one, or the
    /// simulator's), e.g. `https://accounts.google.com/o/oauth2/v2/auth`.
    pub authorize_endpoint: String,
    pub scopes: Vec<String>,
}

/// The PKCE pair: the verifier stays with calsync, the challenge goes to
/// the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    /// From 32 random bytes: a 43-character verifier (RFC 7636 §4.1) and
    /// its S256 challenge.
    pub fn from_random(random: [u8; 32]) -> Pkce {
        let verifier = URL_SAFE_NO_PAD.encode(random);
        Pkce {
            challenge: challenge_of(&verifier),
            verifier,
        }
    }
}

/// `BASE64URL(SHA256(verifier))`, what the token endpoint checks.
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A state value from 32 random bytes (stored by its hash).
pub fn state_from(random: [u8; 32]) -> String {
    URL_SAFE_NO_PAD.encode(random)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("unknown provider {0:?}: use google or microsoft")]
    UnknownProvider(String),
    #[error("return_url {0:?} must be an absolute http(s) URL without a fragment")]
    BadReturnUrl(String),
    #[error("the user denied consent")]
    ConsentDenied,
    #[error("unknown state: not issued by calsync")]
    BadState,
    #[error("the state was used already")]
    ReplayedState,
    #[error("the state expired")]
    ExpiredState,
    #[error("the callback carries neither a code nor an error")]
    MissingCode,
}

impl ConnectError {
    /// The `error` parameter the return URL receives.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::UnknownProvider(_) => "unknown_provider",
            ConnectError::BadReturnUrl(_) => "bad_return_url",
            ConnectError::ConsentDenied => "access_denied",
            ConnectError::BadState => "bad_state",
            ConnectError::ReplayedState => "replayed_state",
            ConnectError::ExpiredState => "expired_state",
            ConnectError::MissingCode => "missing_code",
        }
    }
}

/// The return URL the platform gave: absolute http(s), no fragment (the
/// result is appended as query parameters).
pub fn validate_return_url(raw: &str) -> Result<url::Url, ConnectError> {
    let bad = || ConnectError::BadReturnUrl(raw.to_string());
    let parsed = url::Url::parse(raw).map_err(|_| bad())?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(parsed)
}

/// The provider's authorize URL for one flow.
pub fn authorize_url(
    provider: ConnectProvider,
    app: &ProviderApp,
    redirect_uri: &str,
    state: &str,
    pkce: &Pkce,
) -> Result<url::Url, ConnectError> {
    let mut url = url::Url::parse(&app.authorize_endpoint)
        .map_err(|_| ConnectError::BadReturnUrl(app.authorize_endpoint.clone()))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &app.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        match provider {
            ConnectProvider::Google => {
                // Offline access and a forced consent: a refresh token
                // comes back on every connect, not only the first.
                q.append_pair("scope", &app.scopes.join(" "))
                    .append_pair("access_type", "offline")
                    .append_pair("prompt", "consent")
                    .append_pair("include_granted_scopes", "true");
            }
            ConnectProvider::Microsoft => {
                // Space-separated scopes; offline_access yields a refresh token.
                let mut scopes = app.scopes.clone();
                if !scopes.iter().any(|s| s == "offline_access") {
                    scopes.push("offline_access".into());
                }
                q.append_pair("scope", &scopes.join(" "))
                    .append_pair("response_mode", "query");
            }
        }
    }
    Ok(url)
}

/// A stored state as the callback finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

/// What the provider sent to the callback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub error: Option<String>,
}

/// What a callback means: exchange `code`, or end on the return URL with
/// an error. The state is checked first (an unknown state has no return
/// URL to go back to, and a replayed one must not leak whether the user
/// consented); then the provider's own error; then the code.
pub fn judge_callback(
    stored: Option<&StoredState>,
    params: &CallbackParams,
    now: DateTime<Utc>,
) -> Result<String, ConnectError> {
    let stored = stored.ok_or(ConnectError::BadState)?;
    if stored.used {
        return Err(ConnectError::ReplayedState);
    }
    if now >= stored.expires_at {
        return Err(ConnectError::ExpiredState);
    }
    if params.error.is_some() {
        return Err(ConnectError::ConsentDenied);
    }
    params.code.clone().ok_or(ConnectError::MissingCode)
}

/// The return URL with the outcome: `connection_id=…` or `error=…`.
pub fn finish_url(return_url: &url::Url, outcome: Result<&str, &ConnectError>) -> url::Url {
    let mut url = return_url.clone();
    match outcome {
        Ok(connection_id) => {
            url.query_pairs_mut()
                .append_pair("connection_id", connection_id);
        }
        Err(e) => {
            url.query_pairs_mut()
                .append_pair("error", e.code())
                .append_pair("error_description", &e.to_string());
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn app(endpoint: &str, scopes: &[&str]) -> ProviderApp {
        ProviderApp {
            client_id: "app-1".into(),
            authorize_endpoint: endpoint.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636_s256() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = Pkce::from_random([1; 32]);
        assert_eq!(p.verifier.len(), 43);
        assert_eq!(p.challenge, challenge_of(&p.verifier));
    }

    #[test]
    fn authorize_urls_carry_each_providers_parameters() {
        let pkce = Pkce::from_random([2; 32]);
        let google = authorize_url(
            ConnectProvider::Google,
            &app(
                "https://accounts.google.com/o/oauth2/v2/auth",
                &["https://www.googleapis.com/auth/calendar"],
            ),
            "https://calsync.example/oauth/google/callback",
            "st",
            &pkce,
        )
        .unwrap();
        let q: std::collections::HashMap<_, _> = google.query_pairs().into_owned().collect();
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], pkce.challenge);
        assert_eq!(q["state"], "st");
        assert_eq!(q["response_type"], "code");
        assert!(!q.contains_key("code_verifier"));

        let ms = authorize_url(
            ConnectProvider::Microsoft,
            &app(
                "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                &["Calendars.ReadWrite", "User.Read"],
            ),
            "https://calsync.example/oauth/microsoft/callback",
            "st",
            &pkce,
        )
        .unwrap();
        let q: std::collections::HashMap<_, _> = ms.query_pairs().into_owned().collect();
        assert_eq!(q["scope"], "Calendars.ReadWrite User.Read offline_access");
        assert_eq!(q["response_mode"], "query");
        assert!(!q.contains_key("access_type"));
    }

    #[test]
    fn return_urls_must_be_absolute_http_without_fragment() {
        assert!(validate_return_url("https://app.example/done?x=1").is_ok());
        assert!(validate_return_url("http://127.0.0.1:8080/cb").is_ok());
        for bad in [
            "/relative",
            "javascript:alert(1)",
            "ftp://x/y",
            "https://a/b#frag",
            "",
        ] {
            assert!(validate_return_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn callbacks_are_judged_state_first() {
        let now = Utc::now();
        let fresh = StoredState {
            expires_at: now + chrono::TimeDelta::minutes(10),
            used: false,
        };
        let code = CallbackParams {
            code: Some("c".into()),
            error: None,
        };
        let denied = CallbackParams {
            code: None,
            error: Some("access_denied".into()),
        };
        assert_eq!(judge_callback(Some(&fresh), &code, now), Ok("c".into()));
        assert_eq!(
            judge_callback(Some(&fresh), &denied, now),
            Err(ConnectError::ConsentDenied)
        );
        assert_eq!(
            judge_callback(None, &code, now),
            Err(ConnectError::BadState)
        );
        let used = StoredState {
            used: true,
            ..fresh.clone()
        };
        assert_eq!(
            judge_callback(Some(&used), &code, now),
            Err(ConnectError::ReplayedState)
        );
        assert_eq!(
            judge_callback(Some(&fresh), &code, fresh.expires_at),
            Err(ConnectError::ExpiredState)
        );
        assert_eq!(
            judge_callback(Some(&fresh), &CallbackParams::default(), now),
            Err(ConnectError::MissingCode)
        );
    }

    #[test]
    fn the_return_url_keeps_its_query_and_gets_the_outcome() {
        let base = validate_return_url("https://app.example/done?tenant=7").unwrap();
        let ok = finish_url(&base, Ok("c-1"));
        assert_eq!(
            ok.as_str(),
            "https://app.example/done?tenant=7&connection_id=c-1"
        );
        let err = finish_url(&base, Err(&ConnectError::ReplayedState));
        let q: std::collections::HashMap<_, _> = err.query_pairs().into_owned().collect();
        assert_eq!(q["error"], "replayed_state");
        assert_eq!(q["tenant"], "7");
    }

    proptest! {
        #[test]
        fn every_verifier_is_a_valid_rfc_7636_verifier(bytes in proptest::array::uniform32(any::<u8>())) {
            let p = Pkce::from_random(bytes);
            prop_assert!((43..=128).contains(&p.verifier.len()));
            prop_assert!(p.verifier.chars().all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)));
            prop_assert_eq!(p.challenge.len(), 43);
        }
    }
}
