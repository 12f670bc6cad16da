//! The troubleshooter's sign-in: the admin token, typed into a form once,
//! becomes a signed session cookie (the token never travels in a URL and
//! is not stored in the browser).
//!
//! Stateless, so every node accepts a session any node issued: the cookie
//! is `<expiry unix seconds>.<hex SHA-256 of "calsync-ui" ‖ token ‖ expiry>`.
//! It can be made only by someone who knows the token, expires after
//! [`SESSION_HOURS`], and ends for everyone when the token is rotated.
//! (The expiry is digits only, so a length-extended forgery cannot parse.)
//! Forms that change something carry a CSRF value derived from the cookie,
//! and the cookie is `SameSite=Strict; HttpOnly`.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "calsync_ui";
pub const SESSION_HOURS: i64 = 12;

fn mac(token: &str, expiry: i64) -> String {
    let mut h = Sha256::new();
    h.update(b"calsync-ui\0");
    h.update(token.as_bytes());
    h.update(b"\0");
    h.update(expiry.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// A new session value for `token`, valid until `now + SESSION_HOURS`.
pub fn issue(token: &str, now: DateTime<Utc>) -> String {
    let expiry = (now + chrono::Duration::hours(SESSION_HOURS)).timestamp();
    format!("{expiry}.{}", mac(token, expiry))
}

/// Whether `value` is a live session for `token`.
pub fn valid(token: &str, value: &str, now: DateTime<Utc>) -> bool {
    let Some((expiry, given)) = value.split_once('.') else {
        return false;
    };
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(expiry) = expiry.parse::<i64>() else {
        return false;
    };
    if expiry <= now.timestamp() {
        return false;
    }
    bool::from(mac(token, expiry).as_bytes().ct_eq(given.as_bytes()))
}

/// The CSRF value forms of this session carry.
pub fn csrf(session: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"calsync-ui-csrf\0");
    h.update(session.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Whether the password typed in is the admin token (constant time).
pub fn token_matches(expected: &str, given: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn from_cookies<'a>(headers: impl Iterator<Item = &'a str>) -> Option<String> {
    headers
        .flat_map(|h| h.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bound_to_the_token_and_expire() {
        let now = Utc::now();
        let s = issue("secret", now);
        assert!(valid("secret", &s, now));
        assert!(!valid("other", &s, now), "a rotated token ends sessions");
        assert!(!valid(
            "secret",
            &s,
            now + chrono::Duration::hours(SESSION_HOURS + 1)
        ));
        let (expiry, mac) = s.split_once('.').unwrap();
        let later = expiry.parse::<i64>().unwrap() + 3600;
        assert!(
            !valid("secret", &format!("{later}.{mac}"), now),
            "expiry is signed"
        );
        for bad in ["", ".", "x.y", "-1.00", &format!("{expiry}.")] {
            assert!(!valid("secret", bad, now), "{bad}");
        }
        assert_ne!(
            csrf(&s),
            csrf(&issue("secret", now + chrono::Duration::seconds(5)))
        );
        assert_eq!(
            from_cookies(["a=1; calsync_ui=v.1", "b=2"].into_iter()).as_deref(),
            Some("v.1")
        );
        assert!(token_matches("t", "t") && !token_matches("t", "u"));
    }
}
