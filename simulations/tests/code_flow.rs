//! The authorization-code flow with PKCE over real HTTP, for both
//! providers: consent granted and denied by the switch, the exchange with
//! each documented check (client, verifier, single use, expiry), and the
//! grant working afterwards (calendar list, refresh with the app's
//! credentials).

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use calsim::code_flow::{Consent, CODE_LIFETIME_SECS};
use calsim::SimHandle;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";

#[derive(Clone, Copy)]
enum P {
    Google,
    Graph,
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn urls(h: &SimHandle, p: P) -> (String, String, String) {
    match p {
        P::Google => (
            h.google_authorize_url(),
            h.google_token_url(),
            format!("{}/users/me/calendarList", h.google_base_url()),
        ),
        P::Graph => (
            h.graph_authorize_url("common"),
            h.graph_token_url("common"),
            format!("{}/me/calendars", h.graph_base_url()),
        ),
    }
}

fn setup(h: &SimHandle, p: P, account: &str) {
    match p {
        P::Google => {
            h.google().create_account(account);
            h.google().register_app("app-g", "secret-g");
            h.google().set_consent(Consent::Grant(account.into()));
        }
        P::Graph => {
            h.graph().create_account(account);
            h.graph().register_app("app-m", "secret-m");
            h.graph().set_consent(Consent::Grant(account.into()));
        }
    }
}

fn app(p: P) -> (&'static str, &'static str) {
    match p {
        P::Google => ("app-g", "secret-g"),
        P::Graph => ("app-m", "secret-m"),
    }
}

/// Visits the authorize URL; the query of the redirect back.
async fn authorize(h: &SimHandle, p: P, challenge: &str) -> HashMap<String, String> {
    let (authorize, _, _) = urls(h, p);
    let response = no_redirects()
        .get(authorize)
        .query(&[
            ("client_id", app(p).0),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "offline_access Calendars.ReadWrite"),
            ("state", "st-1"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT), "{location}");
    reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

async fn exchange(h: &SimHandle, p: P, code: &str, verifier: &str) -> (u16, Value) {
    let (_, token, _) = urls(h, p);
    let (id, secret) = app(p);
    let r = common::client()
        .post(token)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", id),
            ("client_secret", secret),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn pkce(seed: u8) -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode([seed; 32]);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn the_whole_flow(p: P, account: &str) {
    let h = common::sim().await;
    setup(&h, p, account);
    let (verifier, challenge) = pkce(1);
    let back = authorize(&h, p, &challenge).await;
    assert_eq!(back["state"], "st-1");
    let code = back["code"].clone();

    // A wrong verifier is refused and does not spend the code.
    let (status, body) = exchange(&h, p, &code, &pkce(2).0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let (status, grant) = exchange(&h, p, &code, &verifier).await;
    assert_eq!(status, 200, "{grant}");
    let access = grant["access_token"].as_str().unwrap().to_string();
    let refresh = grant["refresh_token"].as_str().unwrap().to_string();
    // The code is single use.
    let (status, body) = exchange(&h, p, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The grant reads the account's calendars …
    let (_, token_url, list_url) = urls(&h, p);
    let list = common::client()
        .get(list_url)
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let list: Value = list.json().await.unwrap();
    let items = list
        .get("items")
        .or_else(|| list.get("value"))
        .and_then(Value::as_array)
        .unwrap();
    assert!(!items.is_empty(), "{list}");
    // Graph: `/me` names the account the grant belongs to.
    if let P::Graph = p {
        let me: Value = common::client()
            .get(format!("{}/me", h.graph_base_url()))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(me["userPrincipalName"], account, "{me}");
    }
    // … and refreshes with the app's credentials.
    let (id, secret) = app(p);
    let r = common::client()
        .post(&token_url)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A code older than its lifetime is refused.
    let back = authorize(&h, p, &challenge).await;
    h.advance_clock(chrono::Duration::seconds(CODE_LIFETIME_SECS));
    let (status, body) = exchange(&h, p, &back["code"], &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // Denied consent: back to the client with access_denied, no code.
    match p {
        P::Google => h.google().set_consent(Consent::Deny),
        P::Graph => h.graph().set_consent(Consent::Deny),
    }
    let back = authorize(&h, p, &challenge).await;
    assert_eq!(back["error"], "access_denied");
    assert_eq!(back["state"], "st-1");
    assert!(!back.contains_key("code"));
}

#[tokio::test]
async fn google_code_flow_with_pkce() {
    the_whole_flow(P::Google, "ana@example.com").await;
}

#[tokio::test]
async fn graph_code_flow_with_pkce() {
    the_whole_flow(P::Graph, "bo@contoso.com").await;
}
