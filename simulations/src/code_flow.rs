//! The OAuth authorization-code flow with PKCE (RFC 7636), for both
//! providers: the authorize endpoint (consent granted for a chosen account
//! or denied, by a control switch) and the `authorization_code` grant of
//! the token endpoints.
//!
//! Apps (client id and secret) are registered through the control API; a
//! code is single use (a second exchange is `invalid_grant`), expires after
//! ten minutes of simulator time, is bound to its client and redirect URI,
//! and is only exchanged with the verifier whose S256 challenge it was
//! issued for. Refresh tokens issued here carry the app's client id, and
//! the refresh grant accepts the app's credentials for them.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

use crate::rng::SimRng;

/// How long a code may wait for its exchange (both providers document
/// about ten minutes).
pub const CODE_LIFETIME_SECS: i64 = 600;

/// What the simulated user does on the consent screen.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Consent {
    /// Nobody is signed in: the authorize endpoint answers 400.
    #[default]
    Nobody,
    /// The account (created beforehand) consents.
    Grant(String),
    /// The user clicks "Cancel" / "No".
    Deny,
}

#[derive(Clone, Debug)]
pub struct PendingCode {
    pub account: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub scope: String,
    pub issued_at: DateTime<Utc>,
    pub used: bool,
}

/// One provider's apps, consent switch and codes.
#[derive(Default)]
pub struct CodeFlow {
    /// client id → secret.
    pub apps: HashMap<String, String>,
    pub consent: Consent,
    pub codes: HashMap<String, PendingCode>,
}

/// An authorize request's parameters.
pub struct AuthorizeParams<'a> {
    pub q: &'a HashMap<String, String>,
}

/// The authorize endpoint's answer: a redirect to the client with a code or
/// an error, or (bad client or redirect URI: nothing to redirect to safely)
/// a 400 page.
pub fn authorize(
    flow: &mut CodeFlow,
    account_exists: impl Fn(&str) -> bool,
    q: &HashMap<String, String>,
    now: DateTime<Utc>,
    rng: &SimRng,
    code_prefix: &str,
) -> Response {
    let page = |msg: &str| (StatusCode::BAD_REQUEST, format!("calsim: {msg}")).into_response();
    let Some(client_id) = q.get("client_id") else {
        return page("missing client_id");
    };
    if !flow.apps.contains_key(client_id) {
        return page("unknown client_id (register the app first)");
    }
    let Some(redirect_uri) = q.get("redirect_uri") else {
        return page("missing redirect_uri");
    };
    let Ok(mut target) = reqwest::Url::parse(redirect_uri) else {
        return page("redirect_uri is not a URL");
    };
    let state = q.get("state").cloned().unwrap_or_default();
    let mut redirect = |pairs: &[(&str, &str)]| {
        {
            let mut qp = target.query_pairs_mut();
            for (k, v) in pairs {
                qp.append_pair(k, v);
            }
            if !state.is_empty() {
                qp.append_pair("state", &state);
            }
        }
        (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
    };
    if q.get("response_type").map(String::as_str) != Some("code") {
        return redirect(&[("error", "unsupported_response_type")]);
    }
    let challenge = q.get("code_challenge").cloned().unwrap_or_default();
    if challenge.is_empty() || q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return redirect(&[
            ("error", "invalid_request"),
            (
                "error_description",
                "code_challenge with code_challenge_method=S256 is required",
            ),
        ]);
    }
    match flow.consent.clone() {
        Consent::Nobody => page("no user is signed in (set the consent switch)"),
        Consent::Deny => redirect(&[
            ("error", "access_denied"),
            ("error_description", "The user denied consent."),
        ]),
        Consent::Grant(account) => {
            if !account_exists(&account) {
                return page("the consenting account does not exist");
            }
            let code = format!("{code_prefix}{}", rng.alnum(40));
            flow.codes.insert(
                code.clone(),
                PendingCode {
                    account,
                    client_id: client_id.clone(),
                    redirect_uri: redirect_uri.clone(),
                    challenge,
                    scope: q.get("scope").cloned().unwrap_or_default(),
                    issued_at: now,
                    used: false,
                },
            );
            redirect(&[("code", &code)])
        }
    }
}

/// Why an exchange was refused: the OAuth error and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: &'static str,
}

fn refuse(status: StatusCode, error: &'static str, description: &'static str) -> Refusal {
    Refusal {
        status,
        error,
        description,
    }
}

