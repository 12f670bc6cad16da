//! Google's OAuth token endpoint (refresh grant only) and revocation.

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

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `POST /google/token` with `grant_type=refresh_token&refresh_token&client_id&client_secret`.
pub async fn token_h(
    State(sh): State<Arc<Shared>>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request body.",
        );
    };
    if f.get("grant_type").map(String::as_str) == Some("authorization_code") {
        return code_grant(&sh, &f);
    }
    if f.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Invalid grant_type: only refresh_token and authorization_code are simulated.",
        );
    }
    let Some(refresh) = f.get("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    let mut st = lock(&sh.google);
    let Some(grant) = st.tokens.refresh_grant(refresh).cloned() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
    };
    let Some(account) = st.accounts.get(&grant.account.to_lowercase()).cloned() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
    };
    // The account's own client, or the registered app the grant was
    // issued to by the code flow.
    let app_client = f.get("client_id") == Some(&grant.client_id)
        && st.code_flow.apps.get(&grant.client_id) == f.get("client_secret");
    if !app_client
        && (f.get("client_id") != Some(&account.client_id)
            || f.get("client_secret") != Some(&account.client_secret))
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "Unauthorized");
    }
    if grant.state != GrantState::Valid {
        let mut resp = oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.",
        );
        resp.extensions_mut().insert(LoggedAccount(account.email));
        return resp;
    }
    let lifetime = sh.config.access_token_lifetime_secs;
    let access = st
        .tokens
        .issue_access(&account.email, "ya29.", lifetime, sh.now(), &sh.rng);
    let mut resp = Json(json!({
        "access_token": access,
        "expires_in": lifetime - 1,
        "scope": "https://www.googleapis.com/auth/calendar",
        "token_type": "Bearer",
    }))
    .into_response();
    resp.extensions_mut().insert(LoggedAccount(account.email));
    resp
}

/// `GET /google/authorize`: the consent screen, answered by the consent
/// switch (see [`crate::code_flow`]).
pub async fn authorize_h(
    State(sh): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let now = sh.now();
    let mut st = lock(&sh.google);
    let st = &mut *st;
    let accounts = &st.accounts;
    crate::code_flow::authorize(
        &mut st.code_flow,
        |a| accounts.contains_key(&a.to_lowercase()),
        &q,
        now,
        &sh.rng,
        "4/0A",
    )
}

/// The `authorization_code` grant: a refresh token for the app, as on first
/// consent (Google's refresh token comes with `access_type=offline`).
fn code_grant(sh: &Shared, f: &HashMap<String, String>) -> Response {
    let now = sh.now();
    let mut st = lock(&sh.google);
    let pending = match crate::code_flow::exchange(&mut st.code_flow, f, now) {
        Ok(p) => p,
        Err(r) => return oauth_error(r.status, r.error, r.description),
    };
    let lifetime = sh.config.access_token_lifetime_secs;
    let access = st
        .tokens
        .issue_access(&pending.account, "ya29.", lifetime, now, &sh.rng);
    let refresh = st
        .tokens
        .issue_refresh(&pending.account, &pending.client_id, "1//", &sh.rng);
    let scope = if pending.scope.is_empty() {
        "https://www.googleapis.com/auth/calendar".to_string()
    } else {
        pending.scope.clone()
    };
    let mut resp = Json(json!({
        "access_token": access,
        "expires_in": lifetime - 1,
        "refresh_token": refresh,
        "scope": scope,
        "token_type": "Bearer",
    }))
    .into_response();
    resp.extensions_mut().insert(LoggedAccount(pending.account));
    resp
}

/// `POST /google/revoke?token=...`: revokes the grant the token belongs to.
pub async fn revoke_h(
    State(sh): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let mut st = lock(&sh.google);
    let token = q.get("token").cloned().unwrap_or_default();
    match st.tokens.refresh_grant(&token).cloned() {
        Some(g) => {
            st.tokens.end_grants(&g.account, GrantState::Revoked);
            StatusCode::OK.into_response()
        }
        None => oauth_error(StatusCode::BAD_REQUEST, "invalid_token", "Bad Request"),
    }
}
