//! Microsoft identity platform token endpoint: refresh grant with rotating
//! refresh tokens and AADSTS-coded `invalid_grant` errors.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

use crate::auth::GrantState;
use crate::gate::LoggedAccount;
use crate::state::{lock, Shared};

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let now = crate::error::response_now();
    let trace = crate::error::next_request_id();
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {trace} Timestamp: {}", now.format("%Y-%m-%d %H:%M:%SZ")),
            "error_codes": [code],
            "timestamp": now.format("%Y-%m-%d %H:%M:%SZ").to_string(),
            "trace_id": trace,
            "correlation_id": trace,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })),
    )
        .into_response()
}

pub async fn token_h(
    State(sh): State<Arc<Shared>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    if f.get("grant_type").map(String::as_str) == Some("authorization_code") {
        return code_grant(&sh, &f);
    }
    if f.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    let Some(refresh) = f.get("refresh_token") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'refresh_token'.",
        );
    };
    let scope = f.get("scope").cloned().unwrap_or_default();
    if scope.contains(',') {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            "The provided value for the input parameter 'scope' is not valid.",
        );
    }
    let mut st = lock(&sh.graph);
    let Some(grant) = st.tokens.refresh_grant(refresh).cloned() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        );
    };
    let Some((upn, client_id, secret)) = st
        .accounts
        .get(&grant.account.to_lowercase())
        .map(|a| (a.upn.clone(), a.client_id.clone(), a.client_secret.clone()))
    else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        );
    };
    // A grant issued by the code flow belongs to the registered app.
    let (client_id, secret) = match st.code_flow.apps.get(&grant.client_id) {
        Some(app_secret) => (grant.client_id.clone(), app_secret.clone()),
        None => (client_id, secret),
    };
    if f.get("client_id") != Some(&client_id) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application was not found in the directory.",
        );
    }
    if f.get("client_secret") != Some(&secret) {
        return aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        );
    }
    let mut resp = match grant.state {
        GrantState::Revoked => aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password."),
        GrantState::Expired => aad_error(StatusCode::BAD_REQUEST, "invalid_grant", 700082,
            "The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00Z and was inactive for 90.00:00:00."),
        GrantState::Valid => {
            let lifetime = sh.config.access_token_lifetime_secs;
            let access = st.tokens.issue_access(&upn, "eyJ0eXAiOiJKV1QiLCJub25jZSI6.", lifetime, sh.now(), &sh.rng);
            // A new refresh token every time; the old one keeps working.
            let new_refresh = st.tokens.issue_refresh(&upn, &client_id, "0.AXEA", &sh.rng);
            let scope = if scope.is_empty() { "Calendars.ReadWrite User.Read".to_string() } else { scope };
            Json(json!({
                "token_type": "Bearer",
                "scope": scope,
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access,
                "refresh_token": new_refresh,
            }))
            .into_response()
        }
    };
    resp.extensions_mut().insert(LoggedAccount(upn));
    resp
}

/// `GET /graph/{tenant}/oauth2/v2.0/authorize`: the consent screen,
/// answered by the consent switch (see [`crate::code_flow`]).
pub async fn authorize_h(
    State(sh): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let now = sh.now();
    let mut st = lock(&sh.graph);
    let st = &mut *st;
    let accounts = &st.accounts;
    crate::code_flow::authorize(
        &mut st.code_flow,
        |a| accounts.contains_key(&a.to_lowercase()),
        &q,
        now,
        &sh.rng,
        "0.AXEA_code.",
    )
}

/// The `authorization_code` grant, with the AADSTS codes Microsoft answers.
fn code_grant(sh: &Shared, f: &HashMap<String, String>) -> Response {
    let now = sh.now();
    let mut st = lock(&sh.graph);
    let pending = match crate::code_flow::exchange(&mut st.code_flow, f, now) {
        Ok(p) => p,
        Err(r) => {
            let code = match (r.error, r.description) {
                ("invalid_client", _) => 7000215,
                (_, "The authorization code was already redeemed.") => 54005,
                (_, "The authorization code has expired.") => 70008,
                (_, "Invalid code verifier.") => 501481,
                _ => 9002313,
            };
            return aad_error(r.status, r.error, code, r.description);
        }
    };
    let lifetime = sh.config.access_token_lifetime_secs;
    let access = st.tokens.issue_access(
        &pending.account,
        "eyJ0eXAiOiJKV1QiLCJub25jZSI6.",
        lifetime,
        now,
        &sh.rng,
    );
    let refresh = st
        .tokens
        .issue_refresh(&pending.account, &pending.client_id, "0.AXEA", &sh.rng);
    let scope = if pending.scope.is_empty() {
        "Calendars.ReadWrite User.Read".to_string()
    } else {
        pending.scope.clone()
    };
    let mut resp = Json(json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access,
        "refresh_token": refresh,
    }))
    .into_response();
    resp.extensions_mut().insert(LoggedAccount(pending.account));
    resp
}