/// Checks an `authorization_code` exchange; on success the code is spent
/// and its grant returned (account, client id, scope).
pub fn exchange(
    flow: &mut CodeFlow,
    f: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<PendingCode, Refusal> {
    let (Some(client_id), Some(code)) = (f.get("client_id"), f.get("code")) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: code or client_id",
        ));
    };
    match flow.apps.get(client_id) {
        Some(secret) if f.get("client_secret") == Some(secret) => {}
        _ => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Unauthorized",
            ))
        }
    }
    let Some(pending) = flow.codes.get_mut(code) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Malformed auth code.",
        ));
    };
    if pending.used {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The authorization code was already redeemed.",
        ));
    }
    if now - pending.issued_at >= Duration::seconds(CODE_LIFETIME_SECS) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The authorization code has expired.",
        ));
    }
    if &pending.client_id != client_id || f.get("redirect_uri") != Some(&pending.redirect_uri) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri or client_id does not match the authorization request.",
        ));
    }
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != pending.challenge {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Invalid code verifier.",
        ));
    }
    pending.used = true;
    Ok(pending.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn location(r: &Response) -> reqwest::Url {
        reqwest::Url::parse(r.headers()[header::LOCATION].to_str().unwrap()).unwrap()
    }

    fn query(url: &reqwest::Url) -> HashMap<String, String> {
        url.query_pairs().into_owned().collect()
    }

    #[test]
    fn a_code_is_single_use_bound_and_pkce_checked() {
        let rng = SimRng::new(7);
        let now = Utc::now();
        let mut flow = CodeFlow::default();
        flow.apps.insert("app".into(), "secret".into());
        flow.consent = Consent::Grant("ana@example.com".into());
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let q = params(&[
            ("client_id", "app"),
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("response_type", "code"),
            ("state", "st"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ]);
        let r = authorize(&mut flow, |_| true, &q, now, &rng, "4/");
        assert_eq!(r.status(), StatusCode::FOUND);
        let back = query(&location(&r));
        assert_eq!(back["state"], "st");
        let code = back["code"].clone();
        let form = |verifier: &str, secret: &str| {
            params(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", "app"),
                ("client_secret", secret),
                ("redirect_uri", "http://127.0.0.1:1/cb"),
                ("code_verifier", verifier),
            ])
        };
        assert_eq!(
            exchange(&mut flow, &form(verifier, "nope"), now)
                .unwrap_err()
                .error,
            "invalid_client"
        );
        assert_eq!(
            exchange(&mut flow, &form("wrong-verifier", "secret"), now)
                .unwrap_err()
                .description,
            "Invalid code verifier."
        );
        let grant = exchange(&mut flow, &form(verifier, "secret"), now).unwrap();
        assert_eq!(grant.account, "ana@example.com");
        assert_eq!(
            exchange(&mut flow, &form(verifier, "secret"), now)
                .unwrap_err()
                .description,
            "The authorization code was already redeemed."
        );

        // Expired.
        let r = authorize(&mut flow, |_| true, &q, now, &rng, "4/");
        let code = query(&location(&r))["code"].clone();
        let mut f = form(verifier, "secret");
        f.insert("code".into(), code);
        let later = now + Duration::seconds(CODE_LIFETIME_SECS);
        assert_eq!(
            exchange(&mut flow, &f, later).unwrap_err().description,
            "The authorization code has expired."
        );

        // Denied: back to the client with access_denied and the state.
        flow.consent = Consent::Deny;
        let r = authorize(&mut flow, |_| true, &q, now, &rng, "4/");
        let back = query(&location(&r));
        assert_eq!(back["error"], "access_denied");
        assert_eq!(back["state"], "st");
        assert!(!back.contains_key("code"));

        // Without PKCE: refused on the redirect.
        flow.consent = Consent::Grant("ana@example.com".into());
        let mut plain = q.clone();
        plain.remove("code_challenge");
        let r = authorize(&mut flow, |_| true, &plain, now, &rng, "4/");
        assert_eq!(query(&location(&r))["error"], "invalid_request");
        // An unknown client gets no redirect at all.
        let mut stranger = q.clone();
        stranger.insert("client_id".into(), "other".into());
        let r = authorize(&mut flow, |_| true, &stranger, now, &rng, "4/");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
