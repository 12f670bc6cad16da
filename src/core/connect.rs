//! The decisions of the OAuth authorization-code flow with PKCE (RFC 7636)
//! for Google and Microsoft, pure: the verifier and challenge, the
//! authorize URL with each provider's documented parameters
//! (`/work/shared/PROVIDERS.md`), the return-URL check, and what a
//! callback means given the stored state. The shell is `crate::http::connect`; see docs/CONNECT.md.

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
    #[error("the provider refused the code exchange: {0}")]
    TokenExchangeFailed(String),
    #[error("the account or its calendars could not be read: {0}")]
    AccountUnreadable(String),
    #[error("the connection could not be created: {0}")]
    CreateFailed(String),
    #[error("{actual:?} consented, but the platform asked for {expected:?}")]
    WrongAccount { expected: String, actual: String },
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
            ConnectError::TokenExchangeFailed(_) => "token_exchange_failed",
            ConnectError::AccountUnreadable(_) => "account_unreadable",
            ConnectError::CreateFailed(_) => "create_failed",
            ConnectError::WrongAccount { .. } => "wrong_account",
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
    authorize_url_for(provider, app, redirect_uri, state, pkce, None)
}

/// [`authorize_url`] with the account the platform expects as
/// `login_hint` (both providers document it).
pub fn authorize_url_for(
    provider: ConnectProvider,
    app: &ProviderApp,
    redirect_uri: &str,
    state: &str,
    pkce: &Pkce,
    login_hint: Option<&str>,
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
        if let Some(hint) = login_hint {
            q.append_pair("login_hint", hint);
        }
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

/// The consenting account must be the one the platform asked for, if it
/// asked (addresses compare without case).
pub fn check_account(expected: Option<&str>, actual: &str) -> Result<(), ConnectError> {
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(actual) => Err(ConnectError::WrongAccount {
            expected: e.to_string(),
            actual: actual.to_string(),
        }),
        _ => Ok(()),
    }
}

/// A calendar the connected account offers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OfferedCalendar {
    /// The id calsync uses: the provider's, except that the account's
    /// primary (Google) or default (Graph) calendar is `primary`, the alias
    /// both adapters read and write.
    pub calendar_id: String,
    pub name: String,
    pub primary: bool,
    pub can_write: bool,
}

/// The calendars of a Google `calendarList` answer and the account (the
/// primary calendar's id is the account's address).
pub fn google_calendars(
    list: &serde_json::Value,
) -> Result<(String, Vec<OfferedCalendar>), ConnectError> {
    let bad = |what: &str| ConnectError::AccountUnreadable(what.to_string());
    let items = list["items"]
        .as_array()
        .ok_or_else(|| bad("calendarList has no items"))?;
    let mut account = None;
    let mut out = Vec::new();
    for item in items {
        let id = item["id"]
            .as_str()
            .ok_or_else(|| bad("a calendar without id"))?;
        let primary = item["primary"].as_bool().unwrap_or(false);
        if primary {
            account = Some(id.to_string());
        }
        out.push(OfferedCalendar {
            calendar_id: if primary { "primary".into() } else { id.into() },
            name: item["summary"].as_str().unwrap_or(id).to_string(),
            primary,
            can_write: matches!(item["accessRole"].as_str(), Some("owner" | "writer")),
        });
    }
    let account = account.ok_or_else(|| bad("no primary calendar"))?;
    Ok((account, sort_offered(out)))
}

/// The calendars of a Graph `/me/calendars` answer and the account from
/// `/me` (its `userPrincipalName`, else `mail`).
pub fn graph_calendars(
    me: &serde_json::Value,
    list: &serde_json::Value,
) -> Result<(String, Vec<OfferedCalendar>), ConnectError> {
    let bad = |what: &str| ConnectError::AccountUnreadable(what.to_string());
    let account = me["userPrincipalName"]
        .as_str()
        .or_else(|| me["mail"].as_str())
        .ok_or_else(|| bad("/me has no userPrincipalName"))?
        .to_string();
    let items = list["value"]
        .as_array()
        .ok_or_else(|| bad("/me/calendars has no value"))?;
    let mut out = Vec::new();
    for item in items {
        let id = item["id"]
            .as_str()
            .ok_or_else(|| bad("a calendar without id"))?;
        let primary = item["isDefaultCalendar"].as_bool().unwrap_or(false);
        out.push(OfferedCalendar {
            calendar_id: if primary { "primary".into() } else { id.into() },
            name: item["name"].as_str().unwrap_or(id).to_string(),
            primary,
            can_write: item["canEdit"].as_bool().unwrap_or(false),
        });
    }
    if !out.iter().any(|c| c.primary) {
        return Err(bad("no default calendar"));
    }
    Ok((account, sort_offered(out)))
}

/// Primary first, then by id: a stable order for the picker.
fn sort_offered(mut calendars: Vec<OfferedCalendar>) -> Vec<OfferedCalendar> {
    calendars.sort_by(|a, b| {
        b.primary
            .cmp(&a.primary)
            .then(a.calendar_id.cmp(&b.calendar_id))
    });
    calendars.dedup_by(|a, b| a.calendar_id == b.calendar_id);
    calendars
}

