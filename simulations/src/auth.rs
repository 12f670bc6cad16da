//! OAuth grants shared by both simulated token endpoints: refresh tokens
//! (revocable, expirable) and short-lived bearer access tokens.

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

use crate::rng::SimRng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantState {
    Valid,
    /// User/admin revoked consent (Google `invalid_grant`, AADSTS50173).
    Revoked,
    /// Expired by inactivity (AADSTS700082).
    Expired,
}

#[derive(Clone, Debug)]
pub struct RefreshGrant {
    pub account: String,
    pub client_id: String,
    pub state: GrantState,
}

#[derive(Clone, Debug)]
struct AccessGrant {
    account: String,
    expires_at: DateTime<Utc>,
}

/// Outcome of checking a bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessCheck {
    Valid(String),
    Missing,
    Expired(String),
    Invalid,
}

#[derive(Default)]
pub struct TokenStore {
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
}

impl TokenStore {
    pub fn issue_refresh(
        &mut self,
        account: &str,
        client_id: &str,
        prefix: &str,
        rng: &SimRng,
    ) -> String {
        let token = format!("{prefix}{}", rng.alnum(48));
        self.refresh.insert(
            token.clone(),
            RefreshGrant {
                account: account.to_string(),
                client_id: client_id.to_string(),
                state: GrantState::Valid,
            },
        );
        token
    }

    pub fn issue_access(
        &mut self,
        account: &str,
        prefix: &str,
        lifetime_secs: i64,
        now: DateTime<Utc>,
        rng: &SimRng,
    ) -> String {
        let token = format!("{prefix}{}", rng.alnum(64));
        self.access.insert(
            token.clone(),
            AccessGrant {
                account: account.to_string(),
                expires_at: now + Duration::seconds(lifetime_secs),
            },
        );
        token
    }

    /// Every access token issued to `account` and still known (for tests
    /// that search logs for leaked secrets).
    pub fn access_tokens_of(&self, account: &str) -> Vec<String> {
        self.access
            .iter()
            .filter(|(_, g)| g.account.eq_ignore_ascii_case(account))
            .map(|(t, _)| t.clone())
            .collect()
    }

    pub fn refresh_grant(&self, token: &str) -> Option<&RefreshGrant> {
        self.refresh.get(token)
    }

    pub fn check_access(&self, header: Option<&str>, now: DateTime<Utc>) -> AccessCheck {
        let Some(h) = header else {
            return AccessCheck::Missing;
        };
        let token = match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return AccessCheck::Invalid,
        };
        match self.access.get(token) {
            Some(g) if g.expires_at > now => AccessCheck::Valid(g.account.clone()),
            Some(g) => AccessCheck::Expired(g.account.clone()),
            None => AccessCheck::Invalid,
        }
    }

    /// Revoke (or expire) every grant of an account; its access tokens die too.
    pub fn end_grants(&mut self, account: &str, state: GrantState) {
        for g in self.refresh.values_mut() {
            if g.account.eq_ignore_ascii_case(account) {
                g.state = state;
            }
        }
        self.access
            .retain(|_, g| !g.account.eq_ignore_ascii_case(account));
    }

    /// Make every access token of the account expired (forces 401 → refresh).
    pub fn expire_access(&mut self, account: &str, now: DateTime<Utc>) {
        for g in self.access.values_mut() {
            if g.account.eq_ignore_ascii_case(account) {
                g.expires_at = now - Duration::seconds(1);
            }
        }
    }
}
