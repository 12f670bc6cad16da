//! What a `DATABASE_URL` asks of TLS, as libpq reads it: `sslmode`
//! (`disable`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert`. tokio-postgres knows only the first
//! three modes and no `sslrootcert`, so both are taken out here and the rest
//! of the string is handed to it unchanged.

use std::path::PathBuf;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // `allow` would try plain text first: never more than `prefer`.
            other => {
                return Err(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
            }
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Encrypted, certificate not checked (libpq's `prefer` and `require`
    /// without a root certificate).
    Nothing,
    /// Signed by a CA in `root`; the name is not checked.
    Chain { root: PathBuf },
    /// Signed by a CA in `root`, for the host connected to.
    ChainAndName { root: PathBuf },
}

/// The TLS a connection string asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    /// `None` with `disable`.
    pub verify: Option<Verify>,
}

impl PgTls {
    /// Whether TLS must be negotiated (tokio-postgres' `require`), may be
    /// (`prefer`) or is off.
    pub fn required(&self) -> bool {
        matches!(
            self.mode,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// Splits `url` (a libpq `key=value` string or a `postgresql://` URL) into
/// the string without `sslmode` and `sslrootcert`, and what they ask for.
/// As libpq: `require` with a root certificate checks the chain
/// (`verify-ca`); `verify-ca` and `verify-full` need one (there is no
/// default `~/.postgresql/root.crt` here).
pub fn split(url: &str) -> Result<(String, PgTls), String> {
    let (rest, params) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)
    } else {
        split_key_values(url)?
    };
    let mut mode = SslMode::default();
    let mut root = None;
    for (key, value) in params {
        match key.as_str() {
            "sslmode" => mode = SslMode::parse(&value)?,
            _ => root = Some(PathBuf::from(value)),
        }
    }
    let verify = match (mode, root) {
        (SslMode::Disable, _) => None,
        (SslMode::VerifyCa, Some(root)) | (SslMode::Require, Some(root)) => {
            Some(Verify::Chain { root })
        }
        (SslMode::VerifyFull, Some(root)) => Some(Verify::ChainAndName { root }),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} needs sslrootcert=PATH, a PEM file of the certificate authority \
                 that signed the server's certificate",
                mode.as_str()
            ))
        }
        (SslMode::Prefer, Some(root)) => Some(Verify::Chain { root }),
        (SslMode::Prefer | SslMode::Require, None) => Some(Verify::Nothing),
    };
    Ok((rest, PgTls { mode, verify }))
}

const TAKEN: [&str; 2] = ["sslmode", "sslrootcert"];

fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if TAKEN.contains(&k) {
            taken.push((k.to_string(), percent_decode(v)));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, taken)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` pairs separated by spaces; values may be single-quoted with
/// `\'` and `\\` escapes (libpq's rules).
fn split_key_values(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut kept: Vec<String> = Vec::new();
    let mut taken = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("connection string: {key:?} has no value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut raw = String::new();
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            raw.push('\'');
            loop {
                match chars.next() {
                    Some('\\') => {
                        let c = chars.next().ok_or("connection string: dangling \\")?;
                        raw.push('\\');
                        raw.push(c);
                        value.push(c);
                    }
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some(c) => {
                        raw.push(c);
                        value.push(c);
                    }
                    None => return Err("connection string: unterminated quote".into()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                raw.push(c);
                value.push(c);
            }
        }
        if TAKEN.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(format!("{key}={raw}"));
        }
    }
    Ok((kept.join(" "), taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(mode: SslMode, verify: Option<Verify>) -> PgTls {
        PgTls { mode, verify }
    }

    #[test]
    fn key_value_strings_lose_only_the_tls_keys() {
        let (rest, t) =
            split("host=db port=5432 sslmode=verify-full sslrootcert='/etc/a b.pem' user=x")
                .unwrap();
        assert_eq!(rest, "host=db port=5432 user=x");
        assert_eq!(
            t,
            tls(
                SslMode::VerifyFull,
                Some(Verify::ChainAndName {
                    root: "/etc/a b.pem".into()
                })
            )
        );
        let (rest, _) = split(r"host=/tmp password='a\'b c'").unwrap();
        assert_eq!(
            rest, r"host=/tmp password='a\'b c'",
            "other values kept as written"
        );
        let (rest, t) = split("host=db").unwrap();
        assert_eq!(rest, "host=db");
        assert_eq!(t, tls(SslMode::Prefer, Some(Verify::Nothing)));
    }

    #[test]
    fn urls_lose_only_the_tls_parameters() {
        let (rest, t) = split(
            "postgresql://u:p@db.internal:5432/calsync?sslmode=verify-ca&application_name=c&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://u:p@db.internal:5432/calsync?application_name=c"
        );
        assert_eq!(
            t,
            tls(
                SslMode::VerifyCa,
                Some(Verify::Chain {
                    root: "/ca.pem".into()
                })
            )
        );
        let (rest, t) = split("postgresql://db/calsync?sslmode=disable").unwrap();
        assert_eq!(rest, "postgresql://db/calsync");
        assert_eq!(t, tls(SslMode::Disable, None));
    }

    #[test]
    fn modes_follow_libpq() {
        let mode = |s: &str| split(s).map(|(_, t)| t);
        assert_eq!(
            mode("host=h sslmode=require").unwrap(),
            tls(SslMode::Require, Some(Verify::Nothing))
        );
        // require with a root certificate checks the chain, as libpq does.
        assert_eq!(
            mode("host=h sslmode=require sslrootcert=/r")
                .unwrap()
                .verify,
            Some(Verify::Chain { root: "/r".into() })
        );
        assert!(mode("host=h sslmode=verify-full").is_err());
        assert!(mode("host=h sslmode=verify-ca")
            .unwrap_err()
            .contains("sslrootcert"));
        assert!(mode("host=h sslmode=allow").is_err());
        assert!(mode("host=h sslmode").is_err());
        assert!(mode("host='h").is_err());
        assert!(mode("host=h sslmode=require").unwrap().required());
        assert!(!mode("host=h").unwrap().required());
    }
}
