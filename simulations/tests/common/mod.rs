//! Shared fixtures: a simulator on 127.0.0.1:0, OAuth helpers, and a webhook
//! receiver that records what the simulators push to it.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use calsim::{SimConfig, SimHandle, Simulators};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub async fn sim() -> SimHandle {
    sim_with(SimConfig {
        push_retry_delay_ms: 20,
        ..SimConfig::default()
    })
    .await
}

pub async fn sim_with(config: SimConfig) -> SimHandle {
    Simulators::start(config).await.expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub async fn google_access_token(h: &SimHandle, a: &calsim::GoogleAccount) -> String {
    let resp = client()
        .post(h.google_token_url())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", a.refresh_token.as_str()),
            ("client_id", a.client_id.as_str()),
            ("client_secret", a.client_secret.as_str()),
        ])
        .send()
        .await
        .expect("token call");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

pub async fn graph_tokens(h: &SimHandle, a: &calsim::GraphAccount, refresh: &str) -> (u16, Value) {
    let resp = client()
        .post(h.graph_token_url(&a.tenant_id))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", a.client_id.as_str()),
            ("client_secret", a.client_secret.as_str()),
            ("scope", "offline_access Calendars.ReadWrite"),
        ])
        .send()
        .await
        .expect("token call");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

pub async fn graph_access_token(h: &SimHandle, a: &calsim::GraphAccount) -> String {
    let (status, v) = graph_tokens(h, a, &a.refresh_token).await;
    assert_eq!(status, 200, "{v}");
    v["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

/// A bearer-authenticated JSON client for one provider base URL.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: String, token: String) -> Self {
        Api {
            base,
            token,
            http: client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::GET, path, None, &[]).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, _, v) = self
            .send(reqwest::Method::POST, path, Some(body), &[])
            .await;
        (s, v)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, _, v) = self
            .send(reqwest::Method::PATCH, path, Some(body), &[])
            .await;
        (s, v)
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::DELETE, path, None, &[]).await;
        (s, v)
    }
}

/// One request received by the webhook receiver.
#[derive(Clone, Debug)]
pub struct Received {
    pub path_and_query: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .get(&k.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
pub struct Behaviour {
    /// Statuses to answer in order; afterwards 200 (Google) / 202.
    pub statuses: VecDeque<u16>,
    pub default_status: u16,
    /// Delay before answering notifications.
    pub delay_ms: u64,
    /// Answer validation requests (Graph handshake) correctly.
    pub echo_validation: bool,
    pub validation_delay_ms: u64,
}

#[derive(Clone)]
pub struct Hook {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
}

impl Hook {
    pub fn all(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Notifications only (validation requests excluded).
    pub fn notifications(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| !r.path_and_query.contains("validationToken"))
            .collect()
    }

    pub async fn wait_for(&self, n: usize, timeout_ms: u64) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            let got = self.notifications();
            if got.len() >= n || std::time::Instant::now() > deadline {
                return got;
            }
            // Poll interval: the hook is checked again right after.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().expect("lock"));
    }
}

async fn hook_handler(State(hook): State<Hook>, req: Request) -> Response {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let query: HashMap<String, String> =
        serde_urlencoded_pairs(req.uri().query().unwrap_or_default());
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    hook.received.lock().expect("lock").push(Received {
        path_and_query: pq,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    });
    let (status, delay, echo, vdelay) = {
        let mut b = hook.behaviour.lock().expect("lock");
        let s = if query.contains_key("validationToken") {
            200
        } else {
            b.statuses.pop_front().unwrap_or(b.default_status)
        };
        (s, b.delay_ms, b.echo_validation, b.validation_delay_ms)
    };
    if let Some(token) = query.get("validationToken") {
        // Not a wait: the hook's configured slowness, which tests set.
        tokio::time::sleep(Duration::from_millis(vdelay)).await;
        if echo {
            return (
                StatusCode::OK,
                [("content-type", "text/plain")],
                token.clone(),
            )
                .into_response();
        }
        return (StatusCode::OK, [("content-type", "text/plain")], "nope").into_response();
    }
    // Not a wait: the hook's configured slowness, which tests set.
    tokio::time::sleep(Duration::from_millis(delay)).await;
    StatusCode::from_u16(status)
        .unwrap_or(StatusCode::OK)
        .into_response()
}

/// Decode `a=b&c=d` (percent-encoding and `+`).
pub fn serde_urlencoded_pairs(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .map(|(k, v)| (pct_decode(k), pct_decode(v)))
        .collect()
}

fn pct_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

pub async fn hook(default_status: u16) -> Hook {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind hook");
    let addr = listener.local_addr().expect("addr");
    let hook = Hook {
        url: format!("http://{addr}/hook"),
        received: Arc::default(),
        behaviour: Arc::new(Mutex::new(Behaviour {
            default_status,
            echo_validation: true,
            ..Default::default()
        })),
    };
    let app = Router::new()
        .fallback(hook_handler)
        .with_state(hook.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    hook
}
