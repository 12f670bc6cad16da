//! The HTTP plumbing shared by both provider clients: the reqwest client
//! with explicit timeouts, authenticated calls with "refresh once and retry
//! once on 401", `Retry-After` parsing and URL encoding.
//!
//! Error *classification* stays with each provider (`google::classify`,
//! `graph::classify`); this module only maps transport failures (timeouts,
//! refused connections, unreadable bodies) to [`ProviderError::Unavailable`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;

use super::oauth::{self, TokenEndpoint};
use super::{AuthSession, ProviderError};

/// Connect timeout of every provider call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout of every provider call (token endpoint included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The reqwest client for provider calls: connect 5 s, request 20 s.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("calsync/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// How calsync reaches a provider over HTTP: reqwest in production and
/// tests, or an in-process service (the simulator's router, no sockets) in
/// the deterministic simulation. Either way the same requests are built
/// and the same answers parsed.
#[derive(Clone)]
pub enum HttpPort {
    Reqwest(reqwest::Client),
    InProcess(std::sync::Arc<dyn InProcessHttp>),
}

impl std::fmt::Debug for HttpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HttpPort::Reqwest(_) => "HttpPort::Reqwest",
            HttpPort::InProcess(_) => "HttpPort::InProcess",
        })
    }
}

impl From<reqwest::Client> for HttpPort {
    fn from(client: reqwest::Client) -> Self {
        HttpPort::Reqwest(client)
    }
}

