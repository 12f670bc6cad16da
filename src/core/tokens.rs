//! Scoped API tokens: which scope a route needs, what a token may be
//! named, and whether a caller's scopes admit a request. Pure: the shell
//! looks the token up (by its SHA-256) and asks [`admits`].
//!
//! - `platform` opens `/v1/*` (the booking platform's API);
//! - `admin` opens `/admin/*` except the drill hooks;
//! - `drills` opens `/admin/drill/*` (killing actors: tests and game days).
//!
//! Scopes do not imply each other: an `admin` token cannot book and a
//! `platform` token cannot read credentials or flags. The shared
//! `CALSYNC_ADMIN_TOKEN` holds every scope, as it opened everything before
//! scoped tokens existed.

use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Platform,
    Admin,
    Drills,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Platform, Scope::Admin, Scope::Drills];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Platform => "platform",
            Scope::Admin => "admin",
            Scope::Drills => "drills",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, TokenError> {
        match s.trim() {
            "platform" => Ok(Scope::Platform),
            "admin" => Ok(Scope::Admin),
            "drills" => Ok(Scope::Drills),
            other => Err(TokenError::UnknownScope(other.to_string())),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown scope {0:?}: use platform, admin or drills")]
    UnknownScope(String),
    #[error("a token needs at least one scope")]
    NoScope,
    #[error("token name {0:?}: use 1-64 letters, digits, '.', '_' or '-'")]
    BadName(String),
}

/// The scope a request path needs; `None`: the path needs no token
/// (health, webhooks, metrics, the OAuth callback, the OpenAPI document).
pub fn required_scope(path: &str) -> Option<Scope> {
    if path == "/v1" || path.starts_with("/v1/") {
        Some(Scope::Platform)
    } else if path == "/admin/drill" || path.starts_with("/admin/drill/") {
        Some(Scope::Drills)
    } else if path == "/admin" || path.starts_with("/admin/") {
        Some(Scope::Admin)
    } else {
        None
    }
}

/// Whether a caller holding `scopes` may request `path`.
pub fn admits(scopes: &[Scope], path: &str) -> bool {
    match required_scope(path) {
        None => true,
        Some(needed) => scopes.contains(&needed),
    }
}

/// A set of scopes from their names (deduplicated, ordered).
pub fn parse_scopes<S: AsRef<str>>(names: &[S]) -> Result<Vec<Scope>, TokenError> {
    let mut scopes = names
        .iter()
        .flat_map(|n| n.as_ref().split(','))
        .filter(|n| !n.trim().is_empty())
        .map(Scope::parse)
        .collect::<Result<Vec<_>, _>>()?;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(TokenError::NoScope);
    }
    Ok(scopes)
}

/// A token's name: what audits record, what `revoke` takes.
pub fn validate_name(name: &str) -> Result<(), TokenError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadName(name.to_string()))
    }
}

/// What is stored and compared: the SHA-256 of the token (hex). A token is
/// 32 random bytes, so a fast hash is enough (nothing to brute-force), and
/// hashing first makes every comparison the same length.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The prefix every generated token carries (so secret scanners find them).
pub const TOKEN_PREFIX: &str = "cst_";

/// A token from 32 random bytes (the randomness is an argument).
pub fn token_from(random: [u8; 32]) -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_area_needs_its_own_scope() {
        assert_eq!(
            required_scope("/v1/providers/x/busy"),
            Some(Scope::Platform)
        );
        assert_eq!(required_scope("/admin/flags"), Some(Scope::Admin));
        assert_eq!(required_scope("/admin/drill/kill"), Some(Scope::Drills));
        assert_eq!(required_scope("/admin"), Some(Scope::Admin));
        for open in ["/healthz", "/webhooks/google", "/oauth/google/callback"] {
            assert_eq!(required_scope(open), None, "{open}");
        }
        // No prefix tricks.
        assert_eq!(required_scope("/v10/x"), None);
        assert_eq!(required_scope("/administrator"), None);
        assert_eq!(required_scope("/admin/drillx"), Some(Scope::Admin));
    }

    #[test]
    fn scopes_do_not_imply_each_other() {
        assert!(!admits(&[Scope::Platform], "/admin/connections"));
        assert!(!admits(&[Scope::Platform], "/admin/drill/kill"));
        assert!(!admits(&[Scope::Admin], "/v1/bookings"));
        assert!(!admits(&[Scope::Admin], "/admin/drill/kill"));
        assert!(!admits(&[Scope::Drills], "/admin/flags"));
        assert!(admits(&[Scope::Drills], "/admin/drill/kill"));
        assert!(admits(&Scope::ALL, "/admin/drill/kill"));
        assert!(admits(&[], "/healthz"));
        assert!(!admits(&[], "/v1/bookings"));
    }

    #[test]
    fn scopes_and_names_are_checked() {
        assert_eq!(
            parse_scopes(&["admin,platform", "admin"]).unwrap(),
            vec![Scope::Platform, Scope::Admin]
        );
        assert_eq!(parse_scopes::<&str>(&[]), Err(TokenError::NoScope));
        assert!(matches!(
            parse_scopes(&["root"]),
            Err(TokenError::UnknownScope(_))
        ));
        assert!(validate_name("booking-web.prod_1").is_ok());
        for bad in ["", "a b", "x\n", &"n".repeat(65), "ä"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_hash_to_a_fixed_length() {
        let t = token_from([7; 32]);
        assert!(t.starts_with(TOKEN_PREFIX));
        assert_eq!(hash(&t).len(), 64);
        assert_eq!(hash("x").len(), hash(&"y".repeat(1000)).len());
        assert_ne!(hash(&t), hash(&token_from([8; 32])));
    }
}