/// What a new connection starts with: its primary calendar blocks time
/// and receives bookings.
pub fn initial_selection(offered: &[OfferedCalendar]) -> (Vec<String>, Option<String>) {
    match offered.iter().find(|c| c.primary) {
        Some(p) => (vec![p.calendar_id.clone()], Some(p.calendar_id.clone())),
        None => (Vec::new(), None),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    #[error("calendar {0:?} is not offered by this account")]
    NotOffered(String),
    #[error("calendar {0:?} cannot receive bookings: the account may not write to it")]
    ReadOnlyTarget(String),
    #[error("at most one calendar receives bookings")]
    SeveralTargets,
    #[error("calendar {0:?} is listed twice")]
    Duplicate(String),
}

/// One calendar's flags in a picker request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub calendar_id: String,
    pub blocking: bool,
    pub booking_target: bool,
}

/// The selection a picker request means: the blocking calendars and the
/// booking target, each offered, the target writable, at most one target.
/// Calendars not mentioned are neither.
pub fn pick_calendars(
    offered: &[OfferedCalendar],
    picks: &[Pick],
) -> Result<(Vec<String>, Option<String>), PickError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut blocking = Vec::new();
    let mut target = None;
    for pick in picks {
        if !seen.insert(pick.calendar_id.as_str()) {
            return Err(PickError::Duplicate(pick.calendar_id.clone()));
        }
        let cal = offered
            .iter()
            .find(|c| c.calendar_id == pick.calendar_id)
            .ok_or_else(|| PickError::NotOffered(pick.calendar_id.clone()))?;
        if pick.blocking {
            blocking.push(cal.calendar_id.clone());
        }
        if pick.booking_target {
            if !cal.can_write {
                return Err(PickError::ReadOnlyTarget(cal.calendar_id.clone()));
            }
            if target.replace(cal.calendar_id.clone()).is_some() {
                return Err(PickError::SeveralTargets);
            }
        }
    }
    Ok((blocking, target))
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

    fn offered(id: &str, primary: bool, can_write: bool) -> OfferedCalendar {
        OfferedCalendar {
            calendar_id: id.into(),
            name: id.into(),
            primary,
            can_write,
        }
    }

    #[test]
    fn provider_calendar_lists_become_offered_calendars_with_primary_as_alias() {
        let list = serde_json::json!({"items": [
            {"id": "team@group.calendar.google.com", "summary": "Team", "accessRole": "reader"},
            {"id": "ana@example.com", "summary": "Ana", "accessRole": "owner", "primary": true}
        ]});
        let (account, cals) = google_calendars(&list).unwrap();
        assert_eq!(account, "ana@example.com");
        assert_eq!(
            cals[0],
            OfferedCalendar {
                calendar_id: "primary".into(),
                name: "Ana".into(),
                primary: true,
                can_write: true
            }
        );
        assert!(!cals[1].can_write);
        assert!(google_calendars(&serde_json::json!({"items": []})).is_err());

        let me = serde_json::json!({"userPrincipalName": "bo@contoso.example"});
        let list = serde_json::json!({"value": [
            {"id": "AAMk-2", "name": "Holidays", "isDefaultCalendar": false, "canEdit": false},
            {"id": "AAMk-1", "name": "Calendar", "isDefaultCalendar": true, "canEdit": true}
        ]});
        let (account, cals) = graph_calendars(&me, &list).unwrap();
        assert_eq!(account, "bo@contoso.example");
        assert_eq!(
            cals.iter()
                .map(|c| c.calendar_id.as_str())
                .collect::<Vec<_>>(),
            ["primary", "AAMk-2"]
        );
        assert_eq!(
            initial_selection(&cals),
            (vec!["primary".to_string()], Some("primary".to_string()))
        );
        assert!(graph_calendars(&serde_json::json!({}), &list).is_err());
    }

    #[test]
    fn picks_must_be_offered_and_the_target_writable_and_single() {
        let cals = [
            offered("primary", true, true),
            offered("team", false, false),
            offered("side", false, true),
        ];
        let pick = |id: &str, blocking, booking_target| Pick {
            calendar_id: id.into(),
            blocking,
            booking_target,
        };
        assert_eq!(
            pick_calendars(
                &cals,
                &[
                    pick("primary", true, false),
                    pick("team", true, false),
                    pick("side", false, true)
                ]
            ),
            Ok((vec!["primary".into(), "team".into()], Some("side".into())))
        );
        assert_eq!(
            pick_calendars(&cals, &[pick("nope", true, false)]),
            Err(PickError::NotOffered("nope".into()))
        );
        assert_eq!(
            pick_calendars(&cals, &[pick("team", true, true)]),
            Err(PickError::ReadOnlyTarget("team".into()))
        );
        assert_eq!(
            pick_calendars(
                &cals,
                &[pick("primary", false, true), pick("side", false, true)]
            ),
            Err(PickError::SeveralTargets)
        );
        assert_eq!(
            pick_calendars(
                &cals,
                &[pick("side", true, false), pick("side", false, false)]
            ),
            Err(PickError::Duplicate("side".into()))
        );
        assert_eq!(pick_calendars(&cals, &[]), Ok((vec![], None)));
    }

    #[test]
    fn only_the_expected_account_may_consent() {
        assert_eq!(check_account(None, "a@x.example"), Ok(()));
        assert_eq!(check_account(Some("A@X.example"), "a@x.example"), Ok(()));
        assert_eq!(
            check_account(Some("a@x.example"), "b@x.example").map_err(|e| e.code()),
            Err("wrong_account")
        );
        let pkce = Pkce::from_random([3; 32]);
        let url = authorize_url_for(
            ConnectProvider::Google,
            &app("https://accounts.google.com/o/oauth2/v2/auth", &["s"]),
            "https://c.example/cb",
            "st",
            &pkce,
            Some("a@x.example"),
        )
        .unwrap();
        assert!(url
            .query_pairs()
            .any(|(k, v)| k == "login_hint" && v == "a@x.example"));
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