/// An HTTP service called in process.
pub trait InProcessHttp: Send + Sync {
    fn call(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> futures::future::BoxFuture<'static, axum::http::Response<bytes::Bytes>>;
}

/// What a request carries.
pub(crate) enum Body<'a> {
    Empty,
    Json(&'a serde_json::Value),
    Form(&'a [(&'a str, &'a str)]),
}

/// An answer: status, headers, body.
pub(crate) struct Exchange {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl HttpPort {
    pub(crate) async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&'static str, String)],
        bearer: Option<&str>,
        body: Body<'_>,
    ) -> Result<Exchange, ProviderError> {
        match self {
            HttpPort::Reqwest(http) => {
                let mut request = http.request(method, url);
                if let Some(token) = bearer {
                    request = request.bearer_auth(token);
                }
                for (name, value) in headers {
                    request = request.header(*name, value.as_str());
                }
                request = match body {
                    Body::Empty => request,
                    Body::Json(v) => request.json(v),
                    Body::Form(f) => request.form(f),
                };
                let response = request.send().await.map_err(transport_error)?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = response.bytes().await.map_err(transport_error)?;
                Ok(Exchange {
                    status,
                    headers,
                    body,
                })
            }
            HttpPort::InProcess(service) => {
                let (content_type, bytes) = match body {
                    Body::Empty => (None, bytes::Bytes::new()),
                    Body::Json(v) => (
                        Some("application/json"),
                        bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
                    ),
                    Body::Form(f) => {
                        let text: Vec<String> = f
                            .iter()
                            .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
                            .collect();
                        (
                            Some("application/x-www-form-urlencoded"),
                            bytes::Bytes::from(text.join("&")),
                        )
                    }
                };
                let mut builder = axum::http::Request::builder().method(method).uri(url);
                if let Some(token) = bearer {
                    builder = builder.header("authorization", format!("Bearer {token}"));
                }
                if let Some(ct) = content_type {
                    builder = builder.header("content-type", ct);
                }
                for (name, value) in headers {
                    builder = builder.header(*name, value.as_str());
                }
                let request = builder
                    .body(bytes)
                    .map_err(|e| ProviderError::Unavailable {
                        message: format!("request not built: {e}"),
                        retry_after: None,
                    })?;
                let response = service.call(request).await;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                Ok(Exchange {
                    status,
                    headers,
                    body: response.into_body(),
                })
            }
        }
    }
}

/// A provider's mapping from a non-2xx answer to the caller's next action.
pub(crate) type Classify = fn(u16, &HeaderMap, &[u8]) -> ProviderError;

/// A transport failure: the provider could not be reached or did not answer
/// in time. The URL is left out of the message (it may carry sync tokens).
pub(crate) fn transport_error(e: reqwest::Error) -> ProviderError {
    let message = if e.is_timeout() {
        "request timed out".to_owned()
    } else if e.is_connect() {
        format!("connection failed: {}", e.without_url())
    } else {
        format!("transport error: {}", e.without_url())
    };
    ProviderError::Unavailable {
        message,
        retry_after: None,
    }
}

/// `Retry-After` as delta-seconds (integer or fractional, Graph sends
/// `2.128`) or as an HTTP date. Parsed exactly, without float rounding.
pub fn parse_retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_delta_seconds(raw).or_else(|| {
        let at = DateTime::parse_from_rfc2822(raw).ok()?.with_timezone(&Utc);
        Some((at - now).to_std().unwrap_or(Duration::ZERO))
    })
}

fn parse_delta_seconds(raw: &str) -> Option<Duration> {
    let (whole, frac) = raw.split_once('.').unwrap_or((raw, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(frac) {
        return None;
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(Duration::new(secs, nanos))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (spaces
/// become `%20`, never `+`: OData filters need that).
pub(crate) fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A path segment: like [`pct`] but keeps `@` (calendar ids are e-mails).
pub(crate) fn pct_segment(s: &str) -> String {
    pct(s).replace("%40", "@")
}

/// `base?k=v&k=v` with percent-encoded values (keys are ours, e.g. `$filter`).
pub(crate) fn with_query(base: &str, params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return base.to_owned();
    }
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", pct(v)))
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// One provider API request.
pub(crate) struct Call {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub json: Option<serde_json::Value>,
}

impl Call {
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Call {
            method,
            url: url.into(),
            headers: Vec::new(),
            json: None,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.json = Some(body);
        self
    }
}

/// A 2xx answer.
pub(crate) struct Reply {
    pub body: bytes::Bytes,
}

impl Reply {
    /// The body as `T`. A 2xx body that does not parse is provider trouble
    /// (truncated or garbled answer): retry later.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Unavailable {
            message: format!("unreadable response body: {e}"),
            retry_after: None,
        })
    }
}

/// One provider's API: its HTTP client, token endpoint and classifier.
pub(crate) struct Api<'a> {
    pub http: &'a HttpPort,
    pub token: &'a TokenEndpoint,
    pub classify: Classify,
    /// Token expiry is judged by this clock.
    pub clock: &'a dyn crate::ports::Clock,
}

impl Api<'_> {
    /// Sends `call` with a fresh access token. A 401 refreshes the token once
    /// and retries once; a second 401 goes to the classifier.
    pub async fn send(
        &self,
        session: &mut AuthSession,
        call: &Call,
    ) -> Result<Reply, ProviderError> {
        oauth::ensure_fresh(self.http, self.token, session, self.clock.now()).await?;
        let mut refreshed = false;
        loop {
            let access = session.access_token.clone().unwrap_or_default();
            let body = match &call.json {
                Some(v) => Body::Json(v),
                None => Body::Empty,
            };
            let answer = self
                .http
                .exchange(
                    call.method.clone(),
                    &call.url,
                    &call.headers,
                    Some(&access),
                    body,
                )
                .await?;
            if answer.status == 401 && !refreshed {
                refreshed = true;
                tracing::debug!("provider answered 401; refreshing the access token once");
                oauth::refresh(self.http, self.token, session, self.clock.now()).await?;
                continue;
            }
            if (200..300).contains(&answer.status) {
                return Ok(Reply { body: answer.body });
            }
            return Err((self.classify)(
                answer.status,
                &answer.headers,
                &answer.body,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn retry_after(v: &str) -> Option<Duration> {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        parse_retry_after(&h, "2026-10-01T10:00:00Z".parse().unwrap())
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after("2.128"), Some(Duration::from_millis(2128)));
        assert_eq!(retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(
            retry_after("Thu, 01 Oct 2026 10:00:07 GMT"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after("soon"), None);
        assert_eq!(retry_after("-1"), None);
        assert_eq!(retry_after("."), None);
    }

    #[test]
    fn encoding_uses_percent_twenty() {
        assert_eq!(pct("a b'c"), "a%20b%27c");
        assert_eq!(pct_segment("alice@example.com"), "alice@example.com");
        assert_eq!(
            with_query("http://x/y", &[("$filter", "id eq 'a'".into())]),
            "http://x/y?$filter=id%20eq%20%27a%27"
        );
    }
}
